import {InvalidInputError, ToolFailedError} from '../errors.js'
import {runTool, type Tools} from '../exec.js'

/** What `nebula-cert print -json` (Nebula 1.6.1, certificate v1) reports about a certificate. */
export interface CertInfo {
  name: string
  fingerprint: string
  notBefore: string
  notAfter: string
  isCa: boolean
  issuer: string
  groups: string[]
  ips: string[]
  publicKey: string
}

interface PrintedCert {
  fingerprint: string
  details: Omit<CertInfo, 'fingerprint' | 'groups' | 'ips'> & {groups: string[] | null; ips: string[] | null}
}

/** Reads every certificate in a file through nebula-cert (a CA file may hold several). */
export async function readCerts(path: string, tools?: Tools): Promise<CertInfo[]> {
  let stdout: string
  try {
    ;({stdout} = await runTool('nebula-cert', ['print', '-json', '-path', path], {tools}))
  } catch (error) {
    if (error instanceof ToolFailedError) throw new InvalidInputError(`${path} is not a readable Nebula certificate: ${error.reason}`)
    throw error
  }
  const certs = stdout
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const {fingerprint, details} = JSON.parse(line) as PrintedCert
      return {
        name: details.name,
        fingerprint,
        notBefore: new Date(details.notBefore).toISOString(),
        notAfter: new Date(details.notAfter).toISOString(),
        isCa: details.isCa,
        issuer: details.issuer,
        groups: details.groups ?? [],
        ips: details.ips ?? [],
        publicKey: details.publicKey,
      }
    })
  if (certs.length === 0) throw new InvalidInputError(`${path} holds no Nebula certificate`)
  return certs
}

/** Reads a certificate file through nebula-cert; the first certificate when the file holds several. */
export async function readCert(path: string, tools?: Tools): Promise<CertInfo> {
  const [first] = await readCerts(path, tools)
  return first as CertInfo
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
