/**
 * Device registration latency: allocate + nebula-cert sign + record + bundle zip, on the embedded
 * backend and on Postgres, two ways: the library call `device register` makes (what vidsync's own
 * code costs), and `vidsync device register` as a user runs it, a fresh process each time (Node,
 * oclif and, on the embedded backend, PGlite's start-up included). Needs a built CLI.
 */
import {spawnSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {registerDevice} from '../src/lib/devices/issue.js'
import {runTool} from '../src/lib/exec.js'
import {initCa} from '../src/lib/pki/ca.js'
import {ControlPlane, SqlRpc} from '../src/lib/store/control-plane.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {PostgresClient, type SqlClient} from '../src/lib/store/sql-client.js'
import {type BenchRun, percentile, result, type Result, timed, using, withBenchDatabase, withEmbedded} from './harness.js'

const REGISTRATIONS = 40
/** Fewer: each is a whole process. */
const COMMAND_REGISTRATIONS = 10
const root = fileURLToPath(new URL('..', import.meta.url))

/** Runs the built CLI once, as a user would, and returns its wall-clock ms (spawn to exit). */
function vidsync(args: string[], env: NodeJS.ProcessEnv): number {
  const start = performance.now()
  const child = spawnSync(process.execPath, [join(root, 'bin', 'run.js'), ...args, '--json'], {env, encoding: 'utf8'})
  const ms = performance.now() - start
  if (child.status !== 0) throw new Error(`vidsync ${args.join(' ')} exited with ${child.status}: ${child.stdout}${child.stderr}`)
  return ms
}

/** `vidsync device register` COMMAND_REGISTRATIONS times in `home`, on the backend `env` selects. */
async function commandLatencies(home: string, env: NodeJS.ProcessEnv, backend: string): Promise<number[]> {
  const project = `cmd-${backend}`
  vidsync(['project', 'create', project, '--cidr', '10.67.0.0/24'], env)
  vidsync(['pool', 'populate', project], env)
  const samples: number[] = []
  for (let i = 0; i < COMMAND_REGISTRATIONS; i++) {
    const key = join(home, `${project}-d${i}`)
    await runTool('nebula-cert', ['keygen', '-out-key', `${key}.key`, '-out-pub', `${key}.pub`])
    samples.push(vidsync(['device', 'register', project, '--name', `d${i}`, '--public-key', `${key}.pub`, '--out', `${key}.zip`], env))
  }
  return samples
}

async function latencies(sql: SqlClient, dir: string, backend: string): Promise<number[]> {
  await migrate(sql, await loadMigrations())
  const controlPlane = new ControlPlane(new SqlRpc(sql))
  const project = `bench-${backend}`
  await controlPlane.createProject({name: project, cidr: '10.66.0.0/24'})
  await controlPlane.populatePool({project})
  const samples: number[] = []
  for (let i = 0; i < REGISTRATIONS; i++) {
    const key = join(dir, `${backend}-d${i}`)
    await runTool('nebula-cert', ['keygen', '-out-key', `${key}.key`, '-out-pub', `${key}.pub`])
    const publicKeyPem = await readFile(`${key}.pub`)
    const [ms] = await timed(() =>
      registerDevice({home: dir, controlPlane, project, name: `d${i}`, publicKeyPem, outPath: `${key}.zip`}),
    )
    samples.push(ms)
  }
  return samples
}

export const run: BenchRun = async ({log}) => {
  const results: Result[] = []
  const dir = await mkdtemp(join(tmpdir(), 'vidsync-bench-register-'))
  try {
    await initCa({home: dir, name: 'bench'})
    const report = (what: string, backend: string, samples: number[]) => {
      const p50 = percentile(samples, 50)
      const p95 = percentile(samples, 95)
      log(`${what}, ${backend}: p50 ${p50.toFixed(0)} ms, p95 ${p95.toFixed(0)} ms`)
      results.push(
        result(`${what} p50, ${backend} (${samples.length} runs)`, p50, 'ms'),
        result(`${what} p95, ${backend} (${samples.length} runs)`, p95, 'ms'),
      )
    }
    if (!existsSync(join(root, 'dist', 'commands'))) throw new Error('dist/ is missing: run `npm run build` first')
    // The command runs in `dir` as its home, which holds the CA; the embedded store is the home's own.
    const env: NodeJS.ProcessEnv = {...process.env, VIDSYNC_HOME: dir}
    delete env.VIDSYNC_DATABASE_URL
    await withEmbedded(async (sql) => report('registerDevice() library call', 'embedded', await latencies(sql, dir, 'embedded')))
    report('`vidsync device register` command', 'embedded', await commandLatencies(dir, env, 'embedded'))
    await withBenchDatabase(async (url) => {
      await using(new PostgresClient(url, 2), async (sql) => report('registerDevice() library call', 'postgres', await latencies(sql, dir, 'postgres')))
      report('`vidsync device register` command', 'postgres', await commandLatencies(dir, {...env, VIDSYNC_DATABASE_URL: url}, 'postgres'))
    })
  } finally {
    await rm(dir, {recursive: true, force: true})
  }
  return results
}
