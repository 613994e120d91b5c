import {randomBytes} from 'node:crypto'
import {chmod, link, mkdir, mkdtemp, readdir, rename, rm, stat, writeFile} from 'node:fs/promises'
import {basename, dirname, join, resolve} from 'node:path'

import {InvalidInputError, PermissionError} from './errors.js'
import {isAlive} from './exec.js'

/** Maps a filesystem error while writing `path` to the error users see; others pass through. */
export function writeError(error: unknown, path: string): unknown {
  switch ((error as NodeJS.ErrnoException).code) {
    case 'EACCES':
    case 'EPERM':
      return new PermissionError(`cannot write ${path}: permission denied`)
    case 'EROFS':
      return new PermissionError(`cannot write ${path}: read-only file system`)
    case 'ENOENT':
      return new InvalidInputError(`cannot write ${path}: directory ${dirname(path)} does not exist`)
    case 'ENOTDIR':
      return new InvalidInputError(`cannot write ${path}: a parent of it is not a directory`)
    case 'EISDIR':
      return new InvalidInputError(`cannot write ${path}: it is a directory`)
    default:
      return error
  }
}

/** The missing directories from the nearest existing ancestor of `dir` down to `dir`. */
async function missingLevels(dir: string): Promise<string[]> {
  const missing: string[] = []
  for (let current = resolve(dir); ; current = dirname(current)) {
    const info = await stat(current).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined
      throw error
    })
    if (info?.isDirectory()) return missing
    if (info) {
      throw current === resolve(dir)
        ? new InvalidInputError(`cannot use ${dir} as a directory: it is a file`)
        : writeError(Object.assign(new Error('not a directory'), {code: 'ENOTDIR'}), dir)
    }
    missing.unshift(current)
    if (dirname(current) === current) return missing
  }
}

/**
 * Creates `dir` and missing parents as 0700, one level at a time: a recursive mkdir loops forever
 * on file systems such as /proc that refuse it in an unusual way. `private` also narrows an
 * existing `dir` to 0700: only for vidsync's own directories, never for one the user named.
 */
export async function ensureDir(dir: string, options: {private?: boolean} = {}): Promise<void> {
  try {
    for (const level of await missingLevels(dir)) {
      await mkdir(level, {mode: 0o700}).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'EEXIST') throw error
      })
    }
    if (options.private) await chmod(dir, 0o700)
  } catch (error) {
    if (error instanceof InvalidInputError) throw error
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new InvalidInputError(`cannot create ${dir}: the file system does not allow it`)
    throw writeError(error, dir)
  }
}

const tempPrefix = '.vidsync-tmp-'
/** Temp dirs made before they carried their process's PID: left by a crash when this old. */
const unnamedTempStaleMs = 3_600_000

/**
 * Removes the temp dirs in `parent` of processes that no longer run (killed with -9 while
 * signing, say: with --generate-key one may hold a device's private key).
 */
async function removeStaleTempDirs(parent: string): Promise<void> {
  const names = (await readdir(parent).catch(() => [] as string[])).filter((name) => name.startsWith(tempPrefix))
  for (const name of names) {
    const pid = /^\.vidsync-tmp-(\d+)-/.exec(name)?.[1]
    const path = join(parent, name)
    const stale = pid !== undefined ? !isAlive(Number(pid)) : Date.now() - ((await stat(path).catch(() => undefined))?.mtimeMs ?? Date.now()) > unnamedTempStaleMs
    if (stale) await rm(path, {recursive: true, force: true}).catch(() => undefined)
  }
}

/** Runs `work` in a fresh 0700 directory under `parent` and removes it whatever happens. */
export async function withTempDir<R>(parent: string, work: (dir: string) => Promise<R>): Promise<R> {
  await removeStaleTempDirs(parent)
  const dir = await mkdtemp(join(parent, `${tempPrefix}${process.pid}-`)).catch((error: unknown) => {
    throw writeError(error, parent)
  })
  try {
    return await work(dir)
  } finally {
    await rm(dir, {recursive: true, force: true})
  }
}

/**
 * Gives files their final names without ever replacing an existing file (link(2) fails on an
 * existing target, unlike rename). All appear or none: on failure the new names are removed.
 */
export async function publishNew(files: {from: string; to: string}[], onExists: (path: string) => Error): Promise<void> {
  const published: string[] = []
  try {
    for (const {from, to} of files) {
      try {
        await link(from, to)
      } catch (error) {
        throw (error as NodeJS.ErrnoException).code === 'EEXIST' ? onExists(to) : writeError(error, to)
      }
      published.push(to)
    }
  } catch (error) {
    await Promise.all(published.map((path) => rm(path, {force: true})))
    throw error
  }
}

/** Writes through a temporary file in the same directory and a rename, so readers never see half a file. */
export async function writeFileAtomic(path: string, data: string | Buffer, mode: number): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    await writeFile(temp, data, {mode, flag: 'wx'})
    await chmod(temp, mode) // exactly `mode`: writeFile's is filtered by the umask
    await rename(temp, path)
  } catch (error) {
    await rm(temp, {force: true}).catch(() => undefined) // the original error is the one to report
    throw writeError(error, path)
  }
}
