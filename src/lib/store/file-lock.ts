import {link, open, readFile, rename, rm, stat} from 'node:fs/promises'
import {setTimeout as sleep} from 'node:timers/promises'

import {UnavailableError} from '../errors.js'
import {isAlive} from '../exec.js'
import {currentPlatform, type Platform} from '../platform/index.js'

export interface FileLock {
  release(): Promise<void>
}

/** A lock file whose content cannot be read as a PID for this long was left by a crash. */
const unreadableStaleMs = 2000

interface Holder {
  /** Undefined when the file is empty or garbage. */
  pid: number | undefined
  /** The holder's start time as the OS reports it, to tell it from a later process with its PID (older locks lack it). */
  startedAt: string | undefined
  ageMs: number
  ino: number
}

/** Who holds the lock, as its file says; null when there is no lock. */
async function holderOf(path: string): Promise<Holder | null> {
  const [text, info] = await Promise.all([readFile(path, 'utf8').catch(() => undefined), stat(path).catch(() => undefined)])
  if (text === undefined || info === undefined) return null
  const [pidLine = '', startedAt] = text.trim().split('\n')
  const pid = /^\d{1,10}$/.test(pidLine) ? Number(pidLine) : undefined
  return {pid: pid !== undefined && pid > 0 ? pid : undefined, startedAt: startedAt?.trim() || undefined, ageMs: Date.now() - info.mtimeMs, ino: info.ino}
}

/** A crash's leftover: unreadable for a while, or naming a process that is gone (or a later one that reuses its PID). */
async function isStale(holder: Holder, platform: Platform): Promise<boolean> {
  if (holder.pid === undefined) return holder.ageMs > unreadableStaleMs
  if (holder.startedAt !== undefined) return !(await platform.isRunning({pid: holder.pid, startedAt: holder.startedAt}))
  return !isAlive(holder.pid)
}

/**
 * Moves a stale lock (inode `ino`) out of the way. Another process may have taken it over and
 * made a fresh lock meanwhile: a moved file that is not the stale one is put back.
 */
async function takeOver(path: string, ino: number): Promise<void> {
  const moved = `${path}.stale.${process.pid}`
  try {
    await rename(path, moved)
  } catch {
    return // gone already: someone else took it over
  }
  if ((await stat(moved)).ino !== ino) await link(moved, path).catch(() => undefined)
  await rm(moved, {force: true})
}

/**
 * An exclusive lock held by this process through a file that records its PID and start time. The
 * file appears with both already in it (written aside, then hard-linked into place), so an empty
 * or unreadable lock file is always a crash's leftover, and is taken over like the lock of a
 * process that no longer runs or whose PID now belongs to another process. Waits at most
 * `timeoutMs`, calling `onWait` once with the holder's PID.
 */
export async function acquireFileLock(
  path: string,
  what: string,
  options: {timeoutMs?: number; onWait?: (pid: number | undefined) => void; platform?: Platform} = {},
): Promise<FileLock> {
  const platform = options.platform ?? currentPlatform()
  const deadline = Date.now() + (options.timeoutMs ?? 30_000)
  const aside = `${path}.${process.pid}.tmp`
  const handle = await open(aside, 'w', 0o600)
  const me = await platform.processIdentity(process.pid)
  await handle.writeFile(`${process.pid}\n${me?.startedAt ?? ''}`)
  await handle.close()
  let told = false
  try {
    for (;;) {
      try {
        await link(aside, path)
        return {release: () => rm(path, {force: true})}
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      }
      const holder = await holderOf(path)
      if (holder === null) continue
      if (await isStale(holder, platform)) {
        await takeOver(path, holder.ino)
        continue
      }
      if (Date.now() >= deadline) {
        throw new UnavailableError(`${what} is in use by process ${holder.pid ?? 'unknown'} (lock ${path}): wait for it to finish and retry`, {
          hint: `if no vidsync command is running, remove ${path}`,
        })
      }
      if (!told) options.onWait?.(holder.pid)
      told = true
      await sleep(20 + Math.random() * 30)
    }
  } finally {
    await rm(aside, {force: true})
  }
}
