import {createHash, randomBytes} from 'node:crypto'
import {chmod, copyFile, lstat, mkdir, readdir, readFile, realpath, rename, rm, stat, symlink, writeFile} from 'node:fs/promises'
import {dirname, join, relative, sep} from 'node:path'
import {fileURLToPath} from 'node:url'

import {PermissionError} from '../errors.js'
import {ensureDir} from '../files.js'
import {isAlive, runProgram} from '../exec.js'

/**
 * The protected runtime of the POSIX nebula service: a root-owned copy of Node.js and of this
 * vidsync package (package.json, bin/, dist/, oclif.manifest.json and the dependencies it needs
 * at runtime, found as Node.js resolves them) in `<platform.runtimeDir>/<version>/`, for when
 * the Node.js or vidsync the user runs could be replaced by someone other than root (Homebrew's
 * node under /opt/homebrew, nvm/fnm/volta, `npm install -g` into a user prefix). The service runs
 * the copy, so what runs as root at boot is what the elevated step saw.
 */

const manifestName = 'runtime.json'
/** The parts of the package root that `vidsync nebula service` needs (no migrations, no embedded-db template). */
const packageEntries = ['package.json', join('bin', 'run.js'), 'dist', 'oclif.manifest.json']

/** The directory holding vidsync's package.json, found from this module (dist/lib/nebula/ or src/lib/nebula/). */
export async function packageRoot(): Promise<string> {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const text = await readFile(join(dir, 'package.json'), 'utf8').catch(() => undefined)
    if (text !== undefined && (JSON.parse(text) as {name?: string}).name === 'vidsync') return realpath(dir)
    if (dirname(dir) === dir) throw new Error('vidsync cannot find its own package.json')
  }
}

const versionOf = async (root: string) => (JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {version: string}).version

/** Where a version's copy lives and what the service runs from it. */
export function runtimePaths(runtimeDir: string, version: string) {
  const dir = join(runtimeDir, version)
  return {dir, node: join(dir, 'bin', 'node'), packageDir: join(dir, 'vidsync'), entry: join(dir, 'vidsync', 'bin', 'run.js'), manifest: join(dir, manifestName)}
}

/** What is copied: a Node.js executable and a vidsync package root; by default the ones running now. */
export interface RuntimeSource {
  node: string
  root: string
}

const sourceOf = async (source?: RuntimeSource): Promise<RuntimeSource> => source ?? {node: process.execPath, root: await packageRoot()}

/** The command the nebula service runs from the copy (no execArgv: the copy runs its compiled dist/ only). */
export async function runtimeCommand(runtimeDir: string, args: string[], source?: RuntimeSource): Promise<string[]> {
  const paths = runtimePaths(runtimeDir, await versionOf((await sourceOf(source)).root))
  return [paths.node, paths.entry, ...args]
}

interface Entry {
  /** Where it is read from (links resolved for packages). */
  src: string
  /** Path below the copy's package directory. */
  rel: string
  kind: 'file' | 'dir' | 'link'
  /** A link's target, relative to its own directory in the copy. */
  target?: string
  size: number
  mtimeMs: number
  executable: boolean
}

/** The package directory `name` as Node.js finds it from `from`: node_modules of `from`, then of each directory above. */
async function resolvePackage(from: string, name: string): Promise<string | undefined> {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name)
    if (await stat(join(candidate, 'package.json')).then(() => true, () => false)) return candidate
    if (dirname(dir) === dir) return undefined
  }
}

/**
 * Where a path of the source goes below the copy's package directory: inside the package root at
 * the same place; in an ancestor's node_modules (hoisted dependencies) into the root's node_modules.
 */
function placeOf(root: string, path: string): string | undefined {
  const inside = relative(root, path)
  if (!inside.startsWith('..')) return inside
  for (let dir = dirname(root); ; dir = dirname(dir)) {
    const modules = join(dir, 'node_modules')
    if (path.startsWith(modules + sep)) return join('node_modules', path.slice(modules.length + 1))
    if (dirname(dir) === dir) return undefined
  }
}

async function walk(src: string, rel: string, entries: Entry[], skip: Set<string>): Promise<void> {
  const info = await stat(src)
  if (info.isDirectory()) {
    entries.push({src, rel, kind: 'dir', size: 0, mtimeMs: 0, executable: true})
    for (const name of (await readdir(src)).sort()) {
      const child = join(src, name)
      if (!skip.has(child)) await walk(child, join(rel, name), entries, skip)
    }
  } else if (info.isFile()) {
    entries.push({src, rel, kind: 'file', size: info.size, mtimeMs: info.mtimeMs, executable: (info.mode & 0o111) !== 0})
  }
}

/** Every file, directory and link the copy holds, read from the running vidsync (nothing written). */
async function sourceEntries(root: string): Promise<Entry[]> {
  const entries: Entry[] = []
  const placed = new Map<string, string>()
  const place = (path: string) => {
    const rel = placeOf(root, path)
    if (rel === undefined) throw new PermissionError(`cannot copy vidsync's dependency ${path} into the protected runtime: it is outside ${root} and its node_modules`)
    return rel
  }
  for (const name of packageEntries) {
    const path = join(root, name)
    if (await lstat(path).then(() => true, () => false)) await walk(path, name, entries, new Set())
  }
  const queue = [root]
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    const manifest = JSON.parse(await readFile(join(next, 'package.json'), 'utf8')) as {dependencies?: Record<string, string>; optionalDependencies?: Record<string, string>}
    const optional = new Set(Object.keys(manifest.optionalDependencies ?? {}))
    for (const name of new Set([...Object.keys(manifest.dependencies ?? {}), ...optional])) {
      const found = await resolvePackage(next, name)
      if (!found) {
        if (optional.has(name)) continue
        throw new PermissionError(`cannot copy vidsync into the protected runtime: its dependency ${name} is not installed (from ${next})`)
      }
      const real = await realpath(found)
      const at = place(found)
      if (found !== real && !placed.has(at)) {
        // A linked package (pnpm, npm link): the same link in the copy, to where its target is copied.
        placed.set(at, real)
        entries.push({src: found, rel: at, kind: 'link', target: relative(dirname(at), place(real)), size: 0, mtimeMs: 0, executable: false})
      }
      const realAt = place(real)
      const before = placed.get(realAt)
      if (before !== undefined && before !== real) throw new PermissionError(`cannot copy vidsync into the protected runtime: ${before} and ${real} would both go to ${realAt}`)
      if (before !== undefined) continue
      placed.set(realAt, real)
      await walk(real, realAt, entries, new Set([join(real, 'node_modules')]))
      queue.push(real)
    }
  }
  return entries
}

/** A cheap digest of what would be copied: names, sizes, modification times, links' targets, and Node.js itself. */
function digestOf(entries: Entry[], node: {path: string; size: number; mtimeMs: number}): string {
  const hash = createHash('sha256').update(`${node.path}\0${node.size}\0${node.mtimeMs}\n`)
  for (const entry of entries) hash.update(`${entry.kind}\0${entry.rel}\0${entry.size}\0${entry.mtimeMs}\0${entry.target ?? ''}\n`)
  return hash.digest('hex')
}

export interface ProtectedRuntime {
  dir: string
  node: string
  entry: string
  /** Copied now (false: an earlier copy with the same content was kept). */
  copied: boolean
  files: number
  bytes: number
  ms: number
}

/**
 * Copies Node.js and vidsync into `<runtimeDir>/<version>/` (run as root by the elevated step):
 * written to a temporary directory beside it, files 0644/0755 and directories 0755 (so owned by
 * root, writable by nobody else), checked by running the copy, its manifest written last, then
 * renamed into place. A copy of the same version whose manifest records the same digest of the
 * source is kept as it is. An older copy of this version is renamed aside and removed.
 */
export async function installProtectedRuntime(runtimeDir: string, from?: RuntimeSource): Promise<ProtectedRuntime> {
  const started = Date.now()
  const source = await sourceOf(from)
  const root = await realpath(source.root)
  const version = await versionOf(root)
  const paths = runtimePaths(runtimeDir, version)
  const nodeSource = await realpath(source.node)
  const nodeInfo = await stat(nodeSource)
  const entries = await sourceEntries(root)
  const digest = digestOf(entries, {path: nodeSource, size: nodeInfo.size, mtimeMs: nodeInfo.mtimeMs})
  const files = entries.filter((entry) => entry.kind === 'file').length + 1
  const bytes = entries.reduce((sum, entry) => sum + entry.size, nodeInfo.size)
  const existing = (await readFile(paths.manifest, 'utf8').then((text) => JSON.parse(text) as {digest?: string}, () => undefined))?.digest
  const result = {dir: paths.dir, node: paths.node, entry: paths.entry, files, bytes}
  if (existing === digest) return {...result, copied: false, ms: Date.now() - started}
  await ensureDir(runtimeDir)
  const temp = join(runtimeDir, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`)
  try {
    await mkdir(join(temp, 'bin'), {recursive: true, mode: 0o755})
    await copyFile(nodeSource, join(temp, 'bin', 'node'))
    await chmod(join(temp, 'bin', 'node'), 0o755)
    const base = join(temp, 'vidsync')
    await mkdir(base, {mode: 0o755})
    for (const entry of entries) {
      const target = join(base, entry.rel)
      if (entry.kind === 'dir') await mkdir(target, {recursive: true, mode: 0o755})
      else {
        await mkdir(dirname(target), {recursive: true, mode: 0o755})
        if (entry.kind === 'link') await symlink(entry.target ?? '', target)
        else {
          await copyFile(entry.src, target)
          await chmod(target, entry.executable ? 0o755 : 0o644)
        }
      }
    }
    for (const dir of [temp, join(temp, 'bin'), ...entries.filter((entry) => entry.kind === 'dir').map((entry) => join(base, entry.rel)), base]) await chmod(dir, 0o755)
    // The copy must start: a dependency missed here would stop the service at boot instead.
    const check = await runProgram([join(temp, 'bin', 'node'), join(base, 'bin', 'run.js'), 'nebula', 'service', '--help'], {timeoutMs: 60_000})
    if (check.exitCode !== 0) throw new PermissionError(`the protected copy of vidsync in ${temp} does not start: ${(check.stderr.trim() || check.stdout.trim()).split('\n')[0]}`)
    await writeFile(join(temp, manifestName), `${JSON.stringify({version, digest, node: process.version, source: {node: nodeSource, package: root}, files, bytes}, null, 2)}\n`, {mode: 0o644})
    const aside = join(runtimeDir, `.old-${process.pid}-${randomBytes(4).toString('hex')}`)
    const moved = await rename(paths.dir, aside).then(() => true, (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return false
      throw error
    })
    await rename(temp, paths.dir)
    if (moved) await rm(aside, {recursive: true, force: true})
  } finally {
    await rm(temp, {recursive: true, force: true})
  }
  return {...result, copied: true, ms: Date.now() - started}
}

/**
 * Removes the copies no installed service runs: every version directory in `runtimeDir` that no
 * file in `definitionsDir` (the nebula services' units or plists) names, except `keep`, and
 * temporary directories of processes that ended. Returns the removed directories.
 */
export async function removeUnusedRuntimes(runtimeDir: string, definitionsDir: string, keep?: string): Promise<string[]> {
  const names = await readdir(runtimeDir).catch(() => [] as string[])
  if (names.length === 0) return []
  const definitions: string[] = []
  for (const name of await readdir(definitionsDir).catch(() => [] as string[])) {
    const path = join(definitionsDir, name)
    if ((await lstat(path).catch(() => undefined))?.isFile()) definitions.push((await readFile(path, 'utf8').catch(() => '')))
  }
  const removed: string[] = []
  for (const name of names) {
    const dir = join(runtimeDir, name)
    const temp = /^\.(?:tmp|old)-(\d+)-/.exec(name)
    const unused = temp ? !isAlive(Number(temp[1])) : dir !== keep && !definitions.some((text) => text.includes(`${dir}${sep}`))
    if (unused) {
      await rm(dir, {recursive: true, force: true})
      removed.push(dir)
    }
  }
  return removed
}

