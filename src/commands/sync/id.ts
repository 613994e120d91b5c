import {BaseCommand} from '../../base-command.js'
import {syncthingDeviceId} from '../../lib/syncthing/managed.js'

export default class SyncId extends BaseCommand<typeof SyncId> {
  static override summary = "Print this device's Syncthing ID."
  static override description = "The operator passes it to `vidsync device register --syncthing-id`, so the project's other devices can share folders with this one. Sets up the managed Syncthing (keys and safe config, not started) the first time."
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  async run(): Promise<{deviceId: string}> {
    const deviceId = await syncthingDeviceId({vidsyncHome: this.home})
    this.log(deviceId)
    this.log(`Next: send this ID and your public key to the operator, who runs: vidsync device register PROJECT --name NAME --public-key node.pub --syncthing-id ${deviceId}`)
    return {deviceId}
  }
}
