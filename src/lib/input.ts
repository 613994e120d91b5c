import {readFile} from 'node:fs/promises'
import {buffer} from 'node:stream/consumers'

import {InvalidInputError, NotFoundError} from './errors.js'

/** Reads a file the user named, or standard input for `-`, with one-line errors. */
export async function readUserFile(path: string, what: string): Promise<Buffer> {
  if (path === '-') return buffer(process.stdin)
  try {
    return await readFile(path)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new NotFoundError(`${what} ${path} does not exist`)
    if (code === 'EISDIR') throw new InvalidInputError(`${what} ${path} is a directory, not a file`)
    throw new InvalidInputError(`cannot read ${what} ${path}: ${(error as Error).message}`)
  }
}
