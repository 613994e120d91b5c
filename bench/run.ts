/**
 * `npm run bench [-- --only NAME ...] [-- --json]`: runs every bench module in bench/ (each
 * bench/NAME.ts exporting `run: BenchRun`, see harness.ts), then prints the results as a table,
 * or with --json as one JSON document on stdout (table and progress on stderr):
 *   npm run bench --silent -- --json > bench/results/<date>-<benches>.json
 * `npx tsx bench/render.ts` then regenerates the results part of BENCHMARKS.md from bench/results/.
 */
import {readdir} from 'node:fs/promises'
import os from 'node:os'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'

import {renderTable} from '../src/lib/output/table.js'
import type {BenchRun, Result} from './harness.js'

const usage = 'usage: npm run bench [--silent] -- [--only NAME]... [--json]'
const {values} = parseArgs({
  options: {
    only: {type: 'string', multiple: true},
    json: {type: 'boolean', default: false},
    help: {type: 'boolean', short: 'h', default: false},
  },
})

const dir = fileURLToPath(new URL('.', import.meta.url))
const available = (await readdir(dir))
  .filter((file) => file.endsWith('.ts') && !['run.ts', 'harness.ts', 'render.ts'].includes(file))
  .map((file) => file.slice(0, -'.ts'.length))
  .sort()

if (values.help) {
  console.log(`${usage}\nbenches: ${available.join(', ')}`)
  process.exit(0)
}
const unknown = (values.only ?? []).filter((name) => !available.includes(name))
if (unknown.length > 0) {
  console.error(`unknown bench ${unknown.join(', ')}: choose from ${available.join(', ')}\n${usage}`)
  process.exit(2)
}
const selected = values.only ? available.filter((name) => values.only?.includes(name)) : available

// The machine is often shared: the load average before and after says how much the numbers are worth.
const loadBefore = os.loadavg()
const results: Result[] = []
const errors: {bench: string; message: string}[] = []
for (const name of selected) {
  const log = (message: string) => console.error(`[${name}] ${message}`)
  try {
    const module = (await import(`./${name}.ts`)) as {run?: BenchRun}
    if (!module.run) throw new Error(`bench/${name}.ts does not export run`)
    results.push(...(await module.run({log})))
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    log(`failed: ${message}`)
    errors.push({bench: name, message})
  }
}

const cpus = os.cpus()
const report = {
  machine: {
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    cpu: {model: cpus[0]?.model ?? 'unknown', count: os.availableParallelism()},
    memoryGiB: Number((os.totalmem() / 2 ** 30).toFixed(1)),
    node: process.version,
  },
  date: new Date().toISOString(),
  benches: selected,
  /** 1, 5 and 15 minute load averages when the run started and when it ended. */
  load: {before: loadBefore.map((value) => Number(value.toFixed(2))), after: os.loadavg().map((value) => Number(value.toFixed(2)))},
  results,
  errors,
}

const table = renderTable(results, [
  {header: 'benchmark', get: (row) => row.name},
  {header: 'value', get: (row) => row.value},
  {header: 'unit', get: (row) => row.unit},
  {header: 'target', get: (row) => row.target},
  {header: 'ok', get: (row) => (row.met === undefined ? '' : row.met ? 'yes' : 'NO')},
])
if (values.json) {
  console.log(JSON.stringify(report, null, 2))
  console.error(table)
} else {
  const {machine} = report
  console.log(`${machine.cpu.model} x${machine.cpu.count}, ${machine.memoryGiB} GiB, node ${machine.node}, ${report.date}, load ${report.load.before.join(' ')}\n`)
  console.log(table)
}
process.exitCode = errors.length > 0 ? 1 : 0
