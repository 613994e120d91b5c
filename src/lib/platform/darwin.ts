import {join} from 'node:path'

import {posixControlAddress, posixElevate, posixInvokingUser, posixPrivacyProblem, posixTerminate, sighup} from './posix.js'
import {interfaceHolding, sameProcessRunning} from './host.js'
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

/** `dscl . -read /Users/NAME NFSHomeDirectory`: "NFSHomeDirectory: /Users/alice". */
export function dsclHome(output: string): string | undefined {
  return /^NFSHomeDirectory:\s*(\S.*?)\s*$/m.exec(output)?.[1]
}

type PlistValue = string | number | boolean | PlistValue[] | {[key: string]: PlistValue | undefined}

const escapeXml = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/**
 * An XML property list (plist(5)) of strings, integers, booleans, arrays and dictionaries: all a
 * launchd job needs. Written here rather than with the plist package, which every command would
 * load (with its XML libraries) just to build this file on macOS.
 */
function plistXml(value: PlistValue, indent = ''): string {
  const inner = `${indent}  `
  if (typeof value === 'string') return `${indent}<string>${escapeXml(value)}</string>`
  if (typeof value === 'number') return `${indent}<integer>${Math.trunc(value)}</integer>`
  if (typeof value === 'boolean') return `${indent}<${value}/>`
  if (Array.isArray(value)) return [`${indent}<array>`, ...value.map((item) => plistXml(item, inner)), `${indent}</array>`].join('\n')
  const entries = Object.entries(value).filter((entry): entry is [string, PlistValue] => entry[1] !== undefined)
  return [`${indent}<dict>`, ...entries.flatMap(([key, item]) => [`${inner}<key>${escapeXml(key)}</key>`, plistXml(item, inner)]), `${indent}</dict>`].join('\n')
}

function build(value: PlistValue): string {
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    '<plist version="1.0">',
    plistXml(value),
    '</plist>',
    '',
  ].join('\n')
}

/** A launchd job (launchd.plist(5)): started at load, restarted when it exits with a failure, throttled to 5 s. */
function launchdPlist(label: string, spec: ServiceSpec, user?: User): string {
  return build({
    Label: label,
    ProgramArguments: spec.command,
    RunAtLoad: true,
    KeepAlive: {SuccessfulExit: false},
    ThrottleInterval: 5,
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
  const definition = (label: string, path: string, spec: ServiceSpec, user?: User): ServiceDefinition => ({
    name: label,
    path,
    content: launchdPlist(label, spec, user),
    install: [['launchctl', 'bootstrap', domain(user), path]],
    uninstall: [['launchctl', 'bootout', `${domain(user)}/${label}`]],
  })
  return {
    os: 'darwin',
    cpuCount: deps.cpuCount,
    systemDir: deps.env.VIDSYNC_SYSTEM_DIR || '/Library/Application Support/vidsync',
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
    privacyProblem: (path) => posixPrivacyProblem(deps, path),
    processIdentity,
    isRunning: sameProcessRunning(processIdentity),
    pidExists: (pid) => deps.signal(pid, 0) !== 'gone',
    terminate: (pid, force) => posixTerminate(deps, pid, force),
    reloadNebula: async (target) => sighup(deps, target.pid),
    controlAddress: posixControlAddress,
    elevate: posixElevate,
    serviceManagerRuns: async () => true,
    nebulaService(spec) {
      const label = `com.vidsync.nebula.${spec.project}`
      return definition(label, join('/Library/LaunchDaemons', `${label}.plist`), spec)
    },
    agentService(spec) {
      const label = `com.vidsync.agent.${spec.project}`
      const user = spec.user ?? posixInvokingUser(deps, homeOf)
      return definition(label, join(user.home, 'Library', 'LaunchAgents', `${label}.plist`), spec, user)
    },
    async serviceRunning(label, user) {
      const result = await deps.run('launchctl', ['print', `${domain(user)}/${label}`])
      return result.exitCode === 0 && launchctlRunning(result.stdout)
    },
  }
}
