/**
 * Device registration latency: allocate + nebula-cert sign + record + bundle zip, through the
 * same library call `device register` makes, on the embedded backend and on Postgres.
 */
import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {registerDevice} from '../src/lib/devices/issue.js'
import {runTool} from '../src/lib/exec.js'
import {initCa} from '../src/lib/pki/ca.js'
import {ControlPlane, SqlRpc} from '../src/lib/store/control-plane.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {PostgresClient, type SqlClient} from '../src/lib/store/sql-client.js'
import {type BenchRun, percentile, result, type Result, timed, using, withBenchDatabase, withEmbedded} from './harness.js'

const REGISTRATIONS = 40

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
    const report = (backend: string, samples: number[]) => {
      const p50 = percentile(samples, 50)
      const p95 = percentile(samples, 95)
      log(`${backend}: p50 ${p50.toFixed(0)} ms, p95 ${p95.toFixed(0)} ms`)
      results.push(
        result(`device register p50, ${backend} (${REGISTRATIONS} runs)`, p50, 'ms'),
        result(`device register p95, ${backend} (${REGISTRATIONS} runs)`, p95, 'ms'),
      )
    }
    await withEmbedded(async (sql) => report('embedded', await latencies(sql, dir, 'embedded')))
    await withBenchDatabase((url) =>
      using(new PostgresClient(url, 2), async (sql) => report('postgres', await latencies(sql, dir, 'postgres'))),
    )
  } finally {
    await rm(dir, {recursive: true, force: true})
  }
  return results
}
