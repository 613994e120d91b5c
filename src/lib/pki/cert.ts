import {readFile} from 'node:fs/promises'

import {InvalidInputError, MissingDependencyError, ToolFailedError} from '../errors.js'
import {runTool, type Tools} from '../exec.js'
import {type CertVersion, nebulaNeededFor} from '../versions/capabilities.js'
import {nebulaCapabilities} from '../versions/detect.js'

/** What `nebula-cert print -json` reports about a certificate, the same for every nebula release. */
export interface CertInfo {
  version: CertVersion
  name: string
  fingerprint: string
  notBefore: string
  notAfter: string
  isCa: boolean
  issuer: string
  groups: string[]
  /** The overlay networks: `ips` to nebula 1.9, `networks` from 1.10. */
  ips: string[]
  publicKey: string
}

/**
 * One printed certificate as upstream marshals it: 1.6 to 1.9 `{details: {ips, subnets, publicKey,
 * ...}, fingerprint, signature}`; 1.10+ v1 `{details: {networks, unsafeNetworks, publicKey, curve,
 * ...}, fingerprint, signature, version: 1}`; v2 puts `publicKey` and `curve` beside `details`
 * (cert/cert_v1.go and cert_v2.go marshalJSON at v1.10.0).
 */
interface PrintedCert {
  version?: number
  fingerprint?: string
  publicKey?: string
  details?: {
    name?: string
    notBefore?: string
    notAfter?: string
    isCa?: boolean
    issuer?: string
    groups?: string[] | null
    ips?: string[] | null
    networks?: string[] | null
    publicKey?: string
  }
}

function toCertInfo(printed: PrintedCert): CertInfo {
  const {details} = printed
  const publicKey = printed.publicKey ?? details?.publicKey
  const version = printed.version ?? 1
  if (!details?.name || !printed.fingerprint || !details.notBefore || !details.notAfter || !publicKey || (version !== 1 && version !== 2)) {
    throw new InvalidInputError('nebula-cert printed a certificate without a name, fingerprint, validity or public key')
  }
  return {
    version,
    name: details.name,
    fingerprint: printed.fingerprint,
    notBefore: new Date(details.notBefore).toISOString(),
    notAfter: new Date(details.notAfter).toISOString(),
    isCa: details.isCa ?? false,
    issuer: details.issuer ?? '',
    groups: details.groups ?? [],
    ips: details.networks ?? details.ips ?? [],
    publicKey,
  }
}

/** Parses `nebula-cert print -json` output of any supported release: one object per line, or one array (1.10+). */
export function parsePrintedCerts(stdout: string): CertInfo[] {
  const text = stdout.trim()
  let printed: PrintedCert[]
  try {
    printed = text.startsWith('[')
      ? (JSON.parse(text) as PrintedCert[])
      : text
          .split('\n')
          .filter((line) => line.trim() !== '')
          .map((line) => JSON.parse(line) as PrintedCert)
  } catch {
    throw new InvalidInputError(`nebula-cert printed something that is not certificate JSON: ${text.split('\n')[0]?.slice(0, 80) ?? ''}`)
  }
  return printed.map(toCertInfo)
}

/** The certificate version of a PEM file, from its banner (cert/pem.go: NEBULA CERTIFICATE, NEBULA CERTIFICATE V2). */
export function pemCertVersions(pem: string): CertVersion[] {
  return [...pem.matchAll(/-----BEGIN NEBULA CERTIFICATE( V2)?-----/g)].map((match) => (match[1] ? 2 : 1))
}

/**
 * Refuses (exit 8) when the local nebula-cert or nebula is too old for the certificate versions in
 * `pem`: nebula before 1.10 cannot read or use v2 certificates.
 */
export async function requireCertSupport(options: {pem: string; what: string; tool?: 'nebula' | 'nebula-cert'; tools?: Tools}): Promise<void> {
  const tool = options.tool ?? 'nebula-cert'
  const found = await nebulaCapabilities(tool, options.tools)
  for (const version of new Set(pemCertVersions(options.pem))) {
    if (!found.capabilities.certVersions.includes(version)) {
      throw new MissingDependencyError(
        `${options.what} holds v${version} certificates, which ${tool} ${found.version} (${found.path}) cannot use: this project needs ${nebulaNeededFor(version)}`,
        {hint: 'install a newer nebula from your package manager or https://github.com/slackhq/nebula/releases'},
      )
    }
  }
}

/** Reads a certificate file through nebula-cert; the first certificate when the file holds several. */
export async function readCert(path: string, tools?: Tools): Promise<CertInfo> {
  const pem = await readFile(path, 'utf8').catch(() => '')
  await requireCertSupport({pem, what: path, tools})
  let stdout: string
  try {
    ;({stdout} = await runTool('nebula-cert', ['print', '-json', '-path', path], {tools}))
  } catch (error) {
    if (error instanceof ToolFailedError) throw new InvalidInputError(`${path} is not a readable Nebula certificate: ${error.reason}`)
    throw error
  }
  const [first] = parsePrintedCerts(stdout)
  if (first === undefined) throw new InvalidInputError(`${path} holds no Nebula certificate`)
  return first
}

/** Checks that `certPath` is valid now and signed by a CA in `caCertPath`. */
export async function verifyCert(options: {caCertPath: string; certPath: string; tools?: Tools}): Promise<void> {
  try {
    await runTool('nebula-cert', ['verify', '-ca', options.caCertPath, '-crt', options.certPath], {tools: options.tools})
  } catch (error) {
    if (error instanceof ToolFailedError) {
      throw new InvalidInputError(`${options.certPath} does not verify against ${options.caCertPath}: ${error.reason}`)
    }
    throw error
  }
}
