import {existsSync} from 'node:fs'

import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../base-command.js'
import {parseDuration} from '../lib/duration.js'
import {InvalidInputError} from '../lib/errors.js'
import {readUserFile} from '../lib/input.js'
import {isInviteCode, parseInviteCode} from '../lib/invites/secrets.js'
import {joinWithInvite} from '../lib/join/invite.js'
import {joinBundle, type JoinResult} from '../lib/join/join.js'
import type {CaCandidate} from '../lib/project/trust.js'
import {selectedBackend} from '../lib/store/open.js'
import {formatWhen} from '../lib/output/time.js'

/** As every command shows a device: an object with the fields of `device show` that a device knows. */
export type JoinOutput = Omit<JoinResult, 'device' | 'ip' | 'notAfter'> & {device: {name: string; ip: string; notAfter: string}}

export default class Join extends ControlPlaneCommand<typeof Join> {
  static override summary = 'Join a project with the bundle or the invite code the operator sent.'
  static override description = `With a bundle zip: checks it (certificate valid now, issued for this device's key from \`vidsync key create\`, signed by the project's CA, matching the bundle's manifest) and installs it under <home>/projects/<project>/. The first join of a project pins its CA: confirm the fingerprint the operator's \`vidsync ca show\` prints (asked on a terminal, or --ca-fingerprint in scripts); later bundles with another CA are refused. The bundle is data: this device renders its own nebula.yml from it, so no bundle can open ports, routes or admin interfaces. Running it again with the same bundle changes nothing; a renewed bundle replaces the old files (an older one only with --force), and a nebula already running for the project reloads them (SIGHUP: the new certificate and the current blocklist) without a restart.

With an invite code (vsi_...): needs the control plane, usually VIDSYNC_SUPABASE_URL with the anon key in VIDSYNC_SUPABASE_KEY. Makes this device's key pair when missing (the private key never leaves the device), redeems the code and waits for the operator's \`vidsync device approve\`, then installs the bundle the same way and keeps the device token (0600) for later refreshes. If the wait times out, \`vidsync join --resume\` (or the same command again) carries on where it stopped.

Then bring the overlay up with \`vidsync nebula up\`, or everything with \`vidsync up\`.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio-laptop.zip',
    '<%= config.bin %> <%= command.id %> studio-laptop.zip --ca-fingerprint 5e2133e9beeb3399f417a5c850b65239f44dd637930e66d9b628188fd242846d',
    '<%= config.bin %> <%= command.id %> studio-laptop.zip --key ~/keys/laptop.key --json',
    'VIDSYNC_SUPABASE_URL=https://abcd.supabase.co VIDSYNC_SUPABASE_KEY=<anon key> <%= config.bin %> <%= command.id %> vsi_... --name laptop',
    '<%= config.bin %> <%= command.id %> --resume',
  ]

  static override args = {
    source: Args.string({description: 'The bundle zip from `vidsync device register`, or an invite code from `vidsync invite create` (`-` reads the code from standard input, keeping it out of the process list).'}),
  }

  static override flags = {
    key: Flags.string({summary: "This device's private key [default: <home>/keys/node.key].", env: 'VIDSYNC_KEY'}),
    name: Flags.string({summary: "With an invite code: this device's name [default: the host name]."}),
    wait: Flags.string({summary: "With an invite code: how long to wait for the operator's approval.", default: '15m'}),
    resume: Flags.boolean({summary: 'Carry on with the join that is waiting for approval.'}),
    'ca-fingerprint': Flags.string({summary: "With a bundle joining a project for the first time: the fingerprint of the project's CA, from the operator's `vidsync ca show`."}),
    'replace-key': Flags.boolean({summary: "Let a private key in the bundle replace this device's key for the project."}),
    force: Flags.boolean({summary: 'Install a bundle older than the one installed.'}),
  }

  /** On a terminal, the person confirms a CA seen for the first time; Ctrl-C cancels (exit 130, as at any prompt). */
  private async confirmCa(ca: CaCandidate): Promise<boolean> {
    this.log(`${ca.project} is new on this device. Its CA "${ca.name}" has the fingerprint\n  ${ca.fingerprint}`)
    const {confirm} = await import('@inquirer/prompts')
    return confirm({message: "Is this the fingerprint the operator's `vidsync ca show` prints?", default: false})
  }

  async run(): Promise<JoinOutput> {
    const {flags} = this
    // `-`: the invite code from standard input, so that it never shows in the process list.
    const source = this.args.source === '-' ? (await readUserFile('-', 'invite code')).toString().trim() : this.args.source
    let result: JoinResult
    if (source?.trim().startsWith('vsi_') && !isInviteCode(source.trim()) && !existsSync(source)) parseInviteCode(source)
    if (source !== undefined && !isInviteCode(source.trim()) && !flags.resume) {
      // The spinner hides while a CA seen for the first time is confirmed on this terminal.
      result = await this.progress('Checking and installing the bundle', (progress) =>
        joinBundle({
          home: this.home,
          bundlePath: source,
          keyPath: flags.key,
          caFingerprint: flags['ca-fingerprint'],
          confirmCa: this.interactive ? (ca) => progress.pause(() => this.confirmCa(ca)) : undefined,
          replaceKey: flags['replace-key'],
          force: flags.force,
        }),
      )
    } else {
      if (source === undefined && !flags.resume) throw new InvalidInputError('give a bundle zip or an invite code, or --resume')
      if (selectedBackend(this.storeOptions) === 'embedded') {
        throw new InvalidInputError('joining with an invite code needs the control plane: set VIDSYNC_SUPABASE_URL and VIDSYNC_SUPABASE_KEY (the anon key)')
      }
      const waitMs = parseDuration(flags.wait, 'wait') * 1000
      result = await this.withControlPlane((controlPlane) =>
        this.progress(flags.resume ? 'Resuming the join' : 'Redeeming the invite code', (progress) =>
          joinWithInvite({
            home: this.home,
            controlPlane,
            code: source,
            name: flags.name,
            keyPath: flags.key,
            replaceKey: flags['replace-key'],
            force: flags.force,
            waitMs,
            onWaiting: ({project, device}) => progress.update(`${device} is waiting for the operator's approval in ${project} (vidsync device approve ${project})`),
          }),
        ),
      )
    }
    for (const warning of result.warnings) this.warn(warning)
    this.log(
      result.changed
        ? `Joined ${result.project} as ${result.device} (${result.ip}); certificate valid until ${formatWhen(result.notAfter)}.`
        : `Already joined ${result.project} as ${result.device} with this bundle; nothing changed.`,
    )
    this.log(`Files: ${result.projectDir}`)
    this.log(result.nebulaReloaded ? 'Nebula was running and reloaded the new files.' : 'Next: sudo vidsync up --detach')
    const {device, ip, notAfter, ...rest} = result
    return {...rest, device: {name: device, ip, notAfter}}
  }
}
