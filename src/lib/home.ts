import {existsSync} from 'node:fs'
import {chown} from 'node:fs/promises'
import {dirname, resolve} from 'node:path'

import {ensureDir} from './files.js'
import {currentPlatform, type Platform} from './platform/index.js'

/**
 * Where vidsync keeps its state: --home, else $VIDSYNC_HOME, else the platform's default for the
 * invoking user (Linux ~/.vidsync where it exists, else $XDG_STATE_HOME/vidsync;
 * ~/Library/Application Support/vidsync; %LOCALAPPDATA%\vidsync).
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
  // The levels this call creates (~/.local and ~/.local/state too, for the XDG default): under sudo they are the user's.
  const created: string[] = []
  for (let level = resolve(home); !existsSync(level) && dirname(level) !== level; level = dirname(level)) created.push(level)
  await ensureDir(home, {private: true})
  const user = platform.invokingUser()
  if (user.viaSudo && user.uid !== undefined && user.gid !== undefined) for (const level of created) await chown(level, user.uid, user.gid)
  return home
}
