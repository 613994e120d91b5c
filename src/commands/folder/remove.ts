import {Args} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {removeProjectFolder} from '../../lib/folders/store.js'

export default class FolderRemove extends ControlPlaneCommand<typeof FolderRemove> {
  static override summary = 'Remove a project folder.'
  static override description = 'Devices stop being offered the folder (bundles issued afterwards and refreshes no longer list it). Files stay on every device, and devices that share it keep their Syncthing share until they run `vidsync sync remove`.'
  static override examples = ['<%= config.bin %> <%= command.id %> studio footage']

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
    name: Args.string({description: 'Folder name.', required: true}),
  }

  async run(): Promise<{project: string; id: string; name: string}> {
    const removed = await this.withControlPlane((controlPlane) => removeProjectFolder(controlPlane, {project: this.args.project, name: this.args.name}))
    this.log(`Removed folder ${removed.name} (id ${removed.id}) from ${removed.project}; files stay on the devices.`)
    return removed
  }
}
