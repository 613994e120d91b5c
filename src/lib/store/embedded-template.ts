import {rename, writeFile} from 'node:fs/promises'
import {fileURLToPath} from 'node:url'

import {loadMigrations, migrate} from './migrate.js'
import {EmbeddedClient} from './sql-client.js'

/**
 * The embedded database as a new home gets it: initialised and migrated when the package is built
 * (`npm run build`). PGlite's own initdb takes about 5x longer than loading this (BENCHMARKS.md).
 * It sits beside migrations/ so the built CLI and the sources under tsx find the same file.
 */
export const embeddedTemplatePath = fileURLToPath(new URL('../../../embedded-db.tar.gz', import.meta.url))

/** Builds the template from the migrations in this package; returns its size in bytes. */
export async function buildEmbeddedTemplate(path = embeddedTemplatePath): Promise<number> {
  const sql = await EmbeddedClient.open()
  try {
    await migrate(sql, await loadMigrations())
    const dump = Buffer.from(await (await sql.dumpDataDir()).arrayBuffer())
    await writeFile(`${path}.tmp`, dump)
    await rename(`${path}.tmp`, path)
    return dump.length
  } finally {
    await sql.close()
  }
}
