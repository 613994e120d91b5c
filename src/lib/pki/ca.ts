import {chmod, lstat, readFile, stat} from 'node:fs/promises'
import {join} from 'node:path'

import {ConflictError, InvalidInputError, MissingDependencyError, NotFoundError, PermissionError} from '../errors.js'
import {runTool, type Tools} from '../exec.js'
import {ensureDir, publishNew, withTempDir} from '../files.js'
import {type CertVersion, nebulaNeededFor} from '../versions/capabilities.js'
import {nebulaCapabilities} from '../versions/detect.js'
import {type CertInfo, readCert} from './cert.js'
import {caWarnSeconds, expiryOf, expiryPhrase} from './expiry.js'

export interface CaPaths {
  dir: string
  certPath: string
  keyPath: string
}

export interface CaInfo {
  name: string
  fingerprint: string
  notBefore: string
  notAfter: string
  groups: string[]
  ips: string[]
  /** The certificate version this CA signs: every device of its projects needs a nebula that reads it. */
  certVersion: CertVersion
  /** e.g. "nebula 1.6.0 or newer". */
  nebulaNeeded: string
}

export interface LoadedCa extends CaPaths {
  cert: CertInfo
}

/** Two years: a CA's expiry ends every certificate it issued, so it should outlive them comfortably. */
export const defaultCaDurationSeconds = 2 * 365 * 86_400

export function caPaths(home: string): CaPaths {
  const dir = join(home, 'ca')
  return {dir, certPath: join(dir, 'ca.crt'), keyPath: join(dir, 'ca.key')}
}

const exists = (path: string) =>
  lstat(path).then(
    () => true,
    () => false,
  )

/** A CA certificate as vidsync reports it. */
export const toInfo = ({name, fingerprint, notBefore, notAfter, groups, ips, version}: CertInfo): CaInfo => ({
  name,
  fingerprint,
  notBefore,
  notAfter,
  groups,
  ips,
  certVersion: version,
  nebulaNeeded: nebulaNeededFor(version),
})

/** v1 signs certificates every supported nebula (1.6+) can use; v2 needs 1.10+ everywhere. */
export const defaultCertVersion: CertVersion = 1

/** `nebula-cert ca` arguments for `version`; refuses (exit 8) when this nebula-cert cannot make it. */
export async function caVersionArgs(version: CertVersion, tools?: Tools): Promise<string[]> {
  const found = await nebulaCapabilities('nebula-cert', tools)
  if (!found.capabilities.certVersions.includes(version)) {
    throw new MissingDependencyError(
      `nebula-cert ${found.version} (${found.path}) cannot create v${version} certificates: they need ${nebulaNeededFor(version)}`,
      {hint: `use --cert-version 1, or install a newer nebula`},
    )
  }
  // 1.10+ defaults to v2 (cmd/nebula-cert/ca.go): always say which one.
  return found.capabilities.certVersionFlag ? ['-version', String(version)] : []
}

function caExists(dir: string): ConflictError {
  return new ConflictError(
    `a CA already exists in ${dir}; replacing it would invalidate every certificate it has issued. ` +
      `If that is really intended, move ${dir} away yourself and run \`vidsync ca init\` again`,
  )
}

/** Refuses an empty name, a duration that is not a positive number of seconds, an unknown certificate version. */
export function checkCaOptions(options: {name: string; durationSeconds: number; certVersion: CertVersion}): void {
  if (options.name.trim() === '') throw new InvalidInputError('the CA name must not be empty')
  if (!Number.isInteger(options.durationSeconds) || options.durationSeconds <= 0) {
    throw new InvalidInputError(`invalid CA duration ${options.durationSeconds}s: use a positive duration such as 17520h`)
  }
  if (options.certVersion !== 1 && options.certVersion !== 2) throw new InvalidInputError(`invalid certificate version ${String(options.certVersion)}: use 1 or 2`)
}

/** Runs `nebula-cert ca` into `dir` (ca.crt 0644, ca.key 0600). */
export async function generateCa(options: {dir: string; name: string; durationSeconds: number; versionArgs: string[]; tools?: Tools}): Promise<{certPath: string; keyPath: string}> {
  const certPath = join(options.dir, 'ca.crt')
  const keyPath = join(options.dir, 'ca.key')
  const args = ['ca', '-name', options.name, '-duration', `${options.durationSeconds}s`, '-out-crt', certPath, '-out-key', keyPath, ...options.versionArgs]
  await runTool('nebula-cert', args, {tools: options.tools})
  await chmod(keyPath, 0o600)
  await chmod(certPath, 0o644)
  return {certPath, keyPath}
}

/** Creates the operator's CA; its key is written 0600 and never printed, and an existing CA is never replaced. */
export async function initCa(options: {
  home: string
  name: string
  durationSeconds?: number
  certVersion?: CertVersion
  tools?: Tools
}): Promise<CaInfo & CaPaths> {
  const durationSeconds = options.durationSeconds ?? defaultCaDurationSeconds
  const certVersion = options.certVersion ?? defaultCertVersion
  checkCaOptions({name: options.name, durationSeconds, certVersion})
  const paths = caPaths(options.home)
  await ensureDir(paths.dir, {private: true})
  const versionArgs = await caVersionArgs(certVersion, options.tools)
  if ((await exists(paths.keyPath)) || (await exists(paths.certPath))) throw caExists(paths.dir)
  // Generated in a private temporary directory next to the final names, then linked into place.
  await withTempDir(paths.dir, async (temp) => {
    const {certPath, keyPath} = await generateCa({dir: temp, name: options.name, durationSeconds, versionArgs, tools: options.tools})
    await publishNew(
      [
        {from: keyPath, to: paths.keyPath},
        {from: certPath, to: paths.certPath},
      ],
      () => caExists(paths.dir),
    )
  })
  return {...toInfo(await readCert(paths.certPath, options.tools)), ...paths}
}

async function requireCaCert(paths: CaPaths): Promise<void> {
  if (!(await exists(paths.certPath))) throw new NotFoundError(`no CA in ${paths.dir}: run \`vidsync ca init\``)
}

/** The CA ready to sign with: present, key private to the user, certificate a CA and not expired. */
export async function loadCa(options: {home: string; tools?: Tools; now?: Date}): Promise<LoadedCa> {
  const paths = caPaths(options.home)
  await requireCaCert(paths)
  const keyMode = await stat(paths.keyPath).then(
    (stats) => stats.mode & 0o777,
    () => {
      throw new NotFoundError(`no CA key ${paths.keyPath}: run \`vidsync ca init\`, or restore the key from your backup`)
    },
  )
  // Like ssh: any access for group or others is refused.
  if ((keyMode & 0o077) !== 0) {
    const mode = keyMode.toString(8).padStart(4, '0')
    throw new PermissionError(`CA key ${paths.keyPath} has mode ${mode}: run chmod 600 ${paths.keyPath}`)
  }
  const cert = await readCert(paths.certPath, options.tools)
  if (!cert.isCa) throw new InvalidInputError(`${paths.certPath} is not a CA certificate`)
  const now = options.now ?? new Date()
  if (Date.parse(cert.notAfter) <= now.getTime()) {
    throw new InvalidInputError(
      `the CA in ${paths.dir} expired at ${cert.notAfter}: certificates can no longer be signed with it; ` +
        'a new CA means re-registering every device',
    )
  }
  return {...paths, cert}
}

/** What to do about a CA that expires within 90 days (or has), or null. */
export function caExpiryWarning(ca: Pick<CaInfo, 'name' | 'notAfter'>, now: Date = new Date()): string | null {
  const expiry = expiryOf(ca.notAfter, caWarnSeconds, now)
  if (!expiry.expiring) return null
  return `the CA "${ca.name}" ${expiryPhrase(expiry, now)} (${ca.notAfter}): every certificate it signed stops working then; replace it now with \`vidsync ca rotate\`, which keeps devices online`
}

/** Name, fingerprint and validity of the CA certificate (shown even when expired), and a warning from 90 days before its end. */
export async function caInfo(options: {home: string; tools?: Tools; now?: Date}): Promise<CaInfo & {warning: string | null}> {
  const paths = caPaths(options.home)
  await requireCaCert(paths)
  const info = toInfo(await readCert(paths.certPath, options.tools))
  return {...info, warning: caExpiryWarning(info, options.now)}
}

/** The CA certificate as PEM: public, what devices trust. Never the key. */
export async function exportCa(options: {home: string}): Promise<string> {
  const paths = caPaths(options.home)
  await requireCaCert(paths)
  return readFile(paths.certPath, 'utf8')
}
