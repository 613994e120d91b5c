import {closeSync, openSync, readFileSync} from 'node:fs'
import {readFile} from 'node:fs/promises'

import {execa} from 'execa'

import {MissingDependencyError, ToolFailedError} from './errors.js'

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
}

export interface Daemon {
  pid: number
  /** Settles when the program ends, with its exit code or the signal that ended it. */
  exited: Promise<{exitCode?: number; signal?: string}>
  /** The last lines it printed (empty when they go to a log file). */
  recentOutput(): string
  stop(timeoutMs?: number): Promise<void>
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Whether `pid` runs. A zombie (exited, not yet reaped by its parent) counts as gone. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
  try {
    return !/^\d+ \(.*\) Z /s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return true // no /proc (macOS): the signal check is all there is
  }
}

/** The command line of a running process (Linux /proc), to tell our daemon from a recycled PID. */
export async function processCommandLine(pid: number): Promise<string[] | undefined> {
  const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined)
  return raw === undefined || raw === '' ? undefined : raw.split('\0').filter(Boolean)
}

/** Ends one process by PID: SIGTERM, then SIGKILL after `timeoutMs`. Resolves once it is gone. */
export async function stopPid(pid: number, timeoutMs = 10_000): Promise<void> {
  const signal = (name: NodeJS.Signals) => {
    try {
      process.kill(pid, name)
    } catch {
      // already gone
    }
  }
  signal('SIGTERM')
  const deadline = Date.now() + timeoutMs
  while (isAlive(pid) && Date.now() < deadline) await sleep(50)
  if (!isAlive(pid)) return
  signal('SIGKILL')
  const killDeadline = Date.now() + 5000
  while (isAlive(pid) && Date.now() < killDeadline) await sleep(50)
}

/** Starts a long-running program (nebula, syncthing) with an argument array and typed start errors. */
export async function startDaemon(tool: ToolName, args: string[], options: DaemonOptions = {}): Promise<Daemon> {
  const file = (options.tools ?? resolveTools())[toolKey[tool]]
  return spawnDaemon(tool, file, args, options)
}

/** Starts this same vidsync (same Node, flags and entry point) as a daemon, e.g. the `up --detach` loop. */
export async function startSelf(args: string[], options: DaemonOptions = {}): Promise<Daemon> {
  const entry = process.argv[1] ?? ''
  return spawnDaemon('vidsync', process.execPath, [...process.execArgv, entry, ...args], options)
}

async function spawnDaemon(label: string, file: string, args: string[], options: DaemonOptions): Promise<Daemon> {
  const logFd = options.logPath === undefined ? undefined : openSync(options.logPath, 'a', 0o600)
  const output: string[] = []
  try {
    const child = execa(file, args, {
      cwd: options.cwd,
      env: options.env,
      detached: options.detached ?? false,
      stdio: ['ignore', logFd ?? 'pipe', logFd ?? 'pipe'] as ['ignore', 'pipe', 'pipe'], // a number is a file descriptor
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
