import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {formatDuration, parseDuration} from '../../lib/duration.js'
import type {CertLifetime} from '../../lib/store/control-plane.js'

export default class ProjectSet extends ControlPlaneCommand<typeof ProjectSet> {
  static override summary = "Change a project's settings: the lifetime of its device certificates."
  static override description = `New certificates (register, renew, approve, the signer) get this lifetime; certificates already issued keep theirs. "default" goes back to the default: one year, or 30 days once \`vidsync signer\` serves the project and renews them automatically. A certificate never outlives the CA.`
  static override examples = ['<%= config.bin %> <%= command.id %> studio --cert-lifetime 90d', '<%= config.bin %> <%= command.id %> studio --cert-lifetime default']

  static override args = {
    name: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {
    'cert-lifetime': Flags.string({summary: 'Lifetime of new device certificates (e.g. 30d, 365d), or "default".', required: true}),
  }

  async run(): Promise<{project: string; certLifetime: CertLifetime}> {
    const text = this.flags['cert-lifetime']
    const seconds = text === 'default' ? null : parseDuration(text, 'cert-lifetime')
    const certLifetime = await this.withControlPlane((controlPlane) => controlPlane.setCertLifetime({project: this.args.name, seconds}))
    this.log(`${this.args.name}: new device certificates live ${formatDuration(certLifetime.deviceCertSeconds)}${certLifetime.configured ? '' : ' (the default)'}.`)
    return {project: this.args.name, certLifetime}
  }
}
