import {createHash, randomBytes} from 'node:crypto'

import {InvalidInputError} from '../errors.js'

/** Invite codes and device tokens: 32 random bytes (256 bits) in base64url behind a prefix that says which. */
const prefixes = {invite: 'vsi', device: 'vsd'} as const

export type SecretKind = keyof typeof prefixes

export function newSecret(kind: SecretKind): string {
  return `${prefixes[kind]}_${randomBytes(32).toString('base64url')}`
}

/** How the control plane stores a secret: only this digest, never the secret. */
export function sha256Hex(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex')
}

export function isInviteCode(text: string): boolean {
  return /^vsi_[A-Za-z0-9_-]{43}$/.test(text)
}

/** The invite code the user typed or pasted, without surrounding whitespace; never echoed in errors. */
export function parseInviteCode(text: string): string {
  const code = text.trim()
  if (!isInviteCode(code)) {
    throw new InvalidInputError('malformed invite code: expected vsi_ followed by 43 letters, digits, - or _; check that it was copied completely')
  }
  return code
}
