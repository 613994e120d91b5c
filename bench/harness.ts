/** What bench modules share: the result shape, targets, timing, statistics and throw-away backends. */
import {randomBytes} from 'node:crypto'
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir, userInfo} from 'node:os'
import {join} from 'node:path'

import {EmbeddedClient, PostgresClient, type SqlClient} from '../src/lib/store/sql-client.js'

export interface Result {
  name: string
  value: number
  unit: string
  /** Human-readable goal, such as `< 1000`. */
  target?: string
  met?: boolean
}

export interface BenchContext {
  /** Progress for the human at the terminal; always goes to stderr. */
  log(message: string): void
}

/**
 * A bench module is any bench/*.ts (other than run.ts and harness.ts) exporting `run` of this
 * type; run.ts finds it by its file name.
 */
export type BenchRun = (context: BenchContext) => Promise<Result[]>

export type Target = ['<' | '>=' | '=', number]

const meets: Record<Target[0], (value: number, limit: number) => boolean> = {
  '<': (value, limit) => value < limit,
  '>=': (value, limit) => value >= limit,
  '=': (value, limit) => value === limit,
}

export function result(name: string, value: number, unit: string, target?: Target): Result {
  const rounded = Number(value.toFixed(Math.abs(value) >= 100 || Number.isInteger(value) ? 0 : 2))
  if (!target) return {name, value: rounded, unit}
  const [op, limit] = target
  return {name, value: rounded, unit, target: `${op} ${limit}`, met: meets[op](value, limit)}
}

/** Linear-interpolated percentile (p = 50 is the median). */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  const index = (p / 100) * (sorted.length - 1)
  const below = sorted[Math.floor(index)]
  const above = sorted[Math.ceil(index)]
  if (below === undefined || above === undefined) throw new Error('percentile of no values')
  return below + (above - below) * (index - Math.floor(index))
}

/** Milliseconds that `work` took, and what it returned. */
export async function timed<T>(work: () => Promise<T>): Promise<[number, T]> {
  const start = performance.now()
  const value = await work()
  return [performance.now() - start, value]
}

/** Runs `work` with a resource and closes it afterwards, also on failure. */
export async function using<C extends {close(): Promise<void>}, T>(resource: C, work: (resource: C) => Promise<T>): Promise<T> {
  try {
    return await work(resource)
  } finally {
    await resource.close()
  }
}

/**
 * The server's `test` database (trust auth, as the OS user, like psql); the bench creates and
 * drops its own database beside it.
 */
const adminUrl =
  process.env.VIDSYNC_BENCH_DATABASE_URL ?? `postgres://${process.env.PGUSER ?? userInfo().username}@127.0.0.1:5432/test`

/** A throw-away Postgres database for `work`, dropped afterwards, also on failure. */
export async function withBenchDatabase(work: (url: string) => Promise<void>): Promise<void> {
  const name = `vidsync_bench_${process.pid}_${randomBytes(4).toString('hex')}`
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  await using(new PostgresClient(adminUrl, 1), async (admin) => {
    await admin.query(`CREATE DATABASE ${name}`)
    try {
      await work(url.toString())
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    }
  })
}

/** A throw-away PGlite database in a temp dir, removed afterwards. */
export async function withEmbedded(work: (sql: SqlClient) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vidsync-bench-pglite-'))
  try {
    await using(await EmbeddedClient.open(dir), work)
  } finally {
    await rm(dir, {recursive: true, force: true})
  }
}

/**
 * Runs `work`, then `cleanUp`; Ctrl-C or SIGTERM meanwhile runs `cleanUp` too (once) and exits 130,
 * so that no namespace or daemon a bench started is left behind.
 */
export async function withCleanUp<T>(cleanUp: () => Promise<void>, log: (message: string) => void, work: () => Promise<T>): Promise<T> {
  let closing: Promise<void> | undefined
  const once = () => (closing ??= cleanUp())
  const onSignal = (signal: NodeJS.Signals) => {
    log(`${signal}: removing the lab`)
    void once().finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    return await work()
  } finally {
    await once()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}
