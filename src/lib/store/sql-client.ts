import {existsSync} from 'node:fs'
import {readFile} from 'node:fs/promises'
import {createRequire} from 'node:module'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import type {PGlite} from '@electric-sql/pglite'
import type pg from 'pg'

import {UnavailableError} from '../errors.js'

// The drivers load when a client of theirs is made, not with this module: a command on the
// embedded database never loads pg, one on Postgres never loads PGlite (see bench/cli.ts).
const require = createRequire(import.meta.url)

/**
 * pg, loaded on first use. On load pg asks whether it runs in a Cloudflare Worker; where
 * `navigator` is missing (Node.js 20) it finds out by making a fetch Response, which loads Node's
 * fetch implementation (about 20 ms of CPU and 35 ms of wall time per command, see BENCHMARKS.md)
 * that no vidsync command on Postgres uses. A `navigator` naming Node.js stands in for the length
 * of the load; Node.js 21 and later have their own.
 */
export function loadPg(): typeof pg {
  const standIn = !('navigator' in globalThis)
  if (standIn) Object.defineProperty(globalThis, 'navigator', {value: {userAgent: 'Node.js'}, configurable: true})
  try {
    return require('pg') as typeof pg
  } finally {
    if (standIn) Reflect.deleteProperty(globalThis, 'navigator')
  }
}

/** The smallest SQL surface vidsync needs; PGlite and node-postgres both provide it. */
export interface SqlClient {
  query<R>(text: string, params?: unknown[]): Promise<R[]>
  /** Runs a script of several statements (migrations). */
  exec(script: string): Promise<void>
  transaction<T>(work: (tx: SqlClient) => Promise<T>): Promise<T>
  close(): Promise<void>
}

/** The URL with its password replaced, safe to print. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return '<unparseable database URL>'
  }
}

const tooManyConnections = '53300'

const unreachableCodes: Record<string, string> = {
  [tooManyConnections]: 'too many connections',
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ECONNRESET: 'connection reset',
  '3D000': 'database does not exist',
  '28P01': 'password authentication failed',
  '28000': 'authentication rejected',
}

function unreachable(url: string, error: unknown): UnavailableError | undefined {
  const {code, message} = error as {code?: string; message?: string}
  const reason = (code && unreachableCodes[code]) ?? (/timeout/i.test(message ?? '') ? 'connection timed out' : undefined)
  if (!reason) return undefined
  return new UnavailableError(
    `cannot reach the database at ${redactUrl(url)} (${reason}): check VIDSYNC_DATABASE_URL`,
    {hint: 'or --database-url'},
  )
}

class PgTransaction implements SqlClient {
  constructor(protected readonly client: pg.ClientBase) {}

  async query<R>(text: string, params?: unknown[]): Promise<R[]> {
    const result = await this.client.query(text, params)
    return result.rows as R[]
  }

  async exec(script: string): Promise<void> {
    await this.client.query(script)
  }

  async transaction<T>(work: (tx: SqlClient) => Promise<T>): Promise<T> {
    return work(this)
  }

  async close(): Promise<void> {}
}

/** A pool of connections to a Postgres server. */
export class PostgresClient implements SqlClient {
  private readonly pool: pg.Pool

  constructor(
    private readonly url: string,
    maxConnections = 4,
  ) {
    const {Pool} = loadPg()
    this.pool = new Pool({connectionString: url, max: maxConnections, connectionTimeoutMillis: 10_000})
    // An idle connection dropped by the server must not crash the process.
    this.pool.on('error', () => {})
  }

  /**
   * A connection from the pool. A server at its connection limit (many CI jobs at once) is waited
   * for, within a bound, rather than failing the command.
   */
  private async connect(): Promise<pg.PoolClient> {
    const deadline = Date.now() + 30_000
    for (;;) {
      try {
        return await this.pool.connect()
      } catch (error) {
        const atLimit = (error as {code?: string}).code === tooManyConnections
        if (!atLimit || Date.now() > deadline) throw unreachable(this.url, error) ?? error
        await sleep(50 + Math.random() * 200)
      }
    }
  }

  async query<R>(text: string, params?: unknown[]): Promise<R[]> {
    const client = await this.connect()
    try {
      return await new PgTransaction(client).query<R>(text, params)
    } finally {
      client.release()
    }
  }

  async exec(script: string): Promise<void> {
    await this.query(script)
  }

  async transaction<T>(work: (tx: SqlClient) => Promise<T>): Promise<T> {
    const client = await this.connect()
    try {
      await client.query('BEGIN')
      const result = await work(new PgTransaction(client))
      await client.query('COMMIT')
      return result
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      throw error
    } finally {
      client.release()
    }
  }

  async close(): Promise<void> {
    await this.pool.end()
  }
}

type PGliteLike = Pick<PGlite, 'query' | 'exec'>

class PGliteTransaction implements SqlClient {
  constructor(protected readonly db: PGliteLike) {}

  async query<R>(text: string, params?: unknown[]): Promise<R[]> {
    const result = await this.db.query<R>(text, params)
    return result.rows
  }

  async exec(script: string): Promise<void> {
    await this.db.exec(script)
  }

  async transaction<T>(work: (tx: SqlClient) => Promise<T>): Promise<T> {
    return work(this)
  }

  async close(): Promise<void> {}
}

async function readIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

/** Postgres compiled to WebAssembly, in-process; `dataDir` undefined keeps it in memory. */
export class EmbeddedClient extends PGliteTransaction {
  private constructor(private readonly pglite: PGlite) {
    super(pglite)
  }

  /**
   * Opens `dataDir`, filling an empty one from the data directory dump at `templatePath` when that
   * exists (PGlite's initdb makes it otherwise).
   */
  static async open(dataDir?: string, templatePath?: string): Promise<EmbeddedClient> {
    const template = dataDir && templatePath && !existsSync(join(dataDir, 'PG_VERSION')) ? await readIfExists(templatePath) : undefined
    const {PGlite} = await import('@electric-sql/pglite')
    const pglite = await PGlite.create(dataDir, template ? {loadDataDir: new Blob([new Uint8Array(template)])} : {})
    return new EmbeddedClient(pglite)
  }

  /** The whole data directory as a gzipped tar, as `open` takes it for a template. */
  async dumpDataDir(): Promise<Blob> {
    return this.pglite.dumpDataDir('gzip')
  }

  override async transaction<T>(work: (tx: SqlClient) => Promise<T>): Promise<T> {
    return this.pglite.transaction((tx) => work(new PGliteTransaction(tx)))
  }

  override async close(): Promise<void> {
    await this.pglite.close()
  }
}
