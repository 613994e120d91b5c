import {constants} from 'node:fs'
import {access} from 'node:fs/promises'
import {delimiter, dirname, isAbsolute, join} from 'node:path'

import {MissingDependencyError, PermissionError, ToolFailedError} from '../errors.js'
import {type Daemon, resolveTools, selfCommand, selfPrograms, type Tools} from '../exec.js'
import {installService, uninstallService} from '../up/services.js'
import {currentPlatform, type Platform, type ServiceDefinition, type User} from '../platform/index.js'
import {serveControl} from '../up/control.js'
import {supervise} from '../up/supervise.js'
import {testNebulaConfig} from './config.js'
import {nebulaControlAddress, startNebula} from './process.js'
import {JoinedProject, loadProject} from '../project/joined-project.js'
import {installSystemNebula, installSystemOverlay, serviceNebulaPath, systemOverlayPaths} from './system-overlay.js'
import {installProtectedRuntime, type ProtectedRuntime, removeUnusedRuntimes, runtimeCommand, type RuntimeSource} from './runtime.js'

/** The service manager runs programs from a bare environment, so they need absolute paths. */
export async function absoluteNebula(tools?: Tools, platform: Platform = currentPlatform()): Promise<string> {
  const name = platform.executable(resolveTools(tools).nebula)
  if (isAbsolute(name)) return name
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    const candidate = join(dir, name)
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate
  }
  throw new MissingDependencyError(`${name} not found on PATH: install nebula, or pass its absolute path`)
}


export interface NebulaServiceOptions {
  home: string
  projectDir: string
  user: User
  tools?: Tools
  platform?: Platform
  /** What the protected runtime copies (POSIX): the running Node.js and vidsync unless given (tests give a small package). */
  runtimeSource?: RuntimeSource
}

/**
 * The per-project system service that runs nebula as root/SYSTEM. On Linux and macOS it runs
 * `vidsync nebula service`, which supervises nebula and answers the user's `status`/`down` on a
 * socket only that user can open; on Windows the SCM runs nebula.exe itself (no such socket: the
 * SCM is asked instead), a copy only administrators can replace, with the system copy of the
 * overlay (%ProgramData%\vidsync\<project>\nebula.yml), never a file the user can write.
 */
export async function nebulaServiceDefinition(options: NebulaServiceOptions & {nebulaPath: string}): Promise<ServiceDefinition> {
  const platform = options.platform ?? currentPlatform()
  const project = await loadProject(options.projectDir)
  const command =
    platform.os === 'win32'
      ? [options.nebulaPath, '-service', 'run', '-config', systemOverlayPaths(project.name, platform).configPath]
      : (await serviceSelf(platform, ['nebula', 'service', project.name, '--home', options.home], options.runtimeSource)).command
  const logPath = join(project.dir, 'nebula-service.log')
  return platform.nebulaService({project: project.name, command, logPath, description: `vidsync: Nebula overlay for project ${project.name}`})
}

/**
 * The definition for asking the manager about the service (`status`, `down`): found even where
 * nebula is not on PATH; on Windows with the nebula the elevated step would choose (the protected
 * copy unless nebula already is where only administrators can replace it).
 */
export async function nebulaServiceProbe(options: NebulaServiceOptions): Promise<ServiceDefinition> {
  const platform = options.platform ?? currentPlatform()
  const found = await absoluteNebula(options.tools, platform).catch(() => undefined)
  const nebulaPath = (await serviceNebulaPath(found ?? platform.executable('nebula'), platform, {check: found !== undefined})).path
  return nebulaServiceDefinition({...options, nebulaPath})
}

/** Why someone other than root could replace Node.js or vidsync's entry script, the programs `selfCommand` runs; undefined when only root can. */
export async function selfProblem(platform: Platform): Promise<string | undefined> {
  for (const program of selfPrograms()) {
    const problem = await platform.executableProblem(program)
    if (problem) return problem
  }
  return undefined
}

/**
 * What the POSIX nebula service runs: this Node.js and vidsync where only root can replace them,
 * else their protected copy in `platform.runtimeDir` (`problem` says why). Reads file owners and
 * modes only, so `status` as the user decides as the elevated step does.
 */
async function serviceSelf(platform: Platform, args: string[], source?: RuntimeSource): Promise<{command: string[]; problem?: string}> {
  const problem = await selfProblem(platform)
  if (!problem || !platform.runtimeDir) return {command: selfCommand(args)}
  return {command: await runtimeCommand(platform.runtimeDir, args, source), problem}
}

const refusal = (problem: string, hint: string) => new PermissionError(`refusing to install the nebula service: ${problem}`, {hint})

/**
 * The programs a POSIX system service runs as root: Node.js and vidsync's entry script. Where
 * someone other than root could replace one (nvm, fnm, volta, a user's npm prefix), the service
 * would run their code as root at boot: a root-owned copy is made in `platform.runtimeDir` and the
 * service runs that. Refused (exit 9) only when the copy could be replaced too (a runtime
 * directory below someone else's) or loads libraries someone else could replace (Homebrew's node).
 */
async function protectedSelf(platform: Platform, source?: RuntimeSource): Promise<{runtime: ProtectedRuntime; reason: string} | undefined> {
  const reason = await selfProblem(platform)
  if (!reason) {
    await requireProtectedLibraries(platform, process.execPath)
    return undefined
  }
  if (!platform.runtimeDir) throw refusal(reason, 'install Node.js and vidsync where only root can write, then run `sudo vidsync up` again')
  const runtime = await installProtectedRuntime(platform.runtimeDir, source)
  for (const program of [runtime.node, runtime.entry]) {
    const problem = await platform.executableProblem(program)
    if (problem) throw refusal(problem, `make ${platform.runtimeDir} and the directories above it writable by root only (VIDSYNC_RUNTIME_DIR chooses another place), then run \`sudo vidsync up\` again`)
  }
  await requireProtectedLibraries(platform, runtime.node)
  return {runtime, reason}
}

/**
 * The shared libraries Node.js loads run as root too: a copy of Homebrew's node still loads
 * /opt/homebrew/opt/icu4c/… and the like, which the user can replace. Refused (exit 9): the copy
 * cannot fix it (nodejs.org's builds, which nvm, fnm and volta install, load system libraries only).
 */
async function requireProtectedLibraries(platform: Platform, node: string): Promise<void> {
  for (const library of await platform.linkedLibraries(node)) {
    const problem = await platform.executableProblem(library)
    if (problem) {
      throw refusal(
        `${node} loads ${library}: ${problem.replace(/^.*? would run as root in the nebula service, but /, '')}`,
        'use a Node.js that loads only system libraries (the nodejs.org installer or binaries, as nvm, fnm and volta install them), then run `sudo vidsync up` again',
      )
    }
  }
}

const megabytes = (bytes: number) => (bytes / 1_048_576).toFixed(0)

export interface InstalledService {
  /** What was installed or started, one line each: shown before it happens and returned after. */
  installed: string[]
  /** True when the OS service manager runs it; false where none runs and vidsync supervises nebula itself. */
  managed: boolean
}

/**
 * The one elevated step: installs and starts the project's nebula service (or starts it when
 * installed and stopped). Where no service manager runs (a container, this CI machine), starts
 * the same supervisor detached instead and says so.
 */
export async function installNebulaService(options: NebulaServiceOptions & {startDetached: () => Promise<Daemon>}): Promise<InstalledService> {
  const platform = options.platform ?? currentPlatform()
  if (!(await platform.canCreateTun())) {
    throw new PermissionError('installing the nebula service needs administrator rights: run it with sudo (an elevated prompt on Windows)')
  }
  const project = await JoinedProject.open(options.projectDir, platform)
  const noManager = await platform.serviceManagerProblem('system')
  // A service runs at every boot: what it runs must be replaceable by administrators only.
  const self = !noManager && platform.os !== 'win32' ? await protectedSelf(platform, options.runtimeSource) : undefined
  const nebula = !noManager && platform.os === 'win32' ? await installSystemNebula(await absoluteNebula(options.tools, platform), platform) : undefined
  const overlay = await installSystemOverlay(project, platform)
  await testNebulaConfig({configPath: overlay.configPath, tools: options.tools})
  const files = `overlay files for ${project.name} in ${overlay.dir} (readable by root only)`
  if (noManager) {
    const daemon = await options.startDetached()
    return {installed: [`nebula supervisor for ${project.name} (pid ${daemon.pid}; ${noManager}; it does not start at boot)`, files], managed: false}
  }
  const definition = await nebulaServiceDefinition({...options, nebulaPath: nebula?.path ?? ''})
  const change = await installService(definition, {platform})
  const installed = change.action === 'running' ? [] : [`${change.line}: runs nebula as root at boot`, files]
  if (nebula?.copied) installed.push(nebula.copied)
  if (self && (self.runtime.copied || change.action !== 'running')) {
    const {runtime} = self
    installed.push(
      runtime.copied
        ? `Node.js ${process.version} and vidsync copied to ${runtime.dir} (${runtime.files} files, ${megabytes(runtime.bytes)} MB in ${(runtime.ms / 1000).toFixed(1)} s; replaceable by root only): the nebula service runs this copy, since ${self.reason}`
        : `the nebula service runs the protected copy of Node.js and vidsync in ${runtime.dir} (unchanged)`,
    )
  }
  if (platform.runtimeDir && definition.path) {
    for (const dir of await removeUnusedRuntimes(platform.runtimeDir, dirname(definition.path), self?.runtime.dir)) installed.push(`${dir} removed: no nebula service runs it`)
  }
  if (change.action === 'running' && overlay.changed && !platform.serviceRendersOverlay) {
    // The SCM's nebula reads the copy only when it starts: restarted to read the one just written.
    if (!(await platform.reloadNebula({service: definition.name}))) {
      throw new ToolFailedError(`${definition.name} did not restart: it still runs with the overlay files it read when it started`, 'restart failed')
    }
    installed.push(`${files}, refreshed; ${definition.name} restarted to read them`)
  }
  return {installed, managed: true}
}

/** Stops and removes the project's nebula service (`down --uninstall`); nothing to do where none is installed. */
export async function uninstallNebulaService(options: NebulaServiceOptions): Promise<string[]> {
  const platform = options.platform ?? currentPlatform()
  if (await platform.serviceManagerProblem('system')) return []
  const definition = await nebulaServiceProbe(options)
  const removed = (await uninstallService(definition, {platform})) ? [definition.path ? `${definition.name} (${definition.path})` : definition.name] : []
  // The last project's service gone, its copy of Node.js and vidsync goes too.
  if (platform.runtimeDir && definition.path) removed.push(...(await removeUnusedRuntimes(platform.runtimeDir, dirname(definition.path))))
  return removed
}

/**
 * `vidsync nebula service`: what the nebula service runs. Keeps nebula running (restarted after
 * a crash with a bounded backoff, one log line each), and answers on the project's control
 * socket: `status`, `reload` (SIGHUP), `stop`. Returns when stopped.
 */
export async function runNebulaService(options: {
  projectDir: string
  owner?: {uid?: number; gid?: number}
  tools?: Tools
  signal: AbortSignal
  log: (line: string) => void
  platform?: Platform
  /** Hands over the reload, for the service manager's own reload (systemd ExecReload sends SIGHUP). */
  onReloadRequest?: (reload: () => void) => void
}): Promise<void> {
  const platform = options.platform ?? currentPlatform()
  const stop = new AbortController()
  options.signal.addEventListener('abort', () => stop.abort(), {once: true})
  let current: Daemon | undefined
  let restarts = 0
  const reload = async () => {
    // The system copy first: a renewed certificate or a new blocklist is in the user's project directory.
    await installSystemOverlay(await JoinedProject.open(options.projectDir, platform), platform)
    if (current) await platform.reloadNebula({pid: current.pid})
  }
  options.onReloadRequest?.(() => {
    options.log('reload requested: nebula reloads its config')
    void reload()
  })
  const control = await serveControl(
    nebulaControlAddress(options.projectDir, platform),
    {
      status: async () => ({pid: current?.pid ?? null, restarts}),
      reload: async () => {
        await reload()
        return {pid: current?.pid ?? null, restarts}
      },
      stop: async () => {
        const pid = current?.pid ?? null
        stop.abort()
        await finished
        return {pid, restarts}
      },
    },
    options.owner,
  )
  const finished = supervise({
    name: 'nebula',
    start: async () => {
      // nebula as root reads only the system copy, written again from the project's manifest on every start.
      const {configPath} = await installSystemOverlay(await JoinedProject.open(options.projectDir, platform), platform)
      return (await startNebula({projectDir: options.projectDir, configPath, tools: options.tools, waitForLighthouse: false, logOwner: options.owner, platform})).daemon
    },
    onStarted: (daemon) => {
      current = daemon
      options.log(`nebula running (pid ${daemon.pid})`)
    },
    signal: stop.signal,
    log: (line) => {
      if (/ended|could not start/.test(line)) restarts++
      options.log(line)
    },
    initialDelayMs: 500,
    maxDelayMs: 10_000,
  })
  try {
    await finished
  } finally {
    await control.close()
  }
}

