/**
 * nebula's `routines` (reader goroutines for the tun device and the UDP socket, Linux only),
 * measured to choose the per-device value that `vidsync join` writes (src/lib/project/joined-project.ts,
 * linuxRoutines). Raw TCP a -> b over real nebula between network namespaces (bench/dataplane/lab.ts,
 * the generated config with only `routines` changed), with 1 and with 4 parallel streams, for
 * routines 1, the CPU count and twice it. Two runs of the dataplane bench disagreed on this
 * machine (a 4-stream ratio of 0.66x in one and 1.56x in another), so every round measures all
 * variants back to back and the ratios are taken within a round; the table gives the median,
 * lowest and highest ratio over the rounds. Needs root, nebula and a built CLI.
 *
 *   VIDSYNC_BENCH_ROUTINES_ROUNDS=5   rounds (each: every variant, 1 and 4 streams)
 */
import {mkdtemp, rm} from 'node:fs/promises'
import {cpus, tmpdir} from 'node:os'
import {join} from 'node:path'

import {linuxRoutines} from '../src/lib/project/joined-project.js'
import {makeCerts, preflight} from './dataplane.js'
import {BenchLab, generatedNebula} from './dataplane/lab.js'
import {median, tcpOnce, workload} from './dataplane/measure.js'
import {type BenchRun, result, type Result, withCleanUp} from './harness.js'

const rounds = Number(process.env.VIDSYNC_BENCH_ROUTINES_ROUNDS ?? 5)
const streamCounts = [1, 4]

export const run: BenchRun = async ({log}) => {
  await preflight()
  const cpuCount = cpus().length
  const variants = [...new Set([1, cpuCount, 2 * cpuCount])]
  const dir = await mkdtemp(join(tmpdir(), 'vidsync-bench-routines-'))
  let lab: BenchLab | undefined
  const cleanUp = async () => {
    if (lab) for (const problem of await lab.close()) log(`cleanup: ${problem}`)
    lab = undefined
    await rm(dir, {recursive: true, force: true})
  }
  // mbps[routines/streams] = one value per round
  const mbps = new Map<string, number[]>()
  const key = (routines: number, streams: number) => `${routines}/${streams}`
  await withCleanUp(cleanUp, log, async () => {
    lab = await BenchLab.create({prefix: `vsr-${process.pid}-`, dir, certs: await makeCerts(dir)})
    for (let round = 1; round <= rounds; round++) {
      // Alternate the order so that neither variant always runs first (warm caches, a neighbour's load).
      const order = round % 2 === 1 ? variants : [...variants].reverse()
      for (const routines of order) {
        await lab.startNebula(`routines-${routines}-${round}`, {...generatedNebula, routines})
        for (const streams of streamCounts) {
          const value = await tcpOnce(lab, lab.nodes.b.overlayIp, streams)
          mbps.set(key(routines, streams), [...(mbps.get(key(routines, streams)) ?? []), value])
          log(`round ${round}: routines ${routines}, ${streams} stream(s): ${value.toFixed(0)} Mbit/s`)
        }
        await lab.stopNebula()
      }
    }
  })
  const rows: Result[] = []
  const seconds = `${rounds} rounds x ${workload.tcpSeconds} s`
  for (const streams of streamCounts) {
    for (const routines of variants) {
      rows.push(result(`routines: raw TCP overlay, routines ${routines}, ${streams} stream(s), median of ${seconds}`, median(mbps.get(key(routines, streams)) ?? []), 'Mbit/s'))
    }
    for (const routines of variants.slice(1)) {
      const ratios = (mbps.get(key(routines, streams)) ?? []).map((value, round) => value / (mbps.get(key(1, streams))?.[round] ?? Number.NaN))
      log(`routines ${routines} / routines 1, ${streams} stream(s), per round: ${ratios.map((ratio) => ratio.toFixed(2)).join(', ')}`)
      const label = `routines: routines ${routines} / routines 1, ${streams} stream(s), within a round`
      rows.push(
        result(`${label}, median`, median(ratios), 'x'),
        result(`${label}, lowest`, Math.min(...ratios), 'x'),
        result(`${label}, highest`, Math.max(...ratios), 'x'),
      )
    }
  }
  rows.push(result(`routines: what join writes on this machine (linuxRoutines(${cpuCount}))`, linuxRoutines(cpuCount), 'routines'))
  return rows
}
