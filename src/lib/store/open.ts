import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {InvalidInputError} from '../errors.js'
import {ensureDir, writeFileAtomic} from '../files.js'
import {ensureHome} from '../home.js'
import {ControlPlane, SqlRpc} from './control-plane.js'
import {acquireFileLock} from './file-lock.js'
import {
  assertSchemaCurrent,
  checkSchemaVersion,
  latestMigrationVersion,
  loadMigrations,
  migrate,
  type MigrationResult,
  schemaVersion,
} from './migrate.js'
// The drivers (pg, PGlite, supabase-js) load only when their backend is chosen: a command pays
// for the one it uses, and a command that opens no store for none.
import type {SqlClient} from './sql-client.js'

export type Backend = 'embedded' | 'postgres' | 'supabase'

export interface StoreOptions {
  /** vidsync home; the embedded database lives in its db/ folder. */
  home: string
  /** A Postgres URL selects the Postgres backend; without one the embedded backend is used. */
  databaseUrl?: string
  /** Supabase's API, used when no databaseUrl is given. */
  supabase?: {url: string; key?: string}
  /** Connections in the Postgres pool. */
  maxConnections?: number
  /** Called once when the embedded database is busy, with the PID of the process holding it. */
  onLockWait?: (pid: number | undefined) => void
}

export interface Connection {
  backend: Exclude<Backend, 'supabase'>
  sql: SqlClient
  close(): Promise<void>
}

export interface Store {
  backend: Backend
  controlPlane: ControlPlane
  close(): Promise<void>
}

/** The backend the options select: a database URL wins over Supabase, which wins over the embedded one. */
export function selectedBackend(options: StoreOptions): Backend {
  return options.databaseUrl ? 'postgres' : options.supabase ? 'supabase' : 'embedded'
}

/** Connects to the configured SQL backend without looking at its schema. */
export async function connect(options: StoreOptions): Promise<Connection> {
  if (selectedBackend(options) === 'supabase') {
    throw new InvalidInputError(
      "Supabase's API cannot change the schema: use its direct connection string (see docs/supabase.md)",
      {hint: 'pass it as --database-url'},
    )
  }
  if (options.databaseUrl) {
    const {PostgresClient} = await import('./sql-client.js')
    const sql = new PostgresClient(options.databaseUrl, options.maxConnections)
    return {backend: 'postgres', sql, close: () => sql.close()}
  }
  await ensureHome(options.home)
  // PGlite runs in this process: one process at a time may open the data directory.
  const lock = await acquireFileLock(join(options.home, 'db.lock'), `the embedded database in ${options.home}`, {onWait: options.onLockWait})
  try {
    const [{EmbeddedClient}, {embeddedTemplatePath}] = await Promise.all([import('./sql-client.js'), import('./embedded-template.js')])
    await ensureDir(join(options.home, 'db'), {private: true})
    const sql = await EmbeddedClient.open(join(options.home, 'db'), embeddedTemplatePath)
    return {
      backend: 'embedded',
      sql,
      async close() {
        await sql.close()
        await lock.release()
      },
    }
  } catch (error) {
    await lock.release()
    throw error
  }
}

/**
 * The schema version vidsync last brought the embedded data directory to, kept in that directory
 * (so it goes wherever the data goes). Only vidsync migrates that directory, and always under its
 * lock, so a stamp equal to this build's version spares each command the query that asks the
 * database (BENCHMARKS.md); any other stamp, or none, and the database is asked.
 */
const schemaStamp = (home: string) => join(home, 'db', 'vidsync-schema-version')

async function readSchemaStamp(home: string): Promise<number | undefined> {
  try {
    return Number.parseInt(await readFile(schemaStamp(home), 'utf8'), 10)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

async function writeSchemaStamp(home: string, version: number): Promise<void> {
  await writeFileAtomic(schemaStamp(home), `${version}\n`, 0o600)
}

/** Migrates the embedded database to this build's schema unless its stamp says it is there. */
async function bringEmbeddedCurrent(sql: SqlClient, home: string): Promise<void> {
  const known = await latestMigrationVersion()
  if ((await readSchemaStamp(home)) === known) return
  if ((await schemaVersion(sql)) !== known) await migrate(sql, await loadMigrations())
  await writeSchemaStamp(home, known)
}

/** Applies pending migrations to the configured backend. */
export async function migrateBackend(options: StoreOptions): Promise<MigrationResult & {backend: Backend}> {
  const connection = await connect(options)
  try {
    const result = await migrate(connection.sql, await loadMigrations())
    if (connection.backend === 'embedded') await writeSchemaStamp(options.home, result.version)
    return {backend: connection.backend, ...result}
  } finally {
    await connection.close()
  }
}

/**
 * Opens the control plane. The embedded database is migrated on the spot; a shared Postgres
 * database must already be at this build's schema (`vidsync db migrate`).
 */
export async function openStore(options: StoreOptions): Promise<Store> {
  if (!options.databaseUrl && options.supabase) return openSupabase(options.supabase)
  const connection = await connect(options)
  try {
    if (connection.backend === 'postgres') await assertSchemaCurrent(connection.sql, await latestMigrationVersion())
    else await bringEmbeddedCurrent(connection.sql, options.home)
  } catch (error) {
    await connection.close()
    throw error
  }
  const controlPlane = new ControlPlane(new SqlRpc(connection.sql))
  if (connection.backend === 'postgres' && options.databaseUrl) {
    const {PostgresChangeFeed} = await import('./listen.js')
    controlPlane.changes = new PostgresChangeFeed(options.databaseUrl)
  }
  return {backend: connection.backend, controlPlane, close: () => connection.close()}
}

async function openSupabase(options: {url: string; key?: string}): Promise<Store> {
  if (!options.key) {
    throw new InvalidInputError(
      'VIDSYNC_SUPABASE_URL is set but VIDSYNC_SUPABASE_KEY is not: operators use the service-role key, devices the anon key',
    )
  }
  if (!/^https?:\/\/[^\s/]+/.test(options.url)) {
    throw new InvalidInputError(`invalid Supabase URL "${options.url}": expected https://<project>.supabase.co`)
  }
  const [{SupabaseRpc}, {RealtimeChangeFeed}] = await Promise.all([import('./supabase.js'), import('./realtime.js')])
  const rpc = new SupabaseRpc({url: options.url, key: options.key})
  const controlPlane = new ControlPlane(rpc)
  checkSchemaVersion(await controlPlane.schemaVersion(), await latestMigrationVersion())
  controlPlane.changes = new RealtimeChangeFeed(rpc.client)
  return {backend: 'supabase', controlPlane, close: async () => {}}
}
