import {Args} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import type {PoolStatus} from '../../lib/store/control-plane.js'

export default class PoolStatusCommand extends ControlPlaneCommand<typeof PoolStatusCommand> {
  static override summary = "Count a project's addresses by state."
  static override description = 'Total, allocated, quarantined (released and resting) and free addresses of the project pool.'
  static override examples = ['<%= config.bin %> <%= command.id %> studio', '<%= config.bin %> <%= command.id %> studio --json']

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
  }

  async run(): Promise<PoolStatus> {
    const status = await this.withControlPlane((controlPlane) => controlPlane.poolStatus({project: this.args.project}))
    this.log(`${status.project} ${status.cidr}`)
    this.log(`  total        ${status.total}`)
    this.log(`  allocated    ${status.allocated}`)
    this.log(`  quarantined  ${status.quarantined}`)
    this.log(`  free         ${status.free}`)
    return status
  }
}
