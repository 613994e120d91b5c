import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {formatDuration} from '../duration.js'
import type {CertVersion} from '../versions/capabilities.js'
import {InvalidInputError} from '../errors.js'
import {runTool, type Tools} from '../exec.js'
import {withTempDir} from '../files.js'
import {nebulaCapabilities} from '../versions/detect.js'
import {loadCa} from './ca.js'
import {readCert} from './cert.js'
import {validatePublicKey} from './keys.js'

/** Leaves room for the moments between our check and nebula-cert reading its own clock. */
const expiryMarginSeconds = 60

export type SignDeviceOptions = {
  home: string
  /** Certificate name: the device name. */
  name: string
  /** Overlay address, e.g. 10.99.1.5, and the project's prefix length, e.g. 24. */
  ip: string
  prefixLength: number
  groups?: string[]
  /** Defaults to as long as the CA allows. */
  durationSeconds?: number
  tools?: Tools
  now?: Date
} & (
  | {publicKeyPem: string | Buffer; generateKey?: false}
  /** The operator generates the device's key: only when asked for explicitly, and the bundle must say so. */
  | {generateKey: true; publicKeyPem?: undefined}
)

export interface SignedCert {
  certPem: string
  certVersion: CertVersion
  fingerprint: string
  notAfter: string
  /** Only with `generateKey`. */
  privateKeyPem?: string
}

/** The longest certificate a CA expiring at `caNotAfter` can still sign at `now` (may be <= 0). */
export function maxCertDurationSeconds(caNotAfter: string, now = new Date()): number {
  return Math.floor((Date.parse(caNotAfter) - now.getTime()) / 1000) - expiryMarginSeconds
}

/** A requested duration shortened to what the CA still allows, for renewals that should not fail. */
export function capDurationSeconds(options: {caNotAfter: string; requestedSeconds?: number; now?: Date}): number {
  const max = maxCertDurationSeconds(options.caNotAfter, options.now)
  if (max <= 0) throw new InvalidInputError(`the CA expires at ${options.caNotAfter}: too late to sign with it`)
  return Math.min(options.requestedSeconds ?? max, max)
}

function validateSubject(options: SignDeviceOptions): void {
  if (options.name.trim() === '' || /[\s,]/.test(options.name)) {
    throw new InvalidInputError(`invalid certificate name "${options.name}": no spaces or commas`)
  }
  const octets = options.ip.split('.')
  if (octets.length !== 4 || !octets.every((octet) => /^\d{1,3}$/.test(octet) && Number(octet) <= 255)) {
    throw new InvalidInputError(`invalid overlay IP "${options.ip}": expected an IPv4 address such as 10.99.1.5`)
  }
  if (!Number.isInteger(options.prefixLength) || options.prefixLength < 1 || options.prefixLength > 32) {
    throw new InvalidInputError(`invalid prefix length ${options.prefixLength}: expected 1 to 32`)
  }
  for (const group of options.groups ?? []) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(group)) {
      throw new InvalidInputError(`invalid group "${group}": use letters, digits, dots, hyphens and underscores`)
    }
  }
}

/**
 * Signs a device certificate with the local CA through nebula-cert. Work files live in a private
 * temporary directory inside the CA directory that is removed whatever happens.
 */
export async function signDevice(options: SignDeviceOptions): Promise<SignedCert> {
  validateSubject(options)
  const publicKey = options.generateKey ? undefined : validatePublicKey(options.publicKeyPem)
  const ca = await loadCa({home: options.home, tools: options.tools, now: options.now})
  const max = maxCertDurationSeconds(ca.cert.notAfter, options.now)
  const duration = options.durationSeconds ?? max
  if (max <= 0 || duration > max) {
    const hint = max > 0 ? `use --duration ${formatDuration(max)} or less` : 'too late to sign with it'
    throw new InvalidInputError(`the CA expires at ${ca.cert.notAfter}, a certificate must not outlive it: ${hint}`)
  }
  if (!Number.isInteger(duration) || duration <= 0) throw new InvalidInputError(`invalid certificate duration ${duration}s`)
  const nebulaCert = await nebulaCapabilities('nebula-cert', options.tools)
  // The CA's version, said explicitly where nebula-cert has the flag (1.10+ would follow the CA anyway).
  const versionArgs = nebulaCert.capabilities.certVersionFlag ? ['-version', String(ca.cert.version)] : []
  return withTempDir(ca.dir, async (temp) => {
    const certPath = join(temp, 'node.crt')
    const keyPath = join(temp, 'node.key')
    const args = ['sign', '-ca-crt', ca.certPath, '-ca-key', ca.keyPath, '-name', options.name, ...versionArgs]
    args.push(nebulaCert.capabilities.networksFlag, `${options.ip}/${options.prefixLength}`, '-duration', `${duration}s`, '-out-crt', certPath)
    if (options.groups?.length) args.push('-groups', options.groups.join(','))
    if (publicKey) {
      const publicKeyPath = join(temp, 'node.pub')
      await writeFile(publicKeyPath, publicKey.pem, {mode: 0o600})
      args.push('-in-pub', publicKeyPath)
    } else {
      args.push('-out-key', keyPath) // nebula-cert sign generates the pair itself
    }
    await runTool('nebula-cert', args, {tools: options.tools})
    const cert = await readCert(certPath, options.tools)
    return {
      certPem: await readFile(certPath, 'utf8'),
      certVersion: cert.version,
      fingerprint: cert.fingerprint,
      notAfter: cert.notAfter,
      ...(publicKey ? {} : {privateKeyPem: await readFile(keyPath, 'utf8')}),
    }
  })
}
