/**
 * Supabase's database linter (splinter, as our own queries in helpers/splinter-lints.ts) against
 * the migrated schema on real Postgres, with the API exposing public and vidsync: no finding at
 * all but the intended ones. Each lint is also shown to catch a violation made for it, in a
 * transaction that is rolled back.
 */
import {expect} from 'chai'
import pg from 'pg'

import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {PostgresClient} from '../src/lib/store/sql-client.js'
import {createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'
import {intendedFindings, type Lint, lints} from './helpers/splinter-lints.js'

/** A statement that makes the schema violate the lint, and the key the lint must report for it. */
const violations: Record<string, {sql: string; key: string}> = {
  '0001_unindexed_foreign_keys.sql': {
    sql: 'CREATE TABLE vidsync.probe (id int PRIMARY KEY, project_id bigint CONSTRAINT probe_project REFERENCES vidsync.projects (id))',
    key: 'unindexed_foreign_keys_vidsync_probe_probe_project',
  },
  '0004_no_primary_key.sql': {sql: 'CREATE TABLE vidsync.probe (x int UNIQUE)', key: 'no_primary_key_vidsync_probe'},
  '0006_multiple_permissive_policies.sql': {
    sql: 'CREATE POLICY second ON vidsync.invites TO service_role USING (true)',
    key: 'multiple_permissive_policies_vidsync_invites_service_role_SELECT',
  },
  '0007_policy_exists_rls_disabled.sql': {
    sql: 'ALTER TABLE vidsync.invites DISABLE ROW LEVEL SECURITY',
    key: 'policy_exists_rls_disabled_vidsync_invites',
  },
  '0008_rls_enabled_no_policy.sql': {
    sql: 'CREATE TABLE vidsync.probe (x int PRIMARY KEY); ALTER TABLE vidsync.probe ENABLE ROW LEVEL SECURITY',
    key: 'rls_enabled_no_policy_vidsync_probe',
  },
  '0009_duplicate_index.sql': {
    sql: 'CREATE INDEX invites_project_again ON vidsync.invites (project_id)',
    key: 'duplicate_index_vidsync_invites_{invites_project,invites_project_again}',
  },
  '0010_security_definer_view.sql': {
    sql: 'CREATE VIEW vidsync.probe AS SELECT name FROM vidsync.projects; GRANT SELECT ON vidsync.probe TO anon',
    key: 'security_definer_view_vidsync_probe',
  },
  '0011_function_search_path_mutable.sql': {
    sql: "ALTER FUNCTION vidsync.check_name(text, text) RESET search_path",
    key: 'function_search_path_mutable_vidsync_check_name_',
  },
  '0013_rls_disabled_in_public.sql': {
    sql: 'CREATE TABLE public.probe (x int PRIMARY KEY); GRANT SELECT ON public.probe TO anon',
    key: 'rls_disabled_in_public_public_probe',
  },
  '0014_extension_in_public.sql': {sql: 'CREATE EXTENSION citext SCHEMA public', key: 'extension_in_public_citext'},
  '0016_materialized_view_in_api.sql': {
    sql: 'CREATE MATERIALIZED VIEW vidsync.probe AS SELECT 1 AS x; GRANT SELECT ON vidsync.probe TO authenticated',
    key: 'materialized_view_in_api_vidsync_probe',
  },
  '0017_foreign_table_in_api.sql': {
    sql: `CREATE FOREIGN DATA WRAPPER probe_fdw; CREATE SERVER probe_server FOREIGN DATA WRAPPER probe_fdw;
          CREATE FOREIGN TABLE vidsync.probe (x int) SERVER probe_server; GRANT SELECT ON vidsync.probe TO anon`,
    key: 'foreign_table_in_api_vidsync_probe',
  },
  '0018_unsupported_reg_types.sql': {sql: 'CREATE TABLE vidsync.probe (x int PRIMARY KEY, f regproc)', key: 'unsupported_reg_types_vidsync_probe_f'},
  '0024_rls_policy_always_true.sql': {
    sql: 'CREATE POLICY anyone ON vidsync.invites FOR UPDATE TO anon USING (true)',
    key: 'rls_policy_always_true_vidsync_invites_anyone',
  },
  '0028_anon_security_definer_function_executable.sql': {
    sql: 'ALTER FUNCTION vidsync.list_projects() SECURITY DEFINER; GRANT EXECUTE ON FUNCTION vidsync.list_projects() TO anon',
    key: 'anon_security_definer_function_executable_vidsync_list_projects_',
  },
  '0029_authenticated_security_definer_function_executable.sql': {
    sql: 'GRANT EXECUTE ON FUNCTION vidsync.device_bundle(text) TO authenticated',
    key: 'authenticated_security_definer_function_executable_vidsync_device_bundle_p_token text',
  },
}

describe('Supabase linter (splinter) lints against the migrated schema', function () {
  this.timeout(120_000)
  let database: ThrowawayDatabase
  let client: pg.Client

  const findings = async (lint: Lint) => (await client.query<{key: string; detail: string}>(lint.sql)).rows

  before(async () => {
    database = await createThrowawayDatabase('lint')
    const sql = new PostgresClient(database.url)
    await migrate(sql, await loadMigrations())
    await sql.close()
    client = new pg.Client({connectionString: database.url})
    await client.connect()
    // What the API exposes once docs/supabase.md step 3 is done (Supabase keeps graphql_public too).
    await client.query("SELECT set_config('pgrst.db_schemas', 'public, graphql_public, vidsync', false)")
  })

  after(async () => {
    await client?.end()
    await database?.drop()
  })

  it('has a violation for every lint, and a lint for every violation', () => {
    expect(Object.keys(violations).sort()).to.deep.equal(lints.map((lint) => lint.file).sort())
  })

  for (const lint of lints) {
    it(`${lint.file} (${lint.level}): clean but for the intended findings, and catches a violation`, async () => {
      const found = await findings(lint)
      expect(found.filter((f) => !(f.key in intendedFindings)).map((f) => f.detail)).to.deep.equal([])
      const violation = violations[lint.file]
      if (!violation) throw new Error(`no violation for ${lint.file}`)
      await client.query('BEGIN')
      try {
        await client.query(violation.sql)
        const keys = (await findings(lint)).map((f) => f.key)
        expect(keys.some((key) => key.startsWith(violation.key)), `${keys.join(', ')} reports ${violation.key}`).to.equal(true)
      } finally {
        await client.query('ROLLBACK')
      }
    })
  }

  it('finds exactly the device functions anon may execute, documented as intended (0028)', async () => {
    const lint = lints.find((l) => l.file.startsWith('0028_'))
    if (!lint) throw new Error('lint 0028 is missing')
    expect((await findings(lint)).map((f) => f.key).sort()).to.deep.equal(Object.keys(intendedFindings).sort())
  })

  it('reports no ERROR-level finding at all', async () => {
    for (const lint of lints.filter((l) => l.level === 'ERROR')) expect(await findings(lint), lint.file).to.deep.equal([])
  })
})
