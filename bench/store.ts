/**
 * Control-plane store: filling a /16 pool (Postgres and PGlite) and allocate_ip throughput on
 * Postgres at several connection counts. Runs against a throw-away database, dropped at the end.
 */
import {ControlPlane, SqlRpc} from '../src/lib/store/control-plane.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {PostgresClient, type SqlClient} from '../src/lib/store/sql-client.js'
import {type BenchRun, percentile, result, type Result, type Target, timed, using, withBenchDatabase, withEmbedded} from './harness.js'

const POPULATE_RUNS = 3
const HOSTS_IN_16 = 65_534
const ALLOCATIONS = 2000
const CONCURRENCY = [1, 8, 16, 32]

let nextOctet = 100
/** A new project on the next unused 10.x.0.0/16. */
async function newProject(controlPlane: ControlPlane, prefix: string): Promise<string> {
  const octet = nextOctet++
  const project = `${prefix}-${octet}`
  await controlPlane.createProject({name: project, cidr: `10.${octet}.0.0/16`})
  return project
}

const open = (sql: SqlClient) => new ControlPlane(new SqlRpc(sql))

/** Median ms of `populate_pool` on a fresh /16 project, over POPULATE_RUNS projects. */
async function populateMedianMs(sql: SqlClient, log: (message: string) => void): Promise<number> {
  const controlPlane = open(sql)
  const samples: number[] = []
  for (let run = 0; run < POPULATE_RUNS; run++) {
    const project = await newProject(controlPlane, 'populate')
    const [ms, populated] = await timed(() => controlPlane.populatePool({project}))
    if (populated.added !== HOSTS_IN_16) throw new Error(`populate_pool added ${populated.added}, expected ${HOSTS_IN_16}`)
    samples.push(ms)
  }
  log(`populate /16: ${samples.map((ms) => ms.toFixed(0)).join(', ')} ms`)
  return percentile(samples, 50)
}

/**
 * ALLOCATIONS calls of allocate_ip (each its own transaction) shared by `concurrency` workers,
 * right after `pool populate` of a fresh /16 (what the first registrations get).
 * Returns allocations per second and how many returned IPs were repeats.
 */
async function allocationRate(sql: SqlClient, concurrency: number): Promise<{perSecond: number; duplicates: number}> {
  const controlPlane = open(sql)
  const project = await newProject(controlPlane, `alloc-c${concurrency}`)
  await controlPlane.populatePool({project})
  // Open every connection of the pool before the clock starts.
  await Promise.all(Array.from({length: concurrency}, () => sql.query('SELECT pg_sleep(0.05)')))
  const ips: string[] = []
  let next = 0
  const worker = async () => {
    while (next < ALLOCATIONS) ips.push((await controlPlane.allocateIp({project, device: `d${next++}`})).ip)
  }
  const [ms] = await timed(() => Promise.all(Array.from({length: concurrency}, worker)))
  const {allocated} = await controlPlane.poolStatus({project})
  if (allocated !== ALLOCATIONS) throw new Error(`pool_status says ${allocated} allocated, expected ${ALLOCATIONS}`)
  return {perSecond: ALLOCATIONS / (ms / 1000), duplicates: ips.length - new Set(ips).size}
}

const TARGET_CONCURRENCY = 16
const allocationTarget = (concurrency: number): Target | undefined =>
  concurrency === TARGET_CONCURRENCY ? ['>=', 2000] : undefined

export const run: BenchRun = async ({log}) => {
  const results: Result[] = []
  const migrations = await loadMigrations()
  let duplicates = 0
  const allocations = async (backend: string, sql: SqlClient, concurrency: number) => {
    const rate = await allocationRate(sql, concurrency)
    const name = `allocate_ip, ${backend}, concurrency ${concurrency}`
    log(`${name}: ${rate.perSecond.toFixed(0)}/s`)
    duplicates += rate.duplicates
    results.push(result(name, rate.perSecond, 'alloc/s', allocationTarget(concurrency)))
  }
  let postgresPopulate = Number.NaN

  await withBenchDatabase(async (url) => {
    await using(new PostgresClient(url, TARGET_CONCURRENCY), async (sql) => {
      await migrate(sql, migrations)
      // Autovacuum must not make the allocation numbers depend on when it wakes up.
      await sql.query('ALTER TABLE vidsync.ip_pool SET (autovacuum_enabled = false)')
      log('postgres:')
      postgresPopulate = await populateMedianMs(sql, log)
      results.push(result(`populate_pool /16, postgres (median of ${POPULATE_RUNS})`, postgresPopulate, 'ms', ['<', 1000]))
    })
    for (const concurrency of CONCURRENCY) {
      await using(new PostgresClient(url, concurrency), (sql) => allocations('postgres', sql, concurrency))
    }
  })

  await withEmbedded(async (sql) => {
    await migrate(sql, migrations)
    log('pglite:')
    const pglitePopulate = await populateMedianMs(sql, log)
    results.push(
      result(`populate_pool /16, pglite (median of ${POPULATE_RUNS})`, pglitePopulate, 'ms'),
      result('populate_pool /16, pglite / postgres', pglitePopulate / postgresPopulate, 'x'),
    )
    await allocations('pglite', sql, 1)
  })

  results.push(result('allocate_ip repeated IPs (all runs)', duplicates, 'ips', ['=', 0]))
  return results
}
