import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import type {ManifestSyncLimits} from '../../lib/bundle/manifest.js'
import {formatDuration, parseDuration} from '../../lib/duration.js'
import {InvalidInputError} from '../../lib/errors.js'
import {formatRate, setProjectLimits} from '../../lib/folders/bandwidth.js'
import type {CertLifetime} from '../../lib/store/control-plane.js'

export default class ProjectSet extends ControlPlaneCommand<typeof ProjectSet> {
  static override summary = "Change a project's settings: the lifetime of its device certificates, its default bandwidth limits."
  static override description = `New certificates (register, renew, approve, the signer) get this lifetime; certificates already issued keep theirs. "default" goes back to the default: one year, or 30 days once \`vidsync signer\` serves the project and renews them automatically. A certificate never outlives the CA.

--sync-up and --sync-down set the project's default upload and download limits (kbit, mbit or gbit per second; none: no default), which every device applies unless it set its own with \`vidsync sync limit\`. Devices that joined with an invite apply them within seconds (at their next poll, within about a minute, where the control plane cannot push); with the embedded backend they travel in bundles (\`vidsync device renew\`).`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio --cert-lifetime 90d',
    '<%= config.bin %> <%= command.id %> studio --cert-lifetime default',
    '<%= config.bin %> <%= command.id %> studio --sync-up 50mbit --sync-down 200mbit',
  ]

  static override args = {
    name: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {
    'cert-lifetime': Flags.string({summary: 'Lifetime of new device certificates (e.g. 30d, 365d), or "default".'}),
    'sync-up': Flags.string({summary: "Devices' default upload limit, e.g. 50mbit, or none."}),
    'sync-down': Flags.string({summary: "Devices' default download limit, e.g. 200mbit, or none."}),
  }

  async run(): Promise<{project: string; certLifetime?: CertLifetime; syncLimits?: ManifestSyncLimits}> {
    const {flags} = this
    const project = this.args.name
    const text = flags['cert-lifetime']
    const limits = flags['sync-up'] !== undefined || flags['sync-down'] !== undefined
    if (text === undefined && !limits) throw new InvalidInputError('nothing to set: pass --cert-lifetime, --sync-up or --sync-down')
    const seconds = text === undefined || text === 'default' ? null : parseDuration(text, 'cert-lifetime')
    return this.withControlPlane(async (controlPlane) => {
      const syncLimits = limits ? await setProjectLimits(controlPlane, {project, up: flags['sync-up'], down: flags['sync-down']}) : undefined
      const certLifetime = text === undefined ? undefined : await controlPlane.setCertLifetime({project, seconds})
      if (certLifetime) this.log(`${project}: new device certificates live ${formatDuration(certLifetime.deviceCertSeconds)}${certLifetime.configured ? '' : ' (the default)'}.`)
      const rate = (kib: number | null) => (kib === null ? 'none' : formatRate(kib))
      if (syncLimits) this.log(`${project}: devices without limits of their own upload at ${rate(syncLimits.upKiBps)}, download at ${rate(syncLimits.downKiBps)}.`)
      return {project, ...(certLifetime ? {certLifetime} : {}), ...(syncLimits ? {syncLimits} : {})}
    })
  }
}
