/**
 * Bandwidth limits on a shaped link (issue 13): a lighthouse and devices a and b in network
 * namespaces with real nebula and Syncthing (the end-to-end tests' Mesh: built CLI, embedded
 * control plane), every underlay link shaped to 100 mbit with tc. For each upload limit that a
 * sets with `vidsync sync limit --up`, and with none for reference, a file sized for about six
 * seconds at that rate goes from a to b through the project folder; b's disk gives the rate
 * (test/e2e/helpers.ts arrivalRate: the temp file's bytes between 10% and 90%), and a's eth0
 * counters give the bytes on the wire per file byte (nebula, TLS and TCP/IP overhead, which
 * Syncthing's limiter does not count). Limits take turns within each round. Needs root; about 3 minutes.
 *   npm run bench -- --only limits
 *   VIDSYNC_BENCH_LIMITS_ROUNDS=3
 */
import {randomBytes} from 'node:crypto'
import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {runTool} from '../src/lib/exec.js'
import {arrivalRate, Mesh} from '../test/e2e/helpers.js'
import {median, MiB} from './dataplane/measure.js'
import {type BenchRun, result, type Result} from './harness.js'

const linkBitsPerSecond = 100e6
const limits = ['none', '10mbit', '20mbit', '50mbit'] as const
const rounds = Number(process.env.VIDSYNC_BENCH_LIMITS_ROUNDS ?? 3)
/** Each transfer lasts about this long at its limit (the unlimited one at the link's rate). */
const secondsPerTransfer = 6

/** Bytes a node's underlay interface has sent. */
async function txBytes(ns: string): Promise<number> {
  const {stdout} = await runTool('ip', ['-n', ns, '-s', '-j', 'link', 'show', 'eth0'], {timeoutMs: 10_000})
  return Number((JSON.parse(stdout) as {stats64: {tx: {bytes: number}}}[])[0]?.stats64.tx.bytes)
}

interface Sample {
  mbps: number
  /** Received rate over the limit (NaN without one). */
  ratio: number
  wirePerByte: number
}

export const run: BenchRun = async ({log}) => {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) throw new Error('the limits bench needs Linux and root (network namespaces)')
  const mesh = new Mesh({project: 'bl', cidr: '10.99.16.0/24', devices: ['a', 'b'], shaping: {rate: linkBitsPerSecond}})
  const samples = new Map<string, Sample[]>(limits.map((limit) => [limit, []]))
  try {
    await mesh.start()
    await mesh.addDevices(['a', 'b'])
    const a = mesh.folders.a ?? ''
    const b = mesh.folders.b ?? ''
    await writeFile(join(a, 'warm-up.bin'), randomBytes(MiB))
    await mesh.scan('a')
    await arrivalRate(b, 'warm-up.bin', MiB)
    for (let round = 0; round < rounds; round++) {
      for (const limit of round % 2 === 0 ? limits : [...limits].reverse()) {
        const {upKiBps} = (await mesh.must('a', ['sync', 'limit', '--up', limit])).json as {upKiBps: number}
        const bytesPerSecond = upKiBps > 0 ? upKiBps * 1024 : linkBitsPerSecond / 8
        const size = Math.round((bytesPerSecond * secondsPerTransfer) / MiB) * MiB
        const name = `r${round}-${limit}.bin`
        await writeFile(join(a, name), randomBytes(size))
        const sentBefore = await txBytes(mesh.ns('a'))
        // Watching from before the scan: Syncthing answers the scan request once it is done, when b may be pulling already.
        const arriving = arrivalRate(b, name, size)
        arriving.catch(() => undefined) // awaited below; a failed scan must not leave it unhandled
        await mesh.scan('a')
        const arrival = await arriving
        const sample = {
          mbps: (arrival.bytesPerSecond * 8) / 1e6,
          ratio: upKiBps > 0 ? arrival.bytesPerSecond / (upKiBps * 1024) : Number.NaN,
          wirePerByte: ((await txBytes(mesh.ns('a'))) - sentBefore) / size,
        }
        samples.get(limit)?.push(sample)
        log(`round ${round + 1}, limit ${limit} (${upKiBps} KiB/s): ${size / MiB} MiB at ${sample.mbps.toFixed(2)} mbit/s (${sample.ratio.toFixed(3)} of the limit), ${arrival.totalSeconds.toFixed(1)} s in all, ${sample.wirePerByte.toFixed(3)} bytes on a's wire per file byte`)
      }
    }
  } finally {
    await mesh.stop()
  }
  const rows: Result[] = []
  const of = `median of ${rounds}`
  for (const [limit, list] of samples) {
    if (limit === 'none') {
      rows.push(result(`no limit, 100 mbit link: received rate (${of})`, median(list.map((sample) => sample.mbps)), 'mbit/s'))
      continue
    }
    const deviations = list.map((sample) => (sample.ratio - 1) * 100)
    rows.push(
      result(`--up ${limit}, 100 mbit link: received rate (${of})`, median(list.map((sample) => sample.mbps)), 'mbit/s'),
      result(`--up ${limit}: received rate above (+) or below (-) the limit (${of})`, median(deviations), '%'),
      result(`--up ${limit}: largest deviation from the limit in ${rounds} rounds`, Math.max(...deviations.map(Math.abs)), '%', ['<', 10]),
    )
  }
  const wire = [...samples.values()].flat().map((sample) => (sample.wirePerByte - 1) * 100)
  rows.push(result(`bytes on the sender's underlay (Ethernet frames) beyond the file's bytes (median of all ${wire.length} transfers)`, median(wire), '%'))
  return rows
}
