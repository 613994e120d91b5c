import {buffer} from 'node:stream/consumers'

import unzipper from 'unzipper'
import yazl from 'yazl'

import {InvalidInputError, NotFoundError, VidsyncError} from '../errors.js'
import {writeFileAtomic} from '../files.js'

/** What a device bundle holds. Never the CA key. */
export interface BundleFiles {
  'ca.crt': string | Buffer
  'node.crt': string | Buffer
  /** For vidsync versions that installed it as it was; devices now render their own. */
  'nebula.yml': string
  'README.md': string
  'vidsync.json': string
  /** Only when the operator generated the device's key (`--generate-key`). */
  'node.key'?: string | Buffer
}

export const requiredBundleFiles = ['ca.crt', 'node.crt', 'vidsync.json'] as const

// A bundle is a few kilobytes; these bounds keep a hostile zip from filling memory.
const maxEntries = 32
const maxEntryBytes = 1024 * 1024

/** Writes the bundle zip atomically (temporary file in the same directory, then rename). */
export async function writeBundle(options: {outPath: string; files: BundleFiles}): Promise<{path: string; bytes: number}> {
  const zip = new yazl.ZipFile()
  for (const [name, content] of Object.entries(options.files) as [string, string | Buffer | undefined][]) {
    if (content === undefined) continue
    if (content.includes('NEBULA ED25519 PRIVATE KEY')) throw new InvalidInputError(`refusing to put a CA key into the bundle (${name})`)
    zip.addBuffer(Buffer.from(content), name, {mode: name === 'node.key' ? 0o100600 : 0o100644})
  }
  zip.end()
  const data = await buffer(zip.outputStream)
  await writeFileAtomic(options.outPath, data, options.files['node.key'] === undefined ? 0o644 : 0o600)
  return {path: options.outPath, bytes: data.length}
}

/**
 * An entry's content, inflated with its bytes counted: a zip's header may claim 100 bytes for an
 * entry that inflates to gigabytes, so the limit is enforced on what comes out, not on the header.
 */
async function inflateBounded(entry: unzipper.File, path: string): Promise<Buffer> {
  const chunks: Buffer[] = []
  let total = 0
  const stream = entry.stream()
  for await (const chunk of stream) {
    total += (chunk as Buffer).length
    if (total > maxEntryBytes) {
      stream.destroy()
      throw new InvalidInputError(`${path} is not a vidsync bundle: ${entry.path} inflates to more than ${maxEntryBytes} bytes`)
    }
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks)
}

/** The files of a bundle by name; refuses a corrupt zip, a zip bomb or one that is not a vidsync bundle. */
export async function readBundle(path: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>()
  try {
    const directory = await unzipper.Open.file(path)
    if (directory.files.length > maxEntries) throw new InvalidInputError(`${path} is not a vidsync bundle: too many files`)
    for (const entry of directory.files) {
      if (entry.type !== 'File') continue
      // Unzip tools disagree on which of two same-named entries wins: a bundle has none.
      if (files.has(entry.path)) throw new InvalidInputError(`${path} is not a vidsync bundle: it holds ${entry.path} twice`)
      if (entry.uncompressedSize > maxEntryBytes) throw new InvalidInputError(`${path} is not a vidsync bundle: ${entry.path} is too large`)
      files.set(entry.path, await inflateBounded(entry, path))
    }
  } catch (error) {
    if (error instanceof VidsyncError) throw error
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`no bundle at ${path}`)
    throw new InvalidInputError(`${path} is not a readable zip file (${(error as Error).message}): ask the operator for a new bundle`)
  }
  const missing = requiredBundleFiles.filter((name) => !files.has(name))
  if (missing.length > 0) throw new InvalidInputError(`${path} is not a vidsync bundle: it lacks ${missing.join(', ')}`)
  return files
}
