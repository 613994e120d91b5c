import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {connectFromFlags, connectionFlags} from '../../flags/syncthing.js'
import {declineFolder} from '../../lib/folders/device.js'

export default class SyncDecline extends BaseCommand<typeof SyncDecline> {
  static override summary = 'Decline a project folder that another device offers.'
  static override description = 'Syncthing stops offering it here and `vidsync up` never accepts it on its own; `vidsync sync list` shows it as declined. `vidsync sync accept` still takes it later, once a device offers it again.'
  static override examples = ['<%= config.bin %> <%= command.id %> renders']

  static override args = {
    name: Args.string({description: 'The project folder.', required: true}),
  }

  static override flags = {
    ...connectionFlags,
    project: Flags.string({summary: 'Joined project [default: the only one joined].'}),
  }

  async run(): Promise<{name: string; folderId: string; declinedFrom: string[]}> {
    const {client} = await connectFromFlags(this.home, this.flags)
    const result = await declineFolder({client, home: this.home, project: this.flags.project, name: this.args.name})
    this.log(`Declined folder ${result.name} (offered by ${result.declinedFrom.length} device(s)).`)
    return result
  }
}
