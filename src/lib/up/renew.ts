import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {InvalidInputError, NotFoundError} from '../errors.js'
import type {Tools} from '../exec.js'
import {withTempDir} from '../files.js'
import {readDeviceToken} from '../join/invite.js'
import {reloadNebula} from '../nebula/process.js'
import {readCert, verifyCert} from '../pki/cert.js'
import {JoinedProject, replaceCertificate} from '../project/joined-project.js'
import type {ControlPlane} from '../store/control-plane.js'

export interface RenewalResult {
  /** A third or less of the certificate's life is left. */
  due: boolean
  /** A renewal was asked for in this pass (or one is waiting for the signer). */
  requested: boolean
  /** A renewed certificate was installed in this pass; nebula reloaded it (SIGHUP, tunnels kept). */
  installed: boolean
  nebulaReloaded: boolean
  fingerprint: string
  notAfter: string
}

/** Renewal starts when this fraction of the certificate's life is left. */
export const renewWhenLeft = 1 / 3

/**
 * The certificate half of the `up` loop for a device that joined with an invite: when a third of
 * its certificate's life is left it asks the control plane for renewal, and once the operator's
 * signer has signed, installs the new certificate (same key, name and address, signed by the
 * pinned CA, later than the one installed) and tells nebula to reload it. Undefined for a device
 * joined from a bundle file (nothing to ask).
 */
export async function renewFromControlPlane(options: {home: string; project: string; controlPlane: ControlPlane; now?: Date; tools?: Tools}): Promise<RenewalResult | undefined> {
  const token = await readDeviceToken(options.home, options.project).catch((error: unknown) => {
    if (error instanceof NotFoundError) return undefined
    throw error
  })
  if (token === undefined) return undefined
  const project = await JoinedProject.find({home: options.home, project: options.project})
  const cert = await readCert(project.certPath, options.tools)
  const now = (options.now ?? new Date()).getTime()
  const life = Date.parse(cert.notAfter) - Date.parse(cert.notBefore)
  const due = Date.parse(cert.notAfter) - now <= life * renewWhenLeft
  const unchanged = {due, requested: false, installed: false, nebulaReloaded: false, fingerprint: cert.fingerprint, notAfter: cert.notAfter}
  if (!due) return unchanged
  const newest = await options.controlPlane.deviceCertificate({token})
  if (newest.pem && newest.fingerprint !== cert.fingerprint && Date.parse(newest.notAfter ?? '') > Date.parse(cert.notAfter)) {
    const renewed = await withTempDir(project.dir, async (temp) => {
      const path = join(temp, 'node.crt')
      await writeFile(path, newest.pem ?? '', {mode: 0o600})
      const candidate = await readCert(path, options.tools)
      await verifyCert({caCertPath: project.caPath, certPath: path, tools: options.tools})
      if (candidate.publicKey !== cert.publicKey || candidate.name !== cert.name || candidate.ips.join() !== cert.ips.join()) {
        throw new InvalidInputError(`the control plane's certificate for ${project.manifest.device} is not for this device's key, name and address: not installed`)
      }
      return candidate
    })
    const updated = await replaceCertificate(project, newest.pem, renewed)
    const nebulaReloaded = await reloadNebula({projectDir: updated.dir})
    return {due, requested: false, installed: true, nebulaReloaded, fingerprint: renewed.fingerprint, notAfter: renewed.notAfter}
  }
  if (!newest.renewalPending) await options.controlPlane.deviceRequestRenewal({token, fingerprint: cert.fingerprint})
  return {...unchanged, requested: true}
}
