import {constants} from 'node:fs'
import {access, lstat, readFile, rm} from 'node:fs/promises'
import {dirname, join} from 'node:path'

import {writeBundle} from '../bundle/bundle.js'
import {ConflictError} from '../errors.js'
import type {Tools} from '../exec.js'
import {writeError, withTempDir} from '../files.js'
import {foldersForDevice} from '../folders/store.js'
import {caPaths, loadCa} from '../pki/ca.js'
import {createKeyPair, validatePublicKey} from '../pki/keys.js'
import {capDurationSeconds, signDevice} from '../pki/sign.js'
import type {ControlPlane, DeviceRecord} from '../store/control-plane.js'
import {bundleFiles} from './bundle-files.js'
import {formatEndpoint, parseEndpoint} from './endpoint.js'

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
    caCertPem: await readFile(options.caCertPath, 'utf8'),
    certPem: signed.certPem,
    certVersion: signed.certVersion,
    privateKeyPem: options.privateKeyPem,
    outPath: options.outPath,
    folders: record.lighthouse ? undefined : await foldersForDevice(controlPlane, {project, device: record.name}),
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
    return issueBundle({
      ...options,
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

/** Issues a new certificate for the same key, address and groups, and a fresh bundle. */
export async function renewDevice(options: RenewOptions): Promise<RenewResult> {
  const ca = await loadCa({home: options.home, tools: options.tools})
  const durationSeconds = capDurationSeconds({caNotAfter: ca.cert.notAfter, requestedSeconds: options.durationSeconds})
  const cappedAtCaExpiry = options.durationSeconds === undefined || durationSeconds < options.durationSeconds
  const result = await withBundleTransaction(options.controlPlane, options.outPath, async (controlPlane) => {
    const device = await controlPlane.device({project: options.project, device: options.name})
    if (device.status !== 'active' || !device.publicKey) {
      throw new ConflictError(`device "${options.name}" is ${device.status}: register it again instead of renewing`)
    }
    return issueBundle({
      ...options,
      controlPlane,
      caCertPath: ca.certPath,
      device: {name: device.name, ip: device.ip, groups: device.groups, publicKeyPem: device.publicKey},
      // Up to the CA's expiry: signDevice measures what is left when it signs, which is later than
      // now (a duration computed here would be a second too long once a second has passed).
      durationSeconds: cappedAtCaExpiry ? undefined : durationSeconds,
    })
  })
  return {...result, cappedAtCaExpiry, caNotAfter: ca.cert.notAfter}
}

/** Where a bundle goes when --out is not given: the current directory, named after project and device. */
export const defaultBundlePath = (project: string, device: string, cwd = process.cwd()) => join(cwd, `${project}-${device}.zip`)
