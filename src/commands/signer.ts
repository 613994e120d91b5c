import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../base-command.js'
import {parseDuration} from '../lib/duration.js'
import {runSigner, signPendingRenewals, type SignerPass} from '../lib/devices/signer.js'
import {formatWhen} from '../lib/output/time.js'
import {stopOnRequest} from '../lib/platform/index.js'

export default class Signer extends ControlPlaneCommand<typeof Signer> {
  static override summary = "Sign the devices' renewal requests with the local CA, automatically."
  static override description = `Runs where the CA key is, with a Postgres or Supabase control plane. Devices running \`vidsync up\` ask for a new certificate when a third of theirs is left; the signer signs their registered key again for the project's lifetime, only for active, non-revoked devices (a new key from \`vidsync key rotate\` only once the operator approved it with \`vidsync device approve PROJECT --key-change DEVICE\`; it refuses and logs an unapproved one), and the devices install it and reload nebula without dropping tunnels. Runs in the foreground until Ctrl-C (or as a service); --once signs what is pending and exits, for scripts and cron. Once a signer has served a project, its default device lifetime is 30 days.`
  static override examples = ['<%= config.bin %> <%= command.id %> studio', '<%= config.bin %> <%= command.id %> studio --once --json']

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {
    once: Flags.boolean({summary: 'Sign what is pending now and exit.'}),
    interval: Flags.string({summary: 'How often to look for renewal requests.', default: '15s'}),
  }

  async run(): Promise<SignerPass> {
    const intervalMs = parseDuration(this.flags.interval, 'interval') * 1000
    // A key change waiting for approval is refused at every pass: logged once per request.
    const logged = new Set<string>()
    const report = (pass: SignerPass | Error) => {
      const at = new Date().toISOString()
      if (pass instanceof Error) return this.logToStderr(`${at} signer pass failed, retrying: ${pass.message}`)
      for (const signed of pass.signed) this.log(`${at} renewed ${signed.device}${signed.newKey ? ' with its new key' : ''}: ${signed.fingerprint} valid until ${formatWhen(signed.notAfter)}`)
      for (const refused of pass.refused) {
        const key = `${refused.requestId} ${refused.message}`
        if (!logged.has(key)) this.log(`${at} refused ${refused.device}: ${refused.message}`)
        logged.add(key)
      }
    }
    if (this.flags.once) {
      const pass = await this.withControlPlane((controlPlane) => signPendingRenewals({home: this.home, controlPlane, project: this.args.project}))
      report(pass)
      return pass
    }
    const stop = stopOnRequest()
    let last: SignerPass = {project: this.args.project, signed: [], refused: []}
    try {
      await this.withControlPlane((controlPlane) =>
        runSigner({home: this.home, controlPlane, project: this.args.project, intervalMs, signal: stop.signal, onPass: (pass) => {
          if (!(pass instanceof Error)) last = pass
          report(pass)
        }}),
      )
    } finally {
      stop.dispose()
    }
    return last
  }
}
