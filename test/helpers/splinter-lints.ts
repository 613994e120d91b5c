/**
 * Supabase's database linter (splinter) as our own queries, for CI: splinter's SQL ships in no npm
 * package and CI reaches no other source. Each query follows the lint file it names in
 * github.com/supabase/splinter, lints/, at commit 55db5b1f28e58d816f7d9136eed87eabcd95868d
 * (2026-04-27): same conditions, same level, answering one row per finding with splinter's
 * cache_key as `key`. Lints about objects vidsync does not use are left out: Supabase Auth
 * (0002, 0003, 0015, 0021), pgmq (0019), storage buckets (0025), pg_graphql (0026, 0027),
 * extension versions (0022), usage statistics and bloat (0005, 0020). 0023 (sensitive columns
 * exposed) reports a subset of 0013's tables, so 0013 being clean covers it.
 *
 * The exposed schemas come from `pgrst.db_schemas`, like splinter; set it in the session to what
 * the API exposes (docs/supabase.md: public and vidsync).
 */

export type LintLevel = 'ERROR' | 'WARN' | 'INFO'

export interface Lint {
  /** splinter's lint file. */
  file: string
  level: LintLevel
  /** A query answering (key text, detail text), one row per finding. */
  sql: string
}

/** The schemas splinter leaves alone (Supabase's and extensions' own). */
const systemSchemas = `('_timescaledb_cache', '_timescaledb_catalog', '_timescaledb_config', '_timescaledb_internal', 'auth',
  'cron', 'extensions', 'graphql', 'graphql_public', 'information_schema', 'net', 'pgmq', 'pgroonga', 'pgsodium', 'pgsodium_masks',
  'pgtle', 'pgbouncer', 'pg_catalog', 'realtime', 'repack', 'storage', 'supabase_functions', 'supabase_migrations', 'tiger',
  'topology', 'vault')`

const exposedSchemas = `array(SELECT trim(unnest(string_to_array(current_setting('pgrst.db_schemas', true), ','))))`

/** Objects that belong to an extension are not the schema's author's to fix. */
const notOfExtension = (oid: string) => `NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.objid = ${oid} AND e.deptype = 'e')`

const readableByApiRoles = (oid: string) =>
  `(pg_catalog.has_table_privilege('anon', ${oid}, 'SELECT') OR pg_catalog.has_table_privilege('authenticated', ${oid}, 'SELECT'))`

export const lints: Lint[] = [
  {
    file: '0001_unindexed_foreign_keys.sql',
    level: 'INFO',
    // An index covers a foreign key when the key's columns are its leading columns (partial ones count, as in splinter).
    sql: `SELECT format('unindexed_foreign_keys_%s_%s_%s', n.nspname, c.relname, k.conname) AS key,
                 format('%s.%s has foreign key %s without a covering index', n.nspname, c.relname, k.conname) AS detail
            FROM pg_catalog.pg_constraint k
            JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           WHERE k.contype = 'f' AND n.nspname NOT IN ${systemSchemas} AND ${notOfExtension('c.oid')}
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                              WHERE i.indrelid = c.oid AND i.indisvalid
                                AND k.conkey = (string_to_array(i.indkey::text, ' ')::smallint[])[1:array_length(k.conkey, 1)])`,
  },
  {
    file: '0004_no_primary_key.sql',
    level: 'INFO',
    sql: `SELECT format('no_primary_key_%s_%s', n.nspname, c.relname) AS key, format('%s.%s has no primary key', n.nspname, c.relname) AS detail
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND n.nspname NOT IN ${systemSchemas} AND ${notOfExtension('c.oid')}
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)`,
  },
  {
    file: '0006_multiple_permissive_policies.sql',
    level: 'WARN',
    sql: `SELECT format('multiple_permissive_policies_%s_%s_%s_%s', n.nspname, c.relname, r.rolname, a.cmd) AS key,
                 format('%s.%s has permissive policies %s for role %s and %s', n.nspname, c.relname, array_agg(p.polname ORDER BY p.polname), r.rolname, a.cmd) AS detail
            FROM pg_catalog.pg_policy p
            JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_catalog.pg_roles r ON p.polroles @> ARRAY[r.oid] OR p.polroles = ARRAY[0::oid]
            CROSS JOIN LATERAL unnest(CASE p.polcmd WHEN 'r' THEN ARRAY['SELECT'] WHEN 'a' THEN ARRAY['INSERT'] WHEN 'w' THEN ARRAY['UPDATE']
                                        WHEN 'd' THEN ARRAY['DELETE'] ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'] END) AS a(cmd)
           WHERE c.relkind = 'r' AND p.polpermissive AND n.nspname NOT IN ${systemSchemas} AND ${notOfExtension('c.oid')}
             AND r.rolname NOT LIKE 'pg\\_%' AND r.rolname NOT LIKE 'supabase%admin' AND NOT r.rolbypassrls
           GROUP BY n.nspname, c.relname, r.rolname, a.cmd
          HAVING count(*) > 1`,
  },
  {
    file: '0007_policy_exists_rls_disabled.sql',
    level: 'ERROR',
    sql: `SELECT DISTINCT format('policy_exists_rls_disabled_%s_%s', n.nspname, c.relname) AS key,
                 format('%s.%s has policies but row-level security is disabled', n.nspname, c.relname) AS detail
            FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND NOT c.relrowsecurity AND n.nspname NOT IN ${systemSchemas} AND ${notOfExtension('c.oid')}`,
  },
  {
    file: '0008_rls_enabled_no_policy.sql',
    level: 'INFO',
    sql: `SELECT format('rls_enabled_no_policy_%s_%s', n.nspname, c.relname) AS key,
                 format('%s.%s has row-level security enabled but no policy', n.nspname, c.relname) AS detail
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND c.relrowsecurity AND n.nspname NOT IN ${systemSchemas} AND ${notOfExtension('c.oid')}
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid)`,
  },
  {
    file: '0009_duplicate_index.sql',
    level: 'WARN',
    // Indexes are identical when their definitions are, but for the name.
    sql: `SELECT format('duplicate_index_%s_%s_%s', n.nspname, c.relname, array_agg(x.indexname ORDER BY x.indexname)) AS key,
                 format('%s.%s has identical indexes %s', n.nspname, c.relname, array_agg(x.indexname ORDER BY x.indexname)) AS detail
            FROM pg_catalog.pg_indexes x
            JOIN pg_catalog.pg_namespace n ON n.nspname = x.schemaname
            JOIN pg_catalog.pg_class c ON c.relname = x.tablename AND c.relnamespace = n.oid
           WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ${systemSchemas} AND ${notOfExtension('c.oid')}
           GROUP BY n.nspname, c.relkind, c.relname, replace(x.indexdef, x.indexname, '')
          HAVING count(*) > 1`,
  },
  {
    file: '0010_security_definer_view.sql',
    level: 'ERROR',
    // Views run with their owner's rights unless security_invoker (PostgreSQL 15+).
    sql: `SELECT format('security_definer_view_%s_%s', n.nspname, c.relname) AS key,
                 format('view %s.%s runs with its owner''s rights and the API roles may read it', n.nspname, c.relname) AS detail
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'v' AND ${readableByApiRoles('c.oid')}
             AND current_setting('server_version_num')::integer >= 150000
             AND n.nspname = ANY (${exposedSchemas}) AND n.nspname NOT IN ${systemSchemas} AND ${notOfExtension('c.oid')}
             AND NOT lower(coalesce(c.reloptions::text, '{}'))::text[] && ARRAY['security_invoker=1', 'security_invoker=true', 'security_invoker=yes', 'security_invoker=on']`,
  },
  {
    file: '0011_function_search_path_mutable.sql',
    level: 'WARN',
    sql: `SELECT format('function_search_path_mutable_%s_%s_%s', n.nspname, p.proname, md5(p.prosrc)) AS key,
                 format('function %s.%s has a role mutable search_path', n.nspname, p.proname) AS detail
            FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname NOT IN ${systemSchemas} AND ${notOfExtension('p.oid')}
             AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) AS s(setting) WHERE s.setting LIKE 'search\\_path=%')`,
  },
  {
    file: '0013_rls_disabled_in_public.sql',
    level: 'ERROR',
    sql: `SELECT format('rls_disabled_in_public_%s_%s', n.nspname, c.relname) AS key,
                 format('%s.%s is exposed to the API without row-level security', n.nspname, c.relname) AS detail
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND NOT c.relrowsecurity AND ${readableByApiRoles('c.oid')}
             AND n.nspname = ANY (${exposedSchemas}) AND n.nspname NOT IN ${systemSchemas}`,
  },
  {
    file: '0014_extension_in_public.sql',
    level: 'WARN',
    sql: `SELECT format('extension_in_public_%s', e.extname) AS key, format('extension %s is installed in public', e.extname) AS detail
            FROM pg_catalog.pg_extension e
           WHERE e.extname <> 'plpgsql' AND e.extnamespace::regnamespace::text = 'public'`,
  },
  {
    file: '0016_materialized_view_in_api.sql',
    level: 'WARN',
    sql: `SELECT format('materialized_view_in_api_%s_%s', n.nspname, c.relname) AS key,
                 format('materialized view %s.%s is readable through the API', n.nspname, c.relname) AS detail
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'm' AND ${readableByApiRoles('c.oid')}
             AND n.nspname = ANY (${exposedSchemas}) AND n.nspname NOT IN ${systemSchemas} AND ${notOfExtension('c.oid')}`,
  },
  {
    file: '0017_foreign_table_in_api.sql',
    level: 'WARN',
    sql: `SELECT format('foreign_table_in_api_%s_%s', n.nspname, c.relname) AS key,
                 format('foreign table %s.%s is readable through the API', n.nspname, c.relname) AS detail
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'f' AND ${readableByApiRoles('c.oid')}
             AND n.nspname = ANY (${exposedSchemas}) AND n.nspname NOT IN ${systemSchemas} AND ${notOfExtension('c.oid')}`,
  },
  {
    file: '0018_unsupported_reg_types.sql',
    level: 'WARN',
    sql: `SELECT format('unsupported_reg_types_%s_%s_%s', n.nspname, c.relname, a.attname) AS key,
                 format('%s.%s.%s has type %s, which pg_upgrade cannot carry', n.nspname, c.relname, a.attname, t.typname) AS detail
            FROM pg_catalog.pg_attribute a
            JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
           WHERE t.typnamespace = 'pg_catalog'::regnamespace
             AND t.typname IN ('regcollation', 'regconfig', 'regdictionary', 'regnamespace', 'regoper', 'regoperator', 'regproc', 'regprocedure')
             AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgsodium')`,
  },
  {
    file: '0024_rls_policy_always_true.sql',
    level: 'WARN',
    // Permissive policies for PUBLIC, anon or authenticated that let every row be changed (SELECT with true is allowed).
    sql: `WITH policies AS (
            SELECT n.nspname, c.relname, p.polname, p.polpermissive, p.polroles,
                   CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS command,
                   x.qual, x.with_check,
                   regexp_replace(lower(coalesce(x.qual, '')), '\\s', '', 'g') AS qual_n,
                   regexp_replace(lower(coalesce(x.with_check, '')), '\\s', '', 'g') AS check_n
              FROM pg_catalog.pg_policy p
              JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              JOIN pg_catalog.pg_policies x ON x.schemaname = n.nspname AND x.tablename = c.relname AND x.policyname = p.polname
             WHERE c.relkind = 'r' AND c.relrowsecurity AND p.polpermissive AND n.nspname NOT IN ${systemSchemas}
               AND (p.polroles = ARRAY[0::oid] OR EXISTS (SELECT 1 FROM unnest(p.polroles) r WHERE r::regrole::text IN ('anon', 'authenticated'))))
          SELECT format('rls_policy_always_true_%s_%s_%s', nspname, relname, polname) AS key,
                 format('%s.%s policy %s for %s lets every row through', nspname, relname, polname, command) AS detail
            FROM policies
           WHERE (command IN ('UPDATE', 'DELETE', 'ALL') AND (qual_n IN ('true', '(true)', '1=1', '(1=1)') OR qual IS NULL))
              OR check_n IN ('true', '(true)', '1=1', '(1=1)')
              OR (with_check IS NULL AND command = 'INSERT')
              OR (with_check IS NULL AND command IN ('UPDATE', 'ALL') AND qual_n IN ('true', '(true)', '1=1', '(1=1)'))`,
  },
  ...(['anon', 'authenticated'] as const).map(
    (role): Lint => ({
      file: role === 'anon' ? '0028_anon_security_definer_function_executable.sql' : '0029_authenticated_security_definer_function_executable.sql',
      level: 'WARN',
      sql: `SELECT format('${role}_security_definer_function_executable_%s_%s_%s', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)) AS key,
                   format('%s.%s(%s) is SECURITY DEFINER and executable by ${role}', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)) AS detail
              FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             WHERE p.prosecdef AND pg_catalog.has_function_privilege('${role}', p.oid, 'EXECUTE')
               AND n.nspname = ANY (${exposedSchemas}) AND n.nspname NOT IN ${systemSchemas}`,
    }),
  ),
]

/**
 * Findings that are intended, by key, with the reason: the device functions anon calls with
 * Supabase's anon key (docs/supabase.md, "Security model"). Each takes an invite code or a device
 * token (256 bits, stored as sha256) and answers only about that invite or device; they are
 * SECURITY DEFINER because anon has no table privileges, with an empty search_path.
 */
export const intendedFindings: Record<string, string> = Object.fromEntries(
  ['device_bundle_p_token text', 'device_refresh_p_token text, p_syncthing_id text', 'device_sync_p_token text, p_known_version bigint, p_syncthing_id text, p_applied_version bigint', 'redeem_invite_p_code text, p_token text, p_device text, p_public_key text', 'schema_version_',
    'device_folders_p_token text', 'device_create_folder_p_token text, p_name text', 'device_folder_report_p_token text, p_sizes jsonb',
    'device_request_renewal_p_token text, p_fingerprint text, p_public_key text', 'device_certificate_p_token text', 'device_revoked_peers_p_token text',
    'device_trusted_cas_p_token text'].map(
    (suffix) => [`anon_security_definer_function_executable_vidsync_${suffix}`, 'a device function: takes an invite code or device token'],
  ),
)
