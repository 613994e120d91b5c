/**
 * Device refresh at fleet scale (issue 16): N simulated devices (20, 100, 1,000, 10,000) of one
 * project call the SQL functions a device's `up` loop calls, as Supabase's anon role, on real
 * Postgres. For each N:
 *  - today's cost: device_refresh's answer (the whole project, every 10 s pass);
 *  - idle: one round in which every device (a sample of SAMPLE at most) sends the version it has
 *    to device_sync and gets "unchanged": p50/p99 latency, body bytes, and the heartbeats written
 *    with last_seen_at spread as in steady state (each device's last write 0 to 300 s ago);
 *  - one change a minute: the delta a device gets for one new peer and for one revocation;
 *  - a revocation's reach: the time from the revocation's commit until LISTENERS real LISTEN
 *    connections heard it and every device (the sample) fetched its delta, SAMPLE devices fetching
 *    at once with CONCURRENCY connections (the thundering herd push causes).
 * Rates per hour and month follow from the device's constants (refreshPollMs, heartbeat_seconds):
 * requests/s = N / mean poll interval; egress = N x polls x bytes. Above SAMPLE devices, the time
 * for all N to fetch is the sample's time x N / SAMPLE (labelled "extrapolated"), since fetches
 * queue on the same connections. HTTP bytes are measured once through the PostgREST stand-in of
 * test/helpers/postgrest.ts (status line, its headers and the body; Supabase's gateway adds its
 * own headers, which are not measured here).
 */
import {createHash} from 'node:crypto'
import {request} from 'node:http'

import pg from 'pg'

import {refreshPollMs} from '../src/lib/up/refresh.js'
import {pollUntil} from '../src/lib/poll.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {PostgresClient} from '../src/lib/store/sql-client.js'
import {standInKeys, startPostgrestStandIn} from '../test/helpers/postgrest.js'
import {type BenchRun, percentile, result, type Result, timed, using, withBenchDatabase} from './harness.js'

const FLEETS = process.env.VIDSYNC_BENCH_FLEETS?.split(',').map(Number) ?? [20, 100, 1000, 10_000]
/** Devices that really call per round; above this the fleet's time is extrapolated. */
const SAMPLE = 2000
const CONCURRENCY = 16
const LISTENERS = 20
/** The old loop's default interval (`up --interval 10s`). */
const OLD_INTERVAL_S = 10
const meanPollS = (refreshPollMs.min + refreshPollMs.max) / 2000
const HOURS_PER_MONTH = 730
const GB = 1e9

const tokenOf = (fleet: number, i: number) => `vsd_${createHash('sha256').update(`bench-${fleet}-${i}`).digest('base64url').slice(0, 43)}`

/** N active devices with tokens in a new project (bulk SQL: setup, not measured). Returns the project's name and a revocable device. */
async function seedFleet(sql: PostgresClient, fleet: number, index: number): Promise<string> {
  const project = `fleet-${fleet}`
  await sql.query('SELECT * FROM vidsync.create_project($1, $2)', [project, `10.${100 + index}.0.0/16`])
  await sql.query(
    `WITH p AS (SELECT id, cidr FROM vidsync.projects WHERE name = $1),
          inv AS (INSERT INTO vidsync.invites (project_id, code_sha256, max_uses, uses, expires_at)
                  SELECT p.id, encode(sha256(convert_to($1, 'UTF8')), 'hex'), 10000, 0, now() + interval '1 day' FROM p RETURNING id, project_id),
          dev AS (INSERT INTO vidsync.devices (project_id, name, ip, public_key_sha256, syncthing_id)
                  SELECT p.id, 'd' || g, set_masklen(network(p.cidr) + g + 1, 32), encode(sha256(convert_to($1 || g, 'UTF8')), 'hex'), NULL
                    FROM p, generate_series(0, $2 - 1) g RETURNING id, name, project_id),
          cert AS (INSERT INTO vidsync.certificates (device_id, fingerprint, not_after, pem)
                   SELECT dev.id, encode(sha256(convert_to('cert' || $1 || dev.name, 'UTF8')), 'hex'), now() + interval '365 days', 'pem' FROM dev)
     INSERT INTO vidsync.join_requests (project_id, invite_id, name, public_key, public_key_sha256, groups, token_sha256, status, device_id)
     SELECT dev.project_id, inv.id, dev.name, 'key', encode(sha256(convert_to($1 || dev.name, 'UTF8')), 'hex'), '{}',
            encode(sha256(convert_to(t.token, 'UTF8')), 'hex'), 'approved', dev.id
       FROM dev JOIN inv ON true JOIN unnest($3::text[]) WITH ORDINALITY t (token, n) ON 'd' || (t.n - 1) = dev.name`,
    [project, fleet, Array.from({length: fleet}, (_, i) => tokenOf(fleet, i))],
  )
  // Addresses for the devices the bench registers later, above the seeded ones.
  await sql.query('SELECT * FROM vidsync.populate_pool($1, $2)', [project, `10.${100 + index}.255.0/24`])
  await sql.query('ANALYZE')
  return project
}

/** Runs `call` for each item on `concurrency` workers; answers each call's ms. */
async function herd<T>(items: T[], concurrency: number, call: (item: T) => Promise<unknown>): Promise<number[]> {
  const latencies: number[] = []
  let next = 0
  await Promise.all(
    Array.from({length: concurrency}, async () => {
      while (next < items.length) {
        const item = items[next++] as T
        const [ms] = await timed(() => call(item))
        latencies.push(ms)
      }
    }),
  )
  return latencies
}

/** Bytes of a whole HTTP response (status line, headers, body) to an RPC through the stand-in. */
function httpResponseBytes(url: string, fn: string, args: Record<string, unknown>): Promise<number> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify(args)
    const req = request(`${url}/rest/v1/rpc/${fn}`, {
      method: 'POST',
      headers: {apikey: standInKeys.anon, authorization: `Bearer ${standInKeys.anon}`, 'content-type': 'application/json', 'content-profile': 'vidsync', connection: 'close'},
    })
    req.on('socket', (socket) => {
      let bytes = 0
      socket.on('data', (chunk: Buffer) => (bytes += chunk.length))
      socket.on('close', () => resolve(bytes))
    })
    req.on('response', (res) => res.resume())
    req.on('error', reject)
    req.end(body)
  })
}

export const run: BenchRun = async ({log}) => {
  const results: Result[] = []
  await withBenchDatabase(async (url) => {
    await using(new PostgresClient(url, 2), async (owner) => {
      await migrate(owner, await loadMigrations())
      const [{seconds: heartbeatS} = {seconds: 300}] = await owner.query<{seconds: number}>('SELECT vidsync.heartbeat_seconds() AS seconds')
      // Devices come as anon, like Supabase's anon key; each call is one statement, as PostgREST makes it.
      const pool = new pg.Pool({connectionString: url, max: CONCURRENCY, options: '-c role=anon'})
      pool.on('error', () => {})
      const standIn = await startPostgrestStandIn({databaseUrl: url})
      const body = async (fn: string, args: unknown[]) => {
        const placeholders = args.map((_, i) => `$${i + 1}`).join(', ')
        const {rows} = await pool.query<{json: string}>(`SELECT coalesce(json_agg(_r), '[]')::text AS json FROM vidsync.${fn}(${placeholders}) _r`, args)
        return rows[0]?.json ?? ''
      }
      const sync = async (token: string, version: number | null) => {
        const [row] = JSON.parse(await body('device_sync', [token, version])) as {state: string; version: number}[]
        if (!row) throw new Error('device_sync answered no row')
        return row
      }
      try {
        // Open every connection first, so that no refresh below pays for one.
        await Promise.all(Array.from({length: CONCURRENCY}, () => pool.query('SELECT 1')))
        for (const [index, fleet] of FLEETS.entries()) {
          const [seedMs, project] = await timed(() => seedFleet(owner, fleet, index))
          log(`N=${fleet}: seeded in ${(seedMs / 1000).toFixed(1)} s`)
          const sample = Array.from({length: Math.min(fleet, SAMPLE)}, (_, i) => tokenOf(fleet, i))
          const scale = fleet / sample.length
          const extrapolated = scale > 1 ? `, extrapolated from ${sample.length}` : ''
          const label = (what: string) => `refresh N=${fleet}: ${what}`

          // Today: the whole project on every pass.
          const old = Buffer.byteLength(await body('device_refresh', [sample[0]]))
          const oldRate = fleet / OLD_INTERVAL_S
          results.push(
            result(label('today, device_refresh body per call'), old, 'B'),
            result(label('today, requests/s (every 10 s)'), oldRate, 'req/s'),
            result(label('today, egress per month (bodies)'), (oldRate * 3600 * HOURS_PER_MONTH * old) / GB, 'GB'),
          )

          // Every device's first sync: a full snapshot, which also gives the version it then holds.
          const first = await sync(sample[0] as string, null)
          const full = Buffer.byteLength(await body('device_sync', [sample[0], null]))
          // Steady state: each device's last heartbeat write is 0 to heartbeat + one poll ago.
          await owner.query('UPDATE vidsync.devices SET last_seen_at = now() - random() * make_interval(secs => $1) WHERE project_id = (SELECT id FROM vidsync.projects WHERE name = $2)', [
            heartbeatS + meanPollS,
            project,
          ])
          const roundStart = new Date()
          const [idleMs, idle] = await timed(() => herd(sample, CONCURRENCY, (token) => sync(token, first.version)))
          const idleSeconds = idleMs / 1000
          const unchanged = Buffer.byteLength(await body('device_sync', [sample[0], first.version]))
          const [{written} = {written: 0}] = await owner.query<{written: number}>(
            'SELECT count(*)::int AS written FROM vidsync.devices d JOIN vidsync.join_requests r ON r.device_id = d.id WHERE d.last_seen_at >= $1 AND r.token_sha256 = ANY ($2)',
            [roundStart, sample.map((token) => createHash('sha256').update(token).digest('hex'))],
          )
          const fleetRate = fleet / meanPollS
          const writeShare = written / sample.length
          const pollsPerHour = 3600 / meanPollS
          results.push(
            result(label('full snapshot body (first sync)'), full, 'B'),
            result(label('idle, requests/s (one poll per 60-75 s)'), fleetRate, 'req/s'),
            result(label('idle, requests per device per minute'), 60 / meanPollS, 'req/min', ['<', 1.001]),
            result(label('idle, unchanged body'), unchanged, 'B', ['<', 300]),
            result(label('idle, bytes per device per hour beyond the poll'), 0, 'B', ['<', 1024]),
            result(label('idle, bytes per device per hour (polls)'), pollsPerHour * unchanged, 'B'),
            result(label('idle, DB writes/s (heartbeats)'), fleetRate * writeShare, 'writes/s'),
            result(label('idle, refresh p50'), percentile(idle, 50), 'ms'),
            result(label('idle, refresh p99'), percentile(idle, 99), 'ms'),
            result(label(`idle, DB throughput at concurrency ${CONCURRENCY}`), sample.length / idleSeconds, 'req/s'),
          )
          if (fleet === 100) {
            const http = await httpResponseBytes(standIn.url, 'device_sync', {p_token: sample[0], p_known_version: first.version})
            results.push(
              result(label('idle, HTTP response through the stand-in'), http, 'B'),
              result(label('idle, egress per month (bodies)'), (fleetRate * 3600 * HOURS_PER_MONTH * unchanged) / GB, 'GB', ['<', 1]),
              result(label('idle, egress per month (stand-in HTTP responses)'), (fleetRate * 3600 * HOURS_PER_MONTH * http) / GB, 'GB', ['<', 1]),
            )
          }

          // One change a minute: a new peer, then a revocation; each device fetches one delta per change (push resets its poll).
          await owner.query("SELECT * FROM vidsync.register_device($1, 'newcomer', 'key', $2)", [project, createHash('sha256').update(project).digest('hex')])
          const added = await sync(sample[0] as string, first.version)
          const addedBytes = Buffer.byteLength(await body('device_sync', [sample[0], first.version]))
          const listeners = await Promise.all(
            Array.from({length: Math.min(LISTENERS, fleet)}, async () => {
              const client = new pg.Client({connectionString: url})
              await client.connect()
              await client.query(`LISTEN vidsync_${(await owner.query<{id: string}>('SELECT id FROM vidsync.projects WHERE name = $1', [project]))[0]?.id}`)
              return client
            }),
          )
          try {
            const heard: number[] = []
            let revokedAt = 0
            for (const client of listeners) client.on('notification', () => heard.push(performance.now() - revokedAt))
            revokedAt = performance.now()
            await owner.query("SELECT * FROM vidsync.revoke_device($1, 'd' || ($2::int - 1))", [project, fleet])
            await pollUntil(() => heard.length === listeners.length, {timeoutMs: 10_000, intervalMs: 5, onTimeout: () => false})
            const notified = heard.length === listeners.length ? Math.max(...heard) : Number.NaN
            const fetches = await herd(sample, CONCURRENCY, (token) => sync(token, added.version))
            const fetched = performance.now() - revokedAt - notified
            const revokedBytes = Buffer.byteLength(await body('device_sync', [sample[0], added.version]))
            const reach = notified + fetched * scale
            results.push(
              result(label('change, delta body for a new peer'), addedBytes, 'B'),
              result(label('change, delta body for a revocation'), revokedBytes, 'B'),
              result(label('one change a minute, bytes per device per hour'), 60 * ((addedBytes + revokedBytes) / 2), 'B'),
              result(label(`revocation, notify heard by ${listeners.length} listeners (slowest)`), notified, 'ms'),
              result(label('revocation, delta fetch p99 under the herd'), percentile(fetches, 99), 'ms'),
              result(label(`revocation reaches all N (notify + every fetch${extrapolated})`), reach / 1000, 's', ['<', 10]),
            )
            log(`N=${fleet}: unchanged ${unchanged} B (today ${old} B), idle p50 ${percentile(idle, 50).toFixed(1)} ms, reach ${(reach / 1000).toFixed(2)} s`)
          } finally {
            await Promise.all(listeners.map((client) => client.end()))
          }
        }
      } finally {
        await standIn.close()
        await pool.end()
      }
    })
  })
  return results
}
