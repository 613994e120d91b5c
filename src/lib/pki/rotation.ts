import {readdir, readFile, rename, rm, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {ConflictError} from '../errors.js'
import type {Tools} from '../exec.js'
import {ensureDir, publishNew, withTempDir} from '../files.js'
import type {ControlPlane} from '../store/control-plane.js'
import {type CaInfo, caExpiryWarning, caInfo, caPaths, caVersionArgs, checkCaOptions, defaultCaDurationSeconds, generateCa, loadCa, toInfo} from './ca.js'
import {type CertInfo, readCert} from './cert.js'
import {type CaEndorsement, endorseCa} from './endorse.js'

/** What a project's devices are given to trust: the CA certificates (PEM, oldest first) and the endorsements of the newer ones. */
export interface ProjectTrust {
  pem: string
  endorsements: CaEndorsement[]
}

/** The CAs a project trusts: from the control plane once the CA was rotated, the operator's CA before. */
export async function projectTrust(options: {home: string; controlPlane: ControlPlane; project: string; caCertPath: string}): Promise<ProjectTrust> {
  const cas = await options.controlPlane.projectTrustedCas({project: options.project})
  if (cas.length === 0) return {pem: await readFile(options.caCertPath, 'utf8'), endorsements: []}
  return {pem: cas.map((ca) => ca.pem).join(''), endorsements: cas.flatMap((ca) => (ca.endorsement ? [ca.endorsement] : []))}
}

export interface RotatedCa {
  previous: {name: string; fingerprint: string; path: string}
  ca: {name: string; fingerprint: string; notAfter: string}
  endorsement: CaEndorsement
  /** The projects whose devices now trust both CAs. */
  projects: string[]
}

/** Where a CA's files go once a newer one signs: <home>/ca/previous/<fingerprint>.crt and .key. */
export const previousCaDir = (caDir: string) => join(caDir, 'previous')

/**
 * Creates the next CA: the current one endorses it (its key signs the new fingerprint), every
 * project of the control plane trusts both, and the new CA signs from now on (registrations,
 * renewals, the signer). The old CA and key move to <home>/ca/previous. All or nothing: the
 * control plane's change is one call (one transaction on every backend), made once the old pair is
 * kept and before the new pair takes the current names.
 */
export async function rotateCa(options: {home: string; controlPlane: ControlPlane; name?: string; durationSeconds?: number; tools?: Tools}): Promise<RotatedCa> {
  const old = await loadCa({home: options.home, tools: options.tools})
  const name = options.name ?? old.cert.name
  const durationSeconds = options.durationSeconds ?? defaultCaDurationSeconds
  checkCaOptions({name, durationSeconds, certVersion: old.cert.version})
  const versionArgs = await caVersionArgs(old.cert.version, options.tools)
  const oldPem = await readFile(old.certPath, 'utf8')
  const oldKey = await readFile(old.keyPath)
  return withTempDir(old.dir, async (temp) => {
    const fresh = await generateCa({dir: temp, name, durationSeconds, versionArgs, tools: options.tools})
    const cert: CertInfo = await readCert(fresh.certPath, options.tools)
    const endorsement = endorseCa({caKeyPem: oldKey, endorser: old.cert, fingerprint: cert.fingerprint})
    const pem = await readFile(fresh.certPath, 'utf8')
    const previous = previousCaDir(old.dir)
    // The old pair stays as it was (a link each), then one control-plane call, then the new pair
    // replaces the current names: a failed call leaves the links only, which are removed.
    await ensureDir(previous, {private: true})
    const kept = {crt: join(previous, `${old.cert.fingerprint}.crt`), key: join(previous, `${old.cert.fingerprint}.key`)}
    await publishNew(
      [
        {from: old.keyPath, to: kept.key},
        {from: old.certPath, to: kept.crt},
      ],
      (path) => new ConflictError(`${path} already exists: this CA was rotated before; move it away and try again`),
    )
    const projects = await options.controlPlane.rotateProjectCas({old: {fingerprint: old.cert.fingerprint, pem: oldPem}, fingerprint: cert.fingerprint, pem, endorsement}).catch(async (error: unknown) => {
      await Promise.all([rm(kept.key, {force: true}), rm(kept.crt, {force: true})])
      throw error
    })
    await rename(fresh.keyPath, old.keyPath)
    await rename(fresh.certPath, old.certPath)
    return {
      previous: {name: old.cert.name, fingerprint: old.cert.fingerprint, path: join(previous, `${old.cert.fingerprint}.crt`)},
      ca: {name: cert.name, fingerprint: cert.fingerprint, notAfter: cert.notAfter},
      endorsement,
      projects,
    }
  })
}

/** Where a CA of the operator stands: signing now, still trusted by a project, or retired everywhere. */
export type CaState = 'current' | 'trusted' | 'retired'

export type ListedCa = CaInfo & {state: CaState; warning: string | null}

/**
 * The operator's CA and those `ca rotate` replaced (<home>/ca/previous), newest first. A previous
 * CA is `trusted` while a project of the control plane still lists it and `retired` once none does;
 * the control plane is opened (`withControlPlane`) only when there is a previous CA.
 */
export async function listCas(options: {home: string; withControlPlane: <R>(work: (controlPlane: ControlPlane) => Promise<R>) => Promise<R>; tools?: Tools; now?: Date}): Promise<{current: ListedCa; previous: ListedCa[]}> {
  const current = await caInfo({home: options.home, tools: options.tools, now: options.now})
  const dir = previousCaDir(caPaths(options.home).dir)
  const files = (await readdir(dir).catch(() => [])).filter((name) => name.endsWith('.crt')).sort()
  const previous = await Promise.all(files.map(async (name) => toInfo(await readCert(join(dir, name), options.tools))))
  const trusted = previous.length === 0 ? new Set<string>() : await options.withControlPlane(async (controlPlane) => {
    const fingerprints = new Set<string>()
    for (const {name: project} of await controlPlane.listProjects()) {
      for (const ca of await controlPlane.projectTrustedCas({project})) fingerprints.add(ca.fingerprint)
    }
    return fingerprints
  })
  const older = previous
    .filter((ca) => ca.fingerprint !== current.fingerprint)
    .sort((a, b) => Date.parse(b.notBefore) - Date.parse(a.notBefore))
    .map((ca): ListedCa => (trusted.has(ca.fingerprint) ? {...ca, state: 'trusted', warning: caExpiryWarning(ca, options.now)} : {...ca, state: 'retired', warning: null}))
  return {current: {...current, state: 'current'}, previous: older}
}

export interface RetiredCas {
  project: string
  /** Fingerprints of the CAs retired. */
  retired: string[]
  /** Active devices whose certificate an old CA signed (retired anyway with force, else nothing retired). */
  holders: {device: string; issuer: string}[]
}

/**
 * Retires every CA but the operator's current one from every project, so devices drop them at
 * their next refresh. Refused (ConflictError, nothing retired) while an active device still holds
 * a certificate from an old CA, unless `force`; either way the result lists those devices.
 */
export async function retireOldCas(options: {home: string; controlPlane: ControlPlane; force?: boolean; tools?: Tools}): Promise<RetiredCas[]> {
  const current = await loadCa({home: options.home, tools: options.tools})
  const results: RetiredCas[] = []
  for (const {name: project} of await options.controlPlane.listProjects()) {
    const old = (await options.controlPlane.projectTrustedCas({project})).map((ca) => ca.fingerprint).filter((fingerprint) => fingerprint !== current.cert.fingerprint)
    if (old.length === 0) continue
    const holders = await withTempDir(current.dir, async (temp) => {
      const found = []
      for (const certificate of await options.controlPlane.projectDeviceCertificates({project})) {
        const path = join(temp, `${certificate.device}.crt`)
        await writeFile(path, certificate.pem, {mode: 0o600})
        const {issuer} = await readCert(path, options.tools)
        if (old.includes(issuer)) found.push({device: certificate.device, issuer})
      }
      return found
    })
    results.push({project, retired: old, holders})
  }
  const held = results.flatMap((result) => result.holders.map((holder) => `${result.project}/${holder.device}`))
  if (held.length > 0 && !options.force) {
    throw new ConflictError(`${held.length} active device(s) still hold a certificate from an old CA: ${held.join(', ')}; nothing was retired`, {
      hint: 'renew them first (`vidsync device renew --expiring-within`, or the signer), or pass --force to cut them off',
    })
  }
  await options.controlPlane.transaction(async (controlPlane) => {
    for (const result of results) for (const fingerprint of result.retired) await controlPlane.retireProjectCa({project: result.project, fingerprint})
  })
  return results
}
