import {chown, mkdir} from 'node:fs/promises'

import {currentPlatform, type Platform} from './platform/index.js'

/**
 * Where vidsync keeps its state: --home, else $VIDSYNC_HOME, else the platform's default for the
 * invoking user (~/.vidsync, ~/Library/Application Support/vidsync, %LOCALAPPDATA%\vidsync).
 * Under sudo that is the home of SUDO_USER, not root's.
 */
export function resolveHome(home?: string, platform: Platform = currentPlatform()): string {
  return home ?? process.env.VIDSYNC_HOME ?? platform.defaultHome(platform.invokingUser())
}

/** Creates the home (private to the user, and theirs also when root creates it under sudo) and returns its path. */
export async function ensureHome(home: string, platform: Platform = currentPlatform()): Promise<string> {
  const created = await mkdir(home, {recursive: true, mode: 0o700})
  const user = platform.invokingUser()
  if (created !== undefined && user.viaSudo && user.uid !== undefined && user.gid !== undefined) await chown(home, user.uid, user.gid)
  return home
}
