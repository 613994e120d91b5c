import {join} from 'node:path'

import {ensureHome} from '../home.js'
import {ControlPlane, SqlRpc} from './control-plane.js'
import {acquireFileLock} from './file-lock.js'
import {assertSchemaCurrent, loadMigrations, migrate, type MigrationResult, schemaVersion} from './migrate.js'
import {EmbeddedClient, PostgresClient, type SqlClient} from './sql-client.js'

export type Backend = 'embedded' | 'postgres'

export interface StoreOptions {
  /** vidsync home; the embedded database lives in its db/ folder. */
  home: string
  /** A Postgres URL selects the Postgres backend; without one the embedded backend is used. */
  databaseUrl?: string
  /** Connections in the Postgres pool. */
  maxConnections?: number
}

export interface Connection {
  backend: Backend
  sql: SqlClient
  close(): Promise<void>
}

export interface Store extends Connection {
  controlPlane: ControlPlane
}

/** Connects to the configured backend without looking at its schema. */
export async function connect(options: StoreOptions): Promise<Connection> {
  if (options.databaseUrl) {
    const sql = new PostgresClient(options.databaseUrl, options.maxConnections)
    return {backend: 'postgres', sql, close: () => sql.close()}
  }
  await ensureHome(options.home)
  // PGlite runs in this process: one process at a time may open the data directory.
  const lock = await acquireFileLock(join(options.home, 'db.lock'), `the embedded database in ${options.home}`)
  try {
    const sql = await EmbeddedClient.open(join(options.home, 'db'))
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

/** Applies pending migrations to the configured backend. */
export async function migrateBackend(options: StoreOptions): Promise<MigrationResult & {backend: Backend}> {
  const connection = await connect(options)
  try {
    return {backend: connection.backend, ...(await migrate(connection.sql, await loadMigrations()))}
  } finally {
    await connection.close()
  }
}

/**
 * Opens the control plane. The embedded database is migrated on the spot; a shared Postgres
 * database must already be at this build's schema (`vidsync db migrate`).
 */
export async function openStore(options: StoreOptions): Promise<Store> {
  const connection = await connect(options)
  try {
    const migrations = await loadMigrations()
    if (connection.backend === 'postgres') await assertSchemaCurrent(connection.sql, migrations)
    else if ((await schemaVersion(connection.sql)) !== migrations.at(-1)?.version) await migrate(connection.sql, migrations)
  } catch (error) {
    await connection.close()
    throw error
  }
  return {...connection, controlPlane: new ControlPlane(new SqlRpc(connection.sql))}
}
