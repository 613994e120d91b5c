import {setTimeout as sleep} from 'node:timers/promises'

/** A child the supervisor watches: it settles `exited` when it ends. */
export interface Supervised {
  exited: Promise<{exitCode?: number; signal?: string}>
  stop(): Promise<void>
}

export interface SuperviseOptions<T extends Supervised> {
  name: string
  /** Starts the child and resolves once it is ready; rejects when it cannot start. */
  start: () => Promise<T>
  /** Called with each running child (first start and every restart). */
  onStarted?: (child: T) => void
  signal: AbortSignal
  /** One line per crash and restart. */
  log: (line: string) => void
  /** First delay after a crash; doubles per crash in a row up to `maxDelayMs` [default: 500 ms .. 10 s]. */
  initialDelayMs?: number
  maxDelayMs?: number
  /** A child that ran this long resets the backoff [default: 60 s]. */
  healthyAfterMs?: number
}

/**
 * Keeps one child running until `signal` aborts: a child that exits or cannot start is started
 * again after a bounded, doubling backoff, with a line in the log each time. A clean exit (code 0)
 * ends supervision: the child was asked to stop (e.g. Syncthing's own /rest/system/shutdown).
 * On abort the running child is stopped.
 */
export async function supervise<T extends Supervised>(options: SuperviseOptions<T>): Promise<number> {
  const initial = options.initialDelayMs ?? 500
  const max = options.maxDelayMs ?? 10_000
  const healthyAfter = options.healthyAfterMs ?? 60_000
  const aborted = new Promise<'aborted'>((resolve) => {
    if (options.signal.aborted) resolve('aborted')
    options.signal.addEventListener('abort', () => resolve('aborted'), {once: true})
  })
  let delay = initial
  let restarts = 0
  while (!options.signal.aborted) {
    let child: T
    try {
      child = await options.start()
    } catch (error) {
      if (options.signal.aborted) break
      options.log(`${options.name} could not start: ${(error as Error).message}; retrying in ${delay / 1000}s`)
      await Promise.race([sleep(delay), aborted])
      delay = Math.min(max, delay * 2)
      continue
    }
    options.onStarted?.(child)
    const startedAt = Date.now()
    const outcome = await Promise.race([child.exited, aborted])
    if (outcome === 'aborted') {
      await child.stop()
      break
    }
    if (outcome.exitCode === 0 && !outcome.signal) {
      options.log(`${options.name} exited cleanly; not restarting`)
      break
    }
    if (Date.now() - startedAt >= healthyAfter) delay = initial
    restarts++
    const how = outcome.signal ? `killed by ${outcome.signal}` : `exit code ${outcome.exitCode}`
    options.log(`${options.name} ended (${how}); restart ${restarts} in ${delay / 1000}s`)
    await Promise.race([sleep(delay), aborted])
    delay = Math.min(max, delay * 2)
  }
  return restarts
}
