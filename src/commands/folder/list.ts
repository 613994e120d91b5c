import {Args} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {tableFlags} from '../../flags/table.js'
import {listProjectFolders, type ProjectFolder} from '../../lib/folders/store.js'
import {renderTable} from '../../lib/output/table.js'

export default class FolderList extends ControlPlaneCommand<typeof FolderList> {
  static override summary = "List a project's folders and who may access them."
  static override examples = ['<%= config.bin %> <%= command.id %> studio', '<%= config.bin %> <%= command.id %> studio --json']

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {...tableFlags}

  async run(): Promise<{project: string; folders: ProjectFolder[]}> {
    const folders = await this.withControlPlane((controlPlane) => listProjectFolders(controlPlane, {project: this.args.project}))
    this.log(
      renderTable(folders, [
        {header: 'name', get: (f) => f.name},
        {header: 'id', get: (f) => f.id},
        {header: 'default', get: (f) => f.defaultMode},
        {header: 'access', get: (f) => f.access.map((rule) => `${rule.kind} ${rule.subject}: ${rule.mode}`).join(', ') || null},
        {header: 'auto-accept', get: (f) => (f.autoAccept ? 'yes' : 'no')},
        {header: 'created by', get: (f) => f.createdBy ?? 'operator'},
      ], {columns: this.flags.columns, noHeader: this.flags['no-header']}),
    )
    return {project: this.args.project, folders}
  }
}
