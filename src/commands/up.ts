import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../base-command.js'
import {parseDuration} from '../lib/duration.js'
import type {ControlPlane} from '../lib/store/control-plane.js'
import {bringDown, bringUp, detachLoop, reconcileLoop, type UpResult} from '../lib/up/up.js'

export default class Up extends ControlPlaneCommand<typeof Up> {
  static override summary = 'Bring this device up: overlay, Syncthing, and peers kept in step.'
  static override description = `The one command after \`vidsync join\`: starts Nebula, then the managed Syncthing listening on this device's overlay address only, then keeps reconciling: the project's peers become Syncthing devices at their overlay addresses, and devices that connect from inside the overlay (their Nebula certificate proves membership) are accepted and get the project's folders, the moment Syncthing reports them (otherwise every --interval). A device that joins later meshes without a manual step. Runs until Ctrl-C (then stops what it started), or in the background with --detach (stop it with \`vidsync down\`).`
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> studio --detach --json']

  static override args = {
    project: Args.string({description: 'Joined project [default: the only one joined].'}),
  }

  static override flags = {
    detach: Flags.boolean({summary: 'Return once everything is up; a background process keeps reconciling.'}),
    interval: Flags.string({summary: 'Time between reconcile passes; a device that connects wakes the loop at once.', default: '10s'}),
    'gui-port': Flags.integer({summary: "Port of Syncthing's GUI/API on 127.0.0.1 [default: 8384].", min: 1, max: 65535}),
    timeout: Flags.string({summary: 'How long to wait for the overlay and a lighthouse.', default: '20s'}),
  }

  async run(): Promise<UpResult & {loopPid?: number}> {
    // Devices that joined with an invite refresh from a shared control plane; the embedded
    // database is the operator's, never a device's.
    const {databaseUrl, supabase} = this.storeOptions
    if (!databaseUrl && !supabase) return this.runUp()
    return this.withControlPlane((controlPlane) => this.runUp(controlPlane))
  }

  private async runUp(controlPlane?: ControlPlane): Promise<UpResult & {loopPid?: number}> {
    const intervalSeconds = parseDuration(this.flags.interval, 'interval')
    const {client, ...result} = await this.progress('Starting Nebula and Syncthing', () => bringUp({
      controlPlane,
      home: this.home,
      project: this.args.project,
      guiPort: this.flags['gui-port'],
      nebulaTimeoutMs: parseDuration(this.flags.timeout, 'timeout') * 1000,
    }))
    this.log(`${result.project}: overlay ${result.overlayIp} up, Syncthing ${result.syncthing.deviceId.slice(0, 7)} on ${result.syncthing.listenAddresses.join(', ')}.`)
    this.log(`Folders: ${result.reconcile.folders.join(', ') || 'none yet (add one with `vidsync sync add DIR`)'}.`)
    if (this.flags.detach) {
      const {databaseUrl, supabase} = this.storeOptions
      const env = {
        ...(databaseUrl ? {VIDSYNC_DATABASE_URL: databaseUrl} : {}),
        ...(supabase ? {VIDSYNC_SUPABASE_URL: supabase.url} : {}),
      }
      const loop = await detachLoop({home: this.home, project: result.project, intervalSeconds, env})
      this.log(`Reconciling in the background (pid ${loop.pid}, log ${loop.logPath}); stop with \`vidsync down\`.`)
      this.log('Next: vidsync sync add DIR, then vidsync status --watch')
      return {...result, loopPid: loop.pid}
    }
    this.log(`Reconciling every ${this.flags.interval}; Ctrl-C stops everything.`)
    const stop = new AbortController()
    const abort = () => stop.abort()
    process.once('SIGINT', abort)
    process.once('SIGTERM', abort)
    try {
      await reconcileLoop({
        client,
        controlPlane,
        home: this.home,
        project: result.project,
        intervalMs: intervalSeconds * 1000,
        signal: stop.signal,
        onPass: (pass) => {
          if (pass instanceof Error) this.logToStderr(`reconcile failed, retrying: ${pass.message}`)
          else {
            for (const device of pass.accepted) this.log(`accepted ${device.name || device.deviceId} from ${device.address}`)
            const updated = [pass.refresh?.blocklistChanged && 'blocklist', pass.refresh?.lighthousesChanged && 'lighthouses'].filter(Boolean)
            if (updated.length > 0) this.log(`${updated.join(' and ')} updated${pass.refresh?.nebulaReloaded ? '; nebula reloaded' : ''}`)
            if (pass.refresh?.lighthousesRefused) this.logToStderr(`new lighthouses not applied, retrying: ${pass.refresh.lighthousesRefused}`)
          }
        },
      })
    } finally {
      process.off('SIGINT', abort)
      process.off('SIGTERM', abort)
      await bringDown({home: this.home, project: result.project})
    }
    return result
  }
}
