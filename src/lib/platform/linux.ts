import {isAbsolute, join} from 'node:path'

import {posixControlAddress, posixElevate, posixExecutableProblem, posixInvokingUser, posixServiceRequests, posixPrivacyProblem, posixTerminate, sighup} from './posix.js'
import {firstLine, manageWith, sameProcessRunning} from './host.js'
import type {HostDeps, Platform, ProcessIdentity, ServiceDefinition, ServiceSpec, User} from './types.js'

const capNetAdmin = 12n

/** Whether a /proc/<pid>/status text shows CAP_NET_ADMIN among the effective capabilities. */
export function hasNetAdmin(procStatus: string): boolean {
  const hex = /^CapEff:\s*([0-9a-f]+)\s*$/m.exec(procStatus)?.[1]
  return hex !== undefined && ((BigInt(`0x${hex}`) >> capNetAdmin) & 1n) === 1n
}

/**
 * State and start time from /proc/<pid>/stat (proc(5)): the fields after the command name's
 * closing parenthesis start with the state (field 3); starttime is field 22, in clock ticks since boot.
 */
export function parseProcStat(stat: string): {state: string; startTicks: string} | undefined {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const state = fields[0]
  const startTicks = fields[19]
  return state && startTicks ? {state, startTicks} : undefined
}

/**
 * The libraries in `ldd PROGRAM`'s output (ldd(1)): `name => /path (0x…)` and the loader's
 * `/path (0x…)`; the vDSO has no path. A static program or a script ("not a dynamic executable") has none.
 */
export function parseLdd(output: string): string[] {
  return output.split('\n').flatMap((line) => {
    const path = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)\s*$/i.exec(line.trim())?.[1]
    return path ? [path] : []
  })
}

/** The home directory of `name` from passwd(5) text. */
export function passwdHome(passwd: string, name: string): string | undefined {
  for (const line of passwd.split('\n')) {
    const fields = line.split(':')
    if (fields[0] === name && fields.length >= 7) return fields[5]
  }
  return undefined
}

/** One systemd ExecStart argument: quoted, with its specifier (%) and variable ($) characters escaped. */
export const systemdArg = (arg: string) => `"${arg.replace(/[\\"]/g, '\\$&').replaceAll('%', '%%').replaceAll('$', '$$$$')}"`

/** One Environment= assignment (systemd.exec(5)): quoted, specifiers escaped; no variables are expanded there. */
const systemdEnvironment = (assignment: string) => `"${assignment.replace(/[\\"]/g, '\\$&').replaceAll('%', '%%')}"`

/** A path in a unit setting that takes no quotes (StandardOutput=append:, EnvironmentFile=): specifiers escaped. */
const systemdPath = (path: string) => path.replaceAll('%', '%%')

/** `systemctl show -p A,B NAME` (systemctl(1), "show"): one KEY=value line per property. */
export function parseSystemctlShow(output: string): Record<string, string> {
  const properties: Record<string, string> = {}
  for (const line of output.split('\n')) {
    const equals = line.indexOf('=')
    if (equals > 0) properties[line.slice(0, equals)] = line.slice(equals + 1).trim()
  }
  return properties
}

/** More than this many starts within startLimitIntervalSec and systemd stops restarting a unit (systemd.unit(5)). */
const startLimitBurst = 5
const startLimitIntervalSec = 120

/**
 * A unit restarted within seconds after a failure (systemd.service(5) Restart=, RestartSec=);
 * the start limit (systemd.unit(5)) bounds a crash loop: more than 5 starts in 2 minutes and
 * systemd stops trying, logs "Start request repeated too quickly" and leaves the unit failed with
 * Result=start-limit-hit, which `status` and `doctor` show. (systemd 254's RestartSteps= and
 * RestartMaxDelaySec= would grow the delay; 252, Debian 12's, has neither, so the delay is fixed;
 * the backoff that grows is the supervisor's own, inside `vidsync nebula service` and the agent.)
 */
function systemdUnit(spec: ServiceSpec, extra: string[], wantedBy: string, removedBy = 'vidsync down --uninstall'): string {
  return [
    `# Written by vidsync for project ${spec.project}; removed by \`${removedBy}\`.`,
    '[Unit]',
    `Description=${spec.description}`,
    'Wants=network-online.target',
    'After=network-online.target',
    `StartLimitIntervalSec=${startLimitIntervalSec}`,
    `StartLimitBurst=${startLimitBurst}`,
    '',
    '[Service]',
    ...Object.entries(spec.environment ?? {}).map(([key, value]) => `Environment=${systemdEnvironment(`${key}=${value}`)}`),
    `ExecStart=${spec.command.map(systemdArg).join(' ')}`,
    'Restart=on-failure',
    'RestartSec=2',
    `StandardOutput=append:${systemdPath(spec.logPath)}`,
    'StandardError=inherit',
    ...extra,
    '',
    '[Install]',
    `WantedBy=${wantedBy}`,
    '',
  ].join('\n')
}

/**
 * vidsync's state on Linux: `~/.vidsync` where it exists (every install before this rule), else
 * `$XDG_STATE_HOME/vidsync`, `~/.local/state/vidsync` by default. State, not config or data: what
 * is in it (keys, certificates, Syncthing's database, logs, sockets) is written by vidsync and
 * belongs to this machine, which is what the XDG Base Directory spec's state home is for; Syncthing
 * itself moved to `$XDG_STATE_HOME/syncthing` in 1.27. sudo drops XDG_STATE_HOME (env_reset), so under
 * sudo the default under the invoking user's home applies unless it was passed on
 * (`sudo --preserve-env=XDG_STATE_HOME`). A relative XDG_STATE_HOME is invalid by the spec and ignored.
 */
export function linuxHome(user: User, deps: Pick<HostDeps, 'env' | 'existsSync'>): string {
  const legacy = join(user.home, '.vidsync')
  if (deps.existsSync?.(legacy)) return legacy
  const xdg = deps.env.XDG_STATE_HOME
  return join(xdg && isAbsolute(xdg) ? xdg : join(user.home, '.local', 'state'), 'vidsync')
}

/** Project names have no dot: the signer's name never meets the agent's of another project (`vidsync-signer-x`). */
const names = (project: string) => ({
  nebula: `vidsync-nebula-${project}.service`,
  agent: `vidsync-${project}.service`,
  signer: `vidsync-signer.${project}.service`,
})

export function linuxPlatform(deps: HostDeps): Platform {
  const procStat = async (pid: number) => {
    const text = await deps.readFile(`/proc/${pid}/stat`)
    return text === undefined ? undefined : parseProcStat(text)
  }
  const processIdentity = async (pid: number): Promise<ProcessIdentity | undefined> => {
    const stat = await procStat(pid)
    if (!stat || stat.state === 'Z') return undefined // a zombie has exited, its parent has not reaped it yet
    return {pid, startedAt: stat.startTicks}
  }
  const homeOf = (name: string) => {
    const fromFile = passwdHome(deps.readFileSync('/etc/passwd') ?? '', name)
    if (fromFile) return fromFile
    const entry = deps.runSync('getent', ['passwd', name]) // users from LDAP and the like
    return entry.exitCode === 0 ? passwdHome(entry.stdout, name) : undefined
  }
  // Root acting for a user (sudo) reaches that user's manager with --machine=USER@ (systemd 248+).
  const systemctl = (user?: User) =>
    user && deps.uid === 0 && user.uid !== 0 ? ['systemctl', '--user', `--machine=${user.name}@`] : ['systemctl', '--user']
  return {
    os: 'linux',
    cpuCount: deps.cpuCount,
    systemDir: deps.env.VIDSYNC_SYSTEM_DIR || '/etc/vidsync',
    // Programs belong below /usr/local/lib (FHS 3.0, 4.9), not /etc; /usr/local is root's on every distribution.
    runtimeDir: deps.env.VIDSYNC_RUNTIME_DIR || '/usr/local/lib/vidsync/runtime',
    honoursTunDev: true,
    invokingUser: () => posixInvokingUser(deps, homeOf),
    defaultHome: (user) => linuxHome(user, deps),
    async canCreateTun() {
      const status = await deps.readFile('/proc/self/status')
      return status === undefined ? deps.uid === 0 : hasNetAdmin(status)
    },
    async tunProblem() {
      if (await deps.exists('/dev/net/tun')) return undefined
      return '/dev/net/tun is missing: load the tun module with `sudo modprobe tun` (in a container, pass the device through)'
    },
    overlayInterface(project) {
      if (project.tunDev === undefined) return undefined
      const addresses = deps.interfaces()[project.tunDev]
      return addresses?.some((address) => address.address === project.overlayIp) ? project.tunDev : undefined
    },
    pingCommand: (ip, timeoutMs) => ['ping', '-n', '-q', '-c', '1', '-W', String(Math.max(1, Math.round(timeoutMs / 1000))), ip],
    executable: (name) => name,
    makePrivate: (path) => deps.chmod(path, 0o600),
    makeSystemPrivate: (path, directory) => deps.chmod(path, directory ? 0o700 : 0o600),
    privacyProblem: (path) => posixPrivacyProblem(deps, path),
    executableProblem: (path) => posixExecutableProblem(deps, path),
    async linkedLibraries(program) {
      const result = await deps.run('ldd', [program])
      return result.exitCode === 0 ? parseLdd(result.stdout) : []
    },
    nebulaCompanions: async () => [],
    // The service runs `vidsync nebula service` as root, which writes the system copy before every start and reload.
    serviceRendersOverlay: true,
    processIdentity,
    isRunning: sameProcessRunning(processIdentity),
    pidExists(pid) {
      if (deps.signal(pid, 0) === 'gone') return false
      const stat = parseProcStat(deps.readFileSync(`/proc/${pid}/stat`) ?? '')
      return stat?.state !== 'Z'
    },
    terminate: (pid, force) => posixTerminate(deps, pid, force),
    reloadNebula: async (target) => sighup(deps, target.pid),
    onServiceRequests: posixServiceRequests,
    controlAddress: posixControlAddress,
    elevate: posixElevate,
    async serviceManagerProblem(scope, user) {
      // sd_booted(3): systemd is the init system when this directory exists.
      if (!(await deps.exists('/run/systemd/system'))) {
        const init = (await deps.readFile('/proc/1/comm'))?.trim() ?? 'unknown'
        return `systemd is not the init system here (PID 1 is ${init}): vidsync supervises nebula and the agent itself`
      }
      if (scope === 'system') return undefined
      const who = user ?? posixInvokingUser(deps, homeOf)
      // The user's manager (user@.service) listens here while they are logged in, or always with lingering.
      if (await deps.exists(`/run/user/${who.uid}/systemd/private`)) return undefined
      return `no systemd user manager runs for ${who.name} (log in, or \`loginctl enable-linger ${who.name}\`): vidsync starts the agent itself`
    },
    serviceNames: names,
    async nebulaService(spec): Promise<ServiceDefinition> {
      const name = `vidsync-nebula-${spec.project}.service`
      // SIGHUP makes `vidsync nebula service` reload nebula; KillMode=mixed: SIGTERM to it, SIGKILL to what is left after the timeout.
      const content = systemdUnit(spec, ['ExecReload=/bin/kill -HUP $MAINPID', 'KillMode=mixed'], 'multi-user.target')
      return unitDefinition(name, join(deps.serviceRoot ?? '/', 'etc', 'systemd', 'system', name), content, 'system', ['systemctl'])
    },
    async userService(spec): Promise<ServiceDefinition> {
      const name = names(spec.project)[spec.role]
      const path = join(spec.user?.home ?? deps.homedir(), '.config', 'systemd', 'user', name)
      const removedBy = spec.role === 'agent' ? undefined : `vidsync signer ${spec.project} --uninstall`
      return unitDefinition(name, path, systemdUnit(spec, [], 'default.target', removedBy), 'user', systemctl(spec.user))
    },
    async serviceState(definition, user) {
      const [file = 'systemctl', ...args] = definition.scope === 'user' ? systemctl(user) : ['systemctl']
      const result = await deps.run(file, [...args, 'show', '-p', 'LoadState,ActiveState,SubState,MainPID,Result', definition.name])
      const fingerprint = definition.path ? await deps.readFile(definition.path) : undefined
      if (result.exitCode !== 0) return {installed: false, running: false, state: firstLine(result), ...(fingerprint === undefined ? {} : {fingerprint})}
      const shown = parseSystemctlShow(result.stdout)
      const pid = Number(shown.MainPID)
      return {
        installed: shown.LoadState === 'loaded',
        running: shown.ActiveState === 'active' || shown.ActiveState === 'reloading',
        ...(pid > 0 ? {pid} : {}),
        state:
          shown.Result === 'start-limit-hit'
            ? `${shown.ActiveState ?? 'unknown'} (started ${startLimitBurst} times within ${startLimitIntervalSec} s and failed each time: systemd stopped restarting it)`
            : `${shown.ActiveState ?? 'unknown'} (${shown.SubState ?? 'unknown'})`,
        ...(fingerprint === undefined ? {} : {fingerprint}),
      }
    },
    manage: manageWith(deps),
    serviceRoot: deps.serviceRoot ?? '',
  }
}

function unitDefinition(name: string, path: string, content: string, scope: 'system' | 'user', systemctl: string[]): ServiceDefinition {
  return {
    name,
    manager: 'systemd',
    scope,
    path,
    content,
    fingerprint: content,
    install: [[...systemctl, 'daemon-reload'], [...systemctl, 'enable', '--now', name]],
    // A unit that hit its start limit refuses `start` until the failed state is reset.
    start: [[...systemctl, 'reset-failed', name], [...systemctl, 'start', name]],
    stop: [[...systemctl, 'stop', name]],
    uninstall: [[...systemctl, 'disable', '--now', name]],
    cleanup: [[...systemctl, 'daemon-reload']],
  }
}
