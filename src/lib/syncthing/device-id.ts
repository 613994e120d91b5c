import {createHash, X509Certificate} from 'node:crypto'

import {InvalidInputError} from '../errors.js'

/**
 * Syncthing's device ID from its certificate, the same in every release (lib/protocol/deviceid.go
 * and luhn.go): SHA-256 of the DER certificate, base32 without padding (52 characters), a Luhn
 * mod-32 check character after each 13, then groups of 7 joined by dashes.
 */

const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'

function base32(bytes: Buffer): string {
  let bits = 0
  let value = 0
  let out = ''
  for (const byte of bytes) {
    value = (value << 8) | byte
    bits += 8
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31]
      bits -= 5
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31]
  return out
}

/** luhn32 in lib/protocol/luhn.go: not the textbook Luhn, but Syncthing's variant over base32 code points. */
function luhn32(chunk: string): string {
  let factor = 1
  let sum = 0
  for (const char of chunk) {
    const addend = factor * alphabet.indexOf(char)
    factor = factor === 2 ? 1 : 2
    sum += Math.floor(addend / 32) + (addend % 32)
  }
  return alphabet[(32 - (sum % 32)) % 32] ?? 'A'
}

/** The device ID of the certificate whose DER bytes are `der`. */
export function deviceIdFromDer(der: Buffer): string {
  const encoded = base32(createHash('sha256').update(der).digest())
  const checked = [0, 13, 26, 39].map((start) => encoded.slice(start, start + 13)).map((chunk) => chunk + luhn32(chunk)).join('')
  return checked.match(/.{7}/g)?.join('-') ?? checked
}

/** The device ID of Syncthing's cert.pem. */
export function deviceIdFromCertPem(pem: string | Buffer): string {
  let der: Buffer
  try {
    der = new X509Certificate(pem).raw
  } catch {
    throw new InvalidInputError("Syncthing's cert.pem is not a readable certificate: move it away and run `vidsync sync id` to make a new one")
  }
  return deviceIdFromDer(der)
}
