import {setTimeout as sleep} from 'node:timers/promises'

import {UnavailableError} from './errors.js'

/** What a check returns while the condition does not hold yet. */
export type Pending = undefined | null | false

export interface PollOptions<U> {
  /** Gives up this long after the first check; the check always runs at least once, and once more at the bound. */
  timeoutMs: number
  /** Pause between checks (default 100 ms). */
  intervalMs?: number
  /** Stops the wait: pollUntil then rejects with the signal's reason. */
  signal?: AbortSignal
  /** What is awaited, for the timeout message: "timed out after 5s waiting for <what>". */
  what?: string
  /**
   * What happens at the bound instead of the default UnavailableError: throws the caller's own
   * error (message and exit code), or returns what pollUntil then resolves with (a wait whose end
   * is not a failure, e.g. `() => false`).
   */
  onTimeout?: () => U | Promise<U>
}

/**
 * Runs `check` every `intervalMs` until it returns a value other than undefined, null or false,
 * and resolves with that value (so a boolean check resolves with `true`, a lookup with what it
 * found, and 0 or '' count as found). A check that throws ends the wait with its error. After
 * `timeoutMs` it settles as `onTimeout` says, by default rejecting with an UnavailableError
 * naming `what` and the bound.
 */
export async function pollUntil<T, U = never>(check: () => T | Pending | Promise<T | Pending>, options: PollOptions<U>): Promise<T | U> {
  const {timeoutMs, intervalMs = 100, signal} = options
  const deadline = Date.now() + timeoutMs
  for (;;) {
    signal?.throwIfAborted()
    const value = await check()
    if (value !== undefined && value !== null && value !== false) return value
    const left = deadline - Date.now()
    if (left <= 0) {
      if (options.onTimeout) return options.onTimeout()
      throw new UnavailableError(`timed out after ${timeoutMs / 1000}s waiting for ${options.what ?? 'a condition'}`)
    }
    await sleep(Math.min(intervalMs, left), undefined, {signal}).catch((error: unknown) => {
      throw signal?.aborted ? signal.reason : error
    })
  }
}
