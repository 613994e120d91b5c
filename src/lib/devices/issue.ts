import {constants} from 'node:fs'
import {access, lstat, readFile, rm} from 'node:fs/promises'
import {basename, dirname, join} from 'node:path'

import {writeBundle} from '../bundle/bundle.js'
import {ConflictError} from '../errors.js'
import type {Tools} from '../exec.js'
import {ensureDir, publishNew, writeError, withTempDir} from '../files.js'
import {bundleFolders} from '../folders/store.js'
import {caPaths, loadCa} from '../pki/ca.js'
import {expiresWithin} from '../pki/expiry.js'
import {createKeyPair, validatePublicKey} from '../pki/keys.js'
import {projectTrust} from '../pki/rotation.js'
import {capDurationSeconds, signDevice} from '../pki/sign.js'
import type {ControlPlane, DeviceRecord} from '../store/control-plane.js'
import {bundleFiles} from './bundle-files.js'
import {formatEndpoint, parseEndpoint} from './endpoint.js'
import {certDuration} from './lifetime.js'

export interface RegisterDeviceOptions {
  home: string
  controlPlane: ControlPlane
  project: string
  name: string
  /** The device's public key PEM; absent when the operator generates the key pair. */
  publicKeyPem?: string | Buffer
  generateKey?: boolean
  groups?: string[]
  syncthingId?: string
  durationSeconds?: number
  /** Makes the device a lighthouse reachable at this public `host:port`. */
  lighthouse?: {endpoint: string; relay: boolean}
  outPath: string
  tools?: Tools
}

export interface BundleResult {
  project: string
  device: DeviceRecord
  bundle: string
  operatorGeneratedKey: boolean
}

/** Refuses an output path that exists or whose directory cannot be written, before anything is allocated. */
export async function checkOutPath(outPath: string): Promise<void> {
  const existing = await lstat(outPath).catch(() => undefined)
  if (existing) throw new ConflictError(`${outPath} already exists: choose another --out, a bundle is never overwritten`)
  await access(dirname(outPath), constants.W_OK).catch((error: unknown) => {
    throw writeError(error, outPath)
  })
}

/** A fresh key pair made on the operator's machine, for `--generate-key`. */
async function operatorKeyPair(home: string, tools?: Tools): Promise<{publicKeyPem: string; privateKeyPem: string}> {
  return withTempDir(caPaths(home).dir, async (dir) => {
    const pair = await createKeyPair({outDir: dir, tools})
    return {publicKeyPem: pair.publicKey, privateKeyPem: await readFile(pair.privateKeyPath, 'utf8')}
  })
}

/**
 * Runs `work` (which writes the bundle at `outPath`) in one control-plane transaction. The
 * transaction commits only once the bundle is on disk, and a failure removes the bundle, so
 * either both exist or neither does.
 */
async function withBundleTransaction<R>(controlPlane: ControlPlane, outPath: string, work: (tx: ControlPlane) => Promise<R>): Promise<R> {
  await checkOutPath(outPath)
  try {
    return await controlPlane.transaction(work)
  } catch (error) {
    await rm(outPath, {force: true}) // checkOutPath saw nothing there: whatever is there now is ours
    throw error
  }
}

interface IssueOptions {
  controlPlane: ControlPlane
  home: string
  caCertPath: string
  project: string
  device: {name: string; ip: string; groups: string[]; publicKeyPem: string}
  privateKeyPem?: string
  durationSeconds?: number
  outPath: string
  tools?: Tools
}

/** Signs the device's key, records the certificate and writes the bundle from the project's current state. */
async function issueBundle(options: IssueOptions): Promise<BundleResult> {
  const {controlPlane, device, project} = options
  const network = await controlPlane.projectNetwork({project})
  const signed = await signDevice({
    home: options.home,
    name: device.name,
    ip: device.ip,
    prefixLength: Number(network.cidr.split('/')[1]),
    groups: device.groups,
    publicKeyPem: device.publicKeyPem,
    durationSeconds: options.durationSeconds,
    tools: options.tools,
  })
  await controlPlane.recordCertVersion({project, version: signed.certVersion})
  await controlPlane.recordCertificate({
    project,
    device: device.name,
    fingerprint: signed.fingerprint,
    notAfter: signed.notAfter,
    pem: signed.certPem,
  })
  const devices = await controlPlane.listDevices({project})
  const record = devices.find((candidate) => candidate.name === device.name)
  if (!record) throw new Error(`device ${device.name} vanished while its bundle was written`)
  const files = bundleFiles({
    project,
    network,
    devices,
    device: record,
    trust: await projectTrust({home: options.home, controlPlane, project, caCertPath: options.caCertPath}),
    certPem: signed.certPem,
    certVersion: signed.certVersion,
    privateKeyPem: options.privateKeyPem,
    outPath: options.outPath,
    ...(record.lighthouse ? {} : await bundleFolders(controlPlane, {project, device: record.name})),
  })
  await writeBundle({outPath: options.outPath, files})
  return {project, device: record, bundle: options.outPath, operatorGeneratedKey: options.privateKeyPem !== undefined}
}

/**
 * Registers a device (or lighthouse): allocates its address, signs its public key with the local
 * CA and writes its bundle, all or nothing.
 */
export async function registerDevice(options: RegisterDeviceOptions): Promise<BundleResult> {
  const ca = await loadCa({home: options.home, tools: options.tools})
  const lighthouse = options.lighthouse && {
    endpoint: formatEndpoint(parseEndpoint(options.lighthouse.endpoint)),
    relay: options.lighthouse.relay,
  }
  const generated = options.generateKey ? await operatorKeyPair(options.home, options.tools) : undefined
  const publicKey = validatePublicKey(generated?.publicKeyPem ?? options.publicKeyPem ?? '')
  return withBundleTransaction(options.controlPlane, options.outPath, async (controlPlane) => {
    const registration = await controlPlane.registerDevice({
      project: options.project,
      device: options.name,
      publicKey: publicKey.pem,
      publicKeySha256: publicKey.fingerprint,
      groups: options.groups,
      syncthingId: options.syncthingId,
      lighthouse,
      operatorKey: generated !== undefined,
    })
    const durationSeconds = await certDuration({controlPlane, project: options.project, caNotAfter: ca.cert.notAfter, requestedSeconds: options.durationSeconds})
    return issueBundle({
      ...options,
      durationSeconds,
      controlPlane,
      caCertPath: ca.certPath,
      device: {name: options.name, ip: registration.ip, groups: options.groups ?? [], publicKeyPem: publicKey.pem},
      privateKeyPem: generated?.privateKeyPem,
    })
  })
}

export interface RenewOptions {
  home: string
  controlPlane: ControlPlane
  project: string
  name: string
  durationSeconds?: number
  outPath: string
  tools?: Tools
}

export interface RenewResult extends BundleResult {
  /** The certificate ends with the CA: the requested duration (or the default) would have outlived it. */
  cappedAtCaExpiry: boolean
  caNotAfter: string
}

/** The certificate duration of a renewal: capped at the CA's expiry, `undefined` meaning "until the CA expires". */
function renewalDuration(caNotAfter: string, requestedSeconds?: number): {durationSeconds?: number; cappedAtCaExpiry: boolean} {
  const durationSeconds = capDurationSeconds({caNotAfter, requestedSeconds})
  const cappedAtCaExpiry = requestedSeconds === undefined || durationSeconds < requestedSeconds
  // Up to the CA's expiry: signDevice measures what is left when it signs, which is later than
  // now (a duration computed here would be a second too long once a second has passed).
  return {cappedAtCaExpiry, durationSeconds: cappedAtCaExpiry ? undefined : durationSeconds}
}

/** Signs the registered key of an active device again and writes its bundle (inside the caller's transaction). */
async function renewInTransaction(
  options: Omit<RenewOptions, 'controlPlane' | 'durationSeconds'> & {controlPlane: ControlPlane; caCertPath: string; durationSeconds?: number},
): Promise<BundleResult> {
  const device = await options.controlPlane.device({project: options.project, device: options.name})
  if (device.status !== 'active' || !device.publicKey) {
    throw new ConflictError(`device "${options.name}" is ${device.status}: register it again instead of renewing`)
  }
  return issueBundle({
    ...options,
    device: {name: device.name, ip: device.ip, groups: device.groups, publicKeyPem: device.publicKey},
  })
}

/** Issues a new certificate for the same key, address and groups, and a fresh bundle. */
export async function renewDevice(options: RenewOptions): Promise<RenewResult> {
  const ca = await loadCa({home: options.home, tools: options.tools})
  const requestedSeconds = options.durationSeconds ?? (await options.controlPlane.certLifetime({project: options.project})).deviceCertSeconds
  const {cappedAtCaExpiry, durationSeconds} = renewalDuration(ca.cert.notAfter, requestedSeconds)
  const result = await withBundleTransaction(options.controlPlane, options.outPath, (controlPlane) =>
    renewInTransaction({...options, controlPlane, caCertPath: ca.certPath, durationSeconds}),
  )
  return {...result, cappedAtCaExpiry, caNotAfter: ca.cert.notAfter}
}

export interface RenewExpiringOptions {
  home: string
  controlPlane: ControlPlane
  project: string
  /** Renews the active devices whose certificate ends within this many seconds (or has ended). */
  withinSeconds: number
  durationSeconds?: number
  /** Where the bundles go, one `<project>-<device>.zip` per device; created when missing. */
  outDir: string
  now?: Date
  tools?: Tools
}

export interface RenewExpiringResult {
  project: string
  expiringWithinSeconds: number
  outDir: string
  renewed: RenewResult[]
}

/**
 * Renews every active device of a project whose certificate ends within `withinSeconds`, all or
 * nothing: the certificates are recorded in one transaction, the bundles are written to a private
 * staging directory and linked into `outDir` only once all of them were made, so a failure leaves
 * neither a recorded certificate without its bundle nor half a batch (nor half a bundle).
 */
export async function renewExpiring(options: RenewExpiringOptions): Promise<RenewExpiringResult> {
  const ca = await loadCa({home: options.home, tools: options.tools})
  const requestedSeconds = options.durationSeconds ?? (await options.controlPlane.certLifetime({project: options.project})).deviceCertSeconds
  const {cappedAtCaExpiry, durationSeconds} = renewalDuration(ca.cert.notAfter, requestedSeconds)
  await ensureDir(options.outDir)
  const devices = await options.controlPlane.listDevices({project: options.project})
  const due = devices.filter((device) => device.status === 'active' && expiresWithin(device.notAfter, options.withinSeconds, options.now))
  const targets = due.map((device) => ({name: device.name, outPath: join(options.outDir, `${options.project}-${device.name}.zip`)}))
  for (const target of targets) await checkOutPath(target.outPath)
  const renewed = await withTempDir(options.outDir, async (stage) => {
    const published: string[] = []
    try {
      return await options.controlPlane.transaction(async (controlPlane) => {
        const results: RenewResult[] = []
        for (const target of targets) {
          const staged = join(stage, basename(target.outPath))
          const result = await renewInTransaction({...options, name: target.name, controlPlane, caCertPath: ca.certPath, durationSeconds, outPath: staged})
          results.push({...result, bundle: target.outPath, cappedAtCaExpiry, caNotAfter: ca.cert.notAfter})
        }
        // Last step before the commit: every bundle appears, or none (publishNew takes back its links).
        await publishNew(
          targets.map((target) => ({from: join(stage, basename(target.outPath)), to: target.outPath})),
          (path) => new ConflictError(`${path} appeared while the bundles were made: a bundle is never overwritten`),
        )
        published.push(...targets.map((target) => target.outPath))
        return results
      })
    } catch (error) {
      await Promise.all(published.map((path) => rm(path, {force: true}))) // the commit failed after publishing
      throw error
    }
  })
  return {project: options.project, expiringWithinSeconds: options.withinSeconds, outDir: options.outDir, renewed}
}

/** Where a bundle goes when --out is not given: the current directory, named after project and device. */
export const defaultBundlePath = (project: string, device: string, cwd = process.cwd()) => join(cwd, `${project}-${device}.zip`)
