import {bundleFiles} from '../devices/bundle-files.js'
import {certDuration} from '../devices/lifetime.js'
import {ConflictError, UnavailableError, VidsyncError} from '../errors.js'
import type {Tools} from '../exec.js'
import {formatDuration} from '../duration.js'
import {loadCa} from '../pki/ca.js'
import {pollUntil} from '../poll.js'
import {projectTrust} from '../pki/rotation.js'
import {signDevice} from '../pki/sign.js'
import type {ControlPlane, DeviceRecord, JoinRequest} from '../store/control-plane.js'

export interface ApproveOptions {
  home: string
  controlPlane: ControlPlane
  /** Only this project's requests; all projects' when absent. */
  project?: string
  tools?: Tools
}

/** One approved join request: the device as every command shows it (docs/json.md), as recorded. */
export interface Approved {
  requestId: number
  project: string
  device: DeviceRecord
}

export interface ApprovalFailure {
  requestId: number
  project: string
  /** Only the name is known: the request was not approved, so there is no device record. */
  device: {name: string}
  message: string
}

export interface ApproveResult {
  approved: Approved[]
  failed: ApprovalFailure[]
}

/** How often a concurrent registration may take the signed-for address before we give up. */
const maxAddressRaces = 5

/** The certificate and bundle files for `request` at `ip`; no private key, since the device made its own. */
async function signRequest(options: ApproveOptions & {request: JoinRequest; caCertPath: string; caNotAfter: string; ip: string; prefixLength: number}) {
  const {controlPlane, request} = options
  const signed = await signDevice({
    home: options.home,
    name: request.device,
    ip: options.ip,
    prefixLength: options.prefixLength,
    groups: request.groups,
    publicKeyPem: request.publicKey,
    durationSeconds: await certDuration({controlPlane, project: request.project, caNotAfter: options.caNotAfter}),
    tools: options.tools,
  })
  await controlPlane.recordCertVersion({project: request.project, version: signed.certVersion})
  const device: DeviceRecord = {
    name: request.device,
    ip: options.ip,
    status: 'active',
    lighthouse: false,
    endpoint: null,
    relay: false,
    groups: request.groups,
    syncthingId: null,
    operatorKey: false,
    publicKey: request.publicKey,
    fingerprint: signed.fingerprint,
    notAfter: signed.notAfter,
    createdAt: new Date().toISOString(),
    revokedAt: null,
    lastSeenAt: null,
  }
  const files = bundleFiles({
    project: request.project,
    network: await controlPlane.projectNetwork({project: request.project}),
    devices: [...(await controlPlane.listDevices({project: request.project})), device],
    device,
    trust: await projectTrust({home: options.home, controlPlane, project: request.project, caCertPath: options.caCertPath}),
    certPem: signed.certPem,
    certVersion: signed.certVersion,
    outPath: `${request.project}-${request.device}.zip`,
  })
  const bundle = Object.fromEntries(Object.entries(files).map(([name, content]) => [name, String(content)]))
  return {ip: options.ip, fingerprint: signed.fingerprint, notAfter: signed.notAfter, certPem: signed.certPem, bundle}
}

/**
 * Approves one request: asks for the address it would get, signs for it, and commits the
 * registration, certificate and bundle in one call, which fails harmlessly (and is retried) when
 * a concurrent registration took the address meanwhile.
 */
async function approveRequest(options: ApproveOptions & {request: JoinRequest; caCertPath: string; caNotAfter: string}): Promise<Approved> {
  const {controlPlane, request} = options
  let attempt = await controlPlane.approveJoinRequest({requestId: request.id})
  for (let race = 0; race < maxAddressRaces; race++) {
    const signed = await signRequest({...options, ip: attempt.ip, prefixLength: attempt.prefixLength})
    const result = await controlPlane.approveJoinRequest({requestId: request.id, signed})
    if (result.approved) {
      return {requestId: request.id, project: result.project, device: await controlPlane.device({project: result.project, device: result.device})}
    }
    attempt = result
  }
  throw new ConflictError(`concurrent registrations kept taking the address of ${request.device}: run the approval again`)
}

/** Signs the given pending requests with the local CA; a request that fails does not stop the others. */
export async function approveJoinRequests(options: ApproveOptions & {requests: JoinRequest[]}): Promise<ApproveResult> {
  const ca = await loadCa({home: options.home, tools: options.tools})
  const result: ApproveResult = {approved: [], failed: []}
  for (const request of options.requests) {
    try {
      result.approved.push(await approveRequest({...options, request, caCertPath: ca.certPath, caNotAfter: ca.cert.notAfter}))
    } catch (error) {
      if (!(error instanceof VidsyncError)) throw error
      result.failed.push({requestId: request.id, project: request.project, device: {name: request.device}, message: error.message})
    }
  }
  return result
}

export interface WatchOptions extends ApproveOptions {
  timeoutMs: number
  /** Stop once this many devices are approved; not reaching it before the timeout is an error. */
  count?: number
  intervalMs?: number
  onApproved?: (approved: Approved) => void
  onFailed?: (failure: ApprovalFailure) => void
}

/**
 * Approves requests as they arrive until `count` are approved or the timeout passes: the
 * unattended mode for CI. A request that failed is not tried again in the same run.
 */
export async function watchJoinRequests(options: WatchOptions): Promise<ApproveResult> {
  const result: ApproveResult = {approved: [], failed: []}
  const failedIds = new Set<number>()
  const approveArrived = async () => {
    const remaining = options.count === undefined ? Infinity : options.count - result.approved.length
    const requests = (await options.controlPlane.listJoinRequests({project: options.project}))
      .filter((request) => !failedIds.has(request.id))
      .slice(0, remaining)
    if (requests.length > 0) {
      const round = await approveJoinRequests({...options, requests})
      for (const approved of round.approved) options.onApproved?.(approved)
      for (const failure of round.failed) {
        failedIds.add(failure.requestId)
        options.onFailed?.(failure)
      }
      result.approved.push(...round.approved)
      result.failed.push(...round.failed)
    }
    return options.count !== undefined && result.approved.length >= options.count
  }
  // Without a count, the timeout is the end of the watch, not a failure.
  await pollUntil(approveArrived, {
    timeoutMs: options.timeoutMs,
    intervalMs: options.intervalMs ?? 2000,
    onTimeout: () => {
      if (options.count === undefined) return
      throw new UnavailableError(`approved ${result.approved.length} of ${options.count} devices within ${formatDuration(Math.round(options.timeoutMs / 1000))}`)
    },
  })
  return result
}
