import {Args} from '@oclif/core'

import {BaseCommand} from '../base-command.js'
import {bringDown} from '../lib/up/up.js'

export default class Down extends BaseCommand<typeof Down> {
  static override summary = 'Stop what `vidsync up` started on this device.'
  static override description = 'Stops the background reconcile loop, the managed Syncthing and Nebula, each by the PID it recorded. Safe to run when nothing runs.'
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> studio --json']

  static override args = {
    project: Args.string({description: 'Joined project [default: the only one joined].'}),
  }

  async run() {
    const result = await bringDown({home: this.home, project: this.args.project})
    this.log(
      `Stopped: loop ${result.loopStopped ? 'yes' : 'was not running'}, Syncthing ${result.syncthing.stopped ? 'yes' : 'was not running'}, Nebula ${result.nebula.stopped ? 'yes' : 'was not running'}.`,
    )
    return result
  }
}
