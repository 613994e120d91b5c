import {readFile, rename, rm, writeFile} from 'node:fs/promises'
import {networkInterfaces} from 'node:os'
import {basename, join} from 'node:path'

import {ConflictError, MissingDependencyError, PermissionError, ToolFailedError, UnavailableError, VidsyncError} from '../errors.js'
import {type Daemon, identityText, readIdentity, resolveTools, runProgram, startDaemon, stopProcess, type Tools} from '../exec.js'
import {currentPlatform, type Platform, type ProcessIdentity} from '../platform/index.js'
import {askControl} from '../up/control.js'
import {publishNew, withTempDir} from '../files.js'
import {testNebulaConfig} from './config.js'
import {failureReason} from './log.js'
import {pollUntil} from '../poll.js'
import {requireCertSupport} from '../pki/cert.js'
import {JoinedProject, loadProject, projectPaths} from '../project/joined-project.js'
import {systemOverlayProblem} from './system-overlay.js'

export interface PreflightCheck {
  name: 'nebula' | 'privileges' | 'tun' | 'config'
  ok: boolean
  /** What is wrong and how to fix it, when not ok. */
  problem?: VidsyncError
}

export const privilegesProblem =
  'nebula needs root or CAP_NET_ADMIN: run vidsync with sudo, or install the overlay as a service with `vidsync nebula up --service`'

async function privilegesProblemOfThisProcess(platform: Platform): Promise<VidsyncError | undefined> {
  return (await platform.canCreateTun()) ? undefined : new PermissionError(privilegesProblem)
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

export async function preflight(options: {projectDir: string; configPath?: string; tools?: Tools; platform?: Platform}): Promise<PreflightCheck[]> {
  const platform = options.platform ?? currentPlatform()
  const checks: PreflightCheck[] = []
  const add = (name: PreflightCheck['name'], problem: VidsyncError | undefined) => {
    checks.push(problem ? {name, ok: false, problem} : {name, ok: true})
  }
  add('nebula', await problemOf(() => nebulaCanUse(options.projectDir, options.tools)))
  add('privileges', await privilegesProblemOfThisProcess(platform))
  const tunProblem = await platform.tunProblem(resolveTools(options.tools).nebula)
  add('tun', tunProblem ? new MissingDependencyError(tunProblem) : undefined)
  if (checks[0]?.ok) {
    const configPath = options.configPath ?? projectPaths(options.projectDir).configPath
    add('config', await problemOf(() => testNebulaConfig({configPath, tools: options.tools})))
  }
  return checks
}

export interface NebulaStatus {
  project: string
  running: boolean
  pid: number | null
  /** The tun device nebula.yml names; null where the OS names it. */
  tunDev: string | null
  overlayIp: string
  /** The tun device is up with the overlay IP, as this process's network namespace sees it. */
  tunUp: boolean
  /** A lighthouse answers a ping over the overlay now; null on a lighthouse or without lighthouses. */
  lighthouseReachable: boolean | null
  logPath: string
  /** Present when nebula runs under vidsync's nebula service, which restarts it after a crash. */
  service?: {restarts: number}
}

/** The process recorded in the pid file when it still runs (same PID, same start time). */
async function runningIdentity(pidPath: string, platform: Platform): Promise<ProcessIdentity | undefined> {
  const identity = await readIdentity(pidPath)
  return identity && (await platform.isRunning(identity)) ? identity : undefined
}

/** What the project's nebula service says about itself over its control socket, when it runs. */
export interface NebulaServiceState {
  pid: number | null
  restarts: number
}

export const nebulaControlAddress = (dir: string, platform: Platform = currentPlatform()) => platform.controlAddress(dir, 'nebula')

export async function askNebulaService(dir: string, command: 'status' | 'reload' | 'stop', platform: Platform = currentPlatform()) {
  return askControl<NebulaServiceState>(nebulaControlAddress(dir, platform), command, command === 'stop' ? 30_000 : 5000)
}

/** The overlay IP is on the tun device (Linux), the utunN holding it (macOS) or the Wintun adapter (Windows). */
function tunHasIp(project: JoinedProject, platform: Platform): boolean {
  return platform.overlayInterface(project) !== undefined
}

/**
 * Whether `ip` answers an ICMP echo through the overlay now (nebula's firewall lets ICMP in on
 * every device): a tunnel exists or nebula builds one, not an old log line.
 */
export async function answersOverOverlay(ip: string, platform: Platform = currentPlatform(), timeoutMs = 1000): Promise<boolean> {
  const result = await runProgram(platform.pingCommand(ip, timeoutMs), {timeoutMs: timeoutMs + 2000}).catch(() => undefined)
  return result?.exitCode === 0
}

/** Whether a lighthouse answers now; null when this node has none to reach. */
async function lighthouseReachable(project: JoinedProject, running: boolean, platform: Platform): Promise<boolean | null> {
  if (project.amLighthouse || project.lighthouseIps.length === 0) return null
  if (!running) return false
  const answers = await Promise.all(project.lighthouseIps.map((ip) => answersOverOverlay(ip, platform)))
  return answers.some(Boolean)
}

async function statusOf(project: JoinedProject, pid: number | undefined, platform: Platform, service?: NebulaServiceState): Promise<NebulaStatus> {
  const running = pid !== undefined
  return {
    project: project.name,
    running,
    pid: pid ?? null,
    ...(service ? {service: {restarts: service.restarts}} : {}),
    tunDev: platform.overlayInterface(project) ?? project.tunDev ?? null,
    overlayIp: project.overlayIp,
    tunUp: running && tunHasIp(project, platform),
    lighthouseReachable: await lighthouseReachable(project, running && tunHasIp(project, platform), platform),
    logPath: project.logPath,
  }
}

/** Whether nebula runs for the project (by its service, or `nebula up --detach`) and what it reaches. */
export async function nebulaStatus(options: {projectDir: string; platform?: Platform}): Promise<NebulaStatus> {
  const platform = options.platform ?? currentPlatform()
  const project = await loadProject(options.projectDir)
  const service = await askNebulaService(project.dir, 'status', platform)
  const pid = service ? (service.pid ?? undefined) : ((await runningIdentity(project.pidPath, platform))?.pid ?? (await managedNebula(project.dir, platform))?.pid)
  return statusOf(project, pid, platform, service)
}

export type DaemonExit = Awaited<Daemon['exited']>

/** nebula's own reason for ending, from its log (it logs fatal errors there, not on stderr). */
export async function exitReason(logPath: string, exit: DaemonExit): Promise<string> {
  if (exit.signal) return `killed by ${exit.signal}`
  return failureReason(await readFile(logPath, 'utf8').catch(() => '')) ?? `exit code ${exit.exitCode}`
}

async function waitUntilUp(project: JoinedProject, daemon: Daemon, timeoutMs: number, platform: Platform, needLighthouse: boolean): Promise<NebulaStatus> {
  let exit: DaemonExit | undefined
  void daemon.exited.then((result) => (exit = result))
  let status: NebulaStatus | undefined
  return pollUntil(
    async () => {
      status = await statusOf(project, daemon.pid, platform)
      if (exit) {
        const reason = await exitReason(project.logPath, exit)
        throw new ToolFailedError(`nebula exited while starting: ${reason}`, reason)
      }
      return status.tunUp && (status.lighthouseReachable !== false || !needLighthouse) && status
    },
    {
      timeoutMs,
      intervalMs: 20, // on a LAN, nebula is up and through its handshake in about 30 ms
      onTimeout: () => {
        const seconds = timeoutMs / 1000
        if (!status?.tunUp) throw new UnavailableError(`${project.tunDev ?? 'the tun device'} did not come up with ${project.overlayIp} within ${seconds}s: see ${project.logPath}`)
        throw new UnavailableError(
          `no lighthouse (${project.lighthouseIps.join(', ')}) answered within ${seconds}s: check that it runs and that UDP reaches ` +
            `its address in static_host_map of ${project.configPath}; log: ${project.logPath}`,
        )
      },
    },
  )
}

/** Publishes the pid file atomically and never over another one, so two concurrent starts cannot both win. */
async function writePidFile(project: JoinedProject, pid: number, platform: Platform): Promise<void> {
  const identity = await platform.processIdentity(pid)
  if (!identity) throw new ToolFailedError('nebula exited while starting', 'exited')
  await withTempDir(project.dir, async (temp) => {
    const file = join(temp, 'pid')
    await writeFile(file, identityText(identity), {mode: 0o644})
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
  /** Wait for a lighthouse too [default: true]; the service waits for the tun device only and keeps nebula when no lighthouse answers yet. */
  waitForLighthouse?: boolean
  /** Who owns nebula.log (the invoking user, when root runs nebula for them). */
  logOwner?: {uid?: number; gid?: number}
  /** The config nebula runs with [default: the project's nebula.yml]; the service's is the system copy. */
  configPath?: string
  platform?: Platform
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
  const platform = options.platform ?? currentPlatform()
  const project = await loadProject(options.projectDir)
  const existing = await runningIdentity(project.pidPath, platform)
  if (existing !== undefined) throw alreadyRunning(project.name, existing.pid)
  // A second nebula would silently share the (multiqueue) tun device with the first.
  if (project.tunDev !== undefined && networkInterfaces()[project.tunDev]) {
    throw new ConflictError(`${project.tunDev} already exists: another nebula runs ${project.name} (a system service?); stop it first`)
  }
  await rm(project.pidPath, {force: true}) // stale: a dead PID or another program's
  const configPath = options.configPath ?? project.configPath
  const problem = (await preflight({projectDir: project.dir, configPath, tools: options.tools, platform})).find((check) => !check.ok)?.problem
  if (problem) throw problem
  // One log per run, so the handshakes in it are this run's.
  await rename(project.logPath, `${project.logPath}.1`).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error
  })
  const started = Date.now()
  const daemon = await startDaemon('nebula', ['-config', configPath], {
    tools: options.tools,
    cwd: project.dir,
    logPath: project.logPath,
    logOwner: options.logOwner,
    detached: options.detach ?? false,
  })
  let ownsPidFile = false
  try {
    await writePidFile(project, daemon.pid, platform)
    ownsPidFile = true
    const status = await waitUntilUp(project, daemon, options.timeoutMs ?? 20_000, platform, options.waitForLighthouse ?? true)
    return {...status, pid: daemon.pid, startupMs: Date.now() - started, daemon}
  } catch (error) {
    await daemon.stop()
    if (ownsPidFile) await rm(project.pidPath, {force: true})
    throw error
  }
}

/**
 * Tells the project's running nebula to reload nebula.yml and the files it names: CA,
 * certificate, blocklist, firewall (through its service when it runs as one, else SIGHUP; a
 * service restart on Windows). Nebula 1.6.1 keeps its overlay IP, tun device and listen port
 * until it is restarted. False when nebula does not run for the project, and on Windows while the
 * system copy its service reads is older than the project's files (`systemOverlayProblem`: only
 * the elevated step of `vidsync up` rewrites it).
 */
export async function reloadNebula(options: {projectDir: string; platform?: Platform}): Promise<boolean> {
  const platform = options.platform ?? currentPlatform()
  if ((await askNebulaService(options.projectDir, 'reload', platform)) !== undefined) return true
  const identity = await runningIdentity(projectPaths(options.projectDir).pidPath, platform)
  if (identity) return platform.reloadNebula({pid: identity.pid})
  const managed = await managedNebula(options.projectDir, platform)
  if (!managed) return false
  // Windows: the service reads the system copy, which only the elevated step rewrites; restarted now, it would read the old files.
  if (await systemOverlayProblem(await JoinedProject.open(options.projectDir, platform), platform)) return false
  return platform.reloadNebula({...(managed.pid ? {pid: managed.pid} : {}), service: managed.name})
}

/**
 * The project's nebula service as the service manager runs it, where no vidsync supervisor answers
 * for it (the SCM runs nebula.exe itself on Windows); undefined when none runs or no manager does.
 */
async function managedNebula(projectDir: string, platform: Platform): Promise<{name: string; pid?: number} | undefined> {
  if (await platform.serviceManagerProblem('system')) return undefined
  const logPath = join(projectDir, 'nebula-service.log')
  const service = await platform.nebulaService({project: basename(projectDir), command: [platform.executable('nebula')], logPath, description: ''})
  const state = await platform.serviceState(service)
  return state.running ? {name: service.name, ...(state.pid ? {pid: state.pid} : {})} : undefined
}

export interface StoppedNebula {
  project: string
  /** False when nebula was not running (nothing to do). */
  stopped: boolean
  pid: number | null
}

/** Stops the project's nebula: its service through the control socket, else the process recorded in its pid file. */
export async function stopNebula(options: {projectDir: string; platform?: Platform}): Promise<StoppedNebula> {
  const platform = options.platform ?? currentPlatform()
  const paths = projectPaths(options.projectDir)
  const service = await askNebulaService(paths.dir, 'stop', platform)
  if (service) return {project: basename(paths.dir), stopped: true, pid: service.pid}
  const identity = await runningIdentity(paths.pidPath, platform)
  const stopped = identity ? await stopProcess(identity, 10_000, platform) : false
  await rm(paths.pidPath, {force: true})
  return {project: basename(paths.dir), stopped, pid: stopped ? (identity?.pid ?? null) : null}
}
