import {readFile, rm} from 'node:fs/promises'
import {posix, win32} from 'node:path'

import {ensureDir, writeFileAtomic} from '../files.js'
import {currentPlatform, type Platform} from '../platform/index.js'
import {deviceOverlaySettings, type JoinedProject} from '../project/joined-project.js'
import {nebulaConfigFromManifest} from './config.js'

/** Where the system copy of a project's overlay lives: `<systemDir>/<project>/` (/etc/vidsync, /Library/Application Support/vidsync, %ProgramData%\vidsync). */
export function systemOverlayPaths(project: string, platform: Platform = currentPlatform()) {
  const join = platform.os === 'win32' ? win32.join : posix.join
  const dir = join(platform.systemDir, project)
  return {dir, configPath: join(dir, 'nebula.yml'), caPath: join(dir, 'ca.crt'), certPath: join(dir, 'node.crt'), keyPath: join(dir, 'node.key')}
}

export type SystemOverlay = ReturnType<typeof systemOverlayPaths>

/**
 * Writes the files the root nebula service reads into the system directory, readable by root
 * (SYSTEM) only: the CA, certificate and key copied from the user's project directory, and a
 * nebula.yml that vidsync renders itself from the project's validated manifest with these paths.
 * The user's own nebula.yml is never copied, so nothing a user-writable file says (sshd, stats,
 * routes, listen addresses) reaches the nebula that runs as root. Run by the elevated step and
 * again by the service before every start and reload, which also picks up renewed certificates
 * and blocklist changes. Directory 0700, files 0600 (on Windows an ACL of SYSTEM and Administrators only),
 * each file replaced atomically.
 */
export async function installSystemOverlay(project: JoinedProject, platform: Platform = currentPlatform()): Promise<SystemOverlay> {
  const paths = systemOverlayPaths(project.name, platform)
  await ensureDir(platform.systemDir, {private: true})
  await ensureDir(paths.dir, {private: true})
  await platform.makeSystemPrivate(paths.dir, true)
  const config = nebulaConfigFromManifest(project.manifest, {
    caPath: paths.caPath,
    certPath: paths.certPath,
    keyPath: paths.keyPath,
    ...deviceOverlaySettings(platform, project.name),
  })
  const files: [string, string | Buffer][] = [
    [paths.caPath, await readFile(project.caPath)],
    [paths.certPath, await readFile(project.certPath)],
    [paths.keyPath, await readFile(project.keyPath)],
    [paths.configPath, config],
  ]
  for (const [path, data] of files) {
    await writeFileAtomic(path, data, 0o600)
    await platform.makeSystemPrivate(path)
  }
  return paths
}

/** Removes the system copy (`down --uninstall`); nothing to do when there is none. */
export async function removeSystemOverlay(project: string, platform: Platform = currentPlatform()): Promise<void> {
  await rm(systemOverlayPaths(project, platform).dir, {recursive: true, force: true})
}
