import {BaseCommand} from '../../base-command.js'
import {formatBytes} from '../../lib/output/status.js'
import {renderTable} from '../../lib/output/table.js'
import {tableFlags} from '../../flags/table.js'
import {connectFromFlags, connectionFlags} from '../../flags/syncthing.js'
import {Flags} from '@oclif/core'

import {InvalidInputError, NotFoundError} from '../../lib/errors.js'
import {describeLimit, type DeviceLimits} from '../../lib/folders/bandwidth.js'
import {projectFolderStates, type ProjectFolderState} from '../../lib/folders/device.js'
import {listFolders, type FolderState} from '../../lib/syncthing/folders.js'

export default class SyncList extends BaseCommand<typeof SyncList> {
  static override summary = "List the project's folders (shared, offered, declined) and every Syncthing folder here."
  static override description = 'First the joined project\'s folders: shared here (with size and state), offered by another device (`vidsync sync accept NAME`), declined, available (no device offers it yet) or without access. A receive-only device never sends its local changes: their count shows, and `vidsync sync revert NAME` undoes them. Then this device\'s upload and download limits and where each comes from (its own `vidsync sync limit`, the project\'s default, or none; with several projects joined, the smallest of their limits and the project it belongs to), and every folder of this Syncthing with how complete it is.'
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  static override flags = {...connectionFlags, ...tableFlags, project: Flags.string({summary: 'Joined project [default: the only one joined].'})}

  async run(): Promise<{project: string | null; projectFolders: ProjectFolderState[]; bandwidth: DeviceLimits | null; folders: FolderState[]}> {
    const {client} = await connectFromFlags(this.home, this.flags)
    // No project joined here (or several, and none named): no project folders to show.
    const joined = await projectFolderStates({client, home: this.home, project: this.flags.project}).catch((error: unknown) => {
      if ((error instanceof NotFoundError || error instanceof InvalidInputError) && this.flags.project === undefined) return {project: null, folders: [], bandwidth: null}
      throw error
    })
    const folders = await listFolders({client})
    if (joined.folders.length > 0) {
      this.log(
        renderTable(joined.folders, [
          {header: 'folder', get: (folder) => folder.name},
          {header: 'state', get: (folder) => (folder.state === 'shared' ? `shared, ${folder.syncState}` : folder.state)},
          {header: 'access', get: (folder) => folder.mode},
          {header: 'path', get: (folder) => folder.path},
          {header: 'size', get: (folder) => (folder.sizeBytes === null ? null : formatBytes(folder.sizeBytes))},
          {header: 'local changes', get: (folder) => (folder.localChanges === null ? null : `${folder.localChanges} not sent`)},
        ], {columns: this.flags.columns, noHeader: this.flags['no-header']}),
      )
      for (const folder of joined.folders) {
        if (folder.state === 'offered') this.log(`${folder.name} is offered: accept it with \`vidsync sync accept ${folder.name} [DIR]\`.`)
        if (folder.localChanges) this.log(`${folder.name} is receive-only here: ${folder.localChanges} local change(s) are never sent; undo them with \`vidsync sync revert ${folder.name}\`.`)
      }
    }
    const {bandwidth} = joined
    if (bandwidth) this.log(`Bandwidth: upload ${describeLimit(bandwidth, 'up')}, download ${describeLimit(bandwidth, 'down')}.`)
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
    return {project: joined.project, projectFolders: joined.folders, bandwidth, folders}
  }
}
