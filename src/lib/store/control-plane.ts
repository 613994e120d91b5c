import {ConflictError, ExhaustedError, InvalidInputError, NotFoundError, VidsyncError} from '../errors.js'
import type {SqlClient} from './sql-client.js'

/**
 * How the control plane's SQL functions are reached: a SQL connection (embedded, Postgres) or,
 * later, Supabase's `rpc`. Arguments are named, as PostgREST requires.
 */
export interface Rpc {
  call<R>(fn: string, args?: Record<string, unknown>): Promise<R[]>
}

const errorBySqlState: Record<string, new (message: string) => VidsyncError> = {
  VS400: InvalidInputError,
  VS404: NotFoundError,
  VS409: ConflictError,
  VS507: ExhaustedError,
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
    for (const name of names) if (!/^p_[a-z_]+$/.test(name)) throw new Error(`invalid argument name ${name}`)
    const placeholders = names.map((name, index) => `${name} => $${index + 1}`).join(', ')
    try {
      return await this.sql.query<R>(`SELECT * FROM vidsync.${fn}(${placeholders})`, names.map((name) => args[name]))
    } catch (error) {
      throw mapDatabaseError(error)
    }
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

type Timestamp = Date | string

const iso = (value: Timestamp): string => new Date(value).toISOString()
const isoOrNull = (value: Timestamp | null): string | null => (value === null ? null : iso(value))

function single<R>(rows: R[], fn: string): R {
  const [row] = rows
  if (!row) throw new Error(`control-plane function ${fn} returned no row`)
  return row
}

/** Typed calls of the control-plane contract in migrations/. */
export class ControlPlane {
  constructor(readonly rpc: Rpc) {}

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
}
