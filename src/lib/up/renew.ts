import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {InvalidInputError, NotFoundError} from '../errors.js'
import type {Tools} from '../exec.js'
import {withTempDir} from '../files.js'
import {readDeviceToken} from '../join/invite.js'
import {reloadNebula} from '../nebula/process.js'
import {type CertInfo, readCert, readCerts, verifyCert} from '../pki/cert.js'
import {validatePublicKey} from '../pki/keys.js'
import {JoinedProject, replaceCertificate} from '../project/joined-project.js'
import type {ControlPlane, KeyChange} from '../store/control-plane.js'

export interface RenewalResult {
  /** A third or less of the certificate's life is left, or a CA older than the newest one trusted signed it. */
  due: boolean
  /** The certificate's CA is not the newest one this device trusts: a rotation is under way. */
  oldCa: boolean
  /** A renewal was asked for in this pass (or one is waiting for the signer). */
  requested: boolean
  /** A renewed certificate was installed in this pass; nebula reloaded it (SIGHUP, tunnels kept). */
  installed: boolean
  nebulaReloaded: boolean
  fingerprint: string
  notAfter: string
  /** When the open renewal was asked for (the control plane's clock), null without one. */
  requestedAt: string | null
  /** The open renewal asks for a new key (`vidsync key rotate`): waiting for the operator's approval, or approved. */
  keyChange: KeyChange | null
  /** The control plane's clock minus this device's, in seconds. */
  clockOffsetSeconds: number
}

/** Renewal starts when this fraction of the certificate's life is left. */
export const renewWhenLeft = 1 / 3

/** The newest of the CAs a device trusts: the one a rotation added last is the one created last. */
export function newestCa(cas: CertInfo[]): CertInfo | undefined {
  return cas.reduce<CertInfo | undefined>((newest, ca) => (newest && Date.parse(newest.notBefore) >= Date.parse(ca.notBefore) ? newest : ca), undefined)
}

/**
 * The certificate half of the `up` loop for a device that joined with an invite: when a third of
 * its certificate's life is left by the control plane's clock (`now` overrides it; `clock` is this
 * device's), or when an older CA than the newest one it trusts signed it (after `ca rotate`, so that
 * a rotation completes within a pass or two instead of at the next scheduled renewal), it asks the
 * control plane for renewal, and once the operator's signer has signed, installs the new
 * certificate (same key, name and address, signed by the pinned CA, later than the one installed)
 * and tells nebula to reload it. With a key pair waiting (`vidsync key rotate`) it
 * asks at once for a certificate for that key and installs it with the key. Records what it
 * learned for `status` (renewal.json). Undefined for a device joined from a bundle file (nothing to ask).
 */
export async function renewFromControlPlane(options: {home: string; project: string; controlPlane: ControlPlane; now?: Date; clock?: () => Date; tools?: Tools}): Promise<RenewalResult | undefined> {
  const token = await readDeviceToken(options.home, options.project).catch((error: unknown) => {
    if (error instanceof NotFoundError) return undefined
    throw error
  })
  if (token === undefined) return undefined
  const project = await JoinedProject.find({home: options.home, project: options.project})
  const cert = await readCert(project.certPath, options.tools)
  const nextKey = await project.nextPublicKey()
  const nextKeyHex = nextKey === undefined ? undefined : validatePublicKey(nextKey).hex
  const oldCa = cert.issuer !== newestCa(await readCerts(project.caPath, options.tools))?.fingerprint
  const newest = await options.controlPlane.deviceCertificate({token})
  const clockOffsetSeconds = Math.round((Date.parse(newest.serverNow) - (options.clock ?? (() => new Date()))().getTime()) / 1000)
  const now = (options.now ?? new Date(newest.serverNow)).getTime()
  const life = Date.parse(cert.notAfter) - Date.parse(cert.notBefore)
  const due = nextKey !== undefined || oldCa || Date.parse(cert.notAfter) - now <= life * renewWhenLeft
  const open = {requestedAt: newest.renewalRequestedAt, keyChange: newest.keyChange}
  const unchanged = {due, oldCa, requested: false, installed: false, nebulaReloaded: false, fingerprint: cert.fingerprint, notAfter: cert.notAfter, ...open, clockOffsetSeconds}
  const record = (state: {requestedAt: string | null; keyChange: KeyChange | null}) =>
    project.saveRenewalState({
      ...(state.requestedAt ? {requestedAt: state.requestedAt} : {}),
      ...(state.keyChange === 'pending' || state.keyChange === 'approved' ? {keyChange: state.keyChange} : {}),
      clockOffsetSeconds,
    })
  if (!due) {
    await record(open)
    return unchanged
  }
  if (nextKeyHex !== undefined && cert.publicKey === nextKeyHex) {
    // The certificate for the new key went in, the key did not (interrupted): finish the move.
    const updated = await replaceCertificate(project, await readFile(project.certPath, 'utf8'), cert, {newKey: true})
    await record(open)
    return {...unchanged, installed: true, nebulaReloaded: await reloadNebula({projectDir: updated.dir})}
  }
  const later = Date.parse(newest.notAfter ?? '') > Date.parse(cert.notAfter)
  // A certificate for the new key may end when the installed one does (both cut at the CA's end).
  const renewed = newest.pem && newest.fingerprint !== cert.fingerprint && (later || (nextKeyHex !== undefined && !newest.renewalPending))
    ? await withTempDir(project.dir, async (temp) => {
      const path = join(temp, 'node.crt')
      await writeFile(path, newest.pem ?? '', {mode: 0o600})
      const candidate = await readCert(path, options.tools)
      await verifyCert({caCertPath: project.caPath, certPath: path, tools: options.tools})
      const key = candidate.publicKey === cert.publicKey || candidate.publicKey === nextKeyHex
      if (!key || candidate.name !== cert.name || candidate.ips.join() !== cert.ips.join()) {
        throw new InvalidInputError(`the control plane's certificate for ${project.manifest.device} is not for this device's key, name and address: not installed`)
      }
      return later || candidate.publicKey === nextKeyHex ? candidate : undefined
    })
    : undefined
  if (newest.pem && renewed) {
    const updated = await replaceCertificate(project, newest.pem, renewed, {newKey: renewed.publicKey === nextKeyHex})
    await record({requestedAt: null, keyChange: null})
    const nebulaReloaded = await reloadNebula({projectDir: updated.dir})
    return {...unchanged, installed: true, nebulaReloaded, fingerprint: renewed.fingerprint, notAfter: renewed.notAfter, requestedAt: null, keyChange: null}
  }
  // Ask once; again with the new key when the open request does not carry it yet.
  const asked = !newest.renewalPending || (nextKey !== undefined && newest.keyChange === 'none')
    ? await options.controlPlane.deviceRequestRenewal({token, fingerprint: cert.fingerprint, publicKey: nextKey})
    : open
  const state = {requestedAt: asked.requestedAt, keyChange: asked.keyChange}
  await record(state)
  return {...unchanged, ...state, requested: true}
}
