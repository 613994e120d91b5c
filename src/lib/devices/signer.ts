import {setTimeout as sleep} from 'node:timers/promises'

import {ConflictError} from '../errors.js'
import type {Tools} from '../exec.js'
import {loadCa} from '../pki/ca.js'
import {maxCertDurationSeconds, signDevice} from '../pki/sign.js'
import type {ControlPlane} from '../store/control-plane.js'

export interface SignedRenewal {
  requestId: number
  device: string
  fingerprint: string
  notAfter: string
  /** The certificate is for the device's new key (a key change the operator approved). */
  newKey: boolean
}

export interface RefusedRenewal {
  requestId: number
  device: string
  message: string
}

export interface SignerPass {
  project: string
  signed: SignedRenewal[]
  refused: RefusedRenewal[]
}

export interface SignerOptions {
  home: string
  controlPlane: ControlPlane
  project: string
  tools?: Tools
}

/** Why the signer leaves a key change alone until the operator approves it. */
export const unapprovedKeyChange = (project: string, device: string) =>
  `asked for a certificate for a new key, which the operator has not approved: not signed (approve it with \`vidsync device approve ${project} --key-change ${device}\`)`

/**
 * One pass of the signer: signs the registered key of every active, non-revoked device of the
 * project that asked for renewal (the control plane lists no other), or its new key once the
 * operator approved the key change, for the project's lifetime, and records each certificate. An
 * unapproved key change is refused (and stays open for approval). A device revoked between the
 * listing and the record is refused by the control plane: revocation wins. Also tells the control
 * plane that a signer serves the project.
 */
export async function signPendingRenewals(options: SignerOptions): Promise<SignerPass> {
  const ca = await loadCa({home: options.home, tools: options.tools})
  const pending = await options.controlPlane.signerPending({project: options.project})
  const pass: SignerPass = {project: options.project, signed: [], refused: []}
  for (const request of pending) {
    if (request.keyChange === 'pending') {
      pass.refused.push({requestId: request.requestId, device: request.device, message: unapprovedKeyChange(options.project, request.device)})
      continue
    }
    try {
      const signed = await signDevice({
        home: options.home,
        name: request.device,
        ip: request.ip,
        prefixLength: request.prefixLength,
        groups: request.groups,
        publicKeyPem: request.publicKey,
        durationSeconds: request.lifetimeSeconds < maxCertDurationSeconds(ca.cert.notAfter) ? request.lifetimeSeconds : undefined,
        tools: options.tools,
      })
      await options.controlPlane.completeRenewal({requestId: request.requestId, fingerprint: signed.fingerprint, notAfter: signed.notAfter, pem: signed.certPem, publicKey: request.publicKey})
      pass.signed.push({requestId: request.requestId, device: request.device, fingerprint: signed.fingerprint, notAfter: signed.notAfter, newKey: request.keyChange === 'approved'})
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error
      pass.refused.push({requestId: request.requestId, device: request.device, message: error.message})
    }
  }
  return pass
}

/** Runs signer passes every `intervalMs` until `signal` aborts; a failed pass is reported and retried. Refuses where the CA key is not. */
export async function runSigner(options: SignerOptions & {intervalMs: number; signal: AbortSignal; onPass: (pass: SignerPass | Error) => void}): Promise<void> {
  // Without the CA key on this machine there is nothing to sign with: refuse at once (exit 3 or 9) instead of failing every pass.
  await loadCa({home: options.home, tools: options.tools})
  while (!options.signal.aborted) {
    options.onPass(await signPendingRenewals(options).catch((error: unknown) => error as Error))
    await sleep(options.intervalMs, undefined, {signal: options.signal}).catch(() => undefined)
  }
}
