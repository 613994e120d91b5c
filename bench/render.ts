/**
 * `npx tsx bench/render.ts`: regenerates the results part of BENCHMARKS.md (between its
 * GENERATED RESULTS markers) from the JSON that `npm run bench -- --json` wrote into
 * bench/results/, one table per file: one machine, one date, its load average. Nothing else
 * in BENCHMARKS.md is touched, so its prose may cite only these tables.
 *   npm run bench --silent -- --only store --json > bench/results/$(date -u +%Y-%m-%dT%H-%MZ)-store.json
 *   npx tsx bench/render.ts [--check]     (--check: exit 1 if BENCHMARKS.md is not up to date)
 */
import {readdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'

import type {Result} from './harness.js'

/** What bench/run.ts writes with --json; `note` only in results transcribed from an older format. */
export interface Report {
  machine: {os: string; cpu: {model: string; count: number}; memoryGiB: number; node: string | null}
  date: string
  benches?: string[]
  load?: {before: number[]; after: number[]} | null
  results: Result[]
  errors: {bench: string; message: string}[]
  note?: string
}

const begin = '<!-- BEGIN GENERATED RESULTS (npx tsx bench/render.ts; do not edit by hand) -->'
const end = '<!-- END GENERATED RESULTS -->'

const formatValue = (value: number) => (Math.abs(value) >= 1000 ? value.toLocaleString('en-US') : String(value))

/** The Markdown for one run: heading, machine, load, source file, table. */
export function renderReport(file: string, report: Report): string {
  const {machine} = report
  // A transcribed run may carry only its day.
  const when = report.date.includes('T') ? `${report.date.slice(0, 16).replace('T', ' ')} UTC` : report.date
  const benches = report.benches ?? [...new Set(report.results.map((row) => row.name.split(/[ :,]/)[0]))]
  const load = report.load
    ? `load average (1, 5, 15 min) ${report.load.before.join(', ')} at the start and ${report.load.after.join(', ')} at the end`
    : 'load average not recorded'
  const lines = [
    `### ${when}: ${benches.join(', ')}`,
    '',
    `${machine.cpu.model}, ${machine.cpu.count} cores, ${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node ?? 'not recorded'}; ${load}. ` +
      `Source: [\`bench/results/${file}\`](bench/results/${file}).`,
    ...(report.note ? ['', report.note] : []),
    '',
    '| benchmark | value | unit | target | ok |',
    '|---|---:|---|---|---|',
    ...report.results.map((row) => `| ${row.name} | ${formatValue(row.value)} | ${row.unit} | ${row.target ?? ''} | ${row.met === undefined ? '' : row.met ? 'yes' : 'NO'} |`),
    ...report.errors.map((error) => `| ${error.bench}: did not run (${error.message}) | | | | |`),
  ]
  return lines.join('\n')
}

/** Replaces what is between the markers in `markdown` with a table per report, newest first. */
export function renderInto(markdown: string, reports: [string, Report][]): string {
  const from = markdown.indexOf(begin)
  const to = markdown.indexOf(end)
  if (from < 0 || to < from) throw new Error(`BENCHMARKS.md lacks the markers ${begin} ... ${end}`)
  const sorted = [...reports].sort(([, a], [, b]) => b.date.localeCompare(a.date))
  const body = sorted.map(([file, report]) => renderReport(file, report)).join('\n\n')
  return `${markdown.slice(0, from + begin.length)}\n\n${body}\n\n${markdown.slice(to)}`
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const {values} = parseArgs({options: {check: {type: 'boolean', default: false}}})
  const root = fileURLToPath(new URL('..', import.meta.url))
  const dir = join(root, 'bench', 'results')
  const files = (await readdir(dir)).filter((file) => file.endsWith('.json'))
  const reports = await Promise.all(files.map(async (file): Promise<[string, Report]> => [file, JSON.parse(await readFile(join(dir, file), 'utf8')) as Report]))
  const path = join(root, 'BENCHMARKS.md')
  const current = await readFile(path, 'utf8')
  const next = renderInto(current, reports)
  if (values.check) {
    if (next !== current) {
      console.error('BENCHMARKS.md is not what bench/results/ renders: run `npx tsx bench/render.ts`')
      process.exit(1)
    }
  } else {
    await writeFile(path, next)
    console.error(`rendered ${files.length} result file(s) into BENCHMARKS.md`)
  }
}
