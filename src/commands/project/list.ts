import {ControlPlaneCommand} from '../../base-command.js'
import {formatDuration} from '../../lib/duration.js'
import {renderTable} from '../../lib/output/table.js'
import {tableFlags} from '../../flags/table.js'
import type {ProjectSummary} from '../../lib/store/control-plane.js'

export default class ProjectList extends ControlPlaneCommand<typeof ProjectList> {
  static override summary = 'List projects with their networks and pool usage.'
  static override description = 'Shows every project in the control plane: its overlay network, address quarantine, and how much of its pool is allocated.'
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  static override flags = {...tableFlags}

  async run(): Promise<{projects: ProjectSummary[]}> {
    const projects = await this.withControlPlane((controlPlane) => controlPlane.listProjects())
    if (projects.length === 0) this.log('No projects yet: create one with `vidsync project create NAME --cidr 10.99.1.0/24`.')
    else
      this.log(
        renderTable(projects, [
          {header: 'name', get: (p) => p.name},
          {header: 'cidr', get: (p) => p.cidr},
          {header: 'pool', get: (p) => p.poolSize},
          {header: 'allocated', get: (p) => p.allocated},
          {header: 'quarantine', get: (p) => formatDuration(p.quarantineSeconds)},
        ], {columns: this.flags.columns, noHeader: this.flags['no-header']}),
      )
    return {projects}
  }
}
