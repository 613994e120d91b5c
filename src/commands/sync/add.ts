import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {connectFromFlags, connectionFlags} from '../../flags/syncthing.js'
import {folderTypes} from '../../lib/syncthing/folders.js'
import {addProjectFolder, type AddProjectFolderResult} from '../../lib/syncthing/project.js'

export default class SyncAdd extends BaseCommand<typeof SyncAdd> {
  static override summary = "Share a folder with the project's devices."
  static override description = `Adds the project's peers (from the manifest installed by \`vidsync join\`) to Syncthing at their overlay addresses, accepting connections from the project's network only, then shares the folder with them. An existing share with the same ID keeps all its devices; it is never moved to another path. New folders keep the last 5 versions of files that peers replace or delete (in .stversions), and where the file system is case-sensitive (probed with a temporary file) Syncthing is told so, which makes many small files sync about 4x faster. The default folder ID is <project>-<folder name>, so devices sharing folders of the same name meet without passing --id.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> ~/Footage',
    '<%= config.bin %> <%= command.id %> ./renders --project studio --type sendonly',
    '<%= config.bin %> <%= command.id %> /data/edit --id studio-edit --json',
  ]

  static override args = {
    folder: Args.string({description: 'Directory to share; it must exist.', required: true}),
  }

  static override flags = {
    ...connectionFlags,
    project: Flags.string({summary: 'Joined project whose devices get the folder [default: the only one joined].'}),
    type: Flags.option({options: folderTypes, summary: 'Folder type [default: sendreceive; an existing share keeps its type].'})(),
    id: Flags.string({summary: 'Syncthing folder ID [default: <project>-<folder name>].'}),
    label: Flags.string({summary: 'Label shown in Syncthing [default: the folder name].'}),
  }

  async run(): Promise<AddProjectFolderResult> {
    const {flags} = this
    const {client} = await connectFromFlags(this.home, flags)
    const result = await addProjectFolder({
      client,
      vidsyncHome: this.home,
      path: this.args.folder,
      project: flags.project,
      folderId: flags.id,
      label: flags.label,
      type: flags.type,
    })
    const names = result.peers.map((peer) => peer.name)
    this.log(
      `${result.created ? 'Sharing' : 'Updated'} ${result.path} as ${result.folderId} (${result.type}) in ${result.project}` +
        (names.length > 0 ? ` with ${names.join(', ')}.` : ': no peer has a Syncthing ID yet.'),
    )
    if (result.skippedPeers.length > 0) this.warn(`not yet shared with ${result.skippedPeers.join(', ')}: no Syncthing ID in the project manifest`)
    return result
  }
}
