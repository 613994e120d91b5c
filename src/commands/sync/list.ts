import {BaseCommand} from '../../base-command.js'
import {renderTable} from '../../lib/output/table.js'
import {tableFlags} from '../../flags/table.js'
import {connectFromFlags, connectionFlags} from '../../flags/syncthing.js'
import {listFolders, type FolderState} from '../../lib/syncthing/folders.js'

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

function formatBytes(bytes: number): string {
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`
}

export default class SyncList extends BaseCommand<typeof SyncList> {
  static override summary = 'List shared folders and how complete they are here.'
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  static override flags = {...connectionFlags, ...tableFlags}

  async run(): Promise<{folders: FolderState[]}> {
    const {client} = await connectFromFlags(this.home, this.flags)
    const folders = await listFolders({client})
    if (folders.length === 0) {
      this.log('No shared folders: add one with `vidsync sync add <folder>`.')
    } else {
      this.log(
        renderTable(folders, [
          {header: 'id', get: (folder) => folder.folderId},
          {header: 'path', get: (folder) => folder.path},
          {header: 'type', get: (folder) => folder.type},
          {header: 'state', get: (folder) => folder.error ?? folder.state},
          {header: 'done', get: (folder) => `${Math.floor(folder.completion)}%`},
          {header: 'need', get: (folder) => formatBytes(folder.needBytes)},
          {header: 'total', get: (folder) => formatBytes(folder.globalBytes)},
          {header: 'peers', get: (folder) => folder.devices.length},
        ], {columns: this.flags.columns, noHeader: this.flags['no-header']}),
      )
    }
    return {folders}
  }
}
