import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'

import {ExhaustedError} from '../src/lib/errors.js'
import {type Allocation, ControlPlane, SqlRpc} from '../src/lib/store/control-plane.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {PostgresClient} from '../src/lib/store/sql-client.js'
import {createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'

const connections = 32

/** Runs `count` tasks with at most `width` in flight, settling all of them. */
async function settleWithConcurrency<T>(count: number, width: number, task: (index: number) => Promise<T>) {
  const results: PromiseSettledResult<T>[] = []
  let next = 0
  await Promise.all(
    Array.from({length: width}, async () => {
      while (next < count) {
        const index = next++
        results[index] = await task(index).then(
          (value) => ({status: 'fulfilled', value}) as const,
          (reason: unknown) => ({status: 'rejected', reason}) as const,
        )
      }
    }),
  )
  return results
}

const fulfilled = <T>(results: PromiseSettledResult<T>[]) =>
  results.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []))
const rejected = <T>(results: PromiseSettledResult<T>[]) =>
  results.flatMap((result) => (result.status === 'rejected' ? [result.reason as Error] : []))

describe('allocation under concurrency on real Postgres', function () {
  this.timeout(120_000)
  let database: ThrowawayDatabase
  let sql: PostgresClient
  let cp: ControlPlane

  before(async () => {
    database = await createThrowawayDatabase('concurrency')
    sql = new PostgresClient(database.url, connections)
    await migrate(sql, await loadMigrations())
    cp = new ControlPlane(new SqlRpc(sql))
    await cp.createProject({name: 'wide', cidr: '10.80.0.0/22', quarantineSeconds: 3600})
    await cp.populatePool({project: 'wide'})
  })

  after(async () => {
    await sql?.close()
    await database?.drop()
  })

  it('hands 1,000 concurrent allocations from 32 connections 1,000 distinct addresses', async () => {
    const results = await settleWithConcurrency(1000, connections, (i) => cp.allocateIp({project: 'wide', device: `d${i}`}))
    expect(rejected(results)).to.deep.equal([])
    const ips = fulfilled(results).map((allocation: Allocation) => allocation.ip)
    expect(new Set(ips).size).to.equal(1000)
    const [duplicates] = await sql.query<{n: number}>(
      'SELECT count(*)::int AS n FROM (SELECT ip FROM vidsync.devices GROUP BY ip HAVING count(*) > 1) d',
    )
    expect(duplicates?.n).to.equal(0)
    expect(await cp.poolStatus({project: 'wide'})).to.include({total: 1022, allocated: 1000, free: 22})
  })

  it('exhausts exactly at the pool size with a clear error', async () => {
    const results = await settleWithConcurrency(40, connections, (i) => cp.allocateIp({project: 'wide', device: `late${i}`}))
    expect(fulfilled(results)).to.have.length(22)
    const errors = rejected(results)
    expect(errors).to.have.length(18)
    for (const error of errors) {
      expect(error).to.be.instanceOf(ExhaustedError)
      expect(error.message).to.contain('pool of project "wide" (10.80.0.0/22) is exhausted')
    }
    expect(await cp.poolStatus({project: 'wide'})).to.include({allocated: 1022, free: 0})
  })

  it('does not reuse quarantined addresses early, even under contention', async () => {
    await Promise.all([0, 1, 2, 3, 4].map((i) => cp.releaseIp({project: 'wide', device: `d${i}`})))
    const results = await settleWithConcurrency(10, 10, (i) => cp.allocateIp({project: 'wide', device: `eager${i}`}))
    expect(fulfilled(results)).to.have.length(0)
    expect(await cp.poolStatus({project: 'wide'})).to.include({allocated: 1017, quarantined: 5, free: 0})
  })

  it('gives a waiting allocation the address that another transaction rolls back', async () => {
    await sql.query(
      "UPDATE vidsync.ip_pool SET quarantined_until = now() WHERE ip = '10.80.0.1' AND project_id = (SELECT id FROM vidsync.projects WHERE name = 'wide')",
    )
    let holding!: () => void
    const held = new Promise<void>((resolve) => {
      holding = resolve
    })
    let finish!: () => void
    const released = new Promise<void>((resolve) => {
      finish = resolve
    })
    const rollback = new Error('rollback')
    const holder = sql
      .transaction(async (tx) => {
        const allocation = await new ControlPlane(new SqlRpc(tx)).allocateIp({project: 'wide', device: 'holder'})
        expect(allocation.ip).to.equal('10.80.0.1')
        holding()
        await released
        throw rollback
      })
      .catch((error: unknown) => error)
    // If the holder fails before taking the address (its expect throws), fail now rather than wait for the timeout.
    const first = await Promise.race([held.then(() => 'held' as const), holder])
    if (first !== 'held') throw first
    // The address is locked by the holder: SKIP LOCKED finds nothing and the re-check waits.
    const waiter = cp.allocateIp({project: 'wide', device: 'waiter'})
    await sleep(300)
    finish()
    expect(await holder).to.equal(rollback)
    expect(await waiter).to.include({device: 'waiter', ip: '10.80.0.1'})
    expect(await sql.query("SELECT 1 FROM vidsync.devices WHERE name = 'holder'")).to.have.length(0)
  })
})
