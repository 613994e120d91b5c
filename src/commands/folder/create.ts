import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {accessModes, createFolder, type ProjectFolder} from '../../lib/folders/store.js'

export default class FolderCreate extends ControlPlaneCommand<typeof FolderCreate> {
  static override summary = 'Create a project folder that devices share.'
  static override description = `A project folder has a stable ID and a name, independent of where devices keep it: \`vidsync sync add DIR --name NAME\` shares any directory as it, and every device derives the same Syncthing folder ID (<project>.<id>) from it. Devices registered or renewed afterwards find it in their bundle; devices that joined with an invite learn it on their next refresh. With --auto-accept, devices accept it on their own into ~/vidsync/<project>/<name>.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio footage',
    '<%= config.bin %> <%= command.id %> studio renders --auto-accept --default-mode receive-only',
  ]

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
    name: Args.string({description: 'Folder name: 1-63 lowercase letters, digits and hyphens.', required: true}),
  }

  static override flags = {
    'auto-accept': Flags.boolean({summary: 'Devices accept the folder on their own, into ~/vidsync/<project>/<name>.'}),
    'default-mode': Flags.option({options: accessModes, summary: 'Access of devices no rule names [default: send-receive].'})(),
  }

  async run(): Promise<ProjectFolder> {
    const {args, flags} = this
    const folder = await this.withControlPlane((controlPlane) =>
      createFolder(controlPlane, {project: args.project, name: args.name, autoAccept: flags['auto-accept'], defaultMode: flags['default-mode']}),
    )
    this.log(`Created folder ${folder.name} (id ${folder.id}) in ${folder.project}. Devices share it with: vidsync sync add DIR --name ${folder.name}`)
    return folder
  }
}
