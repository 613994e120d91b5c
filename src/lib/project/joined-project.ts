import {readdir, readFile, rename, rm} from 'node:fs/promises'
import {isAbsolute, join} from 'node:path'

import {type BundleManifest, parseManifest, serializeManifest} from '../bundle/manifest.js'
import {InvalidInputError, NotFoundError} from '../errors.js'
import type {Tools} from '../exec.js'
import {ensureDir, writeFileAtomic} from '../files.js'
import {type DeviceNebulaSettings, lighthousesFor, nebulaConfigFromManifest, testNebulaConfig} from '../nebula/config.js'
import {currentPlatform, type Platform} from '../platform/index.js'

export const projectsDir = (home: string) => join(home, 'projects')

/** Where `vidsync join` installs a project's files. */
export const projectDir = (home: string, project: string) => join(projectsDir(home), project)

/** Nebula's tun device for a project on Linux: interface names have at most 15 characters. */
export const tunDeviceName = (project: string) => `vs-${project}`.slice(0, 15)

/**
 * Nebula's reader routines on Linux: one per two CPUs (nebula's tun and UDP readers share the
 * machine with Syncthing), at most 4. Above 1 is Linux-only: nebula up to 1.9 stops on macOS and
 * Windows with "multiqueue not implemented". Measured by bench/routines.ts (BENCHMARKS.md,
 * "Routines"): on 2 CPUs routines 2 and 4 were a median 0.89x to 0.97x routines 1 within a round,
 * with 1 and with 4 TCP streams, hence 1 there.
 */
export const linuxRoutines = (cpuCount: number) => Math.max(1, Math.min(4, Math.floor(cpuCount / 2)))

/**
 * The overlay settings that depend on the device, not the project: tun.dev only where the OS
 * honours it (Linux's tun device, Windows' Wintun adapter; macOS takes the next utunN), and more
 * than one routine only on Linux.
 */
export function deviceOverlaySettings(platform: Platform, project: string): Pick<DeviceNebulaSettings, 'tunDev' | 'routines'> {
  const routines = platform.os === 'linux' ? linuxRoutines(platform.cpuCount) : 1
  return platform.honoursTunDev ? {tunDev: tunDeviceName(project), routines} : {routines}
}

/** Where nebula's files for the project in `dir` are; vidsync adds nebula.pid and nebula.log. */
export function projectPaths(dir: string) {
  return {
    dir,
    configPath: join(dir, 'nebula.yml'),
    pidPath: join(dir, 'nebula.pid'),
    logPath: join(dir, 'nebula.log'),
    caPath: join(dir, 'ca.crt'),
    certPath: join(dir, 'node.crt'),
    keyPath: join(dir, 'node.key'),
    manifestPath: join(dir, 'vidsync.json'),
    /** A new key pair made for a key change (`vidsync key rotate`), beside node.key until its certificate is installed. */
    nextKeyPath: join(dir, 'node.next.key'),
    nextPublicKeyPath: join(dir, 'node.next.pub'),
  }
}

/** What is installed for a project, read as raw files: for deciding whether a new bundle may replace it. */
export interface InstalledFiles {
  /** The pinned CA: the only CA this device trusts for the project. */
  caPem?: Buffer
  certPem?: Buffer
  keyPem?: Buffer
  /** When the installed bundle was issued, from its manifest. */
  issuedAt?: string
}

/** The files `join` installs, checked by the caller. */
export interface ProjectFiles {
  manifest: BundleManifest
  /** The CA to pin (or the pinned one): only certificates the device trusts. */
  caPem: Buffer
  certPem: Buffer
  keyPem: Buffer
}

async function sameContent(files: Map<string, string | Buffer>): Promise<boolean> {
  for (const [path, content] of files) {
    const existing = await readFile(path).catch(() => undefined)
    if (!existing?.equals(Buffer.from(content))) return false
  }
  return true
}

/** What this device's owner chose for the project, kept beside its manifest (never from the control plane). */
export interface DeviceSettings {
  /**
   * This device's own limits in KiB/s (0: no limit), by direction; a direction without one follows
   * the project's default. Absent until vidsync first manages the limits here.
   */
  limits?: {upKiBps?: number; downKiBps?: number}
  /** Accept every offered folder on its own (`vidsync sync auto-accept on`), not only those the project marks. */
  autoAccept?: boolean
  /** Where folders accepted without a directory go, as <folderRoot>/<folder> [default: ~/vidsync/<project>]. */
  folderRoot?: string
}

const isRate = (value: unknown) => value === undefined || (Number.isSafeInteger(value) && (value as number) >= 0)
const defined = <T extends object>(entries: T) => Object.fromEntries(Object.entries(entries).filter(([, value]) => value !== undefined)) as T

/** settings.json, checked field by field; anything unreadable counts as nothing chosen. */
function parseSettings(raw: string | undefined): DeviceSettings {
  let parsed: {limits?: {upKiBps?: unknown; downKiBps?: unknown}; autoAccept?: unknown; folderRoot?: unknown}
  try {
    parsed = JSON.parse(raw ?? '{}') as typeof parsed
  } catch {
    return {}
  }
  const {limits} = parsed
  const goodLimits = typeof limits === 'object' && limits !== null && isRate(limits.upKiBps) && isRate(limits.downKiBps)
  return defined({
    limits: goodLimits ? defined({upKiBps: limits.upKiBps as number | undefined, downKiBps: limits.downKiBps as number | undefined}) : undefined,
    autoAccept: typeof parsed.autoAccept === 'boolean' ? parsed.autoAccept : undefined,
    folderRoot: typeof parsed.folderRoot === 'string' && isAbsolute(parsed.folderRoot) ? parsed.folderRoot : undefined,
  })
}

/**
 * What the `up` loop last learned from the control plane about this device's certificate
 * (renewal.json), for `status` and `doctor`, which do not ask the control plane.
 */
export interface RenewalState {
  /** When the open renewal was asked for (the control plane's clock); absent without one. */
  requestedAt?: string
  /** The open renewal asks for a new key: waiting for the operator's approval, or approved. */
  keyChange?: 'pending' | 'approved'
  /** The control plane's clock minus this device's, in seconds, when last asked. */
  clockOffsetSeconds?: number
}

function parseRenewalState(raw: string | undefined): RenewalState {
  let parsed: Record<string, unknown>
  try {
    parsed = JSON.parse(raw ?? '{}') as Record<string, unknown>
  } catch {
    return {}
  }
  return defined({
    requestedAt: typeof parsed.requestedAt === 'string' && !Number.isNaN(Date.parse(parsed.requestedAt)) ? parsed.requestedAt : undefined,
    keyChange: parsed.keyChange === 'pending' || parsed.keyChange === 'approved' ? parsed.keyChange : undefined,
    clockOffsetSeconds: Number.isSafeInteger(parsed.clockOffsetSeconds) ? (parsed.clockOffsetSeconds as number) : undefined,
  })
}

/**
 * A project joined on this device: the only code that reads and writes its vidsync.json,
 * nebula.yml, certificates and key. The manifest is validated once, when the project is opened;
 * nebula.yml is always rendered here from the manifest and this device's platform.
 */
export class JoinedProject {
  readonly dir: string
  readonly configPath: string
  readonly pidPath: string
  readonly logPath: string
  readonly caPath: string
  readonly certPath: string
  readonly keyPath: string
  readonly nextKeyPath: string
  readonly nextPublicKeyPath: string
  private readonly manifestPath: string
  private readonly settingsPath: string
  private readonly renewalPath: string

  private constructor(
    dir: string,
    readonly manifest: BundleManifest,
    private readonly platform: Platform,
  ) {
    const paths = projectPaths(dir)
    this.dir = dir
    this.configPath = paths.configPath
    this.pidPath = paths.pidPath
    this.logPath = paths.logPath
    this.caPath = paths.caPath
    this.certPath = paths.certPath
    this.keyPath = paths.keyPath
    this.nextKeyPath = paths.nextKeyPath
    this.nextPublicKeyPath = paths.nextPublicKeyPath
    this.manifestPath = paths.manifestPath
    this.settingsPath = join(dir, 'settings.json')
    this.renewalPath = join(dir, 'renewal.json')
  }

  /** What the `up` loop last learned about this device's renewal (empty when never asked). */
  async renewalState(): Promise<RenewalState> {
    return parseRenewalState(await readFile(this.renewalPath, 'utf8').catch(() => undefined))
  }

  /** Records the renewal state; no write when it is unchanged. */
  async saveRenewalState(state: RenewalState): Promise<void> {
    const text = `${JSON.stringify(defined(state), null, 2)}\n`
    if ((await readFile(this.renewalPath, 'utf8').catch(() => undefined)) === text) return
    await writeFileAtomic(this.renewalPath, text, 0o644)
  }

  /** The public key PEM of the key pair waiting for its certificate (a key change), undefined without one. */
  async nextPublicKey(): Promise<string | undefined> {
    return readFile(this.nextPublicKeyPath, 'utf8').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined
      throw error
    })
  }

  /** This device's own settings for the project (settings.json; empty when none were chosen). */
  async settings(): Promise<DeviceSettings> {
    return parseSettings(await readFile(this.settingsPath, 'utf8').catch(() => undefined))
  }

  async saveSettings(settings: DeviceSettings): Promise<void> {
    await writeFileAtomic(this.settingsPath, `${JSON.stringify(settings, null, 2)}\n`, 0o644)
  }

  get name(): string {
    return this.manifest.project
  }

  get overlayIp(): string {
    return this.manifest.ip
  }

  get amLighthouse(): boolean {
    return this.manifest.lighthouse
  }

  /** Overlay IPs of the lighthouses this node reports to (none on a lighthouse). */
  get lighthouseIps(): string[] {
    return this.amLighthouse ? [] : lighthousesFor(this.manifest.lighthouses, this.manifest.device).lighthouses.map((lighthouse) => lighthouse.overlayIp)
  }

  /** The tun device nebula.yml names; undefined where the OS picks it (macOS utunN, Windows Wintun). */
  get tunDev(): string | undefined {
    return deviceOverlaySettings(this.platform, this.name).tunDev
  }

  /** This device's nebula.yml for `manifest` (default: its own). */
  renderConfig(manifest: BundleManifest = this.manifest): string {
    return nebulaConfigFromManifest(manifest, {
      caPath: this.caPath,
      certPath: this.certPath,
      keyPath: this.keyPath,
      ...deviceOverlaySettings(this.platform, manifest.project),
    })
  }

  /** Opens the project installed in `dir`, checking its manifest. */
  static async open(dir: string, platform: Platform = currentPlatform()): Promise<JoinedProject> {
    const paths = projectPaths(dir)
    const raw = await readFile(paths.manifestPath, 'utf8').catch(() => {
      throw new NotFoundError(`${paths.manifestPath} is missing: run \`vidsync join <bundle>\` again`)
    })
    // Projects joined before manifests carried the blocklist kept it in nebula.yml only.
    const legacyConfig = raw.includes('"blocklist"') ? undefined : await readFile(paths.configPath, 'utf8').catch(() => undefined)
    return new JoinedProject(dir, parseManifest(raw, `the project in ${dir}`, legacyConfig, 'run `vidsync join <bundle>` again'), platform)
  }

  /** PROJECT, or the only joined project when none is named. */
  static async find(options: {home: string; project?: string; platform?: Platform}): Promise<JoinedProject> {
    return JoinedProject.open(await resolveProjectDir(options), options.platform)
  }

  /** The raw files installed for `project`, whatever state they are in; empty when not joined. */
  static async installedFiles(home: string, project: string): Promise<InstalledFiles> {
    const paths = projectPaths(projectDir(home, project))
    const read = (path: string) => readFile(path).catch(() => undefined)
    const [caPem, certPem, keyPem, manifest] = await Promise.all([read(paths.caPath), read(paths.certPath), read(paths.keyPath), read(paths.manifestPath)])
    const issuedAt = (() => {
      try {
        const value = (JSON.parse(manifest?.toString() ?? '') as {issuedAt?: unknown}).issuedAt
        return typeof value === 'string' ? value : undefined
      } catch {
        return undefined
      }
    })()
    return {...(caPem ? {caPem} : {}), ...(certPem ? {certPem} : {}), ...(keyPem ? {keyPem} : {}), ...(issuedAt ? {issuedAt} : {})}
  }

  /**
   * Installs checked files for their project, each file atomically and nebula.yml last, so it
   * never names files that are not there yet. The directory also holds nebula's pid and log, which stay.
   */
  static async install(home: string, files: ProjectFiles, platform: Platform = currentPlatform()): Promise<{project: JoinedProject; changed: boolean}> {
    const project = new JoinedProject(projectDir(home, files.manifest.project), files.manifest, platform)
    const contents = new Map<string, string | Buffer>([
      [project.caPath, files.caPem],
      [project.certPath, files.certPem],
      [project.keyPath, files.keyPem],
      [project.manifestPath, serializeManifest(files.manifest)],
      [project.configPath, project.renderConfig()],
    ])
    if (await sameContent(contents)) return {project, changed: false}
    await ensureDir(projectsDir(home), {private: true})
    await ensureDir(project.dir, {private: true})
    for (const [path, content] of contents) await writeFileAtomic(path, content, path === project.keyPath ? 0o600 : 0o644)
    return {project, changed: true}
  }

  /** The CA certificates this device trusts for the project (its pinned set), as installed. */
  async trustedCasPem(): Promise<Buffer> {
    return readFile(this.caPath)
  }

  /**
   * Writes a newer manifest (peers, lighthouses, blocklist from the control plane) and the
   * nebula.yml rendered from it. With `test`, nebula must accept the new config first (it
   * resolves lighthouse names): a refused config changes nothing.
   */
  async update(update: BundleManifest, options: {test?: boolean; tools?: Tools} = {}): Promise<JoinedProject> {
    if (update.project !== this.name) throw new InvalidInputError(`a manifest of ${update.project} cannot update ${this.name}`)
    // What the control plane sent goes through the same checks as a bundle's manifest.
    const manifest = parseManifest(serializeManifest(update), `the update of ${this.name}`)
    const config = this.renderConfig(manifest)
    if (options.test) {
      const candidate = join(this.dir, '.nebula.yml.candidate')
      await writeFileAtomic(candidate, config, 0o644)
      try {
        await testNebulaConfig({configPath: candidate, tools: options.tools})
      } finally {
        await rm(candidate, {force: true})
      }
    }
    await writeFileAtomic(this.configPath, config, 0o644)
    await writeFileAtomic(this.manifestPath, serializeManifest(manifest), 0o644)
    return new JoinedProject(this.dir, manifest, this.platform)
  }
}

/** Installs the CAs the device trusts for the project (checked by the caller: see caToPin); false when they are already installed. */
export async function replaceTrustedCas(project: JoinedProject, caPem: Buffer): Promise<boolean> {
  if (await sameContent(new Map([[project.caPath, caPem]]))) return false
  await writeFileAtomic(project.caPath, caPem, 0o644)
  return true
}

/**
 * Installs a renewed certificate (checked by the caller) and records it in the manifest; nebula.yml
 * is rendered again. With `newKey`, the certificate is for the waiting key pair (node.next.key),
 * which then replaces node.key: the certificate first, so that a crash in between leaves the
 * waiting key in place and the next call (the certificate already matches it) finishes the move.
 */
export async function replaceCertificate(project: JoinedProject, certPem: string, cert: {fingerprint: string; notAfter: string}, options: {newKey?: boolean} = {}): Promise<JoinedProject> {
  await writeFileAtomic(project.certPath, certPem, 0o644)
  if (options.newKey) {
    await rename(project.nextKeyPath, project.keyPath)
    await rm(project.nextPublicKeyPath, {force: true})
  }
  return project.update({...project.manifest, fingerprint: cert.fingerprint, notAfter: cert.notAfter})
}

/** The names of the projects joined in `home`, sorted. */
export async function joinedProjectNames(home: string): Promise<string[]> {
  const entries = await readdir(projectsDir(home), {withFileTypes: true}).catch(() => [])
  return entries.filter((entry) => entry.isDirectory() && !entry.name.startsWith('.')).map((entry) => entry.name).sort()
}

/** The directory of PROJECT, or of the only joined project when none is named. */
export async function resolveProjectDir(options: {home: string; project?: string}): Promise<string> {
  const joined = await joinedProjectNames(options.home)
  const name = options.project ?? (joined.length === 1 ? joined[0] : undefined)
  if (name !== undefined && joined.includes(name)) return projectDir(options.home, name)
  if (options.project !== undefined) {
    throw new NotFoundError(`project "${options.project}" is not joined in ${options.home}: run \`vidsync join <bundle>\` first`)
  }
  if (joined.length === 0) throw new NotFoundError(`no project is joined in ${options.home}: run \`vidsync join <bundle>\` first`)
  throw new InvalidInputError(`several projects are joined (${joined.join(', ')}): name the one you mean`)
}

/** The project installed in `dir` (for code that is given a directory). */
export const loadProject = (dir: string): Promise<JoinedProject> => JoinedProject.open(dir)
