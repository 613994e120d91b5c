import {join} from 'node:path'

import {posixControlAddress, posixElevate, posixExecutableProblem, posixInvokingUser, posixServiceRequests, posixPrivacyProblem, posixTerminate, sighup} from './posix.js'
import {firstLine, interfaceHolding, manageWith, sameProcessRunning} from './host.js'
import type {HostDeps, Platform, ProcessIdentity, ServiceDefinition, ServiceSpec, User} from './types.js'

/** `ps -o stat= -o lstart= -p PID` (ps(1) on macOS): "Ss   Thu Nov 26 09:14:03 2026", nothing when no such process. */
export function parsePsStatStart(output: string): {state: string; startedAt: string} | undefined {
  const match = /^\s*(\S+)\s+(\S.*\S)\s*$/.exec(output.split('\n').find((line) => line.trim() !== '') ?? '')
  return match?.[1] && match[2] ? {state: match[1], startedAt: match[2]} : undefined
}

/** `launchctl print <domain>/<label>`: whether the job's state is running (its "state = running" line). */
export function launchctlRunning(output: string): boolean {
  return /^\s*state = running\s*$/m.test(output)
}

/**
 * The libraries in `otool -L PROGRAM`'s output (otool(1)): the program's path and a colon, then
 * one indented `path (compatibility version …, current version …)` line per library. /usr/lib and
 * /System are left out: SIP protects them (and since macOS 11 they live in the dyld cache, not as files).
 */
export function parseOtoolLibraries(output: string): string[] {
  return output
    .split('\n')
    .slice(1)
    .flatMap((line) => {
      const path = /^\s+(\S.*?)\s+\(compatibility version/.exec(line)?.[1]
      return path && !/^\/(usr\/lib|System)\//.test(path) ? [path] : []
    })
}

/** `dscl . -read /Users/NAME NFSHomeDirectory`: "NFSHomeDirectory: /Users/alice". */
export function dsclHome(output: string): string | undefined {
  return /^NFSHomeDirectory:\s*(\S.*?)\s*$/m.exec(output)?.[1]
}

/** `launchctl print <domain>/<label>`: its "pid = N" line while it runs. */
export function launchctlPid(output: string): number | undefined {
  const pid = Number(/^\s*pid = (\d+)\s*$/m.exec(output)?.[1])
  return pid > 0 ? pid : undefined
}

/**
 * A launchd job (launchd.plist(5)): started at load and at boot/login (RunAtLoad), started again
 * when it exits with a failure (KeepAlive SuccessfulExit=false), at most once per ThrottleInterval
 * (10 s); a clean exit (`vidsync down`) leaves it stopped. The `plist` package is loaded here, only
 * when a plist is built, so that no other command pays for loading it.
 */
async function launchdPlist(label: string, spec: ServiceSpec, user?: User): Promise<string> {
  const {build} = await import('plist')
  return build({
    Label: label,
    ProgramArguments: spec.command,
    ...(spec.environment ? {EnvironmentVariables: spec.environment} : {}),
    RunAtLoad: true,
    KeepAlive: {SuccessfulExit: false},
    ThrottleInterval: 10,
    StandardOutPath: spec.logPath,
    StandardErrorPath: spec.logPath,
    ...(user ? {ProcessType: 'Background'} : {}),
  })
}

export function darwinPlatform(deps: HostDeps): Platform {
  const processIdentity = async (pid: number): Promise<ProcessIdentity | undefined> => {
    const result = await deps.run('ps', ['-o', 'stat=', '-o', 'lstart=', '-p', String(pid)])
    const parsed = result.exitCode === 0 ? parsePsStatStart(result.stdout) : undefined
    if (!parsed || parsed.state.startsWith('Z')) return undefined
    return {pid, startedAt: parsed.startedAt}
  }
  const homeOf = (name: string) => {
    const result = deps.runSync('dscl', ['.', '-read', `/Users/${name}`, 'NFSHomeDirectory'])
    return result.exitCode === 0 ? dsclHome(result.stdout) : undefined
  }
  const domain = (user?: User) => (user ? `gui/${user.uid}` : 'system')
  const definition = async (label: string, path: string, spec: ServiceSpec, user?: User): Promise<ServiceDefinition> => {
    const content = await launchdPlist(label, spec, user)
    const target = `${domain(user)}/${label}`
    return {
      name: label,
      manager: 'launchd',
      scope: user ? 'user' : 'system',
      path,
      content,
      fingerprint: content,
      install: [['launchctl', 'bootstrap', domain(user), path]],
      start: [['launchctl', 'kickstart', target]],
      stop: [['launchctl', 'kill', 'SIGTERM', target]],
      uninstall: [['launchctl', 'bootout', target]],
      cleanup: [],
    }
  }
  const names = (project: string) => ({nebula: `com.vidsync.nebula.${project}`, agent: `com.vidsync.agent.${project}`, signer: `com.vidsync.signer.${project}`})
  return {
    os: 'darwin',
    cpuCount: deps.cpuCount,
    systemDir: deps.env.VIDSYNC_SYSTEM_DIR || '/Library/Application Support/vidsync',
    // Not /usr/local (Homebrew on Intel Macs gives its directories to the user), nor below systemDir,
    // where every name may be a project's.
    runtimeDir: deps.env.VIDSYNC_RUNTIME_DIR || '/Library/Application Support/vidsync-runtime',
    // nebula takes the next free utunN whatever tun.dev says.
    honoursTunDev: false,
    invokingUser: () => posixInvokingUser(deps, homeOf),
    defaultHome: (user) => join(user.home, 'Library', 'Application Support', 'vidsync'),
    canCreateTun: async () => deps.uid === 0,
    tunProblem: async () => undefined,
    overlayInterface: (project) => interfaceHolding(deps, project.overlayIp),
    // macOS ping: -t is the whole run's timeout in seconds.
    pingCommand: (ip, timeoutMs) => ['ping', '-n', '-q', '-c', '1', '-t', String(Math.max(1, Math.round(timeoutMs / 1000))), ip],
    executable: (name) => name,
    makePrivate: (path) => deps.chmod(path, 0o600),
    makeSystemPrivate: (path, directory) => deps.chmod(path, directory ? 0o700 : 0o600),
    privacyProblem: (path) => posixPrivacyProblem(deps, path),
    executableProblem: (path) => posixExecutableProblem(deps, path),
    async linkedLibraries(program) {
      const result = await deps.run('otool', ['-L', program])
      return result.exitCode === 0 ? parseOtoolLibraries(result.stdout) : []
    },
    nebulaCompanions: async () => [],
    // The service runs `vidsync nebula service` as root, which writes the system copy before every start and reload.
    serviceRendersOverlay: true,
    processIdentity,
    isRunning: sameProcessRunning(processIdentity),
    pidExists: (pid) => deps.signal(pid, 0) !== 'gone',
    terminate: (pid, force) => posixTerminate(deps, pid, force),
    reloadNebula: async (target) => sighup(deps, target.pid),
    onServiceRequests: posixServiceRequests,
    controlAddress: posixControlAddress,
    elevate: posixElevate,
    async serviceManagerProblem(scope, user) {
      if (scope === 'system') return undefined
      const who = user ?? posixInvokingUser(deps, homeOf)
      // LaunchAgents live in the user's GUI session (launchctl(1), "gui/<uid>"): none over ssh without a login.
      const session = await deps.run('launchctl', ['print', `gui/${who.uid}`])
      return session.exitCode === 0 ? undefined : `${who.name} has no login session (launchd domain gui/${who.uid}): vidsync starts the agent itself`
    },
    serviceNames: names,
    async nebulaService(spec) {
      const label = names(spec.project).nebula
      return definition(label, join(deps.serviceRoot ?? '/', 'Library', 'LaunchDaemons', `${label}.plist`), spec)
    },
    async userService(spec) {
      const label = names(spec.project)[spec.role]
      const user = spec.user ?? posixInvokingUser(deps, homeOf)
      return definition(label, join(user.home, 'Library', 'LaunchAgents', `${label}.plist`), spec, user)
    },
    async serviceState(service, user) {
      const who = service.scope === 'user' ? (user ?? posixInvokingUser(deps, homeOf)) : undefined
      const result = await deps.run('launchctl', ['print', `${domain(who)}/${service.name}`])
      const fingerprint = service.path ? await deps.readFile(service.path) : undefined
      const file = fingerprint === undefined ? {} : {fingerprint}
      // Exit 113: "Could not find service ... in domain for ..." (not bootstrapped).
      if (result.exitCode !== 0) return {installed: false, running: false, state: firstLine(result), ...file}
      const running = launchctlRunning(result.stdout)
      const pid = launchctlPid(result.stdout)
      return {installed: true, running, ...(pid ? {pid} : {}), state: /^\s*state = (.+?)\s*$/m.exec(result.stdout)?.[1] ?? 'unknown', ...file}
    },
    manage: manageWith(deps),
    serviceRoot: deps.serviceRoot ?? '',
  }
}
