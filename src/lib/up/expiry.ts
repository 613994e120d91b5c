import {NotFoundError} from '../errors.js'
import type {Tools} from '../exec.js'
import {readDeviceToken} from '../join/invite.js'
import {readCert, readCerts} from '../pki/cert.js'
import {caWarnSeconds, deviceWarnSeconds, type Expiry, expiryOf, expiryPhrase} from '../pki/expiry.js'
import type {JoinedProject} from '../project/joined-project.js'

/** This device's certificates for a project against their warning windows (device 7 days, CA 90 days). */
export interface CertificateCheck {
  /** node.crt; null when nebula-cert cannot read it. */
  certificate: Expiry | null
  /** Every CA this device trusts for the project (two during a rotation). */
  cas: (Expiry & {name: string; fingerprint: string})[]
  /** How the device gets a new certificate: `bundle` (a file from the operator) or `control-plane` (joined with an invite). */
  backend: 'bundle' | 'control-plane'
  /** One line per certificate that is expiring or expired, saying what to do. */
  warnings: string[]
}

/** What to do on this device's backend for a new certificate. */
export function renewRemedy(project: string, device: string, backend: CertificateCheck['backend']): string {
  const renew = `ask the operator to run \`vidsync device renew ${project} ${device}\``
  const install = `${renew} and install the new bundle here with \`vidsync join <bundle>\` (nebula reloads it, no restart)`
  return backend === 'control-plane'
    ? `it renews automatically while \`vidsync up\` runs and the operator runs \`vidsync signer ${project}\`; if that is down, ${install}`
    : install
}

/** Reads node.crt and ca.crt of a joined project and says which expire soon and what to do. */
export async function certificateCheck(options: {home: string; project: JoinedProject; now?: Date; tools?: Tools}): Promise<CertificateCheck> {
  const {project} = options
  const now = options.now ?? new Date()
  const backend = await readDeviceToken(options.home, project.name).then(
    () => 'control-plane' as const,
    (error: unknown) => {
      if (error instanceof NotFoundError) return 'bundle' as const
      throw error
    },
  )
  const cert = await readCert(project.certPath, options.tools).catch(() => undefined)
  const notAfter = cert?.notAfter ?? (project.manifest.notAfter || undefined)
  const certificate = notAfter === undefined ? null : expiryOf(notAfter, deviceWarnSeconds, now)
  const cas = (await readCerts(project.caPath, options.tools).catch(() => [])).map((ca) => ({
    ...expiryOf(ca.notAfter, caWarnSeconds, now),
    name: ca.name,
    fingerprint: ca.fingerprint,
  }))
  const warnings: string[] = []
  if (certificate?.expiring) {
    const remedy = renewRemedy(project.name, project.manifest.device, backend)
    warnings.push(`the certificate of ${project.manifest.device} in ${project.name} ${expiryPhrase(certificate, now)} (${certificate.notAfter}): ${remedy}`)
  }
  // During a rotation the old CA may run out while the new one carries on: warn only when none is left.
  const lasting = cas.filter((ca) => !ca.expiring)
  if (lasting.length === 0) {
    for (const ca of cas) {
      warnings.push(
        `the CA "${ca.name}" of ${project.name} ${expiryPhrase(ca, now)} (${ca.notAfter}): every certificate of the project stops with it: ask the operator for a CA rotation before then`,
      )
    }
  }
  return {certificate, cas, backend, warnings}
}
