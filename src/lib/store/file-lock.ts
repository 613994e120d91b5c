import {open, readFile, rm} from 'node:fs/promises'

import {UnavailableError} from '../errors.js'
import {isAlive} from '../exec.js'

export interface FileLock {
  release(): Promise<void>
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * An exclusive lock held by this process through a file that records its PID. A lock left by a
 * process that no longer runs is taken over. Waits at most `timeoutMs`.
 */
export async function acquireFileLock(path: string, what: string, timeoutMs = 30_000): Promise<FileLock> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const handle = await open(path, 'wx', 0o600)
      await handle.writeFile(String(process.pid))
      await handle.close()
      return {release: () => rm(path, {force: true})}
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    const holder = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10)
    // An empty file is a lock being written right now; only a dead PID makes it stale.
    if (Number.isInteger(holder) && holder > 0 && !isAlive(holder)) {
      await rm(path, {force: true})
      continue
    }
    if (Date.now() >= deadline) {
      throw new UnavailableError(
        `${what} is in use by process ${Number.isInteger(holder) ? holder : 'unknown'} (lock ${path}): wait for it to finish and retry`,
      )
    }
    await sleep(20 + Math.random() * 30)
  }
}
