import {readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'

import {isAlive, processCommandLine, startSelf, stopPid, type Tools} from '../exec.js'
import {writeFileAtomic} from '../files.js'
import {type NebulaStatus, nebulaStatus, startNebula, stopNebula} from '../nebula/process.js'
import {syncthingPort} from '../nebula/config.js'
import type {SyncthingClient} from '../syncthing/client.js'
import {acceptPendingDevices, type PendingDecision, projectFolders, sharePeers, shareWithProjectDevices} from '../syncthing/folders.js'
import {connectSyncthing, startManagedSyncthing, stopManagedSyncthing} from '../syncthing/managed.js'
import type {ControlPlane} from '../store/control-plane.js'
import {JoinedProject, resolveProjectDir} from '../project/joined-project.js'
import {refreshFromControlPlane, type RefreshResult} from './refresh.js'

export interface UpOptions {
  home: string
  controlPlane?: ControlPlane
  project?: string
  guiPort?: number
  nebulaTimeoutMs?: number
  tools?: Tools
}

export interface ReconcileResult {
  /** What the control plane said, for devices that joined with an invite. */
  refresh?: RefreshResult
  folders: string[]
  /** Devices that connected from inside the overlay and were accepted in this pass. */
  accepted: PendingDecision[]
  /** Pending devices outside the project's network, left alone. */
  ignored: PendingDecision[]
}

export interface UpResult {
  project: string
  overlayIp: string
  nebula: NebulaStatus
  syncthing: {deviceId: string; url: string; pid: number; listenAddresses: string[]}
  reconcile: ReconcileResult
}

export interface ReconcileOptions {
  client: SyncthingClient
  home: string
  project: string
  /** The control plane that invite-joined devices refresh from (heartbeat, peers, blocklist). */
  controlPlane?: ControlPlane
}

/**
 * One reconcile pass: the manifest's peers (with their Syncthing IDs), the devices that
 * connect from inside the overlay and those accepted earlier become devices sharing the
 * project's folders. The Nebula certificate already proved a connecting device belongs to the
 * project.
 */
export async function reconcile(options: ReconcileOptions): Promise<ReconcileResult> {
  const {client} = options
  const refresh = options.controlPlane
    ? await refreshFromControlPlane({home: options.home, project: options.project, controlPlane: options.controlPlane, syncthingId: (await client.status()).myID})
    : undefined
  const {manifest} = await JoinedProject.find({home: options.home, project: options.project})
  const folders = await projectFolders({client, project: manifest.project, projectCidr: manifest.cidr})
  const peers = manifest.peers.flatMap((peer) => (peer.syncthingId ? [{deviceId: peer.syncthingId, name: peer.name, overlayIp: peer.ip}] : []))
  await sharePeers({client, projectCidr: manifest.cidr, folders, peers})
  const {accepted, ignored} = await acceptPendingDevices({client, projectCidr: manifest.cidr, folders})
  await shareWithProjectDevices({client, projectCidr: manifest.cidr, folders})
  return {...(refresh ? {refresh} : {}), folders, accepted, ignored}
}

/**
 * Brings a joined device up: the Nebula overlay (detached), then the managed Syncthing listening
 * on the overlay address only, then one reconcile pass. Parts already running are reused.
 */
export async function bringUp(options: UpOptions): Promise<UpResult & {client: SyncthingClient}> {
  const project = await JoinedProject.find({home: options.home, project: options.project})
  const dir = project.dir
  const current = await nebulaStatus({projectDir: dir})
  const nebula = current.running
    ? current
    : await startNebula({projectDir: dir, detach: true, tools: options.tools, timeoutMs: options.nebulaTimeoutMs})
  const syncthing = await startManagedSyncthing({
    vidsyncHome: options.home,
    guiPort: options.guiPort,
    listenAddresses: [`tcp://${project.overlayIp}:${syncthingPort}`],
    detached: true,
    tools: options.tools,
  })
  const {client} = await connectSyncthing({vidsyncHome: options.home})
  const result = await reconcile({client, home: options.home, project: project.name, controlPlane: options.controlPlane})
  return {
    project: project.name,
    overlayIp: project.overlayIp,
    nebula,
    syncthing: {deviceId: syncthing.deviceId, url: syncthing.url, pid: syncthing.pid, listenAddresses: syncthing.listenAddresses},
    reconcile: result,
    client,
  }
}

/** Syncthing's event for a device that connected and waits to be accepted (or no longer waits). */
const wakeEvents = ['PendingDevicesChanged']
/** One long-poll at most this long: Node's fetch gives up on a body that takes 300 s. */
const maxPollSeconds = 60
/** Passes that events trigger are at least this far apart: a burst of events makes one pass. */
const minPassSpacingMs = 1000

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted || ms <= 0) return resolve()
    const done = () => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, {once: true})
  })
}

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
}): Promise<void> {
  const {client, signal, intervalMs} = options
  // Event IDs count per event filter and start again when Syncthing restarts; 0 takes what is buffered.
  let since = 0
  let lastPass = Date.now()
  while (!signal.aborted) {
    const left = lastPass + intervalMs - Date.now()
    if (left > 0) {
      try {
        const timeoutS = Math.min(maxPollSeconds, Math.max(1, Math.ceil(left / 1000)))
        const polled = Date.now()
        const events = await client.events({since, types: wakeEvents, timeoutS, signal})
        if (events.length === 0) {
          // The poll timed out: poll again until the interval is over (never in a tight loop).
          if (Date.now() - polled < 500) await pause(1000, signal)
          continue
        }
        since = events.at(-1)?.id ?? since
        await pause(lastPass + minPassSpacingMs - Date.now(), signal)
      } catch (error) {
        if (signal.aborted) return
        since = 0 // Syncthing is down or restarting: its event IDs start again
        options.onPass(error as Error)
        await pause(left, signal)
      }
    }
    if (signal.aborted) return
    lastPass = Date.now()
    options.onPass(await reconcile(options).catch((error: unknown) => error as Error))
  }
}

const loopPaths = (dir: string) => ({pidPath: join(dir, 'up.pid'), logPath: join(dir, 'up.log')})

/** The PID of this project's background `up` loop, if one runs (a stale pid file is ignored). */
async function runningLoop(dir: string): Promise<number | undefined> {
  const pid = Number.parseInt(await readFile(loopPaths(dir).pidPath, 'utf8').catch(() => ''), 10)
  if (!Number.isInteger(pid) || !isAlive(pid)) return undefined
  const command = await processCommandLine(pid)
  return command?.includes('up') && command.includes(dir.split('/').at(-1) ?? '') ? pid : undefined
}

/**
 * Runs `vidsync up` for the project in the background (its log in up.log, its PID in up.pid),
 * so devices that join later keep being accepted after this command returns.
 */
export async function detachLoop(options: {
  home: string
  project: string
  intervalSeconds: number
  /** Control-plane settings for the loop, passed in its environment (never on its command line). */
  env?: Record<string, string>
}): Promise<{pid: number; logPath: string}> {
  const dir = await resolveProjectDir({home: options.home, project: options.project})
  const {pidPath, logPath} = loopPaths(dir)
  const running = await runningLoop(dir)
  if (running) return {pid: running, logPath}
  const args = ['up', options.project, '--home', options.home, '--interval', `${options.intervalSeconds}s`]
  const daemon = await startSelf(args, {detached: true, logPath, env: options.env})
  await writeFileAtomic(pidPath, `${daemon.pid}\n`, 0o644)
  return {pid: daemon.pid, logPath}
}

/** Stops what `up` started: Syncthing, Nebula, then the background loop. Idempotent. */
export async function bringDown(options: {home: string; project?: string}) {
  const dir = await resolveProjectDir({home: options.home, project: options.project})
  // Syncthing and Nebula first, so the result says what was running; the loop ends through here
  // too (on SIGTERM) and must not wait for its own PID.
  const syncthing = await stopManagedSyncthing({vidsyncHome: options.home})
  const nebula = await stopNebula({projectDir: dir})
  const loop = await runningLoop(dir)
  if (loop && loop !== process.pid) await stopPid(loop, 20_000)
  if (loop !== process.pid) await rm(loopPaths(dir).pidPath, {force: true})
  return {loopStopped: loop !== undefined && loop !== process.pid, syncthing, nebula}
}
