import {execa} from 'execa'

import {MissingDependencyError, ToolFailedError} from './errors.js'

export type ToolName = 'nebula-cert' | 'nebula' | 'syncthing'

/** Where the external programs live. Tests point an entry at a fake to inject failures. */
export interface Tools {
  nebulaCert: string
  nebula: string
  syncthing: string
}

/** Names on PATH unless overridden here or by VIDSYNC_NEBULA_CERT / VIDSYNC_NEBULA / VIDSYNC_SYNCTHING. */
export function resolveTools(overrides: Partial<Tools> = {}): Tools {
  return {
    nebulaCert: overrides.nebulaCert ?? process.env.VIDSYNC_NEBULA_CERT ?? 'nebula-cert',
    nebula: overrides.nebula ?? process.env.VIDSYNC_NEBULA ?? 'nebula',
    syncthing: overrides.syncthing ?? process.env.VIDSYNC_SYNCTHING ?? 'syncthing',
  }
}

const toolKey = {'nebula-cert': 'nebulaCert', nebula: 'nebula', syncthing: 'syncthing'} as const

const nebulaHint = 'install it with `apt-get install nebula` (Debian/Ubuntu) or from https://github.com/slackhq/nebula/releases'
const installHint: Record<ToolName, string> = {
  'nebula-cert': nebulaHint,
  nebula: nebulaHint,
  syncthing: 'install it with `apt-get install syncthing` (Debian/Ubuntu) or from https://syncthing.net/downloads/',
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
