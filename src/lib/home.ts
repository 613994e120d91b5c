import {mkdir} from 'node:fs/promises'
import {homedir} from 'node:os'
import {join} from 'node:path'

/** Where vidsync keeps its state: --home, else $VIDSYNC_HOME, else ~/.vidsync. */
export function resolveHome(home?: string): string {
  return home ?? process.env.VIDSYNC_HOME ?? join(homedir(), '.vidsync')
}

/** Creates the home (private to the user) and returns its path. */
export async function ensureHome(home: string): Promise<string> {
  await mkdir(home, {recursive: true, mode: 0o700})
  return home
}
