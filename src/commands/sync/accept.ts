import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {connectFromFlags, connectionFlags} from '../../flags/syncthing.js'
import {acceptFolder, type AcceptResult} from '../../lib/folders/device.js'
import {formatBytes} from '../../lib/output/status.js'

export default class SyncAccept extends BaseCommand<typeof SyncAccept> {
  static override summary = 'Accept a project folder that another device offers.'
  static override description = `Shares DIR (created when missing) as the project folder NAME, with the devices of the project that have access; its type follows this device's access. Without DIR the folder goes to ~/vidsync/<project>/<name>, which must be missing or empty. Only offers from devices of the project count (configured at their overlay address; Nebula checked their certificate). Before anything is set up, the folder's size (as the last device sharing it reported to the control plane; bundles carry it too) is compared with the free space where it goes: it must leave 2 GB free, the minDiskFree floor vidsync gives Syncthing (a size nobody reported yet is not checked; Syncthing then stops at that floor). Nothing is written when a check fails: an offer that is gone (exit 3), a directory that is a file, not writable, or inside another shared folder (exit 2 or 4), not enough free space (exit 5).`
  static override examples = ['<%= config.bin %> <%= command.id %> footage', '<%= config.bin %> <%= command.id %> footage ~/Projects/footage --json']

  static override args = {
    name: Args.string({description: 'The project folder, as `vidsync sync list` shows it.', required: true}),
    dir: Args.string({description: 'Where to keep it [default: ~/vidsync/<project>/<name>].'}),
  }

  static override flags = {
    ...connectionFlags,
    project: Flags.string({summary: 'Joined project [default: the only one joined].'}),
  }

  async run(): Promise<AcceptResult> {
    const {client} = await connectFromFlags(this.home, this.flags)
    const result = await acceptFolder({client, home: this.home, project: this.flags.project, name: this.args.name, path: this.args.dir})
    const size = result.sizeBytes === null ? 'size not reported yet' : `${formatBytes(result.sizeBytes)}, ${formatBytes(result.freeBytes)} free`
    this.log(`Accepted folder ${result.name} of ${result.project} into ${result.path} (${result.type}, ${size}), offered by ${result.offeredBy.length} device(s).`)
    return result
  }
}
