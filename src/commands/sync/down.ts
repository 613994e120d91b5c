import {BaseCommand} from '../../base-command.js'
import {stopManagedSyncthing, type StopManagedResult} from '../../lib/syncthing/managed.js'

export default class SyncDown extends BaseCommand<typeof SyncDown> {
  static override summary = 'Stop the Syncthing that vidsync manages.'
  static override description = 'Stops the instance started by `vidsync sync up --detach`, by the PID in <home>/syncthing/syncthing.pid after checking that this PID is that Syncthing. Does nothing when it is not running; your own Syncthing is never stopped.'
  static override examples = ['<%= config.bin %> <%= command.id %>']

  async run(): Promise<StopManagedResult> {
    const result = await stopManagedSyncthing({vidsyncHome: this.home})
    this.log(result.stopped ? `Stopped Syncthing (pid ${result.pid}).` : 'The managed Syncthing is not running.')
    return result
  }
}
