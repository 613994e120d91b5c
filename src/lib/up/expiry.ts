import {formatDuration} from '../duration.js'
import {NotFoundError} from '../errors.js'
import type {Tools} from '../exec.js'
import {readDeviceToken} from '../join/invite.js'
import {readCert, readCerts} from '../pki/cert.js'
import {caWarnSeconds, deviceWarnSeconds, type Expiry, expiryOf, expiryPhrase} from '../pki/expiry.js'
import type {JoinedProject, RenewalState} from '../project/joined-project.js'

/** This device's certificates for a project against their warning windows (device 7 days, CA 90 days). */
export interface CertificateCheck {
  /** node.crt; null when nebula-cert cannot read it. */
  certificate: Expiry | null
  /** Every CA this device trusts for the project (two during a rotation). */
  cas: (Expiry & {name: string; fingerprint: string})[]
  /** How the device gets a new certificate: `bundle` (a file from the operator) or `control-plane` (joined with an invite). */
  backend: 'bundle' | 'control-plane'
  /** The open renewal and the control plane's clock, as the `up` loop last learned them (control-plane backend). */
  renewal: RenewalState
  /** The renewal problems among `warnings` (last): no signer answering, a key change waiting, a clock that is off. */
  renewalWarnings: string[]
  /** One line per certificate that is expiring or expired, then per renewal problem, saying what to do. */
  warnings: string[]
}

/** A renewal open this long with no certificate means that no signer is answering. */
export const signerSilentSeconds = 5 * 60

/** A device clock further than this from the control plane's is reported (nebula checks certificate times). */
export const clockSkewSeconds = 5 * 60

/** The warnings about the renewal state the `up` loop recorded: a signer that does not answer, a clock that is off. */
export function renewalWarnings(options: {project: string; device: string; renewal: RenewalState; notAfter: string | undefined; now: Date}): string[] {
  const {renewal, project, device} = options
  const warnings: string[] = []
  const offset = renewal.clockOffsetSeconds ?? 0
  if (Math.abs(offset) > clockSkewSeconds) {
    const by = formatDuration(Math.round(Math.abs(offset) / 60) * 60)
    warnings.push(
      offset > 0
        ? `this device's clock is ${by} behind the control plane's: nebula refuses a certificate before it is valid (its notBefore), so a renewed certificate fails here until the clock is right; fix the clock (NTP)`
        : `this device's clock is ${by} ahead of the control plane's: certificates look closer to expiry here than they are, and peers with correct clocks refuse this device's certificates early; fix the clock (NTP)`,
    )
  }
  if (renewal.requestedAt !== undefined) {
    const controlPlaneNow = options.now.getTime() + offset * 1000
    const waited = (controlPlaneNow - Date.parse(renewal.requestedAt)) / 1000
    const expires = options.notAfter ? `the certificate expires at ${options.notAfter}` : 'the certificate expires'
    if (renewal.keyChange === 'pending') {
      warnings.push(`a certificate for a new key of ${device} was requested at ${renewal.requestedAt} and waits for the operator's approval: \`vidsync device approve ${project} --key-change ${device}\` on the operator's machine; the current key and certificate stay in use`)
    } else if (waited > signerSilentSeconds) {
      warnings.push(`renewal requested at ${renewal.requestedAt}, no signer has answered; ${expires}; run \`vidsync signer ${project}\` on the operator's machine`)
    }
  }
  return warnings
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
  const renewal = backend === 'control-plane' ? await project.renewalState() : {}
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
  const renewalProblems = renewalWarnings({project: project.name, device: project.manifest.device, renewal, notAfter, now})
  return {certificate, cas, backend, renewal, renewalWarnings: renewalProblems, warnings: [...warnings, ...renewalProblems]}
}
