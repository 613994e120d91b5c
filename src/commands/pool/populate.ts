import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import type {PopulateResult} from '../../lib/store/control-plane.js'

export default class PoolPopulate extends ControlPlaneCommand<typeof PoolPopulate> {
  static override summary = "Fill a project's address pool."
  static override description = `Adds one pool entry per host address of the project's network, or of --cidr inside it. The network and broadcast addresses are never handed out. Running it again adds only what is missing.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio',
    '<%= config.bin %> <%= command.id %> lab --cidr 10.98.4.0/22',
  ]

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {
    cidr: Flags.string({summary: "Populate only this part of the project's network."}),
  }

  async run(): Promise<PopulateResult> {
    const result = await this.withControlPlane((controlPlane) =>
      controlPlane.populatePool({project: this.args.project, cidr: this.flags.cidr}),
    )
    this.log(`Added ${result.added} addresses from ${result.cidr} to ${result.project}; the pool now holds ${result.total}.`)
    this.log(`Next: vidsync lighthouse add ${result.project} --name lh1 --endpoint HOST:4242 --generate-key --out lh1.zip`)
    return result
  }
}
