/**
 * Cold start of the built CLI, each sample a fresh process: a command on the embedded database
 * against PGlite's own open-plus-query of the same data directory, a command on Postgres against
 * `--help`, and peak memory (max RSS) of each. Targets: within 1.5x of the floor each is compared with.
 */
import {spawnSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {type BenchRun, percentile, result, type Result, withBenchDatabase} from './harness.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const RUNS = Number(process.env.VIDSYNC_BENCH_CLI_RUNS ?? 7)

// Loaded before the measured program: reports its own peak memory and CPU time when it exits.
const reporter = `data:text/javascript,${encodeURIComponent(
  "process.on('exit', () => { const u = process.resourceUsage(); process.stderr.write('\\nvidsync-bench ' + JSON.stringify({maxRssKiB: u.maxRSS, cpuMs: (u.userCPUTime + u.systemCPUTime) / 1000})) })",
)}`

// What PGlite itself needs to answer one query from an existing data directory.
const pgliteFloor = `
const {PGlite} = await import('@electric-sql/pglite')
const db = await PGlite.create(process.argv[1])
await db.query('select count(*) from vidsync.projects')
await db.close()
`

interface Sample {
  wallMs: number
  cpuMs: number
  maxRssKiB: number
}

function sample(args: string[], env: NodeJS.ProcessEnv): Sample {
  const start = performance.now()
  const child = spawnSync(process.execPath, ['--import', reporter, ...args], {cwd: root, env, encoding: 'utf8'})
  const wallMs = performance.now() - start
  if (child.status !== 0) throw new Error(`${args.join(' ')} exited with ${child.status}: ${child.stderr}`)
  const report = /vidsync-bench (\{.*\})/.exec(child.stderr)?.[1]
  if (!report) throw new Error(`${args.join(' ')} did not report its resource usage`)
  return {wallMs, ...(JSON.parse(report) as Omit<Sample, 'wallMs'>)}
}

function measure(label: string, args: string[], env: NodeJS.ProcessEnv, log: (message: string) => void): Sample {
  sample(args, env) // warm-up: file cache
  const samples = Array.from({length: RUNS}, () => sample(args, env))
  const median = (pick: (s: Sample) => number) => percentile(samples.map(pick), 50)
  const summary = {wallMs: median((s) => s.wallMs), cpuMs: median((s) => s.cpuMs), maxRssKiB: Math.max(...samples.map((s) => s.maxRssKiB))}
  log(`${label}: wall ${samples.map((s) => s.wallMs.toFixed(0)).join(', ')} ms; peak ${(summary.maxRssKiB / 1024).toFixed(0)} MiB`)
  return summary
}

function compare(label: string, floorLabel: string, command: Sample, floor: Sample): Result[] {
  return [
    result(`cli ${label}: median wall`, command.wallMs, 'ms'),
    result(`cli ${label}: median CPU`, command.cpuMs, 'ms'),
    result(`cli ${label}: peak memory`, command.maxRssKiB / 1024, 'MiB'),
    result(`cli ${floorLabel}: median wall`, floor.wallMs, 'ms'),
    result(`cli ${floorLabel}: peak memory`, floor.maxRssKiB / 1024, 'MiB'),
    result(`cli ${label} / ${floorLabel}: wall`, command.wallMs / floor.wallMs, 'x', ['<', 1.5]),
    result(`cli ${label} / ${floorLabel}: CPU`, command.cpuMs / floor.cpuMs, 'x'),
    result(`cli ${label} / ${floorLabel}: peak memory`, command.maxRssKiB / floor.maxRssKiB, 'x', ['<', 1.5]),
  ]
}

export const run: BenchRun = async ({log}) => {
  if (!existsSync(join(root, 'dist', 'commands')) || !existsSync(join(root, 'oclif.manifest.json'))) {
    throw new Error('dist/ or oclif.manifest.json is missing: run `npm run build` first')
  }
  const cli = join(root, 'bin', 'run.js')
  const home = await mkdtemp(join(tmpdir(), 'vidsync-bench-home-'))
  const env: NodeJS.ProcessEnv = {...process.env, VIDSYNC_HOME: home, VIDSYNC_SKIP_NEW_VERSION_CHECK: 'true', VIDSYNC_DATABASE_URL: ''}
  try {
    sample([cli, 'project', 'create', 'bench', '--cidr', '10.77.0.0/24'], env)
    sample([cli, 'pool', 'populate', 'bench'], env)
    const embedded = measure('pool status, embedded', [cli, 'pool', 'status', 'bench'], env, log)
    const pglite = measure('PGlite open + query', ['--input-type=module', '-e', pgliteFloor, join(home, 'db')], env, log)
    const help = measure('--help', [cli, '--help'], env, log)
    const results = [...compare('pool status, embedded', 'PGlite open + query', embedded, pglite)]
    await withBenchDatabase(async (url) => {
      const postgresEnv = {...env, VIDSYNC_DATABASE_URL: url}
      sample([cli, 'db', 'migrate'], postgresEnv)
      sample([cli, 'project', 'create', 'bench', '--cidr', '10.77.0.0/24'], postgresEnv)
      const postgres = measure('pool status, Postgres', [cli, 'pool', 'status', 'bench'], postgresEnv, log)
      results.push(...compare('pool status, Postgres', '--help', postgres, help))
    })
    return results
  } finally {
    await rm(home, {recursive: true, force: true})
  }
}
