import {Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {connectFromFlags, connectionFlags} from '../../flags/syncthing.js'
import {startManagedSyncthing, stopManagedSyncthing} from '../../lib/syncthing/managed.js'
import {currentPlatform} from '../../lib/platform/index.js'

export interface SyncUpResult {
  managed: boolean
  url: string
  deviceId: string
  pid?: number
  adopted?: boolean
  listenAddresses?: string[]
  logPath?: string
  /** Foreground runs only: how Syncthing ended. */
  exitCode?: number
}

export default class SyncUp extends BaseCommand<typeof SyncUp> {
  static override summary = 'Start the Syncthing that vidsync manages, or check the connection to your own.'
  static override description = `The managed Syncthing lives in <home>/syncthing. Its config is written before the first start: global and local discovery, relays, NAT traversal, usage and crash reporting and automatic upgrades off (the Nebula overlay connects the devices), the GUI/API on 127.0.0.1 only, with a random API key that is also stored in <home>/syncthing/apikey (mode 0600). It runs in the foreground until Ctrl-C, or in the background with --detach (stop it with \`vidsync sync down\`); an instance already running for this home is reused. With --syncthing-url vidsync uses your own Syncthing instead and only checks that it answers: its global options are never changed.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> --detach --listen tcp://10.99.1.5:22000',
    '<%= config.bin %> <%= command.id %> --gui-port 8385',
    '<%= config.bin %> <%= command.id %> --syncthing-url http://127.0.0.1:8384 --api-key "$KEY"',
  ]

  static override flags = {
    ...connectionFlags,
    'gui-port': Flags.integer({summary: 'Port of the GUI/API on 127.0.0.1 [default: as configured, 8384 at first].', min: 1, max: 65535}),
    listen: Flags.string({
      summary: 'Where Syncthing listens for peers, e.g. tcp://<overlay-ip>:22000 (repeatable) [default: as configured, tcp://0.0.0.0:22000 at first].',
      multiple: true,
    }),
    detach: Flags.boolean({summary: 'Keep Syncthing running in the background after this command returns.'}),
  }

  async run(): Promise<SyncUpResult> {
    const {flags} = this
    if (flags['syncthing-url'] !== undefined) {
      const {client} = await connectFromFlags(this.home, flags)
      const {myID} = await client.status()
      this.log(`Syncthing at ${client.url} answers; device ID ${myID}.`)
      return {managed: false, url: client.url, deviceId: myID}
    }

    const started = await this.progress('Starting Syncthing', (progress) =>
      startManagedSyncthing({
        vidsyncHome: this.home,
        guiPort: flags['gui-port'],
        listenAddresses: flags.listen,
        detached: flags.detach,
        onProgress: (line) => progress.update(`Syncthing is migrating its database to 2.x (do not stop it): ${line}`),
      }),
    )
    const result: SyncUpResult = {
      managed: true,
      url: started.url,
      deviceId: started.deviceId,
      pid: started.pid,
      adopted: started.adopted,
      listenAddresses: started.listenAddresses,
      logPath: started.logPath,
    }
    this.log(`Syncthing ${started.adopted ? 'is already running' : 'started'} (pid ${started.pid}): device ID ${started.deviceId}, API ${started.url}, listening on ${started.listenAddresses.join(', ')}.`)
    if (!started.exited) return result

    this.log('Press Ctrl-C to stop it.')
    // Stop Syncthing by its PID whichever way this process is asked to end, then report how it ended.
    const stop = () => void stopManagedSyncthing({vidsyncHome: this.home})
    const stopListening = currentPlatform().onServiceRequests({stop})
    try {
      const end = await started.exited
      this.log(`Syncthing stopped${end.signal ? ` (${end.signal})` : ''}.`)
      return {...result, exitCode: end.exitCode}
    } finally {
      stopListening()
    }
  }
}
