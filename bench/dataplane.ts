/**
 * The data plane, measured in one run so that the ratios compare: raw TCP on the underlay, raw
 * TCP over Nebula with a naive config and with vidsync's generated one, then Syncthing (two
 * vidsync-managed instances started with `vidsync sync up`, the folder shared the way
 * `vidsync sync add` does it) against rsync over the same overlay, for big files, many small
 * files and an edit inside a big file; unshaped, then on a shaped link (netem: 1 Gbit, 10 ms each
 * way), or where the kernel has no netem, on a link shaped to 1 Gbit alone (tbf). Everything runs between network namespaces this bench creates
 * (bench/dataplane/lab.ts) and is removed by PID and name at the end, also on failure or Ctrl-C.
 * Needs root, nebula, syncthing, rsync and a built CLI (`npm run build`).
 *
 * Knobs for exploring (BENCHMARKS.md gives the defaults' numbers):
 *   VIDSYNC_BENCH_DATAPLANE_MIB=1024       size of each big file
 *   VIDSYNC_BENCH_DATAPLANE_SHAPED=0       skip the shaped link
 *   VIDSYNC_BENCH_DATAPLANE_SYNCTHING='{"folder":{...},"options":{...}}'
 *                                          extra Syncthing settings on both devices from the start
 */
import {existsSync} from 'node:fs'
import {link as hardLink, mkdir, mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {MissingDependencyError} from '../src/lib/errors.js'
import {caPaths, initCa} from '../src/lib/pki/ca.js'
import {signDevice} from '../src/lib/pki/sign.js'
import type {FolderConfig} from '../src/lib/syncthing/client.js'
import {BenchLab, type Certs, generatedNebula, naiveNebula, type NebulaVariant, nodeNames, overlayIps, root} from './dataplane/lab.js'
import {
  changeInside,
  describe,
  type Log,
  mbps,
  median,
  MiB,
  now,
  overlayTcp,
  rsyncRound,
  sameFiles,
  type SyncPair,
  startSyncPair,
  syncthingRound,
  type SyncthingTuning,
  tcpMedian,
  type Transfer,
  tuneFolder,
  workload,
  writeRandomFile,
  writeSmallFiles,
} from './dataplane/measure.js'
import {type BenchRun, result, type Result, withCleanUp} from './harness.js'

const bigMiB = Number(process.env.VIDSYNC_BENCH_DATAPLANE_MIB ?? 1024)
const shapedLink = process.env.VIDSYNC_BENCH_DATAPLANE_SHAPED !== '0'
const tuning = JSON.parse(process.env.VIDSYNC_BENCH_DATAPLANE_SYNCTHING ?? '{}') as SyncthingTuning
/** Big-file repetitions (each its own file) on the unshaped link; one on the shaped link. */
const bigRuns = 3
/**
 * `sync add` sets caseSensitiveFS where its probe finds a case-sensitive file system (this lab's);
 * a second small-file round with Syncthing's own default shows what that is worth.
 */
const smallFileTuning: Partial<FolderConfig> = {caseSensitiveFS: false}

type LinkName = 'unshaped' | 'shaped' | 'shaped-rate-only'

interface Context {
  link: LinkName
  bigBytes: number
  /** Where the big files are written once, to be hard-linked into each lab's folder. */
  data: string
  log: Log
  rows: Result[]
}

const secondsOf = (ms: number) => ms / 1000

// --- raw TCP ---------------------------------------------------------------------------------------

/** Underlay, naive overlay, generated overlay; leaves nebula running with the generated config. Returns its Mbit/s. */
async function rawTcp(lab: BenchLab, {link, log, rows}: Context): Promise<number> {
  const parallel = link === 'unshaped'
  const underlay = await tcpMedian(lab, lab.nodes.b.underlayIp, log, `underlay TCP, ${link}`)
  const naive = await overlayTcp(lab, 'naive', naiveNebula, log, parallel)
  await lab.stopNebula()
  // Which of the three keys matters: the generated config with one of them set back to naive.
  const oneBack: [string, NebulaVariant][] = [
    ['mtu 1300', {...generatedNebula, mtu: naiveNebula.mtu}],
    ['routines 1', {...generatedNebula, routines: naiveNebula.routines}],
    ['default buffers', {...generatedNebula, socketBuffer: undefined}],
  ]
  const variants: [string, number][] = []
  if (link === 'unshaped') {
    for (const [label, variant] of oneBack) {
      variants.push([label, (await overlayTcp(lab, `generated but ${label}`, variant, log, false)).mbps])
      await lab.stopNebula()
    }
  }
  const generated = await overlayTcp(lab, 'generated', undefined, log, parallel)
  const runs = `median of ${workload.tcpRuns} x ${workload.tcpSeconds} s`
  rows.push(
    result(`${link}: raw TCP a->b, underlay (${runs})`, underlay.mbps, 'Mbit/s'),
    result(`${link}: raw TCP a->b, overlay, naive nebula.yml (mtu 1300, routines 1, default buffers)`, naive.mbps, 'Mbit/s'),
    result(`${link}: raw TCP a->b, overlay, generated nebula.yml (mtu 1440, routines 2, 10 MiB buffers)`, generated.mbps, 'Mbit/s'),
    result(`${link}: overlay TCP, generated / naive`, generated.mbps / naive.mbps, 'x', ['>=', 1.5]),
    result(`${link}: overlay TCP, generated / underlay`, generated.mbps / underlay.mbps, 'x'),
    result(`${link}: UDP datagrams dropped on b (socket buffer full) per run, naive`, naive.drops, 'datagrams'),
    result(`${link}: UDP datagrams dropped on b (socket buffer full) per run, generated`, generated.drops, 'datagrams'),
    result(`${link}: nebula CPU time (a + b) per GiB, naive`, naive.nebulaCpuPerGiB, 's/GiB'),
    result(`${link}: nebula CPU time (a + b) per GiB, generated`, generated.nebulaCpuPerGiB, 's/GiB'),
  )
  for (const [label, value] of variants) {
    rows.push(result(`${link}: raw TCP overlay, generated but ${label}, / generated`, value / generated.mbps, 'x'))
  }
  if (naive.parallel !== undefined && generated.parallel !== undefined) {
    rows.push(
      result(`${link}: raw TCP overlay, 4 parallel streams, naive`, naive.parallel, 'Mbit/s'),
      result(`${link}: raw TCP overlay, 4 parallel streams, generated`, generated.parallel, 'Mbit/s'),
    )
  }
  return generated.mbps
}

// --- Syncthing vs rsync ----------------------------------------------------------------------------

/** `runs` big files, each synced by Syncthing and then by rsync; medians. Returns the first file's name (for the edit). */
async function bigFiles(lab: BenchLab, pair: SyncPair, raw: number, runs: number, {link, bigBytes, data, log, rows}: Context): Promise<string> {
  const label = `${bigMiB} MiB file`
  const timeoutMs = Math.max(180_000, bigMiB * 400) // 2.5 MiB/s at worst
  const st: Transfer[] = []
  const rs: Transfer[] = []
  for (let i = 1; i <= runs; i++) {
    const name = `big${i}.bin`
    const source = join(data, name)
    if (!existsSync(source)) {
      log(`writing ${label} ${name}`)
      await writeRandomFile(source, bigBytes)
    }
    await hardLink(source, join(pair.a.folder, name))
    st.push(await syncthingRound(lab, pair, timeoutMs))
    log(`Syncthing, ${label} #${i}: ${describe(st.at(-1) as Transfer)}`)
    rs.push(await rsyncRound(lab, join(pair.a.folder, name), timeoutMs))
    log(`rsync, ${label} #${i}: ${describe(rs.at(-1) as Transfer)}`)
    await sameFiles(label, pair.a.folder, [pair.b.folder, pair.rsyncDir], [name])
  }
  const of = `median of ${runs}`
  const stMs = median(st.map((transfer) => transfer.ms))
  const stAfterScanMs = median(st.map((transfer) => transfer.ms - (transfer.scanMs ?? 0)))
  const rsMs = median(rs.map((transfer) => transfer.ms))
  const gib = (runs * bigBytes) / 2 ** 30
  const sum = (values: number[]) => values.reduce((total, value) => total + value, 0)
  rows.push(
    result(`${link}: Syncthing, ${label}, rescan to complete on b (${of})`, secondsOf(stMs), 's'),
    result(`${link}: Syncthing, ${label}, of which hashing on a (${of})`, secondsOf(median(st.map((transfer) => transfer.scanMs ?? 0))), 's'),
    result(`${link}: Syncthing, ${label}, rescan to complete`, mbps(bigBytes, stMs), 'Mbit/s'),
    result(`${link}: Syncthing ${label} / raw overlay TCP`, mbps(bigBytes, stMs) / raw, 'x', ['>=', 0.9]),
    result(`${link}: Syncthing ${label} / raw overlay TCP, hashing left out`, mbps(bigBytes, stAfterScanMs) / raw, 'x'),
    result(`${link}: Syncthing CPU time per GiB, a (sender)`, sum(st.map((transfer) => transfer.toolCpu.a)) / gib, 's/GiB'),
    result(`${link}: Syncthing CPU time per GiB, b (receiver)`, sum(st.map((transfer) => transfer.toolCpu.b)) / gib, 's/GiB'),
    result(`${link}: nebula CPU time (a + b) per GiB during Syncthing`, sum(st.map((transfer) => transfer.nebulaCpu)) / gib, 's/GiB'),
    result(`${link}: rsync -a, ${label} (${of})`, secondsOf(rsMs), 's'),
    result(`${link}: rsync CPU time per GiB, a (client) + b (daemon)`, sum(rs.map((transfer) => transfer.toolCpu.a + transfer.toolCpu.b)) / gib, 's/GiB'),
    result(`${link}: rsync ${label} / raw overlay TCP`, mbps(bigBytes, rsMs) / raw, 'x'),
    result(`${link}: Syncthing time / rsync time, ${label}`, stMs / rsMs, 'x'),
  )
  return 'big1.bin'
}

/** 5,000 small files in a new directory, Syncthing then rsync. */
async function smallFiles(lab: BenchLab, pair: SyncPair, dir: string, settings: string, {link, log, rows}: Context): Promise<void> {
  const label = `${workload.smallCount} x ${workload.smallKiB} KiB files`
  const names = await writeSmallFiles(pair.a.folder, dir)
  const st = await syncthingRound(lab, pair, 300_000)
  log(`Syncthing, ${label}, ${settings}: ${describe(st)}`)
  const rs = await rsyncRound(lab, join(pair.a.folder, dir), 300_000)
  log(`rsync, ${label}: ${describe(rs)}`)
  await sameFiles(label, pair.a.folder, [pair.b.folder, pair.rsyncDir], names)
  rows.push(
    result(`${link}: Syncthing, ${label}, ${settings}, rescan to complete on b`, secondsOf(st.ms), 's'),
    result(`${link}: Syncthing, ${label}, ${settings}, CPU time a + b`, st.toolCpu.a + st.toolCpu.b, 's'),
    result(`${link}: rsync -a, ${label} (next to ${settings})`, secondsOf(rs.ms), 's'),
    result(`${link}: rsync -a, ${label}, CPU time a + b`, rs.toolCpu.a + rs.toolCpu.b, 's'),
    result(`${link}: Syncthing speed / rsync speed, ${label}, ${settings}`, rs.ms / st.ms, 'x', ['>=', 1]),
  )
}

/** changeMiB of new bytes inside a big file that b already has, Syncthing then rsync (its delta algorithm). */
async function edit(lab: BenchLab, pair: SyncPair, name: string, {link, bigBytes, log, rows}: Context): Promise<void> {
  const label = `${workload.changeMiB} MiB changed inside a ${bigMiB} MiB file`
  const changed = await changeInside(join(pair.a.folder, name), bigBytes)
  const st = await syncthingRound(lab, pair, 300_000)
  log(`Syncthing, ${label}: ${describe(st)}`)
  const rs = await rsyncRound(lab, join(pair.a.folder, name), 300_000)
  log(`rsync, ${label}: ${describe(rs)}`)
  await sameFiles(label, pair.a.folder, [pair.b.folder, pair.rsyncDir], [name])
  rows.push(
    result(`${link}: Syncthing, ${label}, rescan to complete on b`, secondsOf(st.ms), 's'),
    result(`${link}: Syncthing, ${label}, of which hashing on a`, secondsOf(st.scanMs ?? 0), 's'),
    result(`${link}: Syncthing edit, Syncthing's connection bytes / changed bytes`, st.appBytes / changed, 'x', ['<', 1.5]),
    result(`${link}: Syncthing edit, bytes through b's tun / changed bytes`, st.tunBytes / changed, 'x'),
    result(`${link}: rsync -a, ${label}`, secondsOf(rs.ms), 's'),
    result(`${link}: rsync edit, rsync's bytes sent + received / changed bytes`, rs.appBytes / changed, 'x'),
    result(`${link}: rsync edit, bytes through b's tun / changed bytes`, rs.tunBytes / changed, 'x'),
  )
}

async function measureLink(lab: BenchLab, context: Context): Promise<void> {
  const raw = await rawTcp(lab, context)
  // Syncthing and rsync over the generated overlay, which is still running.
  const pair = await startSyncPair(lab, context.log, tuning)
  const defaults = Object.keys(tuning).length === 0 ? 'vidsync defaults' : `settings ${JSON.stringify(tuning)}`
  if (context.link !== 'unshaped') {
    await bigFiles(lab, pair, raw, 1, context)
    await smallFiles(lab, pair, 'small', defaults, context)
    return
  }
  const edited = await bigFiles(lab, pair, raw, bigRuns, context)
  await smallFiles(lab, pair, 'small', defaults, context)
  await edit(lab, pair, edited, context)
  await tuneFolder(lab, smallFileTuning)
  await smallFiles(lab, pair, 'small-case-checks', `${defaults} but ${JSON.stringify(smallFileTuning)} (Syncthing's default)`, context)
}

// --- the run ---------------------------------------------------------------------------------------

export async function makeCerts(dir: string): Promise<Certs> {
  const caHome = join(dir, 'ca')
  await initCa({home: caHome, name: 'vidsync-bench'})
  const certs: Certs = {caPem: await readFile(caPaths(caHome).certPath, 'utf8'), nodes: {} as Certs['nodes']}
  for (const name of nodeNames) {
    const signed = await signDevice({home: caHome, name, ip: overlayIps[name], prefixLength: 24, generateKey: true})
    certs.nodes[name] = {certPem: signed.certPem, keyPem: signed.privateKeyPem ?? '', overlayIp: overlayIps[name]}
  }
  return certs
}

export async function preflight(): Promise<void> {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) throw new Error('the dataplane bench needs Linux and root (network namespaces)')
  if (!existsSync(join(root, 'dist', 'commands')) || !existsSync(join(root, 'oclif.manifest.json'))) {
    throw new Error('dist/ or oclif.manifest.json is missing: run `npm run build` first')
  }
  for (const [tool, args] of [
    ['ip', ['-V']],
    ['nebula', ['-version']],
    ['syncthing', ['--version']],
    ['rsync', ['--version']],
  ] as const) {
    const {failed} = await execa(tool, [...args], {timeout: 10_000, reject: false})
    if (failed) throw new Error(`${tool} is missing: apt-get install -y iproute2 nebula syncthing rsync`)
  }
}

export const run: BenchRun = async ({log}) => {
  await preflight()
  const rows: Result[] = []
  const dir = await mkdtemp(join(tmpdir(), 'vidsync-bench-dataplane-'))
  const labs: BenchLab[] = []
  // Ctrl-C or a kill must not leave namespaces or daemons behind either.
  const cleanUp = async () => {
    for (const lab of labs.splice(0)) for (const problem of await lab.close()) log(`cleanup: ${problem}`)
    await rm(dir, {recursive: true, force: true})
  }
  await withCleanUp(cleanUp, log, async () => {
    const certs = await makeCerts(dir)
    const data = join(dir, 'data')
    await mkdir(data)
    const links: {link: LinkName; shaping?: {rate: number; delayMs?: number}}[] = [{link: 'unshaped'}]
    if (shapedLink) links.push({link: 'shaped', shaping: {rate: 1e9, delayMs: 10}})
    for (const [index, {link, shaping}] of links.entries()) {
      const started = now()
      let lab: BenchLab
      try {
        lab = await BenchLab.create({prefix: `vsb-${process.pid}-${index}-`, dir: join(dir, link), certs, shaping})
      } catch (error) {
        if (!(error instanceof MissingDependencyError)) throw error
        log(`${link} link skipped: ${error.message}`)
        // Without netem there is no delay, but a token bucket still gives the 1 Gbit link.
        if (link === 'shaped') links.push({link: 'shaped-rate-only', shaping: {rate: 1e9}})
        continue
      }
      labs.push(lab)
      log(`${link} lab up: ${lab.namespaces.join(', ')}`)
      await measureLink(lab, {link, bigBytes: bigMiB * MiB, data, log, rows})
      labs.splice(labs.indexOf(lab), 1)
      for (const problem of await lab.close()) log(`cleanup: ${problem}`)
      log(`${link}: done in ${secondsOf(now() - started).toFixed(0)} s`)
    }
  })
  return rows
}
