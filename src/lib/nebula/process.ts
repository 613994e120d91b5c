import {access, readFile, rename, rm, writeFile} from 'node:fs/promises'
import {networkInterfaces} from 'node:os'
import {basename, join} from 'node:path'

import {ConflictError, MissingDependencyError, PermissionError, ToolFailedError, UnavailableError, VidsyncError} from '../errors.js'
import {type Daemon, processCommandLine, startDaemon, stopPid, type Tools} from '../exec.js'
import {publishNew, withTempDir} from '../files.js'
import {testNebulaConfig} from './config.js'
import {failureReason, handshakePeers} from './log.js'
import {requireCertSupport} from '../pki/cert.js'
import {type JoinedProject, loadProject, projectPaths} from './project.js'

export interface PreflightCheck {
  name: 'nebula' | 'privileges' | 'tun' | 'config'
  ok: boolean
  /** What is wrong and how to fix it, when not ok. */
  problem?: VidsyncError
}

export const privilegesProblem =
  'nebula needs root or CAP_NET_ADMIN: run vidsync with sudo, or install the overlay as a service with `vidsync nebula up --service`'

const capNetAdmin = 12n

/** Whether a /proc/<pid>/status text shows CAP_NET_ADMIN among the effective capabilities. */
export function hasNetAdmin(procStatus: string): boolean {
  const hex = /^CapEff:\s*([0-9a-f]+)\s*$/m.exec(procStatus)?.[1]
  return hex !== undefined && ((BigInt(`0x${hex}`) >> capNetAdmin) & 1n) === 1n
}

async function privilegesProblemOfThisProcess(): Promise<VidsyncError | undefined> {
  const status = await readFile('/proc/self/status', 'utf8').catch(() => undefined)
  // Without /proc (macOS) nebula needs root.
  const privileged = status === undefined ? process.getuid?.() === 0 : hasNetAdmin(status)
  return privileged ? undefined : new PermissionError(privilegesProblem)
}

async function problemOf(check: () => Promise<unknown>): Promise<VidsyncError | undefined> {
  try {
    await check()
    return undefined
  } catch (error) {
    if (error instanceof VidsyncError) return error
    throw error
  }
}

/**
 * What nebula needs to start, in order: the binary, root or CAP_NET_ADMIN, /dev/net/tun (Linux),
 * and a config that `nebula -test` accepts (not run without the binary).
 */
/** nebula is installed and can use the project's certificates (v2 needs 1.10 or newer): exit 8 otherwise. */
async function nebulaCanUse(projectDir: string, tools?: Tools): Promise<void> {
  const read = (name: string) => readFile(join(projectDir, name), 'utf8').catch(() => '')
  await requireCertSupport({pem: (await read('ca.crt')) + (await read('node.crt')), what: `the project in ${projectDir}`, tool: 'nebula', tools})
}

export async function preflight(options: {projectDir: string; tools?: Tools}): Promise<PreflightCheck[]> {
  const checks: PreflightCheck[] = []
  const add = (name: PreflightCheck['name'], problem: VidsyncError | undefined) => {
    checks.push(problem ? {name, ok: false, problem} : {name, ok: true})
  }
  add('nebula', await problemOf(() => nebulaCanUse(options.projectDir, options.tools)))
  add('privileges', await privilegesProblemOfThisProcess())
  if (process.platform === 'linux') {
    const tunMissing = await access('/dev/net/tun').then(
      () => false,
      () => true,
    )
    const hint = '/dev/net/tun is missing: load the tun module with `sudo modprobe tun` (in a container, pass the device through)'
    add('tun', tunMissing ? new MissingDependencyError(hint) : undefined)
  }
  if (checks[0]?.ok) {
    const configPath = projectPaths(options.projectDir).configPath
    add('config', await problemOf(() => testNebulaConfig({configPath, tools: options.tools})))
  }
  return checks
}

export interface NebulaStatus {
  project: string
  running: boolean
  pid: number | null
  tunDev: string
  overlayIp: string
  /** The tun device is up with the overlay IP, as this process's network namespace sees it. */
  tunUp: boolean
  /** A lighthouse completed a handshake since nebula started (from its log); null on a lighthouse or without lighthouses. */
  lighthouseReachable: boolean | null
  logPath: string
}

/** True when the command line is nebula running the config at `configPath`, not a recycled PID. */
function isNebulaFor(commandLine: string[] | undefined, configPath: string): boolean {
  const index = commandLine?.indexOf('-config') ?? -1
  return index > 0 && commandLine?.[index + 1] === configPath
}

/** The PID from the pid file when it is a live nebula with this project's config. */
async function runningPid(paths: {pidPath: string; configPath: string}): Promise<number | undefined> {
  const pid = Number.parseInt(await readFile(paths.pidPath, 'utf8').catch(() => ''), 10)
  if (!Number.isInteger(pid) || pid <= 0) return undefined
  return isNebulaFor(await processCommandLine(pid), paths.configPath) ? pid : undefined
}

/**
 * Node lists only interfaces that are up and running (libuv skips the others). On macOS nebula
 * ignores tun.dev and takes the next utunN, so any interface with the overlay IP counts there.
 */
function tunHasIp(project: JoinedProject): boolean {
  const interfaces = networkInterfaces()
  const candidates = process.platform === 'darwin' ? Object.values(interfaces) : [interfaces[project.tunDev]]
  return candidates.some((addresses) => addresses?.some((address) => address.address === project.overlayIp))
}

/** Whether a lighthouse answered since nebula started; null when this node has none to reach. */
async function lighthouseReachable(project: JoinedProject, running: boolean): Promise<boolean | null> {
  if (project.amLighthouse || project.lighthouseIps.length === 0) return null
  if (!running) return false
  const peers = handshakePeers(await readFile(project.logPath, 'utf8').catch(() => ''))
  return project.lighthouseIps.some((ip) => peers.has(ip))
}

async function statusOf(project: JoinedProject, pid: number | undefined): Promise<NebulaStatus> {
  const running = pid !== undefined
  return {
    project: project.name,
    running,
    pid: pid ?? null,
    tunDev: project.tunDev,
    overlayIp: project.overlayIp,
    tunUp: running && tunHasIp(project),
    lighthouseReachable: await lighthouseReachable(project, running),
    logPath: project.logPath,
  }
}

export async function nebulaStatus(options: {projectDir: string}): Promise<NebulaStatus> {
  const project = await loadProject(options.projectDir)
  return statusOf(project, await runningPid(project))
}

export type DaemonExit = Awaited<Daemon['exited']>

/** nebula's own reason for ending, from its log (it logs fatal errors there, not on stderr). */
export async function exitReason(logPath: string, exit: DaemonExit): Promise<string> {
  if (exit.signal) return `killed by ${exit.signal}`
  return failureReason(await readFile(logPath, 'utf8').catch(() => '')) ?? `exit code ${exit.exitCode}`
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function waitUntilUp(project: JoinedProject, daemon: Daemon, timeoutMs: number): Promise<NebulaStatus> {
  let exit: DaemonExit | undefined
  void daemon.exited.then((result) => (exit = result))
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const status = await statusOf(project, daemon.pid)
    if (exit) {
      const reason = await exitReason(project.logPath, exit)
      throw new ToolFailedError(`nebula exited while starting: ${reason}`, reason)
    }
    if (status.tunUp && status.lighthouseReachable !== false) return status
    if (Date.now() >= deadline) {
      const seconds = timeoutMs / 1000
      if (!status.tunUp) {
        throw new UnavailableError(`${project.tunDev} did not come up with ${project.overlayIp} within ${seconds}s: see ${project.logPath}`)
      }
      throw new UnavailableError(
        `no lighthouse (${project.lighthouseIps.join(', ')}) answered within ${seconds}s: check that it runs and that UDP reaches ` +
          `its address in static_host_map of ${project.configPath}; log: ${project.logPath}`,
      )
    }
    await sleep(20) // on a LAN, nebula is up and through its handshake in about 30 ms
  }
}

/** Publishes the pid file atomically and never over another one, so two concurrent starts cannot both win. */
async function writePidFile(project: JoinedProject, pid: number): Promise<void> {
  await withTempDir(project.dir, async (temp) => {
    const file = join(temp, 'pid')
    await writeFile(file, `${pid}\n`, {mode: 0o644})
    await publishNew([{from: file, to: project.pidPath}], () => alreadyRunning(project.name))
  })
}

const alreadyRunning = (project: string, pid?: number) =>
  new ConflictError(`nebula is already running for ${project}${pid ? ` (pid ${pid})` : ''}: stop it first with \`vidsync nebula down ${project}\``)

export interface StartNebulaOptions {
  projectDir: string
  /** Keep nebula running after vidsync exits. Otherwise the caller stops it (see the returned daemon). */
  detach?: boolean
  tools?: Tools
  /** How long to wait for the tun device and a lighthouse [default: 20 s]. */
  timeoutMs?: number
}

export interface StartedNebula extends NebulaStatus {
  pid: number
  /** From starting nebula to tun up and lighthouse answered. */
  startupMs: number
  daemon: Daemon
}

/**
 * Starts nebula for a joined project and returns once its tun device has the overlay IP and a
 * lighthouse answered (not waited for on a lighthouse). On any failure nebula is stopped again
 * and the error carries nebula's own reason.
 */
export async function startNebula(options: StartNebulaOptions): Promise<StartedNebula> {
  const project = await loadProject(options.projectDir)
  const existing = await runningPid(project)
  if (existing !== undefined) throw alreadyRunning(project.name, existing)
  // A second nebula would silently share the (multiqueue) tun device with the first.
  if (networkInterfaces()[project.tunDev]) {
    throw new ConflictError(`${project.tunDev} already exists: another nebula runs ${project.name} (a system service?); stop it first`)
  }
  await rm(project.pidPath, {force: true}) // stale: a dead PID or another program's
  const problem = (await preflight({projectDir: project.dir, tools: options.tools})).find((check) => !check.ok)?.problem
  if (problem) throw problem
  // One log per run, so the handshakes in it are this run's.
  await rename(project.logPath, `${project.logPath}.1`).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error
  })
  const started = Date.now()
  const daemon = await startDaemon('nebula', ['-config', project.configPath], {
    tools: options.tools,
    cwd: project.dir,
    logPath: project.logPath,
    detached: options.detach ?? false,
  })
  let ownsPidFile = false
  try {
    await writePidFile(project, daemon.pid)
    ownsPidFile = true
    const status = await waitUntilUp(project, daemon, options.timeoutMs ?? 20_000)
    return {...status, pid: daemon.pid, startupMs: Date.now() - started, daemon}
  } catch (error) {
    await daemon.stop()
    if (ownsPidFile) await rm(project.pidPath, {force: true})
    throw error
  }
}

/**
 * Tells the project's running nebula to reload nebula.yml and the files it names (SIGHUP): CA,
 * certificate, blocklist, firewall. Nebula 1.6.1 keeps its overlay IP, tun device and listen
 * port until it is restarted. False when nebula does not run for the project.
 */
export async function reloadNebula(options: {projectDir: string}): Promise<boolean> {
  const pid = await runningPid(projectPaths(options.projectDir))
  if (pid === undefined) return false
  try {
    process.kill(pid, 'SIGHUP')
    return true
  } catch {
    return false // ended meanwhile, or another user's (a system service): it reloads when restarted
  }
}

export interface StoppedNebula {
  project: string
  /** False when nebula was not running (nothing to do). */
  stopped: boolean
  pid: number | null
}

/** Stops the project's nebula by the PID in its pid file, after checking that PID is that nebula. */
export async function stopNebula(options: {projectDir: string}): Promise<StoppedNebula> {
  const paths = projectPaths(options.projectDir)
  const pid = await runningPid(paths)
  if (pid !== undefined) await stopPid(pid)
  await rm(paths.pidPath, {force: true})
  return {project: basename(paths.dir), stopped: pid !== undefined, pid: pid ?? null}
}
