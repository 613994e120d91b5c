import {isIP} from 'node:net'

import {ConflictError, ExhaustedError, InvalidInputError, NotFoundError, RateLimitedError, UnavailableError, VidsyncError} from '../errors.js'
import type {CaEndorsement} from '../pki/endorse.js'
import type {SqlClient} from './sql-client.js'
import type {CertVersion} from '../versions/capabilities.js'

/**
 * How the control plane's SQL functions are reached: a SQL connection (embedded, Postgres) or
 * Supabase's `rpc` (supabase.ts). Arguments are named, as PostgREST requires.
 */
export interface Rpc {
  call<R>(fn: string, args?: Record<string, unknown>): Promise<R[]>
  /** Runs `work` in one database transaction, where the transport has them. */
  transaction?<T>(work: (rpc: Rpc) => Promise<T>): Promise<T>
}

const errorBySqlState: Record<string, new (message: string) => VidsyncError> = {
  VS400: InvalidInputError,
  VS404: NotFoundError,
  VS409: ConflictError,
  VS503: UnavailableError,
  VS507: ExhaustedError,
  VS429: RateLimitedError, // the message says when to retry
  '23505': ConflictError, // unique violation: a concurrent create won the race
  '23P01': ConflictError, // exclusion violation: a concurrent project took an overlapping range
}

/** Turns a database error raised by the control-plane functions into the matching VidsyncError. */
export function mapDatabaseError(error: unknown): unknown {
  const {code, message} = error as {code?: string; message?: string}
  const ErrorClass = code ? errorBySqlState[code] : undefined
  return ErrorClass && message ? new ErrorClass(message) : error
}

/** Calls `vidsync.<fn>(name => value, ...)` over a SQL connection. */
export class SqlRpc implements Rpc {
  constructor(private readonly sql: SqlClient) {}

  async call<R>(fn: string, args: Record<string, unknown> = {}): Promise<R[]> {
    if (!/^[a-z_]+$/.test(fn)) throw new Error(`invalid control-plane function name ${fn}`)
    const names = Object.keys(args).filter((name) => args[name] !== undefined)
    for (const name of names) if (!/^p_[a-z0-9_]+$/.test(name)) throw new Error(`invalid argument name ${name}`)
    const placeholders = names.map((name, index) => `${name} => $${index + 1}`).join(', ')
    try {
      return await this.sql.query<R>(`SELECT * FROM vidsync.${fn}(${placeholders})`, names.map((name) => args[name]))
    } catch (error) {
      throw mapDatabaseError(error)
    }
  }

  transaction<T>(work: (rpc: Rpc) => Promise<T>): Promise<T> {
    return this.sql.transaction((tx) => work(new SqlRpc(tx)))
  }
}

export interface Project {
  name: string
  cidr: string
  quarantineSeconds: number
  createdAt: string
}

export interface ProjectSummary extends Project {
  poolSize: number
  allocated: number
}

export interface PopulateResult {
  project: string
  cidr: string
  added: number
  total: number
}

export interface PoolStatus {
  project: string
  cidr: string
  total: number
  allocated: number
  quarantined: number
  free: number
}

export type AddressState = 'allocated' | 'free' | 'quarantined'

export interface PoolEntry {
  ip: string
  state: AddressState
  device: string | null
  quarantinedUntil: string | null
}

export interface Allocation {
  deviceId: number
  device: string
  ip: string
}

export interface Release {
  device: string
  ip: string
  quarantinedUntil: string
}

export interface Registration extends Allocation {
  prefixLength: number
}

export interface DeviceRecord {
  name: string
  ip: string
  status: 'active' | 'revoked'
  lighthouse: boolean
  endpoint: string | null
  relay: boolean
  groups: string[]
  syncthingId: string | null
  operatorKey: boolean
  publicKey: string | null
  fingerprint: string | null
  notAfter: string | null
  createdAt: string
  revokedAt: string | null
  /** The device's last heartbeat (written at most every 5 minutes while it runs `up`), null when never seen. */
  lastSeenAt: string | null
}

/** A revocation as `device show` reports it: the active devices that applied it (acknowledged) and those that have not yet. */
export interface RevocationAcks {
  revokedAt: string
  /** The project version the revocation produced: devices that applied it or a later one acknowledged it. */
  version: number | null
  acknowledged: number
  pending: number
  /** Names of the active devices that have not acknowledged it (never refreshed, or not since). */
  pendingDevices: string[]
}

export interface Lighthouse {
  name: string
  ip: string
  endpoint: string
  relay: boolean
}

export interface ProjectNetwork {
  cidr: string
  lighthouses: Lighthouse[]
  blocklist: string[]
}

export interface Revocation extends Release {
  fingerprints: string[]
}

export interface RegisterOptions {
  project: string
  device: string
  publicKey: string
  publicKeySha256: string
  groups?: string[]
  syncthingId?: string
  lighthouse?: {endpoint: string; relay: boolean}
  operatorKey?: boolean
}

export type InviteState = 'active' | 'expired' | 'revoked' | 'used'

export interface Invite {
  id: number
  project: string
  groups: string[]
  maxUses: number
  uses: number
  state: InviteState
  expiresAt: string
  revokedAt: string | null
  createdAt: string
  /** Devices that redeemed it and wait for approval. */
  pending: number
}

export interface JoinRequest {
  id: number
  project: string
  device: string
  publicKey: string
  groups: string[]
  inviteId: number
  /** The address the request came from ('local' on this machine), null when unknown. */
  source: string | null
  createdAt: string
}

export interface ApprovalAttempt {
  approved: boolean
  project: string
  device: string
  /** The committed address when approved, else the candidate to sign for. */
  ip: string
  prefixLength: number
}

export interface Redemption {
  project: string
  device: string
  /** The join request's status: pending, or where a retry finds it. */
  status: 'pending' | 'approved' | 'rejected'
}

/** Where a device's join stands: waiting, turned down, or the status of the device it became. */
export type JoinStatus = 'pending' | 'rejected' | DeviceStatus

export type DeviceStatus = 'active' | 'revoked' | 'released'

export interface DeviceBundle {
  project: string
  device: string
  status: JoinStatus
  /** The bundle's files by name, once the device is active. */
  bundle: Record<string, string> | null
}

/** A CA the project trusts: its first one (no endorsement) or a successor endorsed by its predecessor. */
export interface TrustedCa {
  fingerprint: string
  pem: string
  endorsement: CaEndorsement | null
}

interface TrustedCaRow {
  fingerprint: string
  pem: string
  endorser: string | null
  signature: string | null
}

const toTrustedCa = (row: TrustedCaRow): TrustedCa => ({
  fingerprint: row.fingerprint,
  pem: row.pem,
  endorsement: row.endorser && row.signature ? {ca: row.fingerprint, endorser: row.endorser, signature: row.signature} : null,
})

export interface Peer {
  name: string
  ip: string
  syncthingId: string | null
}

export interface DeviceRefresh {
  project: string
  device: string
  status: DeviceStatus
  /** Null, like cidr, and the lists empty, unless the device is active. */
  ip: string | null
  cidr: string | null
  lighthouses: Lighthouse[]
  blocklist: string[]
  peers: Peer[]
}

/** A device's refresh by version (device_sync): nothing changed, what changed, or everything. */
export type DeviceSync =
  | {state: 'unchanged'; version: number}
  | {
      state: 'delta'
      version: number
      status: DeviceStatus
      /** Peers added or changed since the known version. */
      peers: Peer[]
      /** Names of peers gone since (revoked, released). */
      removed: string[]
      blocklistAdded: string[]
      /** Fingerprints of revoked certificates that expired since. */
      blocklistRemoved: string[]
      /** The whole list, when it changed. */
      lighthouses?: Lighthouse[]
      /** The project's new Realtime topic, when a device left since (migration 012). */
      topic?: string
    }
  | {
      state: 'full'
      /** Null for a device that is no longer active. */
      version: number | null
      project: string
      device: string
      status: DeviceStatus
      ip?: string
      cidr?: string
      /** The LISTEN channel on which the project's new versions are notified (plain Postgres). */
      channel?: string
      /** The project's Supabase Realtime topic, on which its new versions are broadcast (migration 010). */
      topic?: string
      lighthouses: Lighthouse[]
      blocklist: string[]
      peers: Peer[]
    }

/** Listening for a project's new versions on one channel or topic. */
export interface ChangeFeedHandle {
  close(): Promise<void>
  /** Changes are pushed right now (false while reconnecting: the slow poll carries on). */
  readonly active: boolean
  /** Listens on `name` instead, the old one left: a Realtime topic drawn anew when a device left. */
  move?(name: string): Promise<void>
}

/** Push of a project's new versions, where the backend has it (Postgres LISTEN/NOTIFY, Supabase Realtime). */
export interface ChangeFeed {
  /** Which name from device_sync's full answer this feed listens on: the LISTEN channel or the Realtime topic. */
  readonly source: 'channel' | 'topic'
  /**
   * Calls `onChange` with each new version notified on `name`, and without one after a
   * reconnection (notifications may have been missed). close() stops listening; `active` says
   * whether changes are pushed right now (false while reconnecting: the slow poll carries on).
   */
  listen(name: string, onChange: (version?: number) => void): Promise<ChangeFeedHandle>
}

export interface StaleDevice {
  device: string
  ip: string
  lastSeenAt: string | null
  createdAt: string
}

type Timestamp = Date | string

/**
 * A join request's source as the operator may see it: an address or 'local'. The schema allows
 * nothing else since migration 006; a control plane that answers otherwise gets null, so no
 * terminal escape sequence reaches the operator's screen.
 */
export const requestSource = (source: string | null): string | null =>
  source !== null && (source === 'local' || isIP(source) !== 0) ? source : null

export interface CertLifetime {
  /** Lifetime of the project's new device certificates, in seconds. */
  deviceCertSeconds: number
  /** Set for the project (else the default). */
  configured: boolean
  /** A signer has served the project: certificates are renewed automatically. */
  signer: boolean
}

interface CertLifetimeRow {
  device_cert_seconds: number
  configured: boolean
  signer: boolean
}

const toCertLifetime = (row: CertLifetimeRow): CertLifetime => ({deviceCertSeconds: row.device_cert_seconds, configured: row.configured, signer: row.signer})

/** Where a renewal's new key stands: none asked for, waiting for the operator's approval, approved. */
export type KeyChange = 'none' | 'pending' | 'approved'

export interface DeviceCertificate {
  fingerprint: string | null
  notAfter: string | null
  pem: string | null
  renewalPending: boolean
  /** When the open renewal was asked for (the control plane's clock), null without one. */
  renewalRequestedAt: string | null
  /** The open renewal's key change, null without one. */
  keyChange: KeyChange | null
  /** The control plane's clock when it answered. */
  serverNow: string
}

export interface KeyChangeApproval {
  device: string
  /** sha256 of the new public key's raw bytes (as `vidsync key create` prints it). */
  publicKeySha256: string
  requestedAt: string
  approvedAt: string
}

export interface PendingRenewal {
  requestId: number
  device: string
  ip: string
  prefixLength: number
  groups: string[]
  publicKey: string
  lifetimeSeconds: number
  requestedAt: string
  /** A new key (publicKey): signed only once the operator approved it. */
  keyChange: KeyChange
}

const iso = (value: Timestamp): string => new Date(value).toISOString()
const isoOrNull = (value: Timestamp | null): string | null => (value === null ? null : iso(value))

function single<R>(rows: R[], fn: string): R {
  const [row] = rows
  if (!row) throw new Error(`control-plane function ${fn} returned no row`)
  return row
}

interface DeviceRow {
  name: string
  ip: string
  status: 'active' | 'revoked'
  lighthouse: boolean
  endpoint: string | null
  relay: boolean
  groups: string[]
  syncthing_id: string | null
  operator_key: boolean
  public_key: string | null
  fingerprint: string | null
  not_after: Timestamp | null
  created_at: Timestamp
  revoked_at: Timestamp | null
  last_seen_at: Timestamp | null
}

interface InviteRow {
  id: number | string
  project: string
  groups: string[]
  max_uses: number
  uses: number
  state: InviteState
  expires_at: Timestamp
  revoked_at: Timestamp | null
  created_at: Timestamp
  pending: number
}

const toInvite = (row: InviteRow): Invite => ({
  id: Number(row.id),
  project: row.project,
  groups: row.groups,
  maxUses: row.max_uses,
  uses: row.uses,
  state: row.state,
  expiresAt: iso(row.expires_at),
  revokedAt: isoOrNull(row.revoked_at),
  createdAt: iso(row.created_at),
  pending: row.pending,
})

/** How to take back one write, and what the user can do when that fails too. */
interface Undo {
  run: () => Promise<unknown>
  otherwise: string
}

/** Typed calls of the control-plane contract in migrations/. */
export class ControlPlane {
  /** Inside `transaction` on a transport without transactions: how to take back each write so far. */
  readonly #undo: Undo[] | undefined
  /** Push of new versions, where the backend has it; devices poll otherwise. */
  changes?: ChangeFeed

  constructor(
    readonly rpc: Rpc,
    undo?: Undo[],
  ) {
    this.#undo = undo
  }

  /**
   * Runs `work` against a control plane whose calls share one transaction: all of them take
   * effect or none. Transports without transactions (the Supabase API) run the calls one by one
   * and, when `work` fails, undo the registrations it made, as a rollback would.
   */
  async transaction<T>(work: (controlPlane: ControlPlane) => Promise<T>): Promise<T> {
    if (this.rpc.transaction) return this.rpc.transaction((rpc) => work(new ControlPlane(rpc)))
    const undo: Undo[] = []
    try {
      return await work(new ControlPlane(this.rpc, undo))
    } catch (error) {
      const left: string[] = []
      for (const step of undo.reverse()) {
        await step.run().catch((failure: Error) => left.push(`${failure.message}: ${step.otherwise}`))
      }
      if (left.length > 0 && error instanceof Error) error.message += `; undoing it failed too (${left.join('; ')})`
      throw error
    }
  }

  async createProject(options: {name: string; cidr: string; quarantineSeconds?: number}): Promise<Project> {
    const rows = await this.rpc.call<{name: string; cidr: string; quarantine_seconds: number; created_at: Timestamp}>(
      'create_project',
      {p_name: options.name, p_cidr: options.cidr, p_quarantine_seconds: options.quarantineSeconds},
    )
    const row = single(rows, 'create_project')
    return {name: row.name, cidr: row.cidr, quarantineSeconds: row.quarantine_seconds, createdAt: iso(row.created_at)}
  }

  async listProjects(): Promise<ProjectSummary[]> {
    const rows = await this.rpc.call<{
      name: string
      cidr: string
      quarantine_seconds: number
      created_at: Timestamp
      pool_size: number
      allocated: number
    }>('list_projects')
    return rows.map((row) => ({
      name: row.name,
      cidr: row.cidr,
      quarantineSeconds: row.quarantine_seconds,
      createdAt: iso(row.created_at),
      poolSize: row.pool_size,
      allocated: row.allocated,
    }))
  }

  async populatePool(options: {project: string; cidr?: string}): Promise<PopulateResult> {
    const rows = await this.rpc.call<PopulateResult>('populate_pool', {p_project: options.project, p_cidr: options.cidr})
    return single(rows, 'populate_pool')
  }

  async poolStatus(options: {project: string}): Promise<PoolStatus> {
    const rows = await this.rpc.call<PoolStatus>('pool_status', {p_project: options.project})
    return single(rows, 'pool_status')
  }

  async poolList(options: {project: string; allocatedOnly?: boolean}): Promise<PoolEntry[]> {
    const rows = await this.rpc.call<{ip: string; state: AddressState; device: string | null; quarantined_until: Timestamp | null}>(
      'pool_list',
      {p_project: options.project, p_allocated_only: options.allocatedOnly ?? false},
    )
    return rows.map((row) => ({
      ip: row.ip,
      state: row.state,
      device: row.device,
      quarantinedUntil: isoOrNull(row.quarantined_until),
    }))
  }

  async allocateIp(options: {project: string; device: string}): Promise<Allocation> {
    const rows = await this.rpc.call<{device_id: number | string; device: string; ip: string}>('allocate_ip', {
      p_project: options.project,
      p_device: options.device,
    })
    const row = single(rows, 'allocate_ip')
    return {deviceId: Number(row.device_id), device: row.device, ip: row.ip}
  }

  async releaseIp(options: {project: string; device: string}): Promise<Release> {
    const rows = await this.rpc.call<{device: string; ip: string; quarantined_until: Timestamp}>('release_ip', {
      p_project: options.project,
      p_device: options.device,
    })
    const row = single(rows, 'release_ip')
    return {device: row.device, ip: row.ip, quarantinedUntil: iso(row.quarantined_until)}
  }

  async registerDevice(options: RegisterOptions): Promise<Registration> {
    const rows = await this.rpc.call<{device_id: number | string; device: string; ip: string; prefix_length: number}>(
      'register_device',
      {
        p_project: options.project,
        p_device: options.device,
        p_public_key: options.publicKey,
        p_public_key_sha256: options.publicKeySha256,
        p_groups: options.groups ?? [],
        p_syncthing_id: options.syncthingId,
        p_lighthouse: options.lighthouse !== undefined,
        p_endpoint: options.lighthouse?.endpoint,
        p_relay: options.lighthouse?.relay ?? false,
        p_operator_key: options.operatorKey ?? false,
      },
    )
    const row = single(rows, 'register_device')
    this.#undo?.push({
      run: () => this.rpc.call('discard_registration', {p_project: options.project, p_device: row.device, p_device_id: row.device_id}),
      otherwise: `release ${row.device} with \`vidsync device release ${options.project} ${row.device}\``,
    })
    return {deviceId: Number(row.device_id), device: row.device, ip: row.ip, prefixLength: row.prefix_length}
  }

  async recordCertificate(options: {project: string; device: string; fingerprint: string; notAfter: string; pem: string}) {
    await this.rpc.call('record_certificate', {
      p_project: options.project,
      p_device: options.device,
      p_fingerprint: options.fingerprint,
      p_not_after: options.notAfter,
      p_pem: options.pem,
    })
  }

  /** Fixes the project's certificate version at its first certificate; ConflictError when `version` differs from it. */
  async recordCertVersion(options: {project: string; version: CertVersion}): Promise<CertVersion> {
    const rows = await this.rpc.call<{cert_version: number}>('record_cert_version', {p_project: options.project, p_version: options.version})
    return single(rows, 'record_cert_version').cert_version as CertVersion
  }

  /** The project's certificate version, null before its first certificate. */
  async projectCertVersion(options: {project: string}): Promise<CertVersion | null> {
    const rows = await this.rpc.call<{cert_version: number | null}>('project_cert_version', {p_project: options.project})
    return single(rows, 'project_cert_version').cert_version as CertVersion | null
  }

  async listDevices(options: {project: string; device?: string}): Promise<DeviceRecord[]> {
    const rows = await this.rpc.call<DeviceRow>('list_devices', {p_project: options.project, p_device: options.device})
    return rows.map((row) => ({
      name: row.name,
      ip: row.ip,
      status: row.status,
      lighthouse: row.lighthouse,
      endpoint: row.endpoint,
      relay: row.relay,
      groups: row.groups,
      syncthingId: row.syncthing_id,
      operatorKey: row.operator_key,
      publicKey: row.public_key,
      fingerprint: row.fingerprint,
      notAfter: isoOrNull(row.not_after),
      createdAt: iso(row.created_at),
      revokedAt: isoOrNull(row.revoked_at),
      lastSeenAt: isoOrNull(row.last_seen_at ?? null),
    }))
  }

  async device(options: {project: string; device: string}): Promise<DeviceRecord> {
    return single(await this.listDevices(options), 'list_devices')
  }

  /** A revoked device's revocation and how many active devices applied it; null for a device never revoked. */
  async revocation(options: {project: string; device: string}): Promise<RevocationAcks | null> {
    const rows = await this.rpc.call<{revoked_at: Timestamp; revoked_version: number | string | null; acknowledged: number; pending: number; pending_devices: string[]}>(
      'revocation_acks',
      {p_project: options.project, p_device: options.device},
    )
    const row = rows[0]
    if (!row) return null
    return {
      revokedAt: iso(row.revoked_at),
      version: row.revoked_version === null ? null : Number(row.revoked_version),
      acknowledged: row.acknowledged,
      pending: row.pending,
      pendingDevices: row.pending_devices,
    }
  }

  async projectNetwork(options: {project: string}): Promise<ProjectNetwork> {
    const rows = await this.rpc.call<ProjectNetwork>('project_network', {p_project: options.project})
    return single(rows, 'project_network')
  }

  async revokeDevice(options: {project: string; device: string}): Promise<Revocation> {
    const rows = await this.rpc.call<{device: string; ip: string; quarantined_until: Timestamp; fingerprints: string[]}>(
      'revoke_device',
      {p_project: options.project, p_device: options.device},
    )
    const row = single(rows, 'revoke_device')
    return {device: row.device, ip: row.ip, quarantinedUntil: iso(row.quarantined_until), fingerprints: row.fingerprints}
  }

  async releaseDevice(options: {project: string; device: string}): Promise<Release> {
    const rows = await this.rpc.call<{device: string; ip: string; quarantined_until: Timestamp}>('release_device', {
      p_project: options.project,
      p_device: options.device,
    })
    const row = single(rows, 'release_device')
    return {device: row.device, ip: row.ip, quarantinedUntil: iso(row.quarantined_until)}
  }

  // Invites and approval: operator side (service role).

  async createInvite(options: {project: string; codeSha256: string; maxUses?: number; expiresSeconds?: number; groups?: string[]}): Promise<Invite> {
    const rows = await this.rpc.call<InviteRow>('create_invite', {
      p_project: options.project,
      p_code_sha256: options.codeSha256,
      p_max_uses: options.maxUses,
      p_expires_seconds: options.expiresSeconds,
      p_groups: options.groups ?? [],
    })
    return toInvite(single(rows, 'create_invite'))
  }

  async listInvites(options: {project: string}): Promise<Invite[]> {
    return (await this.rpc.call<InviteRow>('list_invites', {p_project: options.project})).map(toInvite)
  }

  async revokeInvite(options: {project: string; id: number}): Promise<{id: number; revokedAt: string; rejected: number}> {
    const rows = await this.rpc.call<{id: number | string; revoked_at: Timestamp; rejected: number}>('revoke_invite', {
      p_project: options.project,
      p_id: options.id,
    })
    const row = single(rows, 'revoke_invite')
    return {id: Number(row.id), revokedAt: iso(row.revoked_at), rejected: row.rejected}
  }

  async listJoinRequests(options: {project?: string} = {}): Promise<JoinRequest[]> {
    const rows = await this.rpc.call<{
      id: number | string
      project: string
      device: string
      public_key: string
      groups: string[]
      invite_id: number | string
      source: string | null
      created_at: Timestamp
    }>('list_join_requests', {p_project: options.project})
    return rows.map((row) => ({
      id: Number(row.id),
      project: row.project,
      device: row.device,
      publicKey: row.public_key,
      groups: row.groups,
      inviteId: Number(row.invite_id),
      source: requestSource(row.source),
      createdAt: iso(row.created_at),
    }))
  }

  /**
   * One step of approving a join request (see approve_join_request): without `signed` it only
   * answers the candidate address; with it, it commits when the address is still the one signed for.
   */
  async approveJoinRequest(options: {
    requestId: number
    signed?: {ip: string; fingerprint: string; notAfter: string; certPem: string; bundle: Record<string, string>}
  }): Promise<ApprovalAttempt> {
    const {signed} = options
    const rows = await this.rpc.call<{approved: boolean; project: string; device: string; ip: string; prefix_length: number}>(
      'approve_join_request',
      {
        p_request_id: options.requestId,
        p_ip: signed?.ip,
        p_fingerprint: signed?.fingerprint,
        p_not_after: signed?.notAfter,
        p_cert_pem: signed?.certPem,
        p_bundle: signed?.bundle,
      },
    )
    const row = single(rows, 'approve_join_request')
    return {approved: row.approved, project: row.project, device: row.device, ip: row.ip, prefixLength: row.prefix_length}
  }

  async reclaimStale(options: {project: string; staleSeconds: number; dryRun?: boolean}): Promise<StaleDevice[]> {
    const rows = await this.rpc.call<{device: string; ip: string; last_seen_at: Timestamp | null; created_at: Timestamp}>('reclaim_stale', {
      p_project: options.project,
      p_stale_seconds: options.staleSeconds,
      p_dry_run: options.dryRun ?? false,
    })
    return rows.map((row) => ({device: row.device, ip: row.ip, lastSeenAt: isoOrNull(row.last_seen_at), createdAt: iso(row.created_at)}))
  }

  // Device side (anon key): each call carries the device's token or the invite code.

  /** Redeems an invite for this device; a refused code becomes the matching error. */
  async redeemInvite(options: {code: string; token: string; device: string; publicKey: string}): Promise<Redemption> {
    const rows = await this.rpc.call<Redemption & {error_code: string | null; error_message: string | null}>(
      'redeem_invite',
      {p_code: options.code, p_token: options.token, p_device: options.device, p_public_key: options.publicKey},
    )
    const row = single(rows, 'redeem_invite')
    if (row.error_code) throw mapDatabaseError({code: row.error_code, message: row.error_message})
    return {project: row.project, device: row.device, status: row.status}
  }

  async deviceBundle(options: {token: string}): Promise<DeviceBundle> {
    return single(await this.rpc.call<DeviceBundle>('device_bundle', {p_token: options.token}), 'device_bundle')
  }

  /** The device's heartbeat; answers its project's lighthouses, blocklist and peers. */
  async deviceRefresh(options: {token: string; syncthingId?: string}): Promise<DeviceRefresh> {
    const rows = await this.rpc.call<DeviceRefresh>('device_refresh', {
      p_token: options.token,
      p_syncthing_id: options.syncthingId,
    })
    return single(rows, 'device_refresh')
  }

  /**
   * The device's refresh by version: `knownVersion` is that of the state it has (undefined: none);
   * `appliedVersion`, sent once per newly applied version, is recorded as its acknowledgement.
   */
  async deviceSync(options: {token: string; knownVersion?: number | null; syncthingId?: string; appliedVersion?: number}): Promise<DeviceSync> {
    const rows = await this.rpc.call<{state: DeviceSync['state']; version: number | string | null; body: Record<string, unknown> | null}>('device_sync', {
      p_token: options.token,
      p_known_version: options.knownVersion ?? undefined,
      p_syncthing_id: options.syncthingId,
      p_applied_version: options.appliedVersion,
    })
    const row = single(rows, 'device_sync')
    const version = row.version === null ? null : Number(row.version)
    if (row.state === 'unchanged') return {state: 'unchanged', version: Number(version)}
    if (row.state === 'delta') return {state: 'delta', version: Number(version), ...(row.body as Omit<Extract<DeviceSync, {state: 'delta'}>, 'state' | 'version'>)}
    // A device that is no longer active gets its status and nothing else.
    const body = row.body as Omit<Extract<DeviceSync, {state: 'full'}>, 'state' | 'version' | 'lighthouses' | 'blocklist' | 'peers'> &
      Partial<Pick<Extract<DeviceSync, {state: 'full'}>, 'lighthouses' | 'blocklist' | 'peers'>>
    return {...body, lighthouses: body.lighthouses ?? [], blocklist: body.blocklist ?? [], peers: body.peers ?? [], state: 'full', version}
  }

  /** The lifetime of the project's new device certificates: set, or the default (1 year; 30 days once a signer serves it). */
  async certLifetime(options: {project: string}): Promise<CertLifetime> {
    const rows = await this.rpc.call<CertLifetimeRow>('project_cert_lifetime', {p_project: options.project})
    return toCertLifetime(single(rows, 'project_cert_lifetime'))
  }

  /** Sets the project's device certificate lifetime; null goes back to the default. */
  async setCertLifetime(options: {project: string; seconds: number | null}): Promise<CertLifetime> {
    const rows = await this.rpc.call<CertLifetimeRow>('set_cert_lifetime', {p_project: options.project, p_seconds: options.seconds})
    return toCertLifetime(single(rows, 'set_cert_lifetime'))
  }

  /**
   * Device: asks for a new certificate (one open request at a time), for its registered key or,
   * with `publicKey`, for a new one, which waits for the operator's approval.
   */
  async deviceRequestRenewal(options: {token: string; fingerprint?: string; publicKey?: string}): Promise<{requestId: number; status: string; requestedAt: string; keyChange: KeyChange}> {
    const rows = await this.rpc.call<{request_id: number | string; status: string; requested_at: Timestamp; key_change: KeyChange}>('device_request_renewal', {
      p_token: options.token,
      p_fingerprint: options.fingerprint,
      p_public_key: options.publicKey,
    })
    const row = single(rows, 'device_request_renewal')
    return {requestId: Number(row.request_id), status: row.status, requestedAt: iso(row.requested_at), keyChange: row.key_change}
  }

  /** Device: its newest certificate, its open renewal if any, and the control plane's clock. */
  async deviceCertificate(options: {token: string}): Promise<DeviceCertificate> {
    const rows = await this.rpc.call<{
      fingerprint: string | null
      not_after: Timestamp | null
      pem: string | null
      renewal_pending: boolean
      renewal_requested_at: Timestamp | null
      key_change: KeyChange | null
      server_now: Timestamp
    }>('device_certificate', {p_token: options.token})
    const row = single(rows, 'device_certificate')
    return {
      fingerprint: row.fingerprint,
      notAfter: isoOrNull(row.not_after),
      pem: row.pem,
      renewalPending: row.renewal_pending,
      renewalRequestedAt: isoOrNull(row.renewal_requested_at),
      keyChange: row.key_change,
      serverNow: iso(row.server_now),
    }
  }

  /**
   * Operator: approves the new key that an active device asked a certificate for (with
   * `publicKeySha256`, only that key); the signer then signs it.
   */
  async approveKeyChange(options: {project: string; device: string; publicKeySha256?: string}): Promise<KeyChangeApproval> {
    const rows = await this.rpc.call<{device: string; public_key_sha256: string; requested_at: Timestamp; approved_at: Timestamp}>('approve_key_change', {
      p_project: options.project,
      p_device: options.device,
      p_public_key_sha256: options.publicKeySha256,
    })
    const row = single(rows, 'approve_key_change')
    return {device: row.device, publicKeySha256: row.public_key_sha256, requestedAt: iso(row.requested_at), approvedAt: iso(row.approved_at)}
  }

  /** Device: the Syncthing IDs of its project's revoked devices, to remove from its Syncthing. */
  async deviceRevokedPeers(options: {token: string}): Promise<{device: string; syncthingId: string}[]> {
    const rows = await this.rpc.call<{device: string; syncthing_id: string}>('device_revoked_peers', {p_token: options.token})
    return rows.map((row) => ({device: row.device, syncthingId: row.syncthing_id}))
  }

  /** Signer: records that a signer serves the project; the open renewals of its active, non-revoked devices. */
  async signerPending(options: {project: string}): Promise<PendingRenewal[]> {
    const rows = await this.rpc.call<{
      request_id: number | string
      device: string
      ip: string
      prefix_length: number
      groups: string[]
      public_key: string
      lifetime_seconds: number
      requested_at: Timestamp
      key_change: KeyChange
    }>('signer_pending', {p_project: options.project})
    return rows.map((row) => ({
      requestId: Number(row.request_id),
      device: row.device,
      ip: row.ip.split('/')[0] ?? row.ip,
      prefixLength: row.prefix_length,
      groups: row.groups,
      publicKey: row.public_key,
      lifetimeSeconds: row.lifetime_seconds,
      requestedAt: iso(row.requested_at),
      keyChange: row.key_change,
    }))
  }

  /**
   * Signer: records the certificate signed for a renewal, for `publicKey` (the key it signed);
   * refused (conflict) when the device was revoked meanwhile, or for a key change not approved.
   */
  async completeRenewal(options: {requestId: number; fingerprint: string; notAfter: string; pem: string; publicKey?: string}): Promise<void> {
    const rows = await this.rpc.call<{device: string; fingerprint: string | null}>('complete_renewal', {
      p_request_id: options.requestId,
      p_fingerprint: options.fingerprint,
      p_not_after: options.notAfter,
      p_pem: options.pem,
      p_public_key: options.publicKey,
    })
    const row = single(rows, 'complete_renewal')
    if (row.fingerprint === null) throw new ConflictError(`device "${row.device}" was revoked or released meanwhile: its renewal is refused`)
  }

  /** Adds a CA to the project's trusted set (`endorsement` null for its first); the same CA again changes nothing. */
  async addProjectCa(options: {project: string; fingerprint: string; pem: string; endorsement: CaEndorsement | null}): Promise<void> {
    await this.rpc.call('add_project_ca', {
      p_project: options.project,
      p_fingerprint: options.fingerprint,
      p_pem: options.pem,
      p_endorser: options.endorsement?.endorser,
      p_signature: options.endorsement?.signature,
    })
  }

  /**
   * `ca rotate`'s one write: every project trusts the new CA (endorsed by the old one), a project
   * that never rotated recording the old CA first. One call, so one transaction on every backend.
   */
  async rotateProjectCas(options: {old: {fingerprint: string; pem: string}; fingerprint: string; pem: string; endorsement: CaEndorsement}): Promise<string[]> {
    const rows = await this.rpc.call<{project: string; trusted: number}>('rotate_project_cas', {
      p_old_fingerprint: options.old.fingerprint,
      p_old_pem: options.old.pem,
      p_fingerprint: options.fingerprint,
      p_pem: options.pem,
      p_endorser: options.endorsement.endorser,
      p_signature: options.endorsement.signature,
    })
    return rows.map((row) => row.project)
  }

  /** The CAs the project trusts, oldest first; empty when it never rotated (it trusts the operator's CA). */
  async projectTrustedCas(options: {project: string}): Promise<TrustedCa[]> {
    return (await this.rpc.call<TrustedCaRow>('project_trusted_cas', {p_project: options.project})).map(toTrustedCa)
  }

  /** The newest certificate of each active device of the project. */
  async projectDeviceCertificates(options: {project: string}): Promise<{device: string; fingerprint: string; pem: string}[]> {
    return this.rpc.call<{device: string; fingerprint: string; pem: string}>('project_device_certificates', {p_project: options.project})
  }

  /** Retires a CA of the project: devices drop it at their next refresh. */
  async retireProjectCa(options: {project: string; fingerprint: string}): Promise<void> {
    await this.rpc.call('retire_project_ca', {p_project: options.project, p_fingerprint: options.fingerprint})
  }

  /** Device: the CAs its project trusts with their endorsements, oldest first (empty: never rotated). */
  async deviceTrustedCas(options: {token: string}): Promise<TrustedCa[]> {
    return (await this.rpc.call<TrustedCaRow>('device_trusted_cas', {p_token: options.token})).map(toTrustedCa)
  }

  async schemaVersion(): Promise<number> {
    return single(await this.rpc.call<{version: number}>('schema_version'), 'schema_version').version
  }
}
