/** Cold start of the built CLI: each sample is a fresh `node bin/run.js ...` process. */
import {spawnSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {type BenchRun, percentile, result, type Target} from './harness.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const RUNS = 10

/** Runs the built CLI once and returns its wall-clock ms (spawn to exit). */
function vidsync(args: string[], env: NodeJS.ProcessEnv): number {
  const start = performance.now()
  const child = spawnSync(process.execPath, [join(root, 'bin', 'run.js'), ...args], {env, encoding: 'utf8'})
  const ms = performance.now() - start
  if (child.status !== 0) throw new Error(`vidsync ${args.join(' ')} exited with ${child.status}: ${child.stderr}`)
  return ms
}

const cases: {label: string; args: string[]; target?: Target}[] = [
  {label: '--help', args: ['--help'], target: ['<', 300]},
  {label: 'pool status, embedded', args: ['pool', 'status', 'bench']},
]

export const run: BenchRun = async ({log}) => {
  if (!existsSync(join(root, 'dist', 'commands')) || !existsSync(join(root, 'oclif.manifest.json'))) {
    throw new Error('dist/ or oclif.manifest.json is missing: run `npm run build` first')
  }
  const home = await mkdtemp(join(tmpdir(), 'vidsync-bench-home-'))
  // The embedded backend, in a home of its own.
  const env: NodeJS.ProcessEnv = {...process.env, VIDSYNC_HOME: home}
  delete env.VIDSYNC_DATABASE_URL
  try {
    vidsync(['project', 'create', 'bench', '--cidr', '10.77.0.0/24'], env)
    vidsync(['pool', 'populate', 'bench'], env)
    return cases.flatMap(({label, args, target}) => {
      vidsync(args, env) // warm-up: file cache, PGlite's first open
      const samples = Array.from({length: RUNS}, () => vidsync(args, env))
      log(`vidsync ${args.join(' ')}: ${samples.map((ms) => ms.toFixed(0)).join(', ')} ms`)
      return [
        result(`cli ${label}: min of ${RUNS}`, Math.min(...samples), 'ms'),
        result(`cli ${label}: median of ${RUNS}`, percentile(samples, 50), 'ms', target),
        result(`cli ${label}: p95 of ${RUNS}`, percentile(samples, 95), 'ms'),
      ]
    })
  } finally {
    await rm(home, {recursive: true, force: true})
  }
}
