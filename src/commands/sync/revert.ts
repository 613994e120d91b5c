import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {connectFromFlags, connectionFlags} from '../../flags/syncthing.js'
import {revertLocalChanges, type RevertResult} from '../../lib/folders/device.js'

export default class SyncRevert extends BaseCommand<typeof SyncRevert> {
  static override summary = "Undo this device's local changes to a receive-only folder."
  static override description = 'A receive-only device never sends its changes; `vidsync sync list` counts them. This brings back the project\'s version of each changed file and removes files added here.'
  static override examples = ['<%= config.bin %> <%= command.id %> footage']

  static override args = {
    name: Args.string({description: 'The project folder.', required: true}),
  }

  static override flags = {
    ...connectionFlags,
    project: Flags.string({summary: 'Joined project [default: the only one joined].'}),
  }

  async run(): Promise<RevertResult> {
    const {client} = await connectFromFlags(this.home, this.flags)
    const result = await revertLocalChanges({client, home: this.home, project: this.flags.project, name: this.args.name})
    this.log(`Reverting ${result.localChanges} local change(s) in ${result.path}.`)
    return result
  }
}
