import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {ConflictError, InvalidInputError} from '../errors.js'
import type {Tools} from '../exec.js'
import {type CertInfo, readCert} from '../pki/cert.js'
import {type CaEndorsement, endorsementValid} from '../pki/endorse.js'

/** A CA as the person confirming it sees it. */
export interface CaCandidate {
  project: string
  name: string
  fingerprint: string
}

/** How this device decides to trust a project's CA the first time it sees one. */
export interface CaTrustOptions {
  /** The fingerprint the operator gave the user for the project's CA (`--ca-fingerprint`). */
  caFingerprint?: string
  /** Asks the person at the terminal; absent when nobody can answer (scripts, --json). */
  confirmCa?: (ca: CaCandidate) => Promise<boolean>
  /** The CA came from the control plane with the bundle this device's token fetched (invite flow). */
  caFromControlPlane?: boolean
}

const certificateBlock = /-----BEGIN NEBULA CERTIFICATE( V2)?-----[\s\S]*?-----END NEBULA CERTIFICATE( V2)?-----\n?/g
const maxCas = 8

/** A certificate fingerprint as users paste it: hex, any case, colons or spaces between bytes. */
export function normalizeFingerprint(text: string): string {
  const hex = text.trim().toLowerCase().replace(/^sha256:/, '').replace(/[:\s]/g, '')
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new InvalidInputError(`invalid CA fingerprint "${text.slice(0, 80)}": expected 64 hex digits, as \`vidsync ca show\` prints it`)
  }
  return hex
}

/** Each CA certificate of a ca.crt with its PEM block, read through nebula-cert one by one. */
async function readCas(pem: Buffer, scratch: string, origin: string, tools?: Tools): Promise<OfferedCa[]> {
  const blocks = pem.toString().match(certificateBlock) ?? []
  if (blocks.length === 0 || blocks.length > maxCas) throw new InvalidInputError(`${origin} has no usable ca.crt: ask the operator for a new bundle`)
  const cas = []
  for (const [index, block] of blocks.entries()) {
    const path = join(scratch, `ca-${index}.crt`)
    await writeFile(path, block, {mode: 0o600})
    const cert = await readCert(path, tools)
    if (!cert.isCa) throw new InvalidInputError(`${origin}'s ca.crt holds a certificate that is not a CA (${cert.name})`)
    cas.push({...cert, pem: block.endsWith('\n') ? block : `${block}\n`})
  }
  return cas
}

type OfferedCa = CertInfo & {pem: string}

/**
 * The `offered` CAs a device that pins `pinned` may trust: those it pins, and each one endorsed
 * (its fingerprint signed with the key) by a CA it pins or accepted here, the rotation's chain.
 * In the order offered; a pinned CA that is not offered is not in the result (it was retired).
 */
export function acceptedCas(pinned: CertInfo[], offered: OfferedCa[], endorsements: CaEndorsement[]): OfferedCa[] {
  const anchors = [...pinned]
  const accepted = new Set(offered.filter((ca) => pinned.some((pin) => pin.fingerprint === ca.fingerprint)))
  for (let grew = true; grew; ) {
    grew = false
    for (const ca of offered) {
      if (accepted.has(ca)) continue
      const vouched = endorsements.some(
        (endorsement) => endorsement.ca === ca.fingerprint && anchors.some((anchor) => anchor.fingerprint === endorsement.endorser && endorsementValid(endorsement, anchor.publicKey)),
      )
      if (vouched) {
        accepted.add(ca)
        anchors.push(ca)
        grew = true
      }
    }
  }
  return offered.filter((ca) => accepted.has(ca))
}

/**
 * The CA certificates to install for a bundle's project. A joined project keeps its pinned CAs:
 * a bundle may add a CA only with an endorsement by one of them (a rotation) and leaves out the
 * ones retired; any other CA is refused. The first join pins the bundle's CA once the user
 * confirmed its fingerprint (a flag, or a prompt on a terminal), or when it came from the control
 * plane: only the confirmed certificate (and the CAs it endorsed) is pinned, whatever else the
 * bundle's ca.crt holds.
 */
export async function caToPin(options: CaTrustOptions & {
  project: string
  origin: string
  offeredPem: Buffer
  pinnedPem?: Buffer
  /** The bundle's or the control plane's endorsements of newer CAs. */
  endorsements?: CaEndorsement[]
  scratch: string
  tools?: Tools
}): Promise<Buffer> {
  const {project, origin} = options
  const endorsements = options.endorsements ?? []
  const offered = await readCas(options.offeredPem, options.scratch, origin, options.tools)
  const pem = (cas: OfferedCa[]) => Buffer.from(cas.map((ca) => ca.pem).join(''))
  if (options.pinnedPem) {
    const pinned = await readCas(options.pinnedPem, options.scratch, `the pinned CA of ${project}`, options.tools)
    const accepted = acceptedCas(pinned, offered, endorsements)
    const fingerprints = (cas: CertInfo[]) => cas.map((ca) => ca.fingerprint).join(', ')
    if (accepted.length === 0) {
      throw new ConflictError(
        `${origin} comes with another CA (${fingerprints(offered)}) than the one this device pinned for ${project} (${fingerprints(pinned)}): refused`,
        {hint: 'a project changes its CA only through a rotation that lists the old and the new CA; ask the operator where this bundle came from'},
      )
    }
    const unendorsed = offered.filter((ca) => !accepted.includes(ca))
    if (unendorsed.length > 0) {
      throw new InvalidInputError(`${origin} adds the CA ${fingerprints(unendorsed)} to ${project} without a valid endorsement by a CA this device pinned (${fingerprints(pinned)}): refused`, {
        hint: 'a new CA is trusted only when the pinned CA vouches for it (`vidsync ca rotate`); ask the operator where this bundle came from',
      })
    }
    if (options.caFingerprint !== undefined && ![...pinned, ...accepted].some((ca) => ca.fingerprint === normalizeFingerprint(options.caFingerprint ?? ''))) {
      throw new InvalidInputError(`the fingerprint given is not that of the CA this device pinned for ${project} (${fingerprints(pinned)}): refused`)
    }
    const unchanged = accepted.length === pinned.length && pinned.every((pin) => accepted.some((ca) => ca.fingerprint === pin.fingerprint))
    return unchanged ? options.pinnedPem : pem(accepted)
  }
  if (options.caFromControlPlane) return Buffer.from(offered.map((ca) => ca.pem).join(''))
  if (options.caFingerprint !== undefined) {
    const wanted = normalizeFingerprint(options.caFingerprint)
    const match = offered.find((ca) => ca.fingerprint === wanted)
    if (!match) {
      throw new InvalidInputError(`${origin}'s CA (${offered.map((ca) => ca.fingerprint).join(', ')}) is not the CA with the fingerprint given: refused`, {
        hint: 'compare the fingerprint with the one `vidsync ca show` prints on the operator\'s machine',
      })
    }
    return pem(acceptedCas([match], offered, endorsements))
  }
  // During a rotation a bundle lists the old CAs first and the newest, the one `ca show` prints, last.
  const newest = offered.at(-1)
  if (!newest) throw new InvalidInputError(`${origin} has no usable ca.crt: ask the operator for a new bundle`)
  const candidate = {project, name: newest.name, fingerprint: newest.fingerprint}
  if (!options.confirmCa) {
    throw new InvalidInputError(`${origin} is the first bundle of ${project} on this device: its CA "${newest.name}" must be confirmed`, {
      hint: `check with the operator (\`vidsync ca show\`) that the fingerprint is ${newest.fingerprint}, then pass --ca-fingerprint ${newest.fingerprint}`,
    })
  }
  if (!(await options.confirmCa(candidate))) throw new InvalidInputError('cancelled: nothing was changed')
  return Buffer.from(newest.pem)
}
