import {spawnSync} from 'node:child_process'
import {existsSync, readFileSync} from 'node:fs'
import {access, chmod, readFile, realpath, stat} from 'node:fs/promises'
import {availableParallelism, homedir, networkInterfaces, userInfo} from 'node:os'

import type {HostDeps, ProcessIdentity, ProgramResult, ServiceRequestHandlers} from './types.js'

/** The real machine: processes, files, signals and environment of this host. */
export function hostDeps(): HostDeps {
  return {
    env: process.env,
    homedir,
    userName: () => userInfo().username,
    uid: process.getuid?.(),
    gid: process.getgid?.(),
    async run(file, args, options = {}): Promise<ProgramResult> {
      // Loaded on first use: execa alone takes longer to load than many commands take to run.
      const {execa} = await import('execa')
      const result = await execa(file, args, {reject: false, timeout: options.timeoutMs ?? 15_000, stdin: 'ignore'})
      return {stdout: result.stdout, stderr: result.stderr, exitCode: result.exitCode, missing: result.code === 'ENOENT'}
    },
    runSync(file, args): ProgramResult {
      const result = spawnSync(file, args, {encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe']})
      const missing = (result.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'
      return {stdout: result.stdout ?? '', stderr: result.stderr ?? '', exitCode: result.status ?? undefined, missing}
    },
    readFile: (path) => readFile(path, 'utf8').catch(() => undefined),
    readFileSync(path) {
      try {
        return readFileSync(path, 'utf8')
      } catch {
        return undefined
      }
    },
    exists: (path) => access(path).then(() => true, () => false),
    existsSync,
    chmod: (path, mode) => chmod(path, mode),
    fileMode: (path) => stat(path).then((info) => info.mode & 0o777, () => undefined),
    fileOwner: (path) => stat(path).then((info) => ({uid: info.uid, gid: info.gid, mode: info.mode & 0o7777}), () => undefined),
    realPath: (path) => realpath(path).catch(() => path),
    signal(pid, signal) {
      try {
        process.kill(pid, signal)
        return 'sent'
      } catch (error) {
        return (error as NodeJS.ErrnoException).code === 'EPERM' ? 'denied' : 'gone'
      }
    },
    interfaces: networkInterfaces,
    cpuCount: availableParallelism(),
  }
}

/** The interface holding `ip`, whatever its name (macOS utunN, a Windows adapter). */
export function interfaceHolding(deps: HostDeps, ip: string): string | undefined {
  return Object.entries(deps.interfaces()).find(([, addresses]) => addresses?.some((address) => address.address === ip))?.[0]
}

/** Whether the process `identity` names still runs: same PID and the same start time as the OS reports it now. */
export const sameProcessRunning =
  (processIdentity: (pid: number) => Promise<ProcessIdentity | undefined>) =>
  async (identity: ProcessIdentity): Promise<boolean> =>
    (await processIdentity(identity.pid))?.startedAt === identity.startedAt

/** The first line a failed program printed, for a one-line error. */
export const firstLine = (result: {stdout: string; stderr: string; exitCode: number | undefined}) =>
  (result.stderr.trim() || result.stdout.trim()).split('\n')[0]?.trim() || `exit code ${result.exitCode}`

/** A service manager's program run with a bounded wait. */
export const manageWith = (deps: HostDeps) => (argv: string[]) => deps.run(argv[0] ?? '', argv.slice(1), {timeoutMs: 60_000})

/**
 * Hands a process the requests to end (`stopSignals`: Ctrl-C and the service manager's stop) and,
 * when it takes reloads and the OS has a signal for them, the reload. Returns the function that
 * stops listening.
 */
export function listenForServiceRequests(handlers: ServiceRequestHandlers, stopSignals: NodeJS.Signals[], reloadSignal?: NodeJS.Signals): () => void {
  const stop = () => handlers.stop()
  const reload = () => handlers.reload?.()
  for (const signal of stopSignals) process.once(signal, stop)
  const reloads = handlers.reload !== undefined && reloadSignal !== undefined
  if (reloads) process.on(reloadSignal, reload)
  return () => {
    for (const signal of stopSignals) process.off(signal, stop)
    if (reloads) process.off(reloadSignal, reload)
  }
}
