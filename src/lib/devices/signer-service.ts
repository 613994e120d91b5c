import {rm} from 'node:fs/promises'
import {isAbsolute, join, resolve} from 'node:path'

import which from 'which'

import {InvalidInputError, MissingDependencyError, UnavailableError} from '../errors.js'
import {resolveTools, selfCommand, type Tools} from '../exec.js'
import {loadCa} from '../pki/ca.js'
import type {Platform, ServiceDefinition, ServiceManagerName, User} from '../platform/index.js'
import {installService, isStale, readServiceSettings, type ServiceReport, uninstallService, writeServiceSettings, type ServiceSettings} from '../up/services.js'

/**
 * `vidsync signer PROJECT` as a per-user service on the operator's machine, where the CA key is:
 * a systemd --user unit or a LaunchAgent (a logon task on Windows) that starts it at login and
 * again after a failure. The control-plane settings go in the signer's private signer.env, which
 * the signer reads at start, never in argv or the definition.
 */

/** The signer's own directory for `project`: its settings, its log, Windows' task wrapper. */
export const signerDir = (home: string, project: string) => join(resolve(home), 'signer', project)
export const signerEnvPath = (home: string, project: string) => join(signerDir(home, project), 'signer.env')

/** The settings `vidsync signer PROJECT` falls back on where flags and environment give none. */
export const savedSignerSettings = (home: string, project: string): Promise<ServiceSettings> => readServiceSettings(signerEnvPath(home, project))

export interface SignerServiceOptions {
  home: string
  project: string
  platform: Platform
  tools?: Tools
}

/** What `signer --install` / `--uninstall` did (`--json`). */
export interface SignerServiceResult {
  project: string
  /** installed: written and started; started: was installed, stopped; running: nothing to do; uninstalled; absent: nothing was installed. */
  action: 'installed' | 'started' | 'running' | 'uninstalled' | 'absent'
  /** The service manager's name for it (unit, launchd label, task). */
  name: string
  manager: ServiceManagerName
  /** The definition file (unit, plist, task wrapper). */
  path: string | null
  /** The private settings file the signer reads at start (null once uninstalled). */
  settingsPath: string | null
  line: string
}

/** Why no service manager takes the signer here, as one line with what to do instead; undefined when one can. */
async function noServiceManager(options: SignerServiceOptions, user: User): Promise<string | undefined> {
  const problem = await options.platform.serviceManagerProblem('user', user)
  if (!problem) return undefined
  // The platform's reason ends with what vidsync does for nebula and the agent instead (": vidsync ..."); the signer has no such fallback.
  const reason = problem.replace(/: vidsync [^:]*$/, '')
  return `cannot install the signer as a service: ${reason}; run \`vidsync signer ${options.project}\` in the foreground instead, or under your own supervisor`
}

/** nebula-cert's absolute path as this shell finds it, for the service, which starts with the manager's PATH. */
async function nebulaCertPath(tools?: Tools): Promise<string> {
  const name = (tools ?? resolveTools()).nebulaCert
  const path = isAbsolute(name) ? name : await which(name, {nothrow: true})
  if (!path) throw new MissingDependencyError(`${name} is not on PATH: the signer signs with it`)
  return path
}

async function signerServiceDefinition(options: SignerServiceOptions & {intervalSeconds: number; user: User; nebulaCert: string}): Promise<ServiceDefinition> {
  const home = resolve(options.home)
  const dir = signerDir(home, options.project)
  return options.platform.userService({
    role: 'signer',
    project: options.project,
    command: selfCommand(['signer', options.project, '--home', home, '--interval', `${options.intervalSeconds}s`]),
    logPath: join(dir, 'signer.log'),
    user: options.user,
    description: `vidsync: signer of renewal requests for project ${options.project}`,
    stateDir: dir,
    // launchd starts agents with PATH=/usr/bin:/bin:/usr/sbin:/sbin, without Homebrew's nebula-cert.
    environment: {VIDSYNC_NEBULA_CERT: options.nebulaCert},
  })
}

/**
 * Installs (or starts) the signer service for `project`: only where a service manager takes user
 * services (else exit 6, nothing written), the CA key is here (exit 3/9), a shared control plane
 * is given (exit 2: the embedded database would stay locked by the service) and `checkProject`
 * reads the project from it. A definition from another vidsync or with other settings is left
 * as it is (exit 4).
 */
export async function installSignerService(
  options: SignerServiceOptions & {intervalSeconds: number; settings: ServiceSettings; checkProject: () => Promise<unknown>},
): Promise<SignerServiceResult> {
  const {platform, project} = options
  const user = platform.invokingUser()
  const refusal = await noServiceManager(options, user)
  if (refusal) throw new UnavailableError(refusal)
  await loadCa({home: options.home, tools: options.tools})
  const {settings} = options
  if (!settings.VIDSYNC_DATABASE_URL && !settings.VIDSYNC_SUPABASE_URL) {
    throw new InvalidInputError('the signer service needs a Postgres or Supabase control plane: the embedded database would stay locked while it runs', {
      hint: 'pass --database-url, or --supabase-url with the key in $VIDSYNC_SUPABASE_KEY',
    })
  }
  if (settings.VIDSYNC_SUPABASE_URL && !settings.VIDSYNC_SUPABASE_KEY) {
    throw new InvalidInputError('--supabase-url needs the service-role key in $VIDSYNC_SUPABASE_KEY (or a file named by $VIDSYNC_SUPABASE_KEY_FILE)')
  }
  await options.checkProject()
  const owner = user.viaSudo ? user : undefined
  const definition = await signerServiceDefinition({...options, user, nebulaCert: await nebulaCertPath(options.tools)})
  const settingsPath = signerEnvPath(options.home, project)
  // Only the control plane's settings: the database URL or the Supabase URL with its key.
  const saved: ServiceSettings = settings.VIDSYNC_DATABASE_URL
    ? {VIDSYNC_DATABASE_URL: settings.VIDSYNC_DATABASE_URL}
    : {VIDSYNC_SUPABASE_URL: settings.VIDSYNC_SUPABASE_URL, VIDSYNC_SUPABASE_KEY: settings.VIDSYNC_SUPABASE_KEY}
  // The service reads its settings when it starts, so they are written first; put back as they were if the install fails.
  const before = await readServiceSettings(settingsPath)
  await writeServiceSettings(settingsPath, saved, platform, owner)
  const change = await installService(definition, {
    platform,
    user,
    owner,
    mode: 0o600,
    staleHint: `remove it with \`vidsync signer ${project} --uninstall\`, then run \`vidsync signer ${project} --install\` again`,
  }).catch(async (error: unknown) => {
    await writeServiceSettings(settingsPath, before, platform, owner)
    throw error
  })
  const changed = JSON.stringify(before) !== JSON.stringify(saved)
  const line =
    change.action === 'installed'
      ? `${change.line}: signs ${project}'s renewal requests as ${user.name}, from login, restarted after a failure (settings in ${settingsPath})`
      : change.action !== 'running'
        ? change.line
        : changed
          ? `${definition.name} runs already (${definition.manager}) with the settings it started with: the new ones in ${settingsPath} apply at its next start`
          : `${definition.name} is installed and runs already (${definition.manager}): nothing changed`
  return {project, action: change.action, name: definition.name, manager: definition.manager, path: definition.path ?? null, settingsPath, line}
}

/** Stops and removes the signer service of `project` and its settings file; `absent` when neither was there. */
export async function uninstallSignerService(options: SignerServiceOptions): Promise<SignerServiceResult> {
  const {platform, project} = options
  const user = platform.invokingUser()
  // Removing it takes only its name, path and the manager's steps, which interval and nebula-cert do not change.
  const definition = await signerServiceDefinition({...options, intervalSeconds: 0, user, nebulaCert: 'nebula-cert'})
  const managed = !(await noServiceManager(options, user))
  const removedService = managed && (await uninstallService(definition, {platform, user}))
  const settingsPath = signerEnvPath(options.home, project)
  const hadSettings = Object.keys(await readServiceSettings(settingsPath)).length > 0
  await rm(settingsPath, {force: true})
  const removed = [...(removedService ? [definition.path ? `${definition.name} (${definition.path})` : definition.name] : []), ...(hadSettings ? [settingsPath] : [])]
  return {
    project,
    action: removed.length > 0 ? 'uninstalled' : 'absent',
    name: definition.name,
    manager: definition.manager,
    path: definition.path ?? null,
    settingsPath: null,
    line: removed.length > 0 ? `removed ${removed.join(' and ')}` : `no signer service for ${project} is installed here: nothing to remove`,
  }
}

/** What `signer --status` says (`--json`): the service as `status` reports the others, and its settings file. */
export interface SignerServiceStatus extends ServiceReport {
  role: 'signer'
  project: string
  /** The private signer.env, null when it holds no settings. */
  settingsPath: string | null
  line: string
}

/** Whether the signer service of `project` is installed and runs, and whether it is the one `--install` with these options writes. */
export async function signerServiceStatus(options: SignerServiceOptions & {intervalSeconds: number}): Promise<SignerServiceStatus> {
  const {platform, project} = options
  const user = platform.invokingUser()
  const definition = await signerServiceDefinition({...options, user, nebulaCert: await nebulaCertPath(options.tools)})
  const settingsPath = signerEnvPath(options.home, project)
  const saved = Object.keys(await readServiceSettings(settingsPath)).length > 0 ? settingsPath : null
  const fallback = await noServiceManager(options, user)
  if (fallback) {
    const line = `no signer service for ${project}: ${fallback.replace(/^cannot install the signer as a service: /, '')}`
    return {role: 'signer', project, name: definition.name, manager: null, installed: false, running: false, pid: null, state: 'not installed', stale: false, settingsPath: saved, fallback, line}
  }
  const state = await platform.serviceState(definition, user)
  const stale = isStale(definition, state)
  const shown = state.installed ? state.state : 'not installed'
  const line = `${definition.name} (${definition.manager}): ${shown}${state.pid ? `, pid ${state.pid}` : ''}${
    stale ? `; installed from another vidsync or with other settings: \`vidsync signer ${project} --uninstall\`, then \`--install\`` : ''
  }`
  return {role: 'signer', project, name: definition.name, manager: definition.manager, installed: state.installed, running: state.running, pid: state.pid ?? null, state: shown, stale, settingsPath: saved, line}
}
