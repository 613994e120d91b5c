import {Args} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {connectFromFlags, connectionFlags} from '../../flags/syncthing.js'
import {removeFolder} from '../../lib/syncthing/folders.js'

export default class SyncRemove extends BaseCommand<typeof SyncRemove> {
  static override summary = 'Stop sharing a folder.'
  static override description = 'Removes the folder from Syncthing on this device. Its files stay on disk; the devices stay configured for other folders.'
  static override examples = ['<%= config.bin %> <%= command.id %> studio-footage']

  static override args = {
    'folder-id': Args.string({description: 'Folder ID, as shown by `vidsync sync list`.', required: true}),
  }

  static override flags = {...connectionFlags}

  async run(): Promise<{folderId: string; label: string; path: string}> {
    const {client} = await connectFromFlags(this.home, this.flags)
    const result = await removeFolder({client, folderId: this.args['folder-id']})
    this.log(`Stopped sharing ${result.folderId}; its files stay in ${result.path}.`)
    return result
  }
}
