import {mkdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {readBundle} from '../bundle/bundle.js'
import {type BundleManifest, parseManifest} from '../bundle/manifest.js'
import {ConflictError, InvalidInputError, NotFoundError, PermissionError, VidsyncError} from '../errors.js'
import type {Tools} from '../exec.js'
import {ensureDir, withTempDir} from '../files.js'
import {reloadNebula} from '../nebula/process.js'
import {readCert, readCerts, requireCertSupport, verifyCert} from '../pki/cert.js'
import {publicKeyHexOfPrivateKey} from '../pki/keys.js'
import type {Platform} from '../platform/index.js'
import {type InstalledFiles, JoinedProject} from '../project/joined-project.js'
import {type CaTrustOptions, caToPin} from '../project/trust.js'

export interface JoinOptions extends CaTrustOptions {
  home: string
  bundlePath: string
  /** The device's private key from `vidsync key create` [default: <home>/keys/node.key]. */
  keyPath?: string
  /** Let a private key in the bundle replace the key this device already has for the project. */
  replaceKey?: boolean
  /** Install a bundle older than the one installed. */
  force?: boolean
  tools?: Tools
  now?: Date
  platform?: Platform
}

export interface JoinResult {
  project: string
  device: string
  ip: string
  projectDir: string
  notAfter: string
  /** Fingerprint of the CA this device trusts for the project (pinned at the first join; during a CA rotation the newest). */
  caFingerprint: string
  /** False when the same bundle was already installed. */
  changed: boolean
  /** Nebula was running for the project and was told to reload the new files (SIGHUP). */
  nebulaReloaded: boolean
  operatorGeneratedKey: boolean
  warnings: string[]
}

/** Clocks further apart than this make certificates look not-yet-valid on one side. */
const clockSkewToleranceMs = 5 * 60_000

async function readKey(path: string): Promise<Buffer> {
  const info = await stat(path).catch(() => undefined)
  if (!info) {
    throw new NotFoundError(`no device key at ${path}: run \`vidsync key create\` and send the .pub file to the operator`, {hint: 'or pass --key'})
  }
  if ((info.mode & 0o077) !== 0) {
    throw new PermissionError(`device key ${path} is readable by others (mode ${(info.mode & 0o777).toString(8)}): run chmod 600 ${path}`)
  }
  return readFile(path)
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
 * Installs a bundle on this device after checking it: its manifest is well-formed and matches the
 * certificate; the certificate is valid now, carries this device's public key and is signed by the
 * project's pinned CA (pinned here at the first join); it is not older than the installed one; a
 * bundled private key does not silently replace the device's key. The bundle is data: nebula.yml
 * is rendered here from the manifest, never taken from the bundle, and nothing resolves DNS.
 * Re-running with the same bundle changes nothing; a renewed bundle replaces the files.
 */
export async function installBundle(options: InstallOptions): Promise<JoinResult> {
  const {files, origin} = options
  const now = options.now ?? new Date()
  const manifest = parseManifest(files.get('vidsync.json'), origin, files.get('nebula.yml')?.toString())
  const installed = await JoinedProject.installedFiles(options.home, manifest.project)
  const bundledKey = files.get('node.key')
  const key = bundledKey ?? (await readKey(options.keyPath ?? join(options.home, 'keys', 'node.key')))
  // Checks happen in a private temp dir in the home: a refused bundle leaves nothing behind.
  await ensureDir(options.home, {private: true})
  const warnings: string[] = []
  if (bundledKey) warnings.push('this bundle carried a private key made by the operator: delete every copy of the bundle now')

  return withTempDir(options.home, async (temp) => {
    const stage = join(temp, 'stage')
    await mkdir(stage, {mode: 0o700})
    try {
      return await checkAndInstall({...options, manifest, installed, bundledKey, key, warnings, now, stage})
    } catch (error) {
      // The staged files are gone once this returns: name them by where they came from.
      if (error instanceof VidsyncError) error.message = error.message.replaceAll(new RegExp(`${escapeRegExp(stage)}/([\\w.-]+)`, 'g'), `$1 of ${origin}`)
      throw error
    }
  })
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

async function checkAndInstall(
  options: InstallOptions & {
    manifest: BundleManifest
    installed: InstalledFiles
    bundledKey: Buffer | undefined
    key: Buffer
    warnings: string[]
    now: Date
    stage: string
  },
): Promise<JoinResult> {
  const {files, origin, manifest, installed, bundledKey, key, warnings, now, stage} = options
  const certPem = files.get('node.crt') ?? Buffer.alloc(0)
  await writeFile(join(stage, 'node.crt'), certPem, {mode: 0o600})

  // The nebula that will run them must read the project's certificates (v2 needs 1.10 or newer).
  const pem = `${files.get('ca.crt')?.toString() ?? ''}${certPem.toString()}`
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
      `${origin} was issued for another key than this device's: ask the operator to register the public key from \`vidsync key create\``,
      {hint: 'or pass the matching private key with --key'},
    )
  }
  // The manifest is unsigned: it must say what the signed certificate says.
  const certIps = cert.ips.map((ip) => ip.split('/')[0])
  if (cert.name !== manifest.device || !certIps.includes(manifest.ip)) {
    throw new InvalidInputError(`${origin}'s vidsync.json does not match its certificate (name or overlay address): ask the operator for a new bundle`)
  }

  const caPem = await caToPin({
    ...options,
    project: manifest.project,
    origin,
    offeredPem: files.get('ca.crt') ?? Buffer.alloc(0),
    pinnedPem: installed.caPem,
    endorsements: manifest.caEndorsements,
    scratch: stage,
  })
  await writeFile(join(stage, 'ca.crt'), caPem, {mode: 0o600})
  if (bundledKey && installed.keyPem && !installed.keyPem.equals(bundledKey) && !options.replaceKey) {
    throw new ConflictError(`${origin} carries a private key that would replace this device's key for ${manifest.project}: refused`, {
      hint: 'pass --replace-key if the operator really issued this device a new key',
    })
  }
  await verifyCert({caCertPath: join(stage, 'ca.crt'), certPath: join(stage, 'node.crt'), tools: options.tools})

  const previous = installed.certPem ? await readInstalledCert(installed.certPem, stage, options.tools) : undefined
  const older =
    previous !== undefined &&
    (Date.parse(cert.notBefore) < Date.parse(previous.notBefore) ||
      (cert.fingerprint === previous.fingerprint && Date.parse(manifest.issuedAt) < Date.parse(installed.issuedAt ?? '')))
  if (older && !options.force) {
    throw new ConflictError(`${origin} is older than the bundle installed for ${manifest.project} (issued ${manifest.issuedAt}, installed ${installed.issuedAt ?? previous.notBefore}): refused`, {
      hint: 'pass --force to install the older bundle anyway',
    })
  }

  const {project, changed} = await JoinedProject.install(options.home, {manifest, caPem, certPem, keyPem: key}, options.platform)
  const result = {
    project: manifest.project,
    device: manifest.device,
    ip: manifest.ip,
    projectDir: project.dir,
    notAfter: cert.notAfter,
    // The newest CA trusted (the last: a rotation lists the old CAs first).
    caFingerprint: (await readCerts(join(stage, 'ca.crt'), options.tools)).at(-1)?.fingerprint ?? '',
    operatorGeneratedKey: bundledKey !== undefined,
    warnings,
  }
  if (!changed) return {...result, changed: false, nebulaReloaded: false}
  // A running nebula picks up a renewed certificate and the current blocklist without a restart;
  // without this, a revocation in a renewed bundle would wait for the next restart.
  const nebulaReloaded = await reloadNebula({projectDir: project.dir})
  const previousIp = previous?.ips[0]?.split('/')[0]
  if (nebulaReloaded && previousIp !== undefined && previousIp !== manifest.ip) {
    warnings.push(`the overlay address changed from ${previousIp} to ${manifest.ip}: restart nebula to use it (vidsync down, then vidsync up)`)
  }
  return {...result, changed: true, nebulaReloaded}
}

async function readInstalledCert(pem: Buffer, stage: string, tools?: Tools) {
  const path = join(stage, 'installed.crt')
  await writeFile(path, pem, {mode: 0o600})
  return readCert(path, tools).catch(() => undefined)
}
