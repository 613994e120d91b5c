import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {setAutoAccept} from '../../lib/folders/device.js'

export default class SyncAutoAccept extends BaseCommand<typeof SyncAutoAccept> {
  static override summary = 'Accept every folder the project offers on this device on its own, or only those the project marks.'
  static override description = `on: the \`vidsync up\` loop accepts every project folder another device offers (and this device has access to), as it does for folders created with --auto-accept. off: only those. Folders accepted without a directory go to DIR/<folder> with --into (kept for \`vidsync sync accept\` too), else ~/vidsync/<project>/<folder>; the loop never accepts into an existing non-empty directory, nor a folder larger than the free space there. DIR may not exist yet; a file is refused (exit 2).`
  static override examples = ['<%= config.bin %> <%= command.id %> on', '<%= config.bin %> <%= command.id %> on --into /media/raid/studio', '<%= config.bin %> <%= command.id %> off']

  static override args = {
    state: Args.string({description: 'on or off.', required: true, options: ['on', 'off']}),
  }

  static override flags = {
    into: Flags.string({summary: 'Where accepted folders go: DIR/<folder> [default: ~/vidsync/<project>].'}),
    project: Flags.string({summary: 'Joined project [default: the only one joined].'}),
  }

  async run(): Promise<{project: string; autoAccept: boolean; folderRoot: string}> {
    const result = await setAutoAccept({home: this.home, project: this.flags.project, enabled: this.args.state === 'on', into: this.flags.into})
    this.log(`${result.project}: ${result.autoAccept ? 'every offered folder is accepted' : 'only folders the project marks are accepted'} on its own, into ${result.folderRoot}/<folder>.`)
    return result
  }
}
