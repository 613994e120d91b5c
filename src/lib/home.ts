import {existsSync} from 'node:fs'
import {chown} from 'node:fs/promises'

import {ensureDir} from './files.js'
import {currentPlatform, type Platform} from './platform/index.js'

/**
 * Where vidsync keeps its state: --home, else $VIDSYNC_HOME, else the platform's default for the
 * invoking user (~/.vidsync, ~/Library/Application Support/vidsync, %LOCALAPPDATA%\vidsync).
 * Under sudo that is the home of SUDO_USER, not root's.
 */
export function resolveHome(home?: string, platform: Platform = currentPlatform()): string {
  return home ?? process.env.VIDSYNC_HOME ?? platform.defaultHome(platform.invokingUser())
}

/**
 * Creates the home, or narrows an existing one, to 0700: the embedded database inside it (PGlite
 * writes its files 0666 whatever the umask) and the keys must not be reachable by other users.
 * Created by root under sudo, it belongs to the invoking user.
 */
export async function ensureHome(home: string, platform: Platform = currentPlatform()): Promise<string> {
  const existed = existsSync(home)
  await ensureDir(home, {private: true})
  const user = platform.invokingUser()
  if (!existed && user.viaSudo && user.uid !== undefined && user.gid !== undefined) await chown(home, user.uid, user.gid)
  return home
}
