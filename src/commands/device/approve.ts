import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {formatDuration, parseDuration} from '../../lib/duration.js'
import {InvalidInputError} from '../../lib/errors.js'
import type {KeyChangeApproval} from '../../lib/store/control-plane.js'
import {type ApprovalFailure, type Approved, approveJoinRequests, type ApproveResult, watchJoinRequests} from '../../lib/invites/approve.js'
import {formatWhen, relativeTime} from '../../lib/output/time.js'

export default class DeviceApprove extends ControlPlaneCommand<typeof DeviceApprove> {
  static override summary = 'Sign the keys of devices that joined with an invite code, or approve a new key.'
  static override description = `Every device waiting for approval (redeemed an invite with \`vidsync join CODE\`) gets an address, a certificate signed here with the local CA (nebula-cert) and a bundle that the control plane keeps for the device to fetch with its token. The bundle never holds a private key. With --watch it keeps approving devices as they arrive until --timeout (or until --count devices are approved): the unattended mode for CI. With --key-change DEVICE it approves the new key that DEVICE asked a certificate for (\`vidsync key rotate\` on the device printed its sha256: pass it with --key-sha256 to approve only that key); \`vidsync signer\` signs no new key before that.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio',
    '<%= config.bin %> <%= command.id %> studio --watch --count 1 --timeout 10m --yes --json',
    '<%= config.bin %> <%= command.id %> studio --key-change laptop --key-sha256 3f1c...e9',
  ]

  static override args = {
    project: Args.string({description: 'Project name [default: every project].'}),
  }

  static override flags = {
    watch: Flags.boolean({summary: 'Keep approving devices as they arrive, until --timeout.'}),
    timeout: Flags.string({summary: 'With --watch: how long to keep watching.', default: '10m'}),
    count: Flags.integer({summary: 'With --watch: stop after this many approvals; fewer by the timeout is an error.', min: 1, dependsOn: ['watch']}),
    yes: Flags.boolean({char: 'y', summary: 'Do not ask for confirmation.'}),
    'key-change': Flags.string({summary: 'Approve the new key this device asked a certificate for (needs PROJECT).'}),
    'key-sha256': Flags.string({summary: 'With --key-change: approve only the key with this sha256 (what `vidsync key rotate` printed on the device).', dependsOn: ['key-change']}),
  }

  async run(): Promise<ApproveResult | {project: string; keyChange: KeyChangeApproval}> {
    const {flags} = this
    const project = this.args.project
    const device = flags['key-change']
    if (device !== undefined) {
      if (project === undefined || flags.watch) {
        throw new InvalidInputError('--key-change approves one device of one project: name the project, without --watch', {hint: `vidsync device approve PROJECT --key-change ${device}`})
      }
      const publicKeySha256 = flags['key-sha256']?.toLowerCase()
      if (publicKeySha256 !== undefined && !/^[0-9a-f]{64}$/.test(publicKeySha256)) throw new InvalidInputError('--key-sha256 takes the 64 hex digits `vidsync key rotate` printed')
      const keyChange = await this.withControlPlane((controlPlane) => controlPlane.approveKeyChange({project, device, publicKeySha256}))
      this.log(`Approved the new key of ${device} in ${project} (public key sha256 ${keyChange.publicKeySha256}): the signer signs it next.`)
      return {project, keyChange}
    }
    const scope = project ?? 'every project'
    const onApproved = (a: Approved) => this.log(`Approved ${a.device.name} in ${a.project} at ${a.device.ip}; certificate valid until ${formatWhen(a.device.notAfter)}.`)
    const onFailed = (f: ApprovalFailure) => this.warn(`could not approve ${f.device.name} in ${f.project}: ${f.message}`)
    if (flags.watch) {
      const timeoutMs = parseDuration(flags.timeout, 'timeout') * 1000
      await this.confirmDestructive(`Approve every device that joins ${scope} in the next ${formatDuration(timeoutMs / 1000)} without asking?`, flags.yes)
      return this.withControlPlane((controlPlane) =>
        watchJoinRequests({home: this.home, controlPlane, project, timeoutMs, count: flags.count, onApproved, onFailed}),
      )
    }
    return this.withControlPlane(async (controlPlane) => {
      const requests = await controlPlane.listJoinRequests({project})
      if (requests.length === 0) {
        this.log(`No device is waiting for approval in ${scope}.`)
        return {approved: [], failed: []}
      }
      const names = requests.map((r) => `${r.device} (${r.project}, from ${r.source ?? 'unknown'}, ${relativeTime(r.createdAt)})`).join(', ')
      await this.confirmDestructive(`Sign the keys of ${names}?`, flags.yes)
      const result = await this.progress(`Signing ${requests.length === 1 ? 'the key' : `${requests.length} keys`}`, () => approveJoinRequests({home: this.home, controlPlane, project, requests}))
      result.approved.forEach(onApproved)
      result.failed.forEach(onFailed)
      return result
    })
  }
}
