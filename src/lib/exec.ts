import {closeSync, fchownSync, openSync} from 'node:fs'
import {readFile} from 'node:fs/promises'


import {MissingDependencyError, ToolFailedError} from './errors.js'
import {currentPlatform, type Platform, type ProcessIdentity} from './platform/index.js'
import {pollUntil} from './poll.js'

export type ToolName = 'nebula-cert' | 'nebula' | 'syncthing' | 'ip' | 'tc'

/** Where the external programs live. Tests point an entry at a fake to inject failures. */
export interface Tools {
  nebulaCert: string
  nebula: string
  syncthing: string
  /** iproute2, for the network-namespace lab. */
  ip: string
  tc: string
}

/** Names on PATH unless overridden here or by VIDSYNC_NEBULA_CERT / VIDSYNC_NEBULA / VIDSYNC_SYNCTHING. */
export function resolveTools(overrides: Partial<Tools> = {}): Tools {
  return {
    nebulaCert: overrides.nebulaCert ?? process.env.VIDSYNC_NEBULA_CERT ?? 'nebula-cert',
    nebula: overrides.nebula ?? process.env.VIDSYNC_NEBULA ?? 'nebula',
    syncthing: overrides.syncthing ?? process.env.VIDSYNC_SYNCTHING ?? 'syncthing',
    ip: overrides.ip ?? 'ip',
    tc: overrides.tc ?? 'tc',
  }
}

const toolKey = {'nebula-cert': 'nebulaCert', nebula: 'nebula', syncthing: 'syncthing', ip: 'ip', tc: 'tc'} as const

const nebulaHint = 'install it with `apt-get install nebula` (Debian/Ubuntu) or from https://github.com/slackhq/nebula/releases'
const installHint: Record<ToolName, string> = {
  'nebula-cert': nebulaHint,
  nebula: nebulaHint,
  syncthing: 'install it with `apt-get install syncthing` (Debian/Ubuntu) or from https://syncthing.net/downloads/',
  ip: 'install iproute2 with `apt-get install iproute2` (Debian/Ubuntu)',
  tc: 'install iproute2 with `apt-get install iproute2` (Debian/Ubuntu)',
}

export interface RunToolOptions {
  cwd?: string
  input?: string | Buffer
  timeoutMs?: number
  env?: Record<string, string>
  tools?: Tools
}

export interface ToolResult {
  stdout: string
  stderr: string
  exitCode: number
}

const lines = (text: string) => text.split('\n').filter((line) => line.trim() !== '')

/**
 * One line saying why a tool failed: the first stderr line (nebula-cert follows its `Error: ...`
 * with the whole usage text), else the last stdout line (nebula logs its fatal error there).
 */
function reasonOf(result: {stdout: string; stderr: string}): string {
  const line = lines(result.stderr)[0] ?? lines(result.stdout).at(-1) ?? ''
  return line.trim().replace(/^Error:\s*/, '')
}

/**
 * The one way vidsync runs another program: an argument array (never a shell), a bounded run
 * time, and typed errors for a missing binary, a timeout or a non-zero exit.
 */
export async function runTool(tool: ToolName, args: string[], options: RunToolOptions = {}): Promise<ToolResult> {
  const file = (options.tools ?? resolveTools())[toolKey[tool]]
  const timeoutMs = options.timeoutMs ?? 30_000
  const {execa} = await import('execa')
  const result = await execa(file, args, {
    cwd: options.cwd,
    input: options.input,
    env: options.env,
    timeout: timeoutMs,
    reject: false,
  })
  if (result.code === 'ENOENT') {
    throw new MissingDependencyError(`${tool} not found${file === tool ? '' : ` at ${file}`}: ${installHint[tool]}`)
  }
  const command = `${tool} ${args[0] ?? ''}`.trim()
  if (result.timedOut) {
    throw new ToolFailedError(`${command} did not finish within ${timeoutMs / 1000}s`, 'timed out')
  }
  if (result.failed || result.exitCode !== 0) {
    const status = result.exitCode === undefined ? (result.shortMessage ?? 'failed to run') : `exit code ${result.exitCode}`
    const reason = reasonOf(result) || status
    throw new ToolFailedError(`${command} failed: ${reason}`, reason)
  }
  return {stdout: result.stdout, stderr: result.stderr, exitCode: result.exitCode ?? 0}
}

export interface DaemonOptions {
  cwd?: string
  env?: Record<string, string>
  tools?: Tools
  /** Append the program's stdout and stderr to this file (needed for `detached`). */
  logPath?: string
  /** Keep running after vidsync exits (own process group, no pipes back to us). */
  detached?: boolean
  /** Run as this user (root dropping to the invoking user under sudo). */
  user?: {uid?: number; gid?: number}
  /** Who owns the log file (a log in the user's folders belongs to the user, also when root writes it). */
  logOwner?: {uid?: number; gid?: number}
  /** Pass stdin/stdout/stderr through (a foreground child). */
  inheritStdio?: boolean
}

export interface Daemon {
  pid: number
  /** Settles when the program ends, with its exit code or the signal that ended it. */
  exited: Promise<{exitCode?: number; signal?: string}>
  /** The last lines it printed (empty when they go to a log file). */
  recentOutput(): string
  stop(timeoutMs?: number): Promise<void>
}


/** Whether some process has `pid`. A zombie (exited, not yet reaped by its parent) counts as gone. */
export function isAlive(pid: number, platform: Platform = currentPlatform()): boolean {
  return platform.pidExists(pid)
}

/** Ends one process: asked first, forced after `timeoutMs`. Resolves once it is gone. */
export async function stopPid(pid: number, timeoutMs = 10_000, platform: Platform = currentPlatform()): Promise<void> {
  const gone = () => !isAlive(pid, platform)
  await platform.terminate(pid, false)
  if (await pollUntil(gone, {timeoutMs, intervalMs: 50, onTimeout: () => false})) return
  await platform.terminate(pid, true)
  await pollUntil(gone, {timeoutMs: 5000, intervalMs: 50, onTimeout: () => false})
}

/** Stops the process recorded as `identity`, only if it still is that process (not a recycled PID). */
export async function stopProcess(identity: ProcessIdentity, timeoutMs = 10_000, platform: Platform = currentPlatform()): Promise<boolean> {
  if (!(await platform.isRunning(identity))) return false
  await stopPid(identity.pid, timeoutMs, platform)
  return true
}

/** A pid file: the PID and the start time the OS reports for it, so a recycled PID never counts. */
export async function readIdentity(path: string): Promise<ProcessIdentity | undefined> {
  const [pidText = '', startedAt = ''] = (await readFile(path, 'utf8').catch(() => '')).split('\n')
  const pid = Number.parseInt(pidText, 10)
  return Number.isInteger(pid) && pid > 0 && startedAt !== '' ? {pid, startedAt} : undefined
}

export const identityText = (identity: ProcessIdentity) => `${identity.pid}\n${identity.startedAt}\n`

/** Runs a program of the OS (systemctl, launchctl, sc.exe, sudo) with an argument array; never a shell. */
export async function runProgram(argv: string[], options: {timeoutMs?: number; inheritStdio?: boolean} = {}): Promise<ToolResult> {
  const [file = '', ...args] = argv
  const {execa} = await import('execa')
  const result = await execa(file, args, {reject: false, timeout: options.timeoutMs ?? 60_000, stdio: options.inheritStdio ? 'inherit' : 'pipe'})
  if (result.code === 'ENOENT') throw new MissingDependencyError(`${file} not found: it is needed to manage vidsync's services here`)
  return {stdout: result.stdout ?? '', stderr: result.stderr ?? '', exitCode: result.exitCode ?? -1}
}

/** Starts a long-running program (nebula, syncthing) with an argument array and typed start errors. */
export async function startDaemon(tool: ToolName, args: string[], options: DaemonOptions = {}): Promise<Daemon> {
  const file = (options.tools ?? resolveTools())[toolKey[tool]]
  return spawnDaemon(tool, file, args, options)
}

/** The programs `selfCommand` runs: Node.js and vidsync's entry script. */
export const selfPrograms = () => [process.execPath, process.argv[1] ?? '']

/** This vidsync, as a service manager must start it: the same Node, flags and entry point, absolute. */
export const selfCommand = (args: string[]) => [process.execPath, ...process.execArgv, process.argv[1] ?? '', ...args]

/** Starts this same vidsync (same Node, flags and entry point) as a daemon, e.g. the `up --detach` loop. */
export async function startSelf(args: string[], options: DaemonOptions = {}): Promise<Daemon> {
  const entry = process.argv[1] ?? ''
  return spawnDaemon('vidsync', process.execPath, [...process.execArgv, entry, ...args], options)
}

async function spawnDaemon(label: string, file: string, args: string[], options: DaemonOptions): Promise<Daemon> {
  const logFd = options.logPath === undefined ? undefined : openSync(options.logPath, 'a', 0o600)
  const owner = options.logOwner
  if (logFd !== undefined && owner?.uid !== undefined && owner.gid !== undefined) fchownSync(logFd, owner.uid, owner.gid)
  const output: string[] = []
  const {execa} = await import('execa')
  try {
    const child = execa(file, args, {
      cwd: options.cwd,
      env: options.env,
      detached: options.detached ?? false,
      uid: options.user?.uid,
      gid: options.user?.gid,
      stdio: options.inheritStdio ? 'inherit' : (['ignore', logFd ?? 'pipe', logFd ?? 'pipe'] as ['ignore', 'pipe', 'pipe']), // a number is a file descriptor
      reject: false,
      cleanup: !options.detached,
    })
    const started = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      child.once('spawn', () => resolve(undefined))
      child.once('error', (error) => resolve(error as NodeJS.ErrnoException))
    })
    if (started?.code === 'ENOENT' && label in installHint) {
      const hint = installHint[label as ToolName]
      throw new MissingDependencyError(`${label} not found${file === label ? '' : ` at ${file}`}: ${hint}`)
    }
    if (started || child.pid === undefined) throw new ToolFailedError(`${label} did not start: ${started?.message}`, 'spawn failed')
    const remember = (chunk: Buffer | string) => {
      output.push(...lines(chunk.toString()))
      output.splice(0, Math.max(0, output.length - 50))
    }
    child.stdout?.on('data', remember)
    child.stderr?.on('data', remember)
    if (options.detached) child.unref()
    const pid = child.pid
    const exited = child.then((result) => ({exitCode: result.exitCode, signal: result.signal}))
    return {
      pid,
      exited,
      recentOutput: () => output.join('\n'),
      stop: (timeoutMs) => stopPid(pid, timeoutMs),
    }
  } finally {
    if (logFd !== undefined) closeSync(logFd)
  }
}
