import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {accessModes, type ProjectFolder, setFolderAccess} from '../../lib/folders/store.js'

export default class FolderAccess extends ControlPlaneCommand<typeof FolderAccess> {
  static override summary = 'Set who may send and receive a project folder.'
  static override description = `Modes: send-receive, send-only, receive-only (local changes are never sent), none (not shared with the device). A device's own rule wins over its groups'; a device in groups whose rules disagree must get its own rule (the change is refused otherwise, exit 4). --default sets the access of devices no rule names. The \`up\` loop applies it: Syncthing's folder type and the devices the folder is shared with.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio footage --group editors --mode send-receive',
    '<%= config.bin %> <%= command.id %> studio footage --device review-mac --mode receive-only',
    '<%= config.bin %> <%= command.id %> studio footage --default --mode none',
    '<%= config.bin %> <%= command.id %> studio footage --group editors --remove',
  ]

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
    name: Args.string({description: 'Folder name.', required: true}),
  }

  static override flags = {
    group: Flags.string({summary: 'The rule is for this group.', exactlyOne: ['group', 'device', 'default']}),
    device: Flags.string({summary: 'The rule is for this device.', exactlyOne: ['group', 'device', 'default']}),
    default: Flags.boolean({summary: 'Set the access of devices no rule names.', exactlyOne: ['group', 'device', 'default']}),
    mode: Flags.option({options: accessModes, summary: 'The access.', exactlyOne: ['mode', 'remove']})(),
    remove: Flags.boolean({summary: 'Remove the rule for the group or device.', exactlyOne: ['mode', 'remove']}),
  }

  async run(): Promise<ProjectFolder> {
    const {args, flags} = this
    const target = flags.group !== undefined ? {group: flags.group} : flags.device !== undefined ? {device: flags.device} : {default: true as const}
    const folder = await this.withControlPlane((controlPlane) => setFolderAccess(controlPlane, {project: args.project, name: args.name, target, mode: flags.mode}))
    const who = flags.group !== undefined ? `group ${flags.group}` : flags.device !== undefined ? `device ${flags.device}` : 'devices no rule names'
    this.log(`${folder.name}: ${who} ${flags.mode ? `now ${flags.mode}` : 'follows the other rules again'}.`)
    return folder
  }
}
