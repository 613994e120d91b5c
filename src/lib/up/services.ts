import {chown, mkdir, readFile, rm, stat} from 'node:fs/promises'
import {dirname, join} from 'node:path'

import {ConflictError, InvalidInputError, ToolFailedError} from '../errors.js'
import {writeFileAtomic} from '../files.js'
import {selfCommand} from '../exec.js'
import type {Platform, ServiceDefinition, ServiceState, User} from '../platform/index.js'
import type {ServiceManagerName} from '../platform/types.js'
import type {PushState} from './refresh.js'

/**
 * Installing, starting and removing vidsync's two services with the OS's service manager
 * (systemd, launchd, the Windows SCM and Task Scheduler), the same way on every OS: the platform
 * layer says what the definition is and which programs do what; this file decides in what order,
 * checks for an older install, and undoes a half-done install.
 */

/** A service as `status`, `doctor`, `up` and `signer --status` report it. */
export interface ServiceReport {
  role: 'nebula' | 'agent' | 'signer'
  /** The service manager's name for it (unit, launchd label, SCM service, task). */
  name: string
  /** The manager that keeps it; null where none can (then vidsync's own supervisor does, see `fallback`). */
  manager: ServiceManagerName | null
  installed: boolean
  running: boolean
  pid: number | null
  /** The manager's word for its state, or what answers instead ("vidsync supervisor on nebula.sock"). */
  state: string
  /** Installed from another vidsync or with other settings: its definition differs from what this vidsync writes. */
  stale: boolean
  /** Why no service manager takes it here (no systemd as PID 1, no user session). */
  fallback?: string
  /** The agent only, as the running agent says: whether the control plane pushes changes to it now. */
  push?: PushState
  /** nebula on Windows: why the system copy of the overlay it reads is older than the project's files (`vidsync up` refreshes it). */
  staleOverlay?: string
}

/** What an install did, in one line for the person who asked. */
export interface ServiceChange {
  name: string
  action: 'installed' | 'started' | 'running'
  line: string
}

const shown = (argv: string[]) => argv.map((arg) => (/\s/.test(arg) ? JSON.stringify(arg) : arg)).join(' ')
const reasonOf = (result: {stdout: string; stderr: string; exitCode: number | undefined}) =>
  (result.stderr.trim() || result.stdout.trim()).split('\n')[0]?.trim() || `exit code ${result.exitCode}`

export const isStale = (definition: ServiceDefinition, state: ServiceState) =>
  state.installed && state.fingerprint !== undefined && state.fingerprint.trim() !== definition.fingerprint.trim()

/** Creates `dir` and its missing parents, owned by `owner` (a user's ~/.config/systemd/user written by root under sudo). */
async function mkdirOwned(dir: string, owner?: User): Promise<void> {
  const missing: string[] = []
  for (let current = dir; !(await stat(current).then(() => true, () => false)); current = dirname(current)) {
    missing.unshift(current)
    if (dirname(current) === current) break
  }
  await mkdir(dir, {recursive: true})
  if (owner?.uid !== undefined && owner.gid !== undefined) for (const path of missing) await chown(path, owner.uid, owner.gid)
}

/** Writes a file the service manager reads (the definition, the agent's environment), owned by `owner` when given. */
export async function writeServiceFile(path: string, content: string, mode: number, owner?: User): Promise<void> {
  await mkdirOwned(dirname(path), owner)
  await writeFileAtomic(path, content, mode)
  if (owner?.uid !== undefined && owner.gid !== undefined) await chown(path, owner.uid, owner.gid)
}

async function runAll(platform: Platform, steps: string[][]): Promise<{argv: string[]; reason: string} | undefined> {
  for (const argv of steps) {
    const result = await platform.manage(argv)
    if (result.missing) return {argv, reason: `${argv[0]} not found`}
    if (result.exitCode !== 0) return {argv, reason: reasonOf(result)}
  }
  return undefined
}

/**
 * Makes `definition` installed and running: installs it when the manager does not know it yet,
 * starts it when installed but stopped, leaves it when it runs. An older install (another
 * definition under the same name) is left as it is: exit 4 and how to remove it (`staleHint`,
 * by default `down --uninstall` and `up`). When the manager
 * refuses a step, what this call wrote is removed again (exit 1 with the manager's reason).
 */
export async function installService(
  definition: ServiceDefinition,
  options: {platform: Platform; user?: User; owner?: User; mode?: number; staleHint?: string},
): Promise<ServiceChange> {
  const {platform} = options
  const where = definition.path ? ` (${definition.path})` : ''
  const state = await platform.serviceState(definition, options.user)
  if (isStale(definition, state)) {
    throw new ConflictError(
      `${definition.name}${where} is installed from an older vidsync or with other settings and was left as it is: ${options.staleHint ?? 'remove it as root with `vidsync down --uninstall`, then run `vidsync up` again'}`,
    )
  }
  if (state.installed && state.running) return {name: definition.name, action: 'running', line: `${definition.name} runs already (${definition.manager})`}
  if (state.installed) {
    const failed = await runAll(platform, definition.start)
    if (failed) throw new ToolFailedError(`the service manager refused \`${shown(failed.argv)}\` for ${definition.name}: ${failed.reason}`, failed.reason)
    return {name: definition.name, action: 'started', line: `${definition.name} started (${definition.manager})`}
  }
  if (definition.path && definition.content !== undefined) {
    await writeServiceFile(definition.path, definition.content, options.mode ?? 0o644, options.owner)
    if (options.mode === 0o600) await platform.makePrivate(definition.path)
  }
  const failed = await runAll(platform, definition.install)
  if (failed) {
    // Back to before: unregister what got registered, remove the file.
    await runAll(platform, definition.uninstall)
    if (definition.path) await rm(definition.path, {force: true})
    await runAll(platform, definition.cleanup)
    throw new ToolFailedError(`the service manager refused \`${shown(failed.argv)}\` for ${definition.name}: ${failed.reason}; nothing was installed`, failed.reason)
  }
  return {name: definition.name, action: 'installed', line: `${definition.manager} ${definition.scope === 'system' ? 'system service' : 'user service'} ${definition.name}${where}`}
}

/**
 * Stops and removes `definition` (`down --uninstall`). Nothing to do when neither the manager nor
 * the file knows it. When the manager refuses to unregister it, it stays as it was (exit 1).
 */
export async function uninstallService(definition: ServiceDefinition, options: {platform: Platform; user?: User}): Promise<boolean> {
  const {platform} = options
  const state = await platform.serviceState(definition, options.user)
  const hasFile = state.fingerprint !== undefined && definition.path !== undefined
  if (!state.installed && !hasFile) return false
  if (state.installed) {
    // Stopping something already stopped may fail (sc.exe 1062); only the last step, which unregisters, counts.
    for (const [index, argv] of definition.uninstall.entries()) {
      const result = await platform.manage(argv)
      if (index === definition.uninstall.length - 1 && (result.missing || result.exitCode !== 0)) {
        const reason = result.missing ? `${argv[0]} not found` : reasonOf(result)
        throw new ToolFailedError(`the service manager refused \`${shown(argv)}\` for ${definition.name}: ${reason}; it stays installed`, reason)
      }
    }
  }
  if (definition.path) await rm(definition.path, {force: true})
  await runAll(platform, definition.cleanup)
  return true
}

/** Stops a service the manager runs (it stays installed); false when the manager refused (no rights). */
export async function stopService(definition: ServiceDefinition, platform: Platform): Promise<boolean> {
  return (await runAll(platform, definition.stop)) === undefined
}

/**
 * What the service manager says about one of vidsync's services, or, where no manager can keep
 * it, what vidsync's own supervisor answers on its control socket (`running`).
 */
export async function reportService(
  role: ServiceReport['role'],
  definition: ServiceDefinition,
  options: {platform: Platform; user?: User; staleCheck?: boolean; supervisor: {running: boolean; pid?: number; address: string}},
): Promise<ServiceReport> {
  const {platform, supervisor} = options
  const fallback = await platform.serviceManagerProblem(definition.scope, options.user)
  if (fallback) {
    return {
      role,
      name: definition.name,
      manager: null,
      installed: false,
      running: supervisor.running,
      pid: supervisor.pid ?? null,
      state: supervisor.running ? `supervised by vidsync (${supervisor.address})` : 'not running',
      stale: false,
      fallback,
    }
  }
  const state = await platform.serviceState(definition, options.user)
  return {
    role,
    name: definition.name,
    manager: definition.manager,
    installed: state.installed,
    running: state.running,
    pid: state.pid ?? supervisor.pid ?? null,
    state: state.installed ? state.state : 'not installed',
    stale: (options.staleCheck ?? true) && isStale(definition, state),
  }
}

export interface AgentServiceOptions {
  home: string
  project: {name: string; dir: string}
  user: User
  platform: Platform
  intervalSeconds?: number
  guiPort?: number
}

/**
 * The control-plane settings of a service (database URL, Supabase URL and key): KEY=value lines in
 * a file private to the user, which the agent (agent.env) and the signer (signer.env) read
 * themselves at start (`readServiceSettings`) on every OS, so no service manager passes
 * environment and no secret is in argv or a service definition.
 */
export const agentEnvPath = (dir: string) => join(dir, 'agent.env')

/** The settings a service takes from its settings file; anything else in the file is ignored. */
export const serviceSettingKeys = ['VIDSYNC_DATABASE_URL', 'VIDSYNC_SUPABASE_URL', 'VIDSYNC_SUPABASE_KEY'] as const
export type ServiceSettings = Partial<Record<(typeof serviceSettingKeys)[number], string>>

/** Writes a settings file at `path` (0600, then the platform's private ACL: icacls on Windows), or removes it when there is nothing to say. */
export async function writeServiceSettings(path: string, settings: ServiceSettings, platform: Platform, owner?: User): Promise<void> {
  const lines = serviceSettingKeys.flatMap((key) => {
    const value = settings[key]
    if (value && /[\r\n]/.test(value)) throw new InvalidInputError(`${key} holds a line break`)
    return value ? [`${key}=${value}\n`] : []
  })
  if (lines.length === 0) return rm(path, {force: true})
  await writeServiceFile(path, lines.join(''), 0o600, owner)
  await platform.makePrivate(path)
}

/** The settings in the file at `path`, empty when the file is missing. */
export async function readServiceSettings(path: string): Promise<ServiceSettings> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {}
    throw error
  }
  const settings: ServiceSettings = {}
  for (const line of text.split(/\r?\n/)) {
    const at = line.indexOf('=')
    const key = line.slice(0, at) as (typeof serviceSettingKeys)[number]
    if (at > 0 && serviceSettingKeys.includes(key)) settings[key] = line.slice(at + 1)
  }
  return settings
}

/** The user service that runs `vidsync up --agent` (Syncthing and the reconcile loop) at login, as the user. */
export async function agentServiceDefinition(options: AgentServiceOptions): Promise<ServiceDefinition> {
  const {project} = options
  const args = ['up', project.name, '--agent', '--home', options.home, '--interval', `${options.intervalSeconds ?? 10}s`]
  if (options.guiPort !== undefined) args.push('--gui-port', String(options.guiPort))
  return options.platform.userService({
    role: 'agent',
    project: project.name,
    command: selfCommand(args),
    logPath: join(project.dir, 'agent.log'),
    user: options.user,
    description: `vidsync: Syncthing and reconcile loop for project ${project.name}`,
    stateDir: project.dir,
  })
}
