import {createHash, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject} from 'node:crypto'
import {chmod, readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {ConflictError, InvalidInputError} from '../errors.js'
import {runTool, type Tools} from '../exec.js'
import {ensureDir, publishNew, withTempDir} from '../files.js'

const publicKeyLabel = 'NEBULA X25519 PUBLIC KEY'

export interface PublicKey {
  /** Canonical PEM: one base64 line, trailing newline. */
  pem: string
  /** sha256 hex of the raw 32 key bytes: the same key always has the same fingerprint. */
  fingerprint: string
  /** The raw key bytes in hex, as `nebula-cert print -json` shows a certificate's publicKey. */
  hex: string
}

export interface KeyPair {
  privateKeyPath: string
  publicKeyPath: string
  publicKey: string
}

// DER prefix of an SPKI X25519 public key; the raw 32 bytes follow.
const x25519SpkiPrefix = Buffer.from('302a300506032b656e032100', 'hex')
let probeKey: KeyObject | undefined

/**
 * A low-order point (32 zero bytes, 1, p-1, ...) makes every key agreement give the same secret.
 * OpenSSL refuses an X25519 derivation that yields all zeros, which is exactly those points.
 */
function isLowOrderX25519(raw: Buffer): boolean {
  probeKey ??= generateKeyPairSync('x25519').privateKey
  const publicKey = createPublicKey({key: Buffer.concat([x25519SpkiPrefix, raw]), format: 'der', type: 'spki'})
  try {
    return diffieHellman({privateKey: probeKey, publicKey}).every((byte) => byte === 0)
  } catch {
    return true
  }
}

/** Accepts exactly one Nebula X25519 public key PEM, as `nebula-cert keygen` writes it. */
export function validatePublicKey(input: Buffer | string): PublicKey {
  const size = typeof input === 'string' ? Buffer.byteLength(input) : input.length
  // A real one is about 125 bytes; the bounds keep junk and huge uploads out before parsing.
  if (size < 100 || size > 10_000) {
    throw new InvalidInputError(`not a Nebula public key: ${size} bytes, expected a PEM of about 125 bytes`)
  }
  const text = input.toString()
  const blocks = [...text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g)]
  const [block, ...others] = blocks
  if (block === undefined) {
    throw new InvalidInputError(`not a Nebula public key: expected a "-----BEGIN ${publicKeyLabel}-----" PEM block`)
  }
  const [whole, label = '', body = ''] = block
  if (label.includes('PRIVATE')) {
    throw new InvalidInputError(`this is a private key (${label}): send the public key (.pub file), never the private one`)
  }
  if (label !== publicKeyLabel) throw new InvalidInputError(`not a Nebula public key: expected ${publicKeyLabel}, got ${label}`)
  if (others.length > 0 || text.replace(whole, '').trim() !== '') {
    throw new InvalidInputError('not a Nebula public key: expected the PEM block alone, found other text around it')
  }
  const base64 = body.replace(/\s+/g, '')
  const raw = Buffer.from(base64, 'base64')
  // Buffer.from ignores invalid characters, so insist the bytes encode back to the same text.
  if (raw.length !== 32 || raw.toString('base64') !== base64) {
    throw new InvalidInputError('not a Nebula public key: the PEM body must be the base64 of 32 bytes')
  }
  if (isLowOrderX25519(raw)) {
    throw new InvalidInputError('not a usable Nebula public key: it is a low-order X25519 point (such as 32 zero bytes), which no key pair produces')
  }
  return {
    pem: `-----BEGIN ${label}-----\n${base64}\n-----END ${label}-----\n`,
    fingerprint: createHash('sha256').update(raw).digest('hex'),
    hex: raw.toString('hex'),
  }
}

const privateKeyLabel = 'NEBULA X25519 PRIVATE KEY'
// DER prefix of a PKCS#8 X25519 private key; the raw 32 bytes follow.
const x25519Pkcs8Prefix = Buffer.from('302e020100300506032b656e04220420', 'hex')

/** The public key (hex, as certificates show it) that belongs to a Nebula private key PEM. */
export function publicKeyHexOfPrivateKey(pem: string | Buffer): string {
  const match = new RegExp(`-----BEGIN ${privateKeyLabel}-----([\\s\\S]*?)-----END ${privateKeyLabel}-----`).exec(pem.toString())
  const raw = match ? Buffer.from((match[1] ?? '').replace(/\s+/g, ''), 'base64') : Buffer.alloc(0)
  if (raw.length !== 32) throw new InvalidInputError(`not a Nebula private key: expected a "-----BEGIN ${privateKeyLabel}-----" PEM of 32 bytes`)
  const privateKey = createPrivateKey({key: Buffer.concat([x25519Pkcs8Prefix, raw]), format: 'der', type: 'pkcs8'})
  return createPublicKey(privateKey).export({format: 'der', type: 'spki'}).subarray(-32).toString('hex')
}

/** Generates `<name>.key` (0600) and `<name>.pub` in `outDir`, refusing to replace either. */
export async function createKeyPair(options: {outDir: string; name?: string; tools?: Tools}): Promise<KeyPair> {
  const name = options.name ?? 'node'
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
    throw new InvalidInputError(`invalid key name "${name}": use letters, digits, dots, hyphens and underscores`)
  }
  const privateKeyPath = join(options.outDir, `${name}.key`)
  const publicKeyPath = join(options.outDir, `${name}.pub`)
  await ensureDir(options.outDir)
  await withTempDir(options.outDir, async (temp) => {
    const key = join(temp, 'key')
    const pub = join(temp, 'pub')
    await runTool('nebula-cert', ['keygen', '-out-key', key, '-out-pub', pub], {tools: options.tools})
    await chmod(key, 0o600)
    await chmod(pub, 0o644)
    await publishNew(
      [
        {from: key, to: privateKeyPath},
        {from: pub, to: publicKeyPath},
      ],
      (path) => new ConflictError(`${path} already exists: a key is never overwritten`, {hint: 'choose another --name or --out'}),
    )
  })
  return {privateKeyPath, publicKeyPath, publicKey: await readFile(publicKeyPath, 'utf8')}
}
