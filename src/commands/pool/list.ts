import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {renderTable} from '../../lib/output/table.js'
import {tableFlags} from '../../flags/table.js'
import type {PoolEntry} from '../../lib/store/control-plane.js'

export default class PoolList extends ControlPlaneCommand<typeof PoolList> {
  static override summary = "List a project's addresses."
  static override description = 'Every address of the pool with its state (free, allocated, quarantined) and the device that holds it.'
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio --allocated',
    '<%= config.bin %> <%= command.id %> studio --json',
  ]

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {
    ...tableFlags,
    allocated: Flags.boolean({summary: 'Only addresses held by a device.'}),
  }

  async run(): Promise<{project: string; addresses: PoolEntry[]}> {
    const addresses = await this.withControlPlane((controlPlane) =>
      controlPlane.poolList({project: this.args.project, allocatedOnly: this.flags.allocated}),
    )
    this.log(
      renderTable(addresses, [
        {header: 'ip', get: (a) => a.ip},
        {header: 'state', get: (a) => a.state},
        {header: 'device', get: (a) => a.device},
        {header: 'until', get: (a) => a.quarantinedUntil},
      ], {columns: this.flags.columns, noHeader: this.flags['no-header']}),
    )
    return {project: this.args.project, addresses}
  }
}
