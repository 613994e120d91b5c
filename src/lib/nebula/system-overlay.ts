import {createHash} from 'node:crypto'
import {readFile, rm} from 'node:fs/promises'
import {join as nativeJoin, posix, win32} from 'node:path'

import {ConflictError, PermissionError} from '../errors.js'
import {ensureDir, writeFileAtomic} from '../files.js'
import {currentPlatform, type Platform} from '../platform/index.js'
import {deviceOverlaySettings, type JoinedProject} from '../project/joined-project.js'
import {nebulaConfigFromManifest} from './config.js'

/** Windows paths below %ProgramData%; a POSIX VIDSYNC_SYSTEM_DIR (tests of the Windows branch on Linux) keeps POSIX paths. */
const pathsFor = (platform: Platform) => (platform.os === 'win32' && !posix.isAbsolute(platform.systemDir) ? win32 : posix)
const joinFor = (platform: Platform) => pathsFor(platform).join

/** Creates `dir` below the system directory, both root's (SYSTEM's and Administrators') only, whoever made them first. */
async function ensureSystemDir(dir: string, platform: Platform): Promise<void> {
  for (const level of [platform.systemDir, dir]) {
    await ensureDir(level, {private: true})
    await platform.makeSystemPrivate(level, true)
  }
}

/** Where the system copy of a project's overlay lives: `<systemDir>/<project>/` (/etc/vidsync, /Library/Application Support/vidsync, %ProgramData%\vidsync). */
export function systemOverlayPaths(project: string, platform: Platform = currentPlatform()) {
  const join = joinFor(platform)
  const dir = join(platform.systemDir, project)
  return {dir, configPath: join(dir, 'nebula.yml'), caPath: join(dir, 'ca.crt'), certPath: join(dir, 'node.crt'), keyPath: join(dir, 'node.key')}
}

export type SystemOverlay = ReturnType<typeof systemOverlayPaths>

/**
 * Where the elevated step records the digest of what it last wrote into the system copy, in the
 * user's project directory (the copy itself is readable by SYSTEM and Administrators only): Windows
 * alone, where nothing rewrites the copy between two elevated steps.
 */
export const systemOverlayRecordPath = (projectDir: string) => nativeJoin(projectDir, 'system-overlay.sha256')

/** The system copy's files and their content, rendered from the user's project files (nothing written). */
async function renderSystemOverlay(project: JoinedProject, platform: Platform): Promise<{paths: SystemOverlay; files: [string, string | Buffer][]; digest: string}> {
  const paths = systemOverlayPaths(project.name, platform)
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
  const hash = createHash('sha256')
  for (const [path, data] of files) hash.update(`${path}\0${Buffer.byteLength(data)}\0`).update(data)
  return {paths, files, digest: hash.digest('hex')}
}

/**
 * Writes the files the root nebula service reads into the system directory, readable by root
 * (SYSTEM) only: the CA, certificate and key copied from the user's project directory, and a
 * nebula.yml that vidsync renders itself from the project's validated manifest with these paths.
 * The user's own nebula.yml is never copied, so nothing a user-writable file says (sshd, stats,
 * routes, listen addresses) reaches the nebula that runs as root. Run by the elevated step and, on
 * Linux and macOS, again by the service before every start and reload, which also picks up renewed
 * certificates and blocklist changes. On Windows only the elevated step writes it: it records the
 * digest of what it wrote (`systemOverlayRecordPath`) for `systemOverlayProblem`. Directory 0700,
 * files 0600 (on Windows an ACL of SYSTEM and Administrators only), each file replaced atomically.
 * `changed`: what was written differs from what the record says was there before (Windows).
 */
export async function installSystemOverlay(project: JoinedProject, platform: Platform = currentPlatform()): Promise<SystemOverlay & {changed: boolean}> {
  const {paths, files, digest} = await renderSystemOverlay(project, platform)
  await ensureSystemDir(paths.dir, platform)
  for (const [path, data] of files) {
    await writeFileAtomic(path, data, 0o600)
    await platform.makeSystemPrivate(path)
  }
  if (platform.serviceRendersOverlay) return {...paths, changed: false}
  const record = systemOverlayRecordPath(project.dir)
  const before = (await readFile(record, 'utf8').catch(() => '')).trim()
  await writeFileAtomic(record, `${digest}\n`, 0o644)
  return {...paths, changed: before !== digest}
}

/**
 * Where the service does not write its copy itself (Windows): why the system copy is older than
 * the project's files (a renewed certificate, a blocklist or lighthouse change since the last
 * elevated step), in one line; undefined when it is current or rewritten by the service (Linux, macOS).
 */
export async function systemOverlayProblem(project: JoinedProject, platform: Platform = currentPlatform()): Promise<string | undefined> {
  if (platform.serviceRendersOverlay) return undefined
  const recorded = (await readFile(systemOverlayRecordPath(project.dir), 'utf8').catch(() => '')).trim()
  const {paths, digest} = await renderSystemOverlay(project, platform)
  if (recorded === digest) return undefined
  const why = recorded === '' ? 'has no record of what it was written from' : "is older than the project's certificate, blocklist or lighthouses"
  return `the system copy of ${project.name}'s overlay (${paths.dir}), which the nebula service reads, ${why}`
}

/** What to do about `systemOverlayProblem`. */
export const systemOverlayFix = 'run `vidsync up`: it asks for administrator rights once, rewrites the copy and restarts the nebula service'

/** Removes the system copy (`down --uninstall`); nothing to do when there is none. */
export async function removeSystemOverlay(project: string, platform: Platform = currentPlatform()): Promise<void> {
  await rm(systemOverlayPaths(project, platform).dir, {recursive: true, force: true})
}

/** Where the Windows service's protected copy of nebula.exe (and wintun.dll beside it) goes: %ProgramData%\vidsync\bin. */
export const systemBinDir = (platform: Platform = currentPlatform()) => joinFor(platform)(platform.systemDir, 'bin')

/**
 * The nebula executable the system service may run: `nebula` itself when it and the files it
 * loads (wintun.dll) can be replaced only by administrators, else the protected copy in
 * `systemBinDir`, decided from the files' ACLs when `check` (`icacls`); nothing is written here
 * (`status` as the user asks this too).
 */
export async function serviceNebulaPath(nebula: string, platform: Platform, options: {check: boolean}): Promise<{path: string; protectedAlready: boolean}> {
  const copy = joinFor(platform)(systemBinDir(platform), platform.executable('nebula'))
  if (!options.check) return {path: copy, protectedAlready: false}
  const companions = await platform.nebulaCompanions(nebula)
  for (const file of [nebula, ...companions.map((companion) => companion.path)]) {
    if (await platform.executableProblem(file)) return {path: copy, protectedAlready: false}
  }
  return {path: nebula, protectedAlready: true}
}

/**
 * The elevated step's protected nebula (Windows): nebula.exe and wintun.dll copied into
 * %ProgramData%\vidsync\bin (owned by Administrators, SYSTEM and Administrators only, as
 * nebula's release zip lays them out: dist\windows\wintun\bin\<arch>\wintun.dll beside nebula.exe),
 * unless they already are where only administrators can replace them. Refuses (exit 9) when the
 * result can still be replaced by someone else. Returns the path and a line for what was copied.
 */
export async function installSystemNebula(nebula: string, platform: Platform = currentPlatform()): Promise<{path: string; copied?: string}> {
  const chosen: {path: string; protectedAlready: boolean; copied?: string} = await serviceNebulaPath(nebula, platform, {check: true})
  if (!chosen.protectedAlready) {
    const {join, dirname} = pathsFor(platform)
    const dir = systemBinDir(platform)
    await ensureSystemDir(dir, platform)
    const files = [{path: nebula, relative: platform.executable('nebula')}, ...(await platform.nebulaCompanions(nebula))]
    const copied: string[] = []
    for (const file of files) {
      const target = join(dir, ...file.relative.split(/[\\/]/))
      // dist\windows\wintun\bin\<arch>: each level made private too, in case someone made it before the first elevated step.
      for (let level = dirname(target); level !== dir && level.startsWith(dir); level = dirname(level)) {
        await ensureDir(level, {private: true})
        await platform.makeSystemPrivate(level, true)
      }
      const data = await readFile(file.path)
      // The same bytes stay: Windows does not let a running nebula.exe (another project's service) or its wintun.dll be replaced.
      if (!(await readFile(target).then((existing) => existing.equals(data), () => false))) {
        await writeFileAtomic(target, data, 0o755).catch((error: NodeJS.ErrnoException) => {
          if (!['EBUSY', 'EPERM', 'EACCES'].includes(error.code ?? '')) throw error
          throw new ConflictError(`${target} is in use by a running nebula service and cannot be replaced by ${file.path}`, {
            hint: 'stop the nebula services of this device (`vidsync down` for each project), then run the elevated step again',
          })
        })
        copied.push(file.path)
      }
      await platform.makeSystemPrivate(target)
    }
    if (copied.length > 0) chosen.copied = `${copied.join(' and ')} copied to ${dir} (replaceable by administrators only)`
  }
  const problem = await platform.executableProblem(chosen.path)
  if (problem) throw new PermissionError(`refusing to install the nebula service: ${problem}`, {hint: `make ${chosen.path} and its folder writable by administrators only, then run the elevated step again`})
  return {path: chosen.path, ...(chosen.copied ? {copied: chosen.copied} : {})}
}
