import type {ControlPlane, Invite} from '../store/control-plane.js'
import {newSecret, sha256Hex} from './secrets.js'

export interface CreateInviteOptions {
  controlPlane: ControlPlane
  project: string
  maxUses?: number
  expiresSeconds?: number
  /** Nebula groups every device joining with this invite gets. */
  groups?: string[]
}

export interface CreatedInvite extends Invite {
  /** The secret to hand to the device's user; shown this once, only its hash is stored. */
  code: string
}

/** Creates an invite. The code is made here and only its sha256 is sent to the control plane. */
export async function createInvite(options: CreateInviteOptions): Promise<CreatedInvite> {
  const code = newSecret('invite')
  const invite = await options.controlPlane.createInvite({
    project: options.project,
    codeSha256: sha256Hex(code),
    maxUses: options.maxUses,
    expiresSeconds: options.expiresSeconds,
    groups: options.groups,
  })
  return {...invite, code}
}
