import {Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {type RetiredCas, retireOldCas} from '../../lib/pki/rotation.js'

export default class CaRetireOld extends ControlPlaneCommand<typeof CaRetireOld> {
  static override summary = 'Stop trusting the CAs that `ca rotate` replaced.'
  static override description = `Removes every CA but the current one from every project, so devices drop it at their next refresh and new bundles leave it out. Refused (exit 4, nothing retired) while an active device still holds a certificate that an old CA signed: the error lists them; renew them first, or pass --force to cut them off.`
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --force --json']

  static override flags = {
    force: Flags.boolean({summary: 'Retire even while active devices hold certificates from an old CA (they lose the overlay until renewed).'}),
  }

  async run(): Promise<{projects: RetiredCas[]}> {
    const projects = await this.withControlPlane((controlPlane) => retireOldCas({home: this.home, controlPlane, force: this.flags.force}))
    if (projects.length === 0) this.log('No project trusts an old CA: nothing to retire.')
    for (const project of projects) {
      this.log(`${project.project}: retired ${project.retired.join(', ')}`)
      for (const holder of project.holders) this.logToStderr(`Warning: ${project.project}/${holder.device} still holds a certificate from ${holder.issuer}: it needs a new bundle (vidsync device renew)`)
    }
    return {projects}
  }
}
