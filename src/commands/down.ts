import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../base-command.js'
import {bringDown, type DownResult} from '../lib/up/up.js'

export default class Down extends BaseCommand<typeof Down> {
  static override summary = 'Stop what `vidsync up` started on this device.'
  static override description =
    'Asks the agent to stop (it shuts Syncthing down through its REST API) and the nebula service to stop, over their control sockets (through the service manager where it runs nebula itself, as on Windows): no pid files, and no administrator rights needed. --uninstall also removes both services (the agent\'s user service and the nebula system service; needs sudo or an elevated prompt, checked before anything is stopped). Safe to run when nothing runs.'
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> studio --json', 'sudo <%= config.bin %> <%= command.id %> --uninstall']

  static override args = {
    project: Args.string({description: 'Joined project [default: the only one joined].'}),
  }

  static override flags = {
    uninstall: Flags.boolean({summary: "Also remove the project's services: nebula's system service and the agent's login service (needs sudo)."}),
  }

  async run(): Promise<DownResult> {
    const result = await bringDown({home: this.home, project: this.args.project, uninstall: this.flags.uninstall})
    this.log(
      `Stopped: loop ${result.loopStopped ? 'yes' : 'was not running'}, Syncthing ${result.syncthing.stopped ? 'yes' : 'was not running'}, Nebula ${result.nebula.stopped ? 'yes' : 'was not running'}.`,
    )
    if (result.uninstalled.length > 0) this.log(`Removed: ${result.uninstalled.join(', ')}.`)
    return result
  }
}
