import {rm} from 'node:fs/promises'
import {basename, join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {ConflictError, InvalidInputError, MissingDependencyError, PermissionError, UnavailableError} from '../errors.js'
import {runProgram, selfCommand, startSelf, type Tools} from '../exec.js'
import {type NebulaStatus, nebulaStatus, stopNebula} from '../nebula/process.js'
import {syncthingPort} from '../nebula/config.js'
import {installNebulaService, nebulaServiceProbe, selfProblem, uninstallNebulaService} from '../nebula/service.js'
import {removeSystemOverlay, systemBinDir, systemOverlayFix, systemOverlayPaths, systemOverlayProblem} from '../nebula/system-overlay.js'
import {currentPlatform, type Platform, type User} from '../platform/index.js'
import type {SyncthingClient} from '../syncthing/client.js'
import {acceptPendingDevices, type PendingDecision, projectFolders, removeDevices, sharePeers, shareWithProjectDevices} from '../syncthing/folders.js'
import {connectSyncthing, type ManagedSyncthing, startManagedSyncthing, stopManagedSyncthing} from '../syncthing/managed.js'
import type {ChangeFeedHandle, ControlPlane} from '../store/control-plane.js'
import {acquireFileLock} from '../store/file-lock.js'
import {pollUntil} from '../poll.js'
import {toolReports} from '../versions/report.js'
import {JoinedProject, resolveProjectDir} from '../project/joined-project.js'
import {type EffectiveLimits, followProjectLimits} from '../folders/bandwidth.js'
import {applyProjectFolders, type FolderPass, refreshFolders, syncthingFolderId} from '../folders/device.js'
import {askControl, serveControl} from './control.js'
import {certificateCheck, renewRemedy} from './expiry.js'
import {type PushState, refreshFromControlPlane, type RefreshResult, SyncCursor} from './refresh.js'
import {renewFromControlPlane, type RenewalResult} from './renew.js'
import {supervise} from './supervise.js'
import {agentEnvPath, agentServiceDefinition, installService, stopService, uninstallService, writeServiceSettings, type ServiceSettings} from './services.js'

export interface UpOptions {
  home: string
  project?: string
  guiPort?: number
  nebulaTimeoutMs?: number
  intervalSeconds: number
  /** Control-plane settings for the agent, written to its private agent.env (never on its command line or in its environment). */
  env?: ServiceSettings
  /** A person can answer sudo's password prompt. */
  interactive?: boolean
  tools?: Tools
  platform?: Platform
  /** Called before the elevated step asks for a password (sudo) or consent (UAC), with what it installs. */
  onElevate?: (plan: string) => void
  /** Called with Syncthing's latest line while it migrates its database (first start of 2.x after 1.x). */
  onProgress?: (line: string) => void
}

export interface ReconcileResult {
  /** What the control plane said, for devices that joined with an invite. */
  refresh?: RefreshResult
  folders: string[]
  /** Devices that connected from inside the overlay and were accepted in this pass. */
  accepted: PendingDecision[]
  /** Pending devices outside the project's network, left alone. */
  ignored: PendingDecision[]
  /** Project folders: accepted on their own, offers left alone and why, shares changed to follow the access rules. */
  projectFolders?: FolderPass
  /** The upload and download limits applied (this device's own, else the project's default); absent when neither exists. */
  bandwidth?: EffectiveLimits
  /** Revoked devices removed from Syncthing in this pass (their Syncthing IDs). */
  removed: string[]
  /** Automatic renewal, for devices that joined with an invite. */
  renewal?: RenewalResult
  /** The device's certificate or the CA expires soon (7 and 90 days) or has: what to do. */
  certificateWarnings: string[]
}

export interface UpResult {
  project: string
  overlayIp: string
  nebula: NebulaStatus
  syncthing: {deviceId: string; url: string; pid: number; listenAddresses: string[]}
  reconcile: ReconcileResult
  /** What the elevated step installed in this run (empty when the nebula service already ran). */
  installed: string[]
  /** The user Syncthing and the agent run as. */
  user: string
  /** The agent: Syncthing's supervisor and the reconcile loop, as the user. */
  agent: {pid: number; logPath: string}
  /** Nebula's service and the agent both ran already: this `up` changed nothing. */
  alreadyUp: boolean
}

/** What the agent answers on its control socket. */
export interface AgentState {
  pid: number
  user: string
  ready: boolean
  syncthing: UpResult['syncthing'] | null
  /** Syncthing restarts after crashes since the agent started. */
  restarts: number
  lastPass?: ReconcileResult
  lastError?: string
  /** Syncthing's latest line while it migrates its database to 2.x (never stopped meanwhile). */
  migrating?: string
  /** A certificate renewal is waiting for the operator's signer. */
  renewalRequested?: boolean
  /** Whether the control plane pushes changes to this device now; when not, it polls every 60 to 75 s. */
  push?: PushState
}

export interface ReconcileOptions {
  client: SyncthingClient
  home: string
  project: string
  /** The control plane that invite-joined devices refresh from (heartbeat, peers, blocklist). */
  controlPlane?: ControlPlane
  /** The version the device has and when to refresh; without one every pass refreshes in full. */
  cursor?: SyncCursor
  /** Where auto-accepted folders go: <userHome>/vidsync/<project>/<folder> [default: the user's home]. */
  userHome?: string
}

/**
 * One reconcile pass: the manifest's peers (with their Syncthing IDs), the devices that
 * connect from inside the overlay and those accepted earlier become devices sharing the
 * project's folders. The Nebula certificate already proved a connecting device belongs to the
 * project.
 */
export async function reconcile(options: ReconcileOptions): Promise<ReconcileResult> {
  const {client} = options
  const refresh = options.controlPlane && (options.cursor?.due ?? true)
    ? await refreshFromControlPlane({
        home: options.home,
        project: options.project,
        controlPlane: options.controlPlane,
        syncthingId: (await client.status()).myID,
        cursor: options.cursor,
      })
    : undefined
  if (options.controlPlane && refresh?.status === 'active') await refreshFolders({home: options.home, project: options.project, controlPlane: options.controlPlane, client})
  // Every pass, not only those that refresh (the slow poll is a minute): a short-lived certificate
  // or a rotation's new CA is noticed within an interval, at one small call (the control plane's clock) a pass.
  const active = (refresh?.status ?? options.cursor?.status) === 'active'
  const renewal =
    options.controlPlane && active
      ? await renewFromControlPlane({home: options.home, project: options.project, controlPlane: options.controlPlane})
      : undefined
  const project = await JoinedProject.find({home: options.home, project: options.project})
  const {manifest} = project
  const {warnings: certificateWarnings} = await certificateCheck({home: options.home, project})
  // First: a revoked device loses its shares and its place here before anything is shared again. The
  // cursor keeps the list for the passes that do not refresh: a revoked device that connects again
  // before nebula has cut it off (a pending device wakes the loop at once) is removed, never accepted.
  const revoked = refresh?.revokedSyncthingIds.length ? refresh.revokedSyncthingIds : (options.cursor?.revokedSyncthingIds ?? [])
  const removed = await removeDevices({client, deviceIds: revoked})
  // The version refreshed is now in nebula and Syncthing alike: the next refresh acknowledges it.
  if (refresh?.status === 'active') options.cursor?.applied()
  const folders = await projectFolders({client, project: manifest.project, projectCidr: manifest.cidr})
  // Project folders follow their access rules (applyProjectFolders); the others are shared with every project device.
  const managed = syncthingFolderId(manifest.project, '')
  const legacy = folders.filter((id) => !id.startsWith(managed))
  const peers = manifest.peers.flatMap((peer) => (peer.syncthingId ? [{deviceId: peer.syncthingId, name: peer.name, overlayIp: peer.ip}] : []))
  await sharePeers({client, projectCidr: manifest.cidr, folders: legacy, peers})
  const {accepted, ignored} = await acceptPendingDevices({client, projectCidr: manifest.cidr, folders: legacy, refused: revoked})
  await shareWithProjectDevices({client, projectCidr: manifest.cidr, folders: legacy})
  const {autoAccept, folderRoot} = await project.settings()
  const folderPass = await applyProjectFolders({client, manifest, userHome: options.userHome, autoAccept, folderRoot})
  const bandwidth = await followProjectLimits({client, home: options.home, project})
  const all = await projectFolders({client, project: manifest.project, projectCidr: manifest.cidr})
  return {...(refresh ? {refresh} : {}), ...(renewal ? {renewal} : {}), folders: all, accepted, ignored, projectFolders: folderPass, ...(bandwidth ? {bandwidth} : {}), removed, certificateWarnings}
}

/** Syncthing's events for a device that connected and waits to be accepted, and for a folder a device offers. */
const wakeEvents = ['PendingDevicesChanged', 'PendingFoldersChanged']
/** One long-poll at most this long: Node's fetch gives up on a body that takes 300 s. */
const maxPollSeconds = 60
/** Passes that events trigger are at least this far apart: a burst of events makes one pass. */
const minPassSpacingMs = 1000

/** Resolves after `ms`, or at once when `signal` aborts. */
const pause = (ms: number, signal: AbortSignal): Promise<void> => sleep(Math.max(0, ms), undefined, {signal}).catch(() => {})

/**
 * Reconciles every `intervalMs` until `signal` aborts, and at once when Syncthing reports a
 * pending device: a device that joins is accepted within a second instead of up to an interval
 * later. The wait is Syncthing's event long-poll; when Syncthing cannot answer, that is reported
 * and the loop pauses instead. A failed pass is reported and retried.
 */
export async function reconcileLoop(options: ReconcileOptions & {
  intervalMs: number
  signal: AbortSignal
  onPass: (result: ReconcileResult | Error) => void
  /** Wakes the loop for a pass at once (a notified change). */
  waker?: Waker
}): Promise<void> {
  const {client, signal, intervalMs} = options
  // Event IDs count per event filter and start again when Syncthing restarts; 0 takes what is buffered.
  let since = 0
  let lastPass = Date.now()
  while (!signal.aborted) {
    const left = lastPass + intervalMs - Date.now()
    const woken = options.waker?.arm()
    if (left > 0 && !woken?.aborted) {
      const waiting = woken ? AbortSignal.any([signal, woken]) : signal
      try {
        const timeoutS = Math.min(maxPollSeconds, Math.max(1, Math.ceil(left / 1000)))
        const polled = Date.now()
        const events = await client.events({since, types: wakeEvents, timeoutS, signal: waiting})
        if (events.length === 0) {
          // The poll timed out: poll again until the interval is over (never in a tight loop).
          if (Date.now() - polled < 500) await pause(1000, waiting)
          if (!woken?.aborted) continue
        } else {
          since = events.at(-1)?.id ?? since
          await pause(lastPass + minPassSpacingMs - Date.now(), signal)
        }
      } catch (error) {
        if (signal.aborted) return
        if (woken?.aborted) continue
        since = 0 // Syncthing is down or restarting: its event IDs start again
        options.onPass(error as Error)
        await pause(left, signal)
      }
    }
    if (signal.aborted) return
    lastPass = Date.now()
    options.waker?.reset()
    options.onPass(await reconcile(options).catch((error: unknown) => error as Error))
  }
}

/**
 * Push where the control plane has it (Postgres LISTEN/NOTIFY, Supabase Realtime): once a refresh
 * named the project's channel or topic, a notified version wakes the loop, whose pass then
 * refreshes. Without push, or while the feed reconnects, the cursor's slow poll goes on.
 */
export function listenForChanges(options: {controlPlane?: ControlPlane; cursor: SyncCursor; waker: Waker; log: (line: string) => void}) {
  let listening: Promise<ChangeFeedHandle | undefined> | undefined
  let feed: {readonly active: boolean} | undefined
  let listeningOn: string | undefined
  return {
    /** After each pass: starts listening once the channel or topic is known, and follows a new topic. */
    passed() {
      const changes = options.controlPlane?.changes
      const name = changes && options.cursor[changes.source]
      if (!changes || !name || name === listeningOn) return
      listeningOn = name
      if (listening) {
        listening = listening.then(async (handle) => {
          await handle?.move?.(name).catch((error: Error) => options.log(`not listening on the project's new topic (polling instead): ${error.message}`))
          return handle
        })
        return
      }
      listening = changes
        .listen(name, (version) => {
          options.cursor.notify(version)
          if (options.cursor.due) options.waker.wake()
        })
        .then((handle) => (feed = handle))
        .catch((error: Error) => {
          options.log(`not listening for changes (polling instead): ${error.message}`)
          return undefined
        })
    },
    /** How changes reach this device now: pushed through the backend's feed, or the slow poll alone. */
    get push(): PushState {
      const via = options.controlPlane?.changes?.source === 'topic' ? 'realtime' : 'listen'
      return options.controlPlane?.changes ? {via, active: feed?.active ?? false} : {via: 'none', active: false}
    },
    async close() {
      await (await listening)?.close()
    },
  }
}

/** Lets another task (a notification) end the loop's wait, so that a pass runs at once. */
export class Waker {
  #controller = new AbortController()

  /** The signal of the coming wait; already aborted when woken since the last pass began. */
  arm(): AbortSignal {
    return this.#controller.signal
  }

  wake(): void {
    this.#controller.abort()
  }

  /** Called as a pass begins: wakes before this one are served by it. */
  reset(): void {
    if (this.#controller.signal.aborted) this.#controller = new AbortController()
  }
}

const agentPaths = (dir: string, platform: Platform) => ({address: platform.controlAddress(dir, 'agent'), logPath: join(dir, 'agent.log')})

/** Asks the project's agent (running as the user) through its control socket; undefined when none runs. */
export async function askAgent(dir: string, command: 'status' | 'stop', platform: Platform = currentPlatform()): Promise<AgentState | undefined> {
  return askControl<AgentState>(agentPaths(dir, platform).address, command, command === 'stop' ? 60_000 : 5000)
}

/** Resolves when the process with this identity is gone: for a Syncthing that was adopted, not started here. */
async function exitOf(pid: number, platform: Platform): Promise<{exitCode?: number; signal?: string}> {
  const identity = await platform.processIdentity(pid)
  while (identity && (await platform.isRunning(identity))) await sleep(500)
  return {exitCode: 1}
}

export interface AgentOptions {
  home: string
  project?: string
  controlPlane?: ControlPlane
  guiPort?: number
  intervalMs: number
  tools?: Tools
  signal: AbortSignal
  log: (line: string) => void
  onReady?: (state: AgentState) => void
  platform?: Platform
}

/**
 * The user's agent: keeps the managed Syncthing running on the overlay address (restarted within
 * seconds after a crash, with a bounded backoff) and reconciles in a loop; answers `status` and
 * `stop` on its control socket. Runs as the user, never as root under sudo. Returns when stopped.
 */
export async function runAgent(options: AgentOptions): Promise<void> {
  const platform = options.platform ?? currentPlatform()
  const project = await JoinedProject.find({home: options.home, project: options.project, platform})
  const dir = project.dir
  const stop = new AbortController()
  options.signal.addEventListener('abort', () => stop.abort(), {once: true})
  const state: AgentState = {pid: process.pid, user: platform.invokingUser().name, ready: false, syncthing: null, restarts: 0}
  let done: Promise<void> = Promise.resolve()
  const control = await serveControl(agentPaths(dir, platform).address, {
    // Whether changes are pushed is read when asked: a feed reconnects between passes.
    status: async () => (push ? {...state, push: push.push} : state),
    stop: async () => {
      stop.abort()
      await done
      return state
    },
  })
  // Each certificate warning goes to the log when it first appears and then once a day.
  const warned = new Map<string, number>()
  const logWarnings = (warnings: string[]) => {
    for (const warning of warnings) {
      const key = warning.replace(/ \(.*$/, '').replace(/(expires|expired) .*/, '$1')
      if (Date.now() - (warned.get(key) ?? Number.NEGATIVE_INFINITY) < 86_400_000) continue
      warned.set(key, Date.now())
      options.log(`warning: ${warning}`)
    }
  }
  let push: ReturnType<typeof listenForChanges> | undefined
  let firstStart: () => void = () => undefined
  const started = new Promise<void>((resolve) => (firstStart = resolve))
  let starts = 0
  const syncthing = supervise({
    name: 'syncthing',
    start: async () => {
      // After a crash: a Syncthing worker whose monitor was killed still holds the ports; ask it to go.
      if (starts++ > 0) await stopManagedSyncthing({vidsyncHome: options.home, timeoutMs: 10_000})
      const instance: ManagedSyncthing = await startManagedSyncthing({
        vidsyncHome: options.home,
        guiPort: options.guiPort,
        listenAddresses: [`tcp://${project.overlayIp}:${syncthingPort}`],
        detached: false,
        tools: options.tools,
        onProgress: (line) => {
          state.migrating = line
          options.log(`syncthing is migrating its database to 2.x (do not stop it): ${line}`)
        },
      })
      state.migrating = undefined
      state.syncthing = {deviceId: instance.deviceId, url: instance.url, pid: instance.pid, listenAddresses: instance.listenAddresses}
      return {
        exited: instance.exited ?? exitOf(instance.pid, platform),
        stop: async () => {
          await stopManagedSyncthing({vidsyncHome: options.home})
        },
      }
    },
    onStarted: () => {
      options.log(`syncthing running (pid ${state.syncthing?.pid})`)
      firstStart()
    },
    signal: stop.signal,
    log: (line) => {
      if (/ ended /.test(line)) state.restarts++
      options.log(line)
    },
  })
  const loop = (async () => {
    await Promise.race([started, new Promise((resolve) => stop.signal.addEventListener('abort', resolve, {once: true}))])
    if (stop.signal.aborted) return
    const {client} = await connectSyncthing({vidsyncHome: options.home})
    const cursor = new SyncCursor()
    const waker = new Waker()
    const changes = listenForChanges({controlPlane: options.controlPlane, cursor, waker, log: options.log})
    push = changes
    await reconcileLoop({
      client,
      controlPlane: options.controlPlane,
      cursor,
      waker,
      home: options.home,
      project: project.name,
      intervalMs: options.intervalMs,
      signal: stop.signal,
      onPass: (pass) => {
        changes.passed()
        if (pass instanceof Error) {
          state.lastError = pass.message
          options.log(`reconcile failed, retrying: ${pass.message}`)
          return
        }
        state.lastPass = pass
        delete state.lastError
        const {renewal} = pass
        if (renewal?.installed) options.log(`certificate renewed: ${renewal.fingerprint} valid until ${renewal.notAfter}${renewal.nebulaReloaded ? '; nebula reloaded' : ''}`)
        else if (renewal?.requested && !state.renewalRequested) {
          const reason = renewal.oldCa ? 'the certificate is from an older CA than the newest one trusted' : "a third of the certificate's life is left"
          options.log(renewal.keyChange === null || renewal.keyChange === 'none' ? `${reason}: renewal requested from the signer` : 'a certificate for the new key requested: it waits for the operator\'s approval, then the signer')
        }
        state.renewalRequested = renewal?.requested ?? false
        logWarnings(pass.certificateWarnings)
        // Windows: a renewed certificate or a new blocklist waits for the elevated step of `vidsync up`.
        void JoinedProject.open(dir, platform)
          .then((current) => systemOverlayProblem(current, platform))
          .then((problem) => logWarnings(problem ? [`${problem}: ${systemOverlayFix}`] : []), () => undefined)
        for (const id of pass.removed) options.log(`removed revoked device ${id} from Syncthing`)
        for (const device of pass.accepted) options.log(`accepted ${device.name || device.deviceId} from ${device.address}`)
        for (const name of pass.projectFolders?.accepted ?? []) options.log(`accepted folder ${name}`)
        for (const name of pass.projectFolders?.updated ?? []) options.log(`folder ${name} follows its access rules`)
        const updated = [pass.refresh?.blocklistChanged && 'blocklist', pass.refresh?.lighthousesChanged && 'lighthouses'].filter(Boolean)
        if (updated.length > 0) options.log(`${updated.join(' and ')} updated${pass.refresh?.nebulaReloaded ? '; nebula reloaded' : ''}`)
        if (!state.ready) {
          state.ready = true
          options.onReady?.(state)
        }
      },
    })
    await changes.close()
  })()
  done = Promise.all([syncthing, loop]).then(() => undefined)
  try {
    await done
  } finally {
    stop.abort()
    await control.close()
  }
}

/** The invoking user's environment for the agent: their HOME, not root's. */
function userEnv(user: User): Record<string, string> {
  return {HOME: user.home, USER: user.name, LOGNAME: user.name, SUDO_USER: '', SUDO_UID: '', SUDO_GID: ''}
}

/**
 * Makes sure the project's nebula service runs with current files: already running, or installed
 * now by the one elevated step (this process when elevated, else `sudo vidsync nebula up
 * --service`, which asks for a password on a terminal; UAC on Windows). On Windows the step also
 * runs when the system copy the service reads is older than the project's files: it rewrites the
 * copy and restarts the service. Returns what was installed.
 */
export async function ensureNebula(options: UpOptions, project: JoinedProject, platform: Platform): Promise<string[]> {
  const {dir, name: projectName} = project
  const running = (await nebulaStatus({projectDir: dir, platform})).running
  // Windows: a service that runs on an older system copy than the project's files needs the elevated step too.
  const stale = running ? await systemOverlayProblem(project, platform) : undefined
  if (running && !stale) return []
  if (await platform.canCreateTun()) {
    const user = platform.invokingUser()
    const result = await installNebulaService({
      home: options.home,
      projectDir: dir,
      user,
      tools: options.tools,
      platform,
      startDetached: () =>
        startSelf(['nebula', 'service', projectName, '--home', options.home], {
          detached: true,
          logPath: join(dir, 'nebula-service.log'),
          logOwner: user.viaSudo ? user : undefined,
        }),
    })
    return result.installed
  }
  const elevated = platform.elevate(selfCommand(['nebula', 'up', projectName, '--service', '--home', options.home]), options.interactive ?? false)
  if (elevated) options.onElevate?.(await elevationPlan(options, dir, platform, stale))
  const result = elevated ? await runProgram(elevated, {inheritStdio: options.interactive}) : undefined
  if (!result || result.exitCode !== 0) {
    throw new PermissionError(
      stale
        ? `${stale}; no administrator rights were granted`
        : 'nebula needs administrator rights once, to install its service, and none were granted',
      {hint: 'run `sudo vidsync up` (an elevated prompt on Windows)'},
    )
  }
  return [stale ? "the system copy of the overlay, refreshed by the elevated step (the nebula service restarted to read it)" : 'the nebula service, installed by the elevated step']
}

/**
 * Makes sure the user's agent runs: already running, started (or installed and started) as a
 * user service that starts at login (systemd --user, LaunchAgent, logon task), or, where no
 * user service manager runs, started by vidsync itself as the user. Returns what it installed.
 */
async function ensureAgent(options: UpOptions, project: JoinedProject, user: User, platform: Platform): Promise<string[]> {
  if (await askAgent(project.dir, 'status', platform)) return []
  const owner = user.viaSudo ? user : undefined
  const noManager = await platform.serviceManagerProblem('user', user)
  // The agent reads its control-plane settings from this private file itself, however it starts.
  await writeServiceSettings(agentEnvPath(project.dir), options.env ?? {}, platform, owner)
  if (!noManager) {
    const definition = await agentServiceDefinition({...options, project, user, platform})
    const change = await installService(definition, {platform, user, owner, mode: 0o600})
    if (change.action === 'installed') return [`${change.line}: runs Syncthing and the reconcile loop as ${user.name} at login`]
    return change.action === 'started' ? [change.line] : []
  }
  const args = ['up', project.name, '--agent', '--home', options.home, '--interval', `${options.intervalSeconds}s`]
  if (options.guiPort !== undefined) args.push('--gui-port', String(options.guiPort))
  const agent = await startSelf(args, {
    detached: true,
    logPath: agentPaths(project.dir, platform).logPath,
    cwd: user.home,
    env: user.viaSudo ? userEnv(user) : {},
    user: owner,
    logOwner: owner,
  })
  return [`agent for ${project.name} as ${user.name} (pid ${agent.pid}; ${noManager}; it does not start at login)`]
}

/** What the elevated step will install, said before sudo/UAC asks. */
async function elevationPlan(options: UpOptions, dir: string, platform: Platform, stale?: string): Promise<string> {
  const {dir: overlayDir} = systemOverlayPaths(basename(dir), platform)
  if (stale) return `${stale}: the elevated step rewrites the files in ${overlayDir} and restarts the nebula service`
  const noManager = await platform.serviceManagerProblem('system')
  if (noManager) return `nebula needs administrator rights once: the elevated step starts vidsync's nebula supervisor as root (${noManager}; it does not start at boot)`
  const definition = await nebulaServiceProbe({home: options.home, projectDir: dir, user: platform.invokingUser(), tools: options.tools, platform})
  const where = definition.path ? ` (${definition.path})` : ''
  const reason = platform.os !== 'win32' && platform.runtimeDir ? await selfProblem(platform) : undefined
  const copy =
    platform.os === 'win32'
      ? `, and copies nebula.exe and wintun.dll to ${systemBinDir(platform)} unless only administrators can replace them where they are`
      : reason
        ? `, and copies Node.js and vidsync to ${platform.runtimeDir} (root's only) for it to run, since ${reason}`
        : ''
  return `nebula needs administrator rights once: the elevated step installs the ${definition.manager} system service ${definition.name}${where}, which runs nebula as root at boot${copy}`
}

/** Waits (bounded) until nebula has the overlay IP and a lighthouse answers. */
async function waitForOverlay(dir: string, timeoutMs: number, platform: Platform): Promise<NebulaStatus> {
  let status: NebulaStatus | undefined
  return pollUntil(
    async () => {
      status = await nebulaStatus({projectDir: dir, platform})
      return status.running && status.tunUp && status.lighthouseReachable !== false && status
    },
    {
      timeoutMs,
      onTimeout: () => {
        const seconds = timeoutMs / 1000
        if (!status?.tunUp) throw new UnavailableError(`${status?.tunDev ?? 'the overlay interface'} did not come up with ${status?.overlayIp} within ${seconds}s: see ${status?.logPath}`)
        throw new UnavailableError(`no lighthouse answered within ${seconds}s: check that it runs and that UDP reaches it; log: ${status.logPath}`)
      },
    },
  )
}

/**
 * Brings a joined device up: the nebula service (installed by one elevated step if needed), then
 * the user's agent (Syncthing on the overlay address and the reconcile loop, as the invoking user
 * under sudo), and returns once the agent finished its first reconcile pass.
 */
export async function bringUp(options: UpOptions): Promise<UpResult> {
  const platform = options.platform ?? currentPlatform()
  const project = await JoinedProject.find({home: options.home, project: options.project, platform})
  // One `up` at a time per project: a second one would race the first to install the service and start the agent.
  const lock = await acquireFileLock(join(project.dir, 'up.lock'), `vidsync up for ${project.name}`, {timeoutMs: 0, platform}).catch((error: unknown) => {
    if (!(error instanceof UnavailableError)) throw error
    const pid = /process (\d+)/.exec(error.message)?.[1]
    throw new ConflictError(`another \`vidsync up\` for ${project.name} is running${pid ? ` (pid ${pid})` : ''}: wait for it to finish, then check with \`vidsync status\``)
  })
  try {
    return await bringUpLocked(options, project, platform)
  } finally {
    await lock.release()
  }
}

/**
 * nebula (unless its service already runs) and Syncthing must be installed and of a release
 * vidsync supports: checked before anything starts, so a missing or too old one is one line
 * (exit 8) and whatever ran before keeps running.
 */
async function requireTools(dir: string, nebulaRuns: boolean, tools?: Tools): Promise<void> {
  const unusable = (await toolReports({projectDir: dir, tools})).find((tool) => !tool.usable && (tool.tool === 'syncthing' || !nebulaRuns))
  if (unusable) throw new MissingDependencyError(unusable.problem ?? `${unusable.tool} cannot be used`)
}

async function bringUpLocked(options: UpOptions, project: JoinedProject, platform: Platform): Promise<UpResult> {
  const user = platform.invokingUser()
  const dir = project.dir
  const {certificate, backend} = await certificateCheck({home: options.home, project, tools: options.tools})
  if (certificate?.expired) {
    // nebula would start and then reject every handshake: say so before anything starts.
    throw new InvalidInputError(`the certificate of ${project.manifest.device} in ${project.name} expired at ${certificate.notAfter}: ${renewRemedy(project.name, project.manifest.device, backend)}`)
  }
  const nebulaRan = (await nebulaStatus({projectDir: dir, platform})).running
  const agentRan = (await askAgent(dir, 'status', platform)) !== undefined
  if (!agentRan) await requireTools(dir, nebulaRan, options.tools)
  const installed = [...(await ensureNebula(options, project, platform))]
  const nebula = await waitForOverlay(dir, options.nebulaTimeoutMs ?? 20_000, platform)
  const {logPath} = agentPaths(dir, platform)
  installed.push(...(await ensureAgent(options, project, user, platform)))
  const firstPassMs = 90_000
  let deadline = Date.now() + firstPassMs
  let state = await askAgent(dir, 'status', platform)
  let reported: string | undefined
  while (!state?.ready && Date.now() < deadline) {
    await sleep(200)
    state = await askAgent(dir, 'status', platform)
    // A migrating Syncthing bounds its own wait (2 h at most): while it reports progress, so do we.
    if (state?.migrating !== undefined && state.migrating !== reported) {
      reported = state.migrating
      deadline = Date.now() + firstPassMs
      options.onProgress?.(reported)
    }
  }
  if (!state?.ready || !state.syncthing || !state.lastPass) {
    const why = state?.lastError ?? 'no answer'
    throw new UnavailableError(`the agent did not finish its first reconcile pass within 90s (${why}): see ${logPath}`)
  }
  const alreadyUp = nebulaRan && agentRan && installed.length === 0
  return {project: project.name, overlayIp: project.overlayIp, nebula, syncthing: state.syncthing, reconcile: state.lastPass, installed, user: state.user, agent: {pid: state.pid, logPath}, alreadyUp}
}

export interface DownResult {
  /** The agent (reconcile loop and Syncthing's supervisor) was running and stopped. */
  loopStopped: boolean
  syncthing: {stopped: boolean; pid?: number}
  nebula: Awaited<ReturnType<typeof stopNebula>>
  /** Services removed with --uninstall. */
  uninstalled: string[]
}

/**
 * Stops what `up` started: the agent (which stops Syncthing through its API), then nebula (its
 * supervisor over the control socket; where the service manager runs nebula itself, as the SCM
 * does on Windows, through the manager). With `uninstall` also removes both services; that needs
 * administrator rights, checked before anything is stopped. Idempotent.
 */
export async function bringDown(options: {home: string; project?: string; uninstall?: boolean; platform?: Platform}): Promise<DownResult> {
  const platform = options.platform ?? currentPlatform()
  const dir = await resolveProjectDir({home: options.home, project: options.project})
  if (options.uninstall && !(await platform.canCreateTun())) {
    throw new PermissionError('removing the nebula service needs administrator rights; nothing was stopped or removed', {hint: 'run `sudo vidsync down --uninstall` (an elevated prompt on Windows)'})
  }
  const user = platform.invokingUser()
  const agent = await askAgent(dir, 'stop', platform)
  // A Syncthing left without its agent (an agent killed with -9) is stopped through its own API.
  const leftover = await stopManagedSyncthing({vidsyncHome: options.home})
  const syncthingPid = agent?.syncthing?.pid ?? leftover.pid
  const syncthing = {stopped: Boolean(agent?.syncthing) || leftover.stopped, ...(syncthingPid === undefined ? {} : {pid: syncthingPid})}
  let nebula = await stopNebula({projectDir: dir, platform})
  const managed = !(await platform.serviceManagerProblem('system'))
  if (!nebula.stopped && managed) {
    const definition = await nebulaServiceProbe({home: options.home, projectDir: dir, user, platform})
    const state = await platform.serviceState(definition)
    if (state.running) {
      if (!(await stopService(definition, platform))) {
        throw new PermissionError(`${definition.name} keeps running: stopping it needs administrator rights`, {hint: 'run `vidsync down` from an elevated prompt'})
      }
      nebula = {project: nebula.project, stopped: true, pid: state.pid ?? null}
    }
  }
  const uninstalled: string[] = []
  if (options.uninstall) {
    if (!(await platform.serviceManagerProblem('user', user))) {
      const definition = await agentServiceDefinition({home: options.home, project: {name: nebula.project, dir}, user, platform})
      if (await uninstallService(definition, {platform, user})) uninstalled.push(definition.path ? `${definition.name} (${definition.path})` : definition.name)
    }
    await rm(agentEnvPath(dir), {force: true})
    uninstalled.push(...(await uninstallNebulaService({home: options.home, projectDir: dir, user, platform})))
    await removeSystemOverlay(basename(dir), platform)
    uninstalled.push(systemOverlayPaths(basename(dir), platform).dir)
  }
  return {loopStopped: agent !== undefined, syncthing, nebula, uninstalled}
}
