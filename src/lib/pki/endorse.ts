import {createPrivateKey, createPublicKey, sign, verify} from 'node:crypto'

import {InvalidInputError} from '../errors.js'

/**
 * A CA's word for its successor: the old CA's ed25519 key signs the new CA's fingerprint, so a
 * device that pinned the old CA can check the new one with nothing but the certificate it pinned.
 */
export interface CaEndorsement {
  /** Fingerprint of the endorsed (newer) CA. */
  ca: string
  /** Fingerprint of the CA whose key signed. */
  endorser: string
  /** Base64 ed25519 signature of endorsementMessage(ca). */
  signature: string
}

const privateKeyLabel = 'NEBULA ED25519 PRIVATE KEY'
// DER prefixes of PKCS#8 and SPKI ed25519 keys; the raw 32 bytes follow.
const ed25519Pkcs8Prefix = Buffer.from('302e020100300506032b657004220420', 'hex')
const ed25519SpkiPrefix = Buffer.from('302a300506032b6570032100', 'hex')
const fingerprintPattern = /^[0-9a-f]{64}$/

/** What the old CA signs: a fixed context, so the signature means nothing else. */
export const endorsementMessage = (fingerprint: string) => Buffer.from(`vidsync CA endorsement v1: ${fingerprint}`)

/**
 * Signs `fingerprint` with a nebula CA key (`nebula-cert ca` writes the 32-byte seed and the 32-byte
 * public key); the key must belong to the endorsing CA, whose public key is `endorserPublicKeyHex`.
 */
export function endorseCa(options: {caKeyPem: string | Buffer; endorser: {fingerprint: string; publicKey: string}; fingerprint: string}): CaEndorsement {
  const match = new RegExp(`-----BEGIN ${privateKeyLabel}-----([\\s\\S]*?)-----END ${privateKeyLabel}-----`).exec(options.caKeyPem.toString())
  const raw = match ? Buffer.from((match[1] ?? '').replace(/\s+/g, ''), 'base64') : Buffer.alloc(0)
  if (raw.length !== 64) throw new InvalidInputError(`the CA key is not a "${privateKeyLabel}": only Curve25519 CAs can be rotated`)
  const key = createPrivateKey({key: Buffer.concat([ed25519Pkcs8Prefix, raw.subarray(0, 32)]), format: 'der', type: 'pkcs8'})
  const publicKey = createPublicKey(key).export({format: 'der', type: 'spki'}).subarray(-32).toString('hex')
  if (publicKey !== options.endorser.publicKey || raw.subarray(32).toString('hex') !== publicKey) {
    throw new InvalidInputError('the CA key does not belong to the CA certificate next to it: restore the matching ca.key')
  }
  return {ca: options.fingerprint, endorser: options.endorser.fingerprint, signature: sign(null, endorsementMessage(options.fingerprint), key).toString('base64')}
}

/** Whether `endorsement` is a valid signature by the CA with `endorserPublicKeyHex` (its certificate's public key). */
export function endorsementValid(endorsement: CaEndorsement, endorserPublicKeyHex: string): boolean {
  if (!fingerprintPattern.test(endorsement.ca) || !/^[0-9a-f]{64}$/.test(endorserPublicKeyHex)) return false
  const signature = Buffer.from(endorsement.signature, 'base64')
  if (signature.length !== 64) return false
  const key = createPublicKey({key: Buffer.concat([ed25519SpkiPrefix, Buffer.from(endorserPublicKeyHex, 'hex')]), format: 'der', type: 'spki'})
  return verify(null, endorsementMessage(endorsement.ca), key, signature)
}

/** Checks the shape of an endorsement from a bundle or the control plane (not its signature). */
export function isEndorsement(value: unknown): value is CaEndorsement {
  if (typeof value !== 'object' || value === null) return false
  const {ca, endorser, signature} = value as Record<string, unknown>
  return typeof ca === 'string' && fingerprintPattern.test(ca) && typeof endorser === 'string' && fingerprintPattern.test(endorser) &&
    typeof signature === 'string' && /^[A-Za-z0-9+/]{86}==$/.test(signature)
}
