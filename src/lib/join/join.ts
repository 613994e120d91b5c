import {mkdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import YAML from 'yaml'

import {readBundle} from '../bundle/bundle.js'
import type {BundleManifest} from '../devices/bundle-files.js'
import {InvalidInputError, NotFoundError, PermissionError} from '../errors.js'
import type {Tools} from '../exec.js'
import {ensureDir, withTempDir, writeFileAtomic} from '../files.js'
import {testNebulaConfig} from '../nebula/config.js'
import {reloadNebula} from '../nebula/process.js'
import {projectDir, projectsDir, tunDeviceName} from '../nebula/project.js'
import {readCert, requireCertSupport, verifyCert} from '../pki/cert.js'
import {publicKeyHexOfPrivateKey} from '../pki/keys.js'

export interface JoinOptions {
  home: string
  bundlePath: string
  /** The device's private key from `vidsync key create` [default: <home>/keys/node.key]. */
  keyPath?: string
  tools?: Tools
  now?: Date
}

export interface JoinResult {
  project: string
  device: string
  ip: string
  projectDir: string
  notAfter: string
  /** False when the same bundle was already installed. */
  changed: boolean
  /** Nebula was running for the project and was told to reload the new files (SIGHUP). */
  nebulaReloaded: boolean
  operatorGeneratedKey: boolean
  warnings: string[]
}

/** Clocks further apart than this make certificates look not-yet-valid on one side. */
const clockSkewToleranceMs = 5 * 60_000

function parseManifest(raw: Buffer | undefined, origin: string): BundleManifest {
  try {
    const manifest = JSON.parse(raw?.toString() ?? '') as BundleManifest
    if (manifest.version === 1 && /^[a-z0-9-]{1,63}$/.test(manifest.project) && typeof manifest.ip === 'string') return manifest
  } catch {
    // reported below
  }
  throw new InvalidInputError(`${origin} has an unreadable vidsync.json: ask the operator for a new bundle`)
}

async function readKey(path: string): Promise<Buffer> {
  const info = await stat(path).catch(() => undefined)
  if (!info) {
    throw new NotFoundError(`no device key at ${path}: run \`vidsync key create\` and send the .pub file to the operator, or pass --key`)
  }
  if ((info.mode & 0o077) !== 0) {
    throw new PermissionError(`device key ${path} is readable by others (mode ${(info.mode & 0o777).toString(8)}): run chmod 600 ${path}`)
  }
  return readFile(path)
}

/** The bundle's nebula.yml with absolute paths into `dir` and the project's own tun device. */
function localConfig(nebulaYml: string, dir: string, project: string): string {
  const config = YAML.parse(nebulaYml, {version: '1.1'}) as Record<string, Record<string, unknown>>
  config.pki = {...config.pki, ca: join(dir, 'ca.crt'), cert: join(dir, 'node.crt'), key: join(dir, 'node.key')}
  config.tun = {...config.tun, dev: tunDeviceName(project)}
  return YAML.stringify(config, {version: '1.1'})
}

async function sameContent(dir: string, files: Map<string, string | Buffer>): Promise<boolean> {
  for (const [name, content] of files) {
    const existing = await readFile(join(dir, name)).catch(() => undefined)
    if (!existing?.equals(Buffer.from(content))) return false
  }
  return true
}

/** Installs a bundle zip on this device: see installBundle. */
export async function joinBundle(options: JoinOptions): Promise<JoinResult> {
  const {bundlePath, ...rest} = options
  return installBundle({...rest, files: await readBundle(bundlePath), origin: bundlePath})
}

export interface InstallOptions extends Omit<JoinOptions, 'bundlePath'> {
  /** The bundle's files by name, from a zip or from the control plane. */
  files: Map<string, Buffer>
  /** Where the files came from, for messages: the zip's path or a description. */
  origin: string
}

/**
 * Installs a bundle on this device after checking it: the certificate is signed by the bundle's
 * CA, is valid now, and carries this device's public key, and nebula accepts the config. Re-running
 * with the same bundle changes nothing; a renewed bundle replaces the files.
 */
export async function installBundle(options: InstallOptions): Promise<JoinResult> {
  const {files, origin} = options
  const now = options.now ?? new Date()
  const manifest = parseManifest(files.get('vidsync.json'), origin)
  const bundledKey = files.get('node.key')
  const key = bundledKey ?? (await readKey(options.keyPath ?? join(options.home, 'keys', 'node.key')))
  // Checks happen in a private temp dir in the home: a refused bundle leaves nothing behind.
  await ensureDir(options.home, {private: true})
  const finalDir = projectDir(options.home, manifest.project)
  const warnings: string[] = []
  if (bundledKey) warnings.push('this bundle carried a private key made by the operator: delete every copy of the bundle now')

  return withTempDir(options.home, async (temp) => {
    const stage = join(temp, 'stage')
    await mkdir(stage, {mode: 0o700})
    await writeFile(join(stage, 'ca.crt'), files.get('ca.crt') ?? '', {mode: 0o644})
    await writeFile(join(stage, 'node.crt'), files.get('node.crt') ?? '', {mode: 0o644})
    await writeFile(join(stage, 'node.key'), key, {mode: 0o600})

    // The nebula that will run them must read the project's certificates (v2 needs 1.10 or newer).
    const pem = `${files.get('ca.crt')?.toString() ?? ''}${files.get('node.crt')?.toString() ?? ''}`
    await requireCertSupport({pem, what: origin, tool: 'nebula', tools: options.tools})
    const cert = await readCert(join(stage, 'node.crt'), options.tools)
    if (Date.parse(cert.notAfter) <= now.getTime()) {
      throw new InvalidInputError(`the certificate in ${origin} expired at ${cert.notAfter}: ask the operator for \`vidsync device renew\``)
    }
    if (Date.parse(cert.notBefore) > now.getTime() + clockSkewToleranceMs) {
      warnings.push(`this machine's clock is behind: the certificate is valid from ${cert.notBefore}; fix the clock or nebula will refuse it`)
    }
    if (cert.publicKey !== publicKeyHexOfPrivateKey(key)) {
      throw new InvalidInputError(
        `${origin} was issued for another key than this device's: ask the operator to register the public key from \`vidsync key create\`, or pass --key`,
      )
    }
    await verifyCert({caCertPath: join(stage, 'ca.crt'), certPath: join(stage, 'node.crt'), tools: options.tools})
    await writeFile(join(stage, 'nebula.yml'), localConfig(files.get('nebula.yml')?.toString() ?? '', stage, manifest.project))
    await testNebulaConfig({configPath: join(stage, 'nebula.yml'), tools: options.tools})

    const installed = new Map<string, string | Buffer>([
      ['ca.crt', files.get('ca.crt') ?? ''],
      ['node.crt', files.get('node.crt') ?? ''],
      ['node.key', key],
      ['nebula.yml', localConfig(files.get('nebula.yml')?.toString() ?? '', finalDir, manifest.project)],
      ['vidsync.json', files.get('vidsync.json') ?? ''],
    ])
    const result = {
      project: manifest.project,
      device: manifest.device,
      ip: manifest.ip,
      projectDir: finalDir,
      notAfter: cert.notAfter,
      operatorGeneratedKey: bundledKey !== undefined,
      warnings,
    }
    if (await sameContent(finalDir, installed)) return {...result, changed: false, nebulaReloaded: false}
    const previousIp = await readFile(join(finalDir, 'vidsync.json'), 'utf8').then(
      (text) => (JSON.parse(text) as {ip?: unknown}).ip,
      () => undefined,
    )
    // File by file, each atomic; the config last, so it never names files that are not there yet.
    // The directory also holds nebula's pid and log files, which stay.
    await ensureDir(projectsDir(options.home), {private: true})
    await ensureDir(finalDir, {private: true})
    for (const [name, content] of installed) {
      await writeFileAtomic(join(finalDir, name), content, name === 'node.key' ? 0o600 : 0o644)
    }
    // A running nebula picks up a renewed certificate and the current blocklist without a restart;
    // without this, a revocation in a renewed bundle would wait for the next restart.
    const nebulaReloaded = await reloadNebula({projectDir: finalDir})
    if (nebulaReloaded && previousIp !== undefined && previousIp !== manifest.ip) {
      warnings.push(`the overlay address changed from ${previousIp} to ${manifest.ip}: restart nebula to use it (vidsync down, then vidsync up)`)
    }
    return {...result, changed: true, nebulaReloaded}
  })
}
