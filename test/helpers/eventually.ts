import {pollUntil} from '../../src/lib/poll.js'

/** Waits (bounded) until `check` holds, checking every 20 ms; answers how long it took. */
export async function eventually(check: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const started = Date.now()
  await pollUntil(check, {
    timeoutMs,
    intervalMs: 20,
    onTimeout: () => {
      throw new Error(`${what} did not happen within ${timeoutMs} ms`)
    },
  })
  return Date.now() - started
}
