import {execa} from 'execa'

export const root = new URL('../..', import.meta.url).pathname

// Tests never ask the registry for a newer vidsync, also where they run commands in-process (runCommand).
process.env.VIDSYNC_SKIP_NEW_VERSION_CHECK = 'true'

export interface CliResult {
  exitCode: number | undefined
  stdout: string
  stderr: string
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any
}

/** Runs the built binary the way a script would: never a TTY, JSON parsed when asked for. */
export async function cli(args: string[], env: Record<string, string> = {}, options: {input?: string; cwd?: string; timeoutMs?: number} = {}): Promise<CliResult> {
  const result = await execa('node', [`${root}bin/run.js`, ...args], {
    cwd: options.cwd ?? root,
    env: {VIDSYNC_DATABASE_URL: '', ...env},
    reject: false,
    ...(options.input === undefined ? {stdin: 'ignore' as const} : {input: options.input}),
    timeout: options.timeoutMs ?? 60_000,
  })
  const json = args.includes('--json') && result.stdout ? JSON.parse(result.stdout) : undefined
  return {exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr, json}
}
