import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../base-command.js'
import {parseDuration} from '../lib/duration.js'
import {runSigner, signPendingRenewals, type SignerPass} from '../lib/devices/signer.js'
import {
  installSignerService,
  savedSignerSettings,
  type SignerServiceResult,
  type SignerServiceStatus,
  signerServiceStatus,
  uninstallSignerService,
} from '../lib/devices/signer-service.js'
import {formatWhen} from '../lib/output/time.js'
import {currentPlatform, stopOnRequest} from '../lib/platform/index.js'

export default class Signer extends ControlPlaneCommand<typeof Signer> {
  static override summary = "Sign the devices' renewal requests with the local CA, automatically."
  static override description = `Runs where the CA key is (it refuses to start without it), with a Postgres or Supabase control plane. Devices running \`vidsync up\` ask for a new certificate when a third of theirs is left, or at once when it is from an older CA than the newest one they trust (after \`vidsync ca rotate\`); the signer signs their registered key again for the project's lifetime, only for active, non-revoked devices (a new key from \`vidsync key rotate\` only once the operator approved it with \`vidsync device approve PROJECT --key-change DEVICE\`; it refuses and logs an unapproved one), and the devices install it and reload nebula without dropping tunnels. Runs in the foreground until Ctrl-C; --once signs what is pending and exits, for scripts and cron. --install makes it a service of yours that starts at login and again after a failure (a systemd --user unit on Linux, a LaunchAgent on macOS), with the control plane's URL and key in a private signer.env in the home, never in the definition or its command line (a plain \`vidsync signer PROJECT\` falls back on them too); running --install again says it runs already; --uninstall removes both. Where no service manager takes user services (no systemd as PID 1, no login session), --install refuses (exit 6): run it in the foreground or under your own supervisor. Once a signer has served a project, its default device lifetime is 30 days.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio',
    '<%= config.bin %> <%= command.id %> studio --once --json',
    '<%= config.bin %> <%= command.id %> studio --install',
  ]

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {
    once: Flags.boolean({summary: 'Sign what is pending now and exit.', exclusive: ['install', 'uninstall', 'status']}),
    interval: Flags.string({summary: 'How often to look for renewal requests.', default: '15s'}),
    install: Flags.boolean({summary: 'Install the signer as your service, started at login and after a failure.', exclusive: ['uninstall', 'status']}),
    uninstall: Flags.boolean({summary: 'Stop and remove the signer service and its saved settings.', exclusive: ['status']}),
    status: Flags.boolean({summary: 'Say whether the signer service is installed, runs, and is the one --install writes.'}),
  }

  async run(): Promise<SignerPass | SignerServiceResult | SignerServiceStatus> {
    const {project} = this.args
    const intervalSeconds = parseDuration(this.flags.interval, 'interval')
    // The service starts without environment: its control plane is in the private signer.env (also what a second --install reuses).
    this.savedSettings = await savedSignerSettings(this.home, project)
    if (this.flags.install || this.flags.uninstall || this.flags.status) {
      const result = await this.service(intervalSeconds)
      this.log(result.line)
      return result
    }
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
      const pass = await this.withControlPlane((controlPlane) => signPendingRenewals({home: this.home, controlPlane, project}))
      report(pass)
      return pass
    }
    const stop = stopOnRequest()
    let last: SignerPass = {project, signed: [], refused: []}
    try {
      await this.withControlPlane((controlPlane) =>
        runSigner({home: this.home, controlPlane, project, intervalMs: intervalSeconds * 1000, signal: stop.signal, onPass: (pass) => {
          if (!(pass instanceof Error)) last = pass
          report(pass)
        }}),
      )
    } finally {
      stop.dispose()
    }
    return last
  }

  private async service(intervalSeconds: number): Promise<SignerServiceResult | SignerServiceStatus> {
    const {project} = this.args
    const options = {home: this.home, project, platform: currentPlatform()}
    if (this.flags.status) return signerServiceStatus({...options, intervalSeconds})
    if (this.flags.uninstall) return uninstallSignerService(options)
    const {databaseUrl, supabase} = this.storeOptions
    return installSignerService({
      ...options,
      intervalSeconds,
      settings: {VIDSYNC_DATABASE_URL: databaseUrl, VIDSYNC_SUPABASE_URL: supabase?.url, VIDSYNC_SUPABASE_KEY: supabase?.key},
      checkProject: () => this.withControlPlane((controlPlane) => controlPlane.certLifetime({project})),
    })
  }
}
