import {readdir, readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {IncompatibleSchemaError} from '../errors.js'
import type {SqlClient} from './sql-client.js'

export interface Migration {
  version: number
  name: string
  sql: string
}

export interface MigrationResult {
  applied: {version: number; name: string}[]
  version: number
}

/** migrations/ ships beside dist/ and src/, three levels above this module. */
export const migrationsDir = fileURLToPath(new URL('../../../migrations', import.meta.url))

async function migrationFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((file) => /^\d{3}_[\w-]+\.sql$/.test(file)).sort()
}

/** The schema version this build knows, from the migrations' file names alone (no SQL is read). */
export async function latestMigrationVersion(dir = migrationsDir): Promise<number> {
  const last = (await migrationFiles(dir)).at(-1)
  return last ? Number.parseInt(last.slice(0, 3), 10) : 0
}

export async function loadMigrations(dir = migrationsDir): Promise<Migration[]> {
  const files = await migrationFiles(dir)
  return Promise.all(
    files.map(async (file) => ({
      version: Number.parseInt(file.slice(0, 3), 10),
      name: file.replace(/\.sql$/, ''),
      sql: await readFile(join(dir, file), 'utf8'),
    })),
  )
}

const undefinedTableOrSchema = new Set(['42P01', '3F000'])

/** The highest migration recorded in the database; 0 for a database vidsync never touched. */
export async function schemaVersion(sql: SqlClient): Promise<number> {
  try {
    const [row] = await sql.query<{version: number | null}>('SELECT max(version) AS version FROM vidsync.schema_migrations')
    return row?.version ?? 0
  } catch (error) {
    if (undefinedTableOrSchema.has((error as {code?: string}).code ?? '')) return 0
    throw error
  }
}

function newerSchema(found: number, known: number): IncompatibleSchemaError {
  return new IncompatibleSchemaError(
    `the database schema is at version ${found} but this vidsync knows versions up to ${known}: upgrade vidsync`,
  )
}

/**
 * Applies the migrations the database lacks in one transaction (all or none), serialised by an
 * advisory lock so that concurrent callers do not apply one twice.
 */
export async function migrate(sql: SqlClient, migrations: Migration[]): Promise<MigrationResult> {
  const known = migrations.at(-1)?.version ?? 0
  const applied: MigrationResult['applied'] = []
  await sql.transaction(async (tx) => {
    await tx.query("SELECT pg_advisory_xact_lock(hashtext('vidsync.migrate'))")
    await tx.exec(`CREATE SCHEMA IF NOT EXISTS vidsync;
      CREATE TABLE IF NOT EXISTS vidsync.schema_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      );`)
    const current = await schemaVersion(tx)
    if (current > known) throw newerSchema(current, known)
    for (const migration of migrations.filter((m) => m.version > current)) {
      await tx.exec(migration.sql)
      await tx.query('INSERT INTO vidsync.schema_migrations (version, name) VALUES ($1, $2)', [
        migration.version,
        migration.name,
      ])
      applied.push({version: migration.version, name: migration.name})
    }
  })
  return {applied, version: Math.max(known, applied.at(-1)?.version ?? 0)}
}

/** Refuses a schema that is older (needs `db migrate`) or newer (needs a newer vidsync) than this build. */
export async function assertSchemaCurrent(sql: SqlClient, known: number): Promise<void> {
  checkSchemaVersion(await schemaVersion(sql), known)
}

/** assertSchemaCurrent for a version read some other way (Supabase's API). */
export function checkSchemaVersion(current: number, known: number): void {
  if (current > known) throw newerSchema(current, known)
  if (current < known) {
    throw new IncompatibleSchemaError(
      `the database schema is at version ${current}, this vidsync needs ${known}: run \`vidsync db migrate\``,
    )
  }
}
