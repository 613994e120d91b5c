/**
 * Cold start of the built CLI, each sample a fresh process: a command on the embedded database
 * against PGlite's own open-plus-query of the same data directory, a command on Postgres against
 * `--help`, and peak memory (max RSS) of each. Targets: within 1.5x of the floor each is compared with.
 * The commands are sampled in turn, round after round, and each wall-time ratio is the median of
 * the ratios within a round, whose samples ran seconds apart under the same load: on a busy
 * machine the medians of the two commands' own times may come from rounds under different loads.
 */
import {spawnSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {type BenchRun, percentile, result, type Result, withBenchDatabase} from './harness.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const RUNS = Number(process.env.VIDSYNC_BENCH_CLI_RUNS ?? 11)

// Loaded before the measured program: reports its own peak memory and CPU time when it exits.
const reporter = `data:text/javascript,${encodeURIComponent(
  "process.on('exit', () => { const u = process.resourceUsage(); process.stderr.write('\\nvidsync-bench ' + JSON.stringify({maxRssKiB: u.maxRSS, cpuMs: (u.userCPUTime + u.systemCPUTime) / 1000})) })",
)}`

// What PGlite itself needs to answer one query from an existing data directory: a trivial query,
// and the query \`pool status\` sends (a PL/pgSQL function: PGlite loads plpgsql for it).
const pgliteFloor = (query: string) => `
const {PGlite} = await import('@electric-sql/pglite')
const db = await PGlite.create(process.argv[1])
await db.query(${JSON.stringify(query)}, process.argv.slice(2))
await db.close()
`
const trivialQuery = 'select count(*) from vidsync.projects'
const commandQuery = 'SELECT * FROM vidsync.pool_status(p_project => $1)'

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

interface Measured {
  label: string
  args: string[]
  env: NodeJS.ProcessEnv
}

/**
 * Samples every command in turn, round after round (after one warm-up round for the file cache),
 * so that a shared machine's changing load falls on each command alike: the samples of one round
 * are compared with each other.
 */
function measureInterleaved(commands: Measured[], log: (message: string) => void): Map<string, Sample[]> {
  for (const command of commands) sample(command.args, command.env)
  const samples = new Map<string, Sample[]>(commands.map((command) => [command.label, []]))
  for (let round = 0; round < RUNS; round++) {
    for (const command of commands) samples.get(command.label)?.push(sample(command.args, command.env))
  }
  for (const [label, taken] of samples) {
    const peakMiB = Math.max(...taken.map((s) => s.maxRssKiB)) / 1024
    log(`${label}: wall ${taken.map((s) => s.wallMs.toFixed(0)).join(', ')} ms; CPU ${taken.map((s) => s.cpuMs.toFixed(0)).join(', ')} ms; peak ${peakMiB.toFixed(0)} MiB`)
  }
  return samples
}

const median = (taken: Sample[], pick: (s: Sample) => number) => percentile(taken.map(pick), 50)
const peak = (taken: Sample[]) => Math.max(...taken.map((s) => s.maxRssKiB))
/** The median over rounds of command / floor, each round's two samples taken seconds apart. */
const roundRatio = (command: Sample[], floor: Sample[], pick: (s: Sample) => number) =>
  percentile(command.map((s, round) => pick(s) / pick(floor[round] as Sample)), 50)

function compare(label: string, floorLabel: string, command: Sample[], floor: Sample[]): Result[] {
  return [
    result(`cli ${label}: median wall`, median(command, (s) => s.wallMs), 'ms'),
    result(`cli ${label}: median CPU`, median(command, (s) => s.cpuMs), 'ms'),
    result(`cli ${label}: peak memory`, peak(command) / 1024, 'MiB'),
    result(`cli ${floorLabel}: median wall`, median(floor, (s) => s.wallMs), 'ms'),
    result(`cli ${floorLabel}: peak memory`, peak(floor) / 1024, 'MiB'),
    result(`cli ${label} / ${floorLabel}: wall, median of rounds`, roundRatio(command, floor, (s) => s.wallMs), 'x', ['<', 1.5]),
    result(`cli ${label} / ${floorLabel}: CPU, median of rounds`, roundRatio(command, floor, (s) => s.cpuMs), 'x'),
    result(`cli ${label} / ${floorLabel}: peak memory`, peak(command) / peak(floor), 'x', ['<', 1.5]),
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
    const results: Result[] = []
    await withBenchDatabase(async (url) => {
      const postgresEnv = {...env, VIDSYNC_DATABASE_URL: url}
      sample([cli, 'db', 'migrate'], postgresEnv)
      sample([cli, 'project', 'create', 'bench', '--cidr', '10.77.0.0/24'], postgresEnv)
      const measured = measureInterleaved(
        [
          {label: 'pool status, embedded', args: [cli, 'pool', 'status', 'bench'], env},
          {label: 'PGlite open + query', args: ['--input-type=module', '-e', pgliteFloor(trivialQuery), join(home, 'db')], env},
          {label: 'PGlite open + pool_status', args: ['--input-type=module', '-e', pgliteFloor(commandQuery), join(home, 'db'), 'bench'], env},
          {label: 'pool status, Postgres', args: [cli, 'pool', 'status', 'bench'], env: postgresEnv},
          {label: '--help', args: [cli, '--help'], env},
        ],
        log,
      )
      const get = (label: string) => measured.get(label) as Sample[]
      results.push(...compare('pool status, embedded', 'PGlite open + query', get('pool status, embedded'), get('PGlite open + query')))
      results.push(...compare('pool status, embedded', 'PGlite open + pool_status', get('pool status, embedded'), get('PGlite open + pool_status')).slice(3))
      results.push(...compare('pool status, Postgres', '--help', get('pool status, Postgres'), get('--help')))
    })
    return results
  } finally {
    await rm(home, {recursive: true, force: true})
  }
}
