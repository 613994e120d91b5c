import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {connectFromFlags, connectionFlags} from '../../flags/syncthing.js'
import {InvalidInputError} from '../../lib/errors.js'
import {shareProjectFolder, type ShareFolderResult} from '../../lib/folders/device.js'
import {folderTypes} from '../../lib/syncthing/folders.js'
import {addProjectFolder, type AddProjectFolderResult} from '../../lib/syncthing/project.js'

export default class SyncAdd extends ControlPlaneCommand<typeof SyncAdd> {
  static override summary = 'Share a directory as one of the project\'s folders.'
  static override description = `Shares DIR as the project folder --name (default: the directory's name in lowercase with hyphens). Every device derives the same Syncthing folder ID from the project and the folder's stable ID (<project>.<id>), so devices with differently named directories share one folder; the project's other devices are offered it (\`vidsync sync accept\`). The folder must be in the project: listed in this device's bundle (\`vidsync folder create\` on the operator's side, then a renewed bundle), or, for a device that joined with an invite and a shared control plane, created there now. Its type and the devices it is shared with follow the folder's access rules. The folder gets a shared ignore file (.vidsync-ignore, media defaults) that syncs and that .stignore includes. New folders keep the last 5 versions of replaced or deleted files (in .stversions). With --id the directory is shared under that Syncthing folder ID instead, outside the project's folders (as vidsync did before project folders).`
  static override examples = [
    '<%= config.bin %> <%= command.id %> ~/dataA/Footage --name footage',
    '<%= config.bin %> <%= command.id %> ~/renders --project studio',
    '<%= config.bin %> <%= command.id %> /data/edit --id studio-edit --type sendonly --json',
  ]

  static override args = {
    folder: Args.string({description: 'Directory to share; it must exist and be writable.', required: true}),
  }

  static override flags = {
    ...connectionFlags,
    project: Flags.string({summary: "Joined project whose devices get the folder [default: the only one joined]."}),
    name: Flags.string({summary: "The project folder's name [default: the directory's name].", exclusive: ['id']}),
    id: Flags.string({summary: 'Share under this Syncthing folder ID, outside the project folders.', exclusive: ['name']}),
    type: Flags.option({options: folderTypes, summary: 'Folder type, with --id only (a project folder follows its access rules).'})(),
    label: Flags.string({summary: 'Label shown in Syncthing, with --id only [default: the folder name].'}),
  }

  async run(): Promise<ShareFolderResult | AddProjectFolderResult> {
    const {flags} = this
    const {client} = await connectFromFlags(this.home, flags)
    if (flags.id === undefined) {
      if (flags.type !== undefined || flags.label !== undefined) {
        throw new InvalidInputError('--type and --label only apply with --id: a project folder follows its access rules and is labelled with its name')
      }
      const result = await this.withDeviceControlPlane((controlPlane) =>
        shareProjectFolder({client, home: this.home, project: flags.project, path: this.args.folder, name: flags.name, controlPlane}),
      )
      this.log(`${result.created ? 'Sharing' : 'Updated'} ${result.path} as folder ${result.name} of ${result.project} (${result.mode}, Syncthing ID ${result.folderId}) with ${result.devices.length} device(s).`)
      if (result.mode === 'receive-only') this.log('This device is receive-only for it: local changes are never sent (`vidsync sync list` shows them, `vidsync sync revert` undoes them).')
      return result
    }
    const result = await addProjectFolder({client, vidsyncHome: this.home, path: this.args.folder, project: flags.project, folderId: flags.id, label: flags.label, type: flags.type})
    const names = result.peers.map((peer) => peer.name)
    this.log(`${result.created ? 'Sharing' : 'Updated'} ${result.path} as ${result.folderId} (${result.type}) in ${result.project}` + (names.length > 0 ? ` with ${names.join(', ')}.` : ': no peer has a Syncthing ID yet.'))
    if (result.skippedPeers.length > 0) this.warn(`not yet shared with ${result.skippedPeers.join(', ')}: no Syncthing ID in the project manifest`)
    return result
  }
}
