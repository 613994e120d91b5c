import {setTimeout as sleep} from 'node:timers/promises'

import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../base-command.js'
import {parseDuration} from '../lib/duration.js'
import type {ControlPlane} from '../lib/store/control-plane.js'
import {askAgent, bringDown, bringUp, runAgent, type UpResult} from '../lib/up/up.js'
import {resolveProjectDir} from '../lib/project/joined-project.js'
import {agentEnvPath, readServiceSettings} from '../lib/up/services.js'
import {stopOnRequest} from '../lib/platform/index.js'

/** Resolves on Ctrl-C or a request to end, or when `gone()` says the agent ended (stopped by `vidsync down`). */
async function untilStopped(gone: () => Promise<boolean>): Promise<void> {
  const stop = stopOnRequest()
  try {
    while (!stop.signal.aborted && !(await gone())) await sleep(1000, undefined, {signal: stop.signal}).catch(() => {})
  } finally {
    stop.dispose()
  }
}

export default class Up extends ControlPlaneCommand<typeof Up> {
  static override summary = 'Bring this device up: overlay, Syncthing, and peers kept in step.'
  static override description = `The one command after \`vidsync join\`. Nebula runs as a system service (the only part that needs administrator rights): when it is not installed yet, \`up\` installs it in one elevated step and says what it installs first (run as a user, it asks sudo, or UAC on Windows; \`sudo vidsync up\` works too): a systemd unit, a launchd LaunchDaemon or a Windows service of its own per project, restarted after a failure. Where no service manager runs (a container), that step starts vidsync's own nebula supervisor instead and says so. Syncthing and the reconcile loop run as you, in an agent that starts at login (a systemd --user unit, a LaunchAgent, a logon task; started by vidsync itself where no user service manager runs) and restarts Syncthing within seconds after a crash: Syncthing listens on this device's overlay address only, the project's peers become Syncthing devices, and devices that connect from inside the overlay are accepted and get the project's folders. Under sudo the agent runs as the invoking user (SUDO_USER), with that user's home. Without --detach it stays until Ctrl-C and then stops everything; \`vidsync down\` stops it from elsewhere.`
  static override examples = ['<%= config.bin %> <%= command.id %>', 'sudo <%= config.bin %> <%= command.id %> studio --detach --json']

  static override args = {
    project: Args.string({description: 'Joined project [default: the only one joined].'}),
  }

  static override flags = {
    detach: Flags.boolean({summary: 'Return once everything is up; the services keep running.'}),
    interval: Flags.string({summary: 'Time between reconcile passes; a device that connects wakes the loop at once.', default: '10s'}),
    'gui-port': Flags.integer({summary: "Port of Syncthing's GUI/API on 127.0.0.1 [default: 8384].", min: 1, max: 65535}),
    timeout: Flags.string({summary: 'How long to wait for the overlay and a lighthouse.', default: '20s'}),
    agent: Flags.boolean({summary: 'Run as the agent (what `up` starts as the user): Syncthing supervised and the reconcile loop.', hidden: true}),
  }

  async run(): Promise<UpResult | {agent: true}> {
    const intervalSeconds = parseDuration(this.flags.interval, 'interval')
    if (this.flags.agent) {
      // Devices that joined with an invite refresh from a shared control plane; a service manager
      // starts the agent without environment, so it reads its settings from the private agent.env.
      this.savedSettings = await readServiceSettings(agentEnvPath(await resolveProjectDir({home: this.home, project: this.args.project})))
      return this.withDeviceControlPlane((controlPlane) => this.runAgent(intervalSeconds, controlPlane))
    }
    const {databaseUrl, supabase} = this.storeOptions
    // A line, not a spinner: the elevation step may ask sudo for a password on this terminal.
    this.progressLine(`Bringing up ${this.args.project ?? 'the joined project'}: nebula service, overlay, Syncthing, peers...`)
    const result = await bringUp({
      home: this.home,
      project: this.args.project,
      guiPort: this.flags['gui-port'],
      nebulaTimeoutMs: parseDuration(this.flags.timeout, 'timeout') * 1000,
      intervalSeconds,
      interactive: this.interactive,
      onElevate: (plan) => this.logToStderr(plan),
      onProgress: (line) => this.logToStderr(`Syncthing is migrating its database to 2.x (do not stop it): ${line}`),
      env: {VIDSYNC_DATABASE_URL: databaseUrl, VIDSYNC_SUPABASE_URL: supabase?.url, VIDSYNC_SUPABASE_KEY: supabase?.key},
    })
    if (result.alreadyUp) this.log(`${result.project} was already up (agent pid ${result.agent.pid}): nothing changed.`)
    for (const line of result.installed) this.log(`Installed: ${line}`)
    this.log(`${result.project}: overlay ${result.overlayIp} up, Syncthing ${result.syncthing.deviceId.slice(0, 7)} on ${result.syncthing.listenAddresses.join(', ')} (as ${result.user}).`)
    this.log(`Folders: ${result.reconcile.folders.join(', ') || 'none yet (add one with `vidsync sync add DIR`)'}.`)
    if (this.flags.detach) {
      this.log(`Reconciling in the background (agent pid ${result.agent.pid}, log ${result.agent.logPath}); stop with \`vidsync down\`.`)
      this.log('Next: vidsync sync add DIR, then vidsync status --watch')
      return result
    }
    this.log(`Reconciling every ${this.flags.interval}; Ctrl-C stops everything.`)
    const dir = await resolveProjectDir({home: this.home, project: result.project})
    await untilStopped(async () => (await askAgent(dir, 'status')) === undefined)
    await bringDown({home: this.home, project: result.project})
    return result
  }

  private async runAgent(intervalSeconds: number, controlPlane?: ControlPlane): Promise<{agent: true}> {
    const stop = stopOnRequest()
    try {
      await runAgent({
        home: this.home,
        project: this.args.project,
        controlPlane,
        guiPort: this.flags['gui-port'],
        intervalMs: intervalSeconds * 1000,
        signal: stop.signal,
        log: (line) => this.log(`${new Date().toISOString()} ${line}`),
        onReady: () => this.log(`${new Date().toISOString()} first reconcile pass done`),
      })
    } finally {
      stop.dispose()
    }
    return {agent: true}
  }
}
