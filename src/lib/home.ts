import {homedir} from 'node:os'
import {join} from 'node:path'

import {ensureDir} from './files.js'

/** Where vidsync keeps its state: --home, else $VIDSYNC_HOME, else ~/.vidsync. */
export function resolveHome(home?: string): string {
  return home ?? process.env.VIDSYNC_HOME ?? join(homedir(), '.vidsync')
}

/**
 * Creates the home, or narrows an existing one, to 0700: the embedded database inside it (PGlite
 * writes its files 0666 whatever the umask) and the keys must not be reachable by other users.
 */
export async function ensureHome(home: string): Promise<string> {
  await ensureDir(home, {private: true})
  return home
}
