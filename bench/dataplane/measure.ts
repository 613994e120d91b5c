/** What the dataplane bench measures with: test data, CPU accounting, raw TCP, Syncthing and rsync rounds. */
import {createHash, randomFillSync} from 'node:crypto'
import {createReadStream} from 'node:fs'
import {mkdir, open, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {execa} from 'execa'

import type {FolderConfig, FolderStatus} from '../../src/lib/syncthing/client.js'
import {pollUntil} from '../../src/lib/poll.js'
import {percentile} from '../harness.js'
import {type BenchLab, cidr, type NebulaVariant, overlayIps, rsyncPort, runIn, tcpTestPort, tunDev} from './lab.js'

export const MiB = 2 ** 20
export const workload = {
  smallCount: 5000,
  smallKiB: 16,
  changeMiB: 10,
  /** Seconds per raw TCP run, and runs per median. */
  tcpSeconds: 4,
  tcpRuns: 3,
}
export const folderId = 'bench'
/** Bench-only folder setting: no watcher, so that only the bench's POST /rest/db/scan starts a scan. */
export const benchFolderFields: Partial<FolderConfig> = {fsWatcherEnabled: false}

export const median = (values: number[]) => percentile(values, 50)
export const mbps = (bytes: number, ms: number) => (bytes * 8) / ms / 1e3
export const now = () => performance.now()

export type Log = (message: string) => void

// --- test data -------------------------------------------------------------------------------------

export async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const file = await open(path, 'w')
  try {
    const chunk = Buffer.alloc(16 * MiB)
    for (let written = 0; written < bytes; written += chunk.length) {
      const part = chunk.subarray(0, Math.min(chunk.length, bytes - written))
      randomFillSync(part)
      await file.write(part)
    }
  } finally {
    await file.close()
  }
}

/** Relative paths of the small files inside the synced folder. */
export const smallFileNames = (dir: string) => Array.from({length: workload.smallCount}, (_, i) => join(dir, `f${String(i).padStart(5, '0')}.bin`))

export async function writeSmallFiles(folder: string, dir: string): Promise<string[]> {
  await mkdir(join(folder, dir), {recursive: true})
  const data = Buffer.alloc(workload.smallKiB * 1024)
  const names = smallFileNames(dir)
  for (const name of names) {
    randomFillSync(data)
    await writeFile(join(folder, name), data)
  }
  return names
}

/** Overwrites changeMiB of random bytes in place, at an offset that is not block-aligned; returns the bytes changed. */
export async function changeInside(path: string, size: number): Promise<number> {
  const data = randomFillSync(Buffer.alloc(workload.changeMiB * MiB))
  const file = await open(path, 'r+')
  try {
    await file.write(data, 0, data.length, Math.floor(size * 0.37) + 4321)
  } finally {
    await file.close()
  }
  return data.length
}

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path, {highWaterMark: 4 * MiB})) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** Throws unless every file `names` in each of `copies` has the same content as in `source`. */
export async function sameFiles(what: string, source: string, copies: string[], names: string[]): Promise<void> {
  for (const name of names) {
    const expected = await sha256(join(source, name))
    for (const copy of copies) {
      if ((await sha256(join(copy, name))) !== expected) throw new Error(`${what}: ${join(copy, name)} differs from ${join(source, name)}`)
    }
  }
}

// --- CPU time of the processes doing the work ------------------------------------------------------

const ticksPerSecond = 100

/** User + system CPU seconds in a /proc/PID/stat line, with those of children it has waited for. */
function statSeconds(stat: string): number {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // utime, stime, cutime, cstime: fields 14 to 17 of proc(5), 11 to 14 after the command name.
  return [11, 12, 13, 14].reduce((total, index) => total + Number(fields[index] ?? 0), 0) / ticksPerSecond
}

/** PIDs in namespace `ns` of processes named `comm`. */
async function pidsOf(ns: string, comm: string): Promise<string[]> {
  const {stdout} = await execa('ip', ['netns', 'pids', ns], {timeout: 10_000})
  const pids: string[] = []
  for (const pid of stdout.split('\n').filter(Boolean)) {
    if ((await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim() === comm) pids.push(pid)
  }
  return pids
}

/**
 * User + system CPU seconds so far of the processes named `comm` in namespace `ns` (all of
 * Syncthing's, say), with their children that have ended (rsync's daemon forks one per connection).
 */
async function cpuSeconds(ns: string, comm: string): Promise<number> {
  let total = 0
  for (const pid of await pidsOf(ns, comm)) total += statSeconds(await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ''))
  return total
}

const cpuOnBoth = async (lab: BenchLab, comm: string) => (await cpuSeconds(lab.nodes.a.ns, comm)) + (await cpuSeconds(lab.nodes.b.ns, comm))

// --- raw TCP ---------------------------------------------------------------------------------------

/** Mbit/s from a to `host` (b's underlay or overlay address) with `streams` parallel connections, measured at the receiver. */
export async function tcpOnce(lab: BenchLab, host: string, streams: number): Promise<number> {
  return (await tcpRun(lab, host, streams)).mbps
}

async function tcpRun(lab: BenchLab, host: string, streams: number): Promise<{mbps: number; bytes: number}> {
  const timeoutMs = workload.tcpSeconds * 1000 + 30_000
  await lab.b.request('tcpListen', {host, port: tcpTestPort})
  const collected = lab.b.request<{bytes: number; ms: number}>('tcpCollect', {port: tcpTestPort, streams, timeoutMs}, timeoutMs + 5000)
  await lab.a.request('tcpSend', {host, port: tcpTestPort, seconds: workload.tcpSeconds, streams}, timeoutMs + 5000)
  const {bytes, ms} = await collected
  return {mbps: mbps(bytes, ms), bytes}
}

/** Median Mbit/s of tcpRuns single-stream runs, and the bytes they moved. */
export async function tcpMedian(lab: BenchLab, host: string, log: Log, label: string): Promise<{mbps: number; bytes: number}> {
  const runs: {mbps: number; bytes: number}[] = []
  for (let i = 0; i < workload.tcpRuns; i++) runs.push(await tcpRun(lab, host, 1))
  log(`${label}: ${runs.map((run) => run.mbps.toFixed(0)).join(', ')} Mbit/s`)
  return {mbps: median(runs.map((run) => run.mbps)), bytes: runs.reduce((sum, run) => sum + run.bytes, 0)}
}

export interface OverlayTcp {
  mbps: number
  /** CPU seconds of nebula on a and b per GiB moved. */
  nebulaCpuPerGiB: number
  /** UDP datagrams b's kernel dropped for a full socket buffer, per run. */
  drops: number
  /** Mbit/s with 4 parallel streams, when asked for. */
  parallel?: number
}

/** Raw TCP a -> b over Nebula started with `variant` (undefined: the generated config). Leaves nebula running. */
export async function overlayTcp(lab: BenchLab, label: string, variant: NebulaVariant | undefined, log: Log, parallel: boolean): Promise<OverlayTcp> {
  await lab.startNebula(label, variant)
  const before = await lab.b.request<{rcvbufErrors: number}>('udpStats')
  const cpuBefore = await cpuOnBoth(lab, 'nebula')
  const {mbps: value, bytes} = await tcpMedian(lab, lab.nodes.b.overlayIp, log, `overlay TCP, ${label}`)
  const nebulaCpuPerGiB = ((await cpuOnBoth(lab, 'nebula')) - cpuBefore) / (bytes / 2 ** 30)
  const after = await lab.b.request<{rcvbufErrors: number}>('udpStats')
  const drops = (after.rcvbufErrors - before.rcvbufErrors) / workload.tcpRuns
  log(`overlay TCP, ${label}: ${drops.toFixed(0)} UDP receive-buffer drops per run on b, nebula ${nebulaCpuPerGiB.toFixed(1)} CPU s/GiB`)
  if (!parallel) return {mbps: value, nebulaCpuPerGiB, drops}
  const parallelMbps = await tcpOnce(lab, lab.nodes.b.overlayIp, 4)
  log(`overlay TCP, ${label}, 4 streams: ${parallelMbps.toFixed(0)} Mbit/s`)
  return {mbps: value, nebulaCpuPerGiB, drops, parallel: parallelMbps}
}

// --- Syncthing and rsync ---------------------------------------------------------------------------

export interface SyncPair {
  a: {deviceId: string; folder: string}
  b: {deviceId: string; folder: string}
  /** Where rsync writes on b. */
  rsyncDir: string
}

/** Extra Syncthing settings to try, on both devices: folder fields and global options. */
export interface SyncthingTuning {
  folder?: Partial<FolderConfig>
  options?: Record<string, unknown>
}

/**
 * Starts Syncthing on a and b with `vidsync sync up`, shares folder `bench` between them the way
 * `vidsync sync add` does (plus benchFolderFields and `tuning`), waits for the connection, and
 * starts b's rsync daemon.
 */
export async function startSyncPair(lab: BenchLab, log: Log, tuning: SyncthingTuning = {}): Promise<SyncPair> {
  const a = await lab.startSyncthing('a')
  const b = await lab.startSyncthing('b')
  const pair: SyncPair = {
    a: {deviceId: a.deviceId, folder: join(lab.nodes.a.dir, 'sync')},
    b: {deviceId: b.deviceId, folder: join(lab.nodes.b.dir, 'sync')},
    rsyncDir: join(lab.nodes.b.dir, 'rsync'),
  }
  for (const dir of [pair.a.folder, pair.b.folder, pair.rsyncDir]) await mkdir(dir, {recursive: true})
  const sides = [
    {agent: lab.a, home: lab.nodes.a.home, self: pair.a, peer: pair.b, peerName: 'b' as const},
    {agent: lab.b, home: lab.nodes.b.home, self: pair.b, peer: pair.a, peerName: 'a' as const},
  ]
  for (const {agent, home, self, peer, peerName} of sides) {
    if (tuning.options) await agent.request('stPatchOptions', {home, options: tuning.options})
    const peers = [{deviceId: peer.deviceId, name: peerName, overlayIp: overlayIps[peerName]}]
    await agent.request('stShare', {home, folderId, path: self.folder, peers, cidr, folder: {...benchFolderFields, ...tuning.folder}})
  }
  const connected = await lab.b.request<{address: string}>('stWaitConnected', {home: lab.nodes.b.home, deviceId: pair.a.deviceId, timeoutMs: 30_000}, 40_000)
  log(`Syncthing b is connected to a at ${connected.address}`)
  await lab.startRsyncd(pair.rsyncDir)
  return pair
}

/** Changes folder settings on both devices and waits until both folders are idle again (a change restarts the folder). */
export async function tuneFolder(lab: BenchLab, folder: Partial<FolderConfig>): Promise<void> {
  for (const [agent, home] of [
    [lab.a, lab.nodes.a.home],
    [lab.b, lab.nodes.b.home],
  ] as const) {
    await agent.request('stPatchFolder', {home, folderId, folder})
  }
  await sleep(1000) // the restart begins after the PATCH returns
  for (const [agent, home] of [
    [lab.a, lab.nodes.a.home],
    [lab.b, lab.nodes.b.home],
  ] as const) {
    await agent.request('stWaitIdle', {home, folderId, timeoutMs: 60_000}, 70_000)
  }
}

export interface Transfer {
  ms: number
  /** Syncthing only: the sender's scan (hashing) part of `ms`. */
  scanMs?: number
  /** What the tool says it moved: Syncthing's connection counters on b, rsync's --stats; both directions. */
  appBytes: number
  /** Bytes through b's tun device, both directions (TCP/IP included). */
  tunBytes: number
  /** CPU seconds of the tool (Syncthing, or the rsync client and daemon) on a and on b. */
  toolCpu: {a: number; b: number}
  /** CPU seconds of nebula on a and b. */
  nebulaCpu: number
}

async function tunBytes(lab: BenchLab): Promise<number> {
  const {rx, tx} = await lab.b.request<{rx: number; tx: number}>('linkBytes', {dev: tunDev})
  return rx + tx
}

/** Rescan on a through the REST API, then wait until b holds what a has: time from the rescan to completion on b. */
export async function syncthingRound(lab: BenchLab, pair: SyncPair, timeoutMs: number): Promise<Transfer> {
  const homes = {a: lab.nodes.a.home, b: lab.nodes.b.home}
  const counters = async () => {
    const {inBytes, outBytes} = await lab.b.request<{inBytes: number; outBytes: number}>('stCounters', {home: homes.b, deviceId: pair.a.deviceId})
    return inBytes + outBytes
  }
  const before = await lab.b.request<FolderStatus & {sequence: number}>('stStatus', {home: homes.b, folderId})
  const syncthingCpu = async () => ({a: await cpuSeconds(lab.nodes.a.ns, 'syncthing'), b: await cpuSeconds(lab.nodes.b.ns, 'syncthing')})
  const [counters0, tun0, tool0, nebula0] = [await counters(), await tunBytes(lab), await syncthingCpu(), await cpuOnBoth(lab, 'nebula')]
  const sinceEvent = await lab.b.request<number>('stLastEventId', {home: homes.b})
  const start = now()
  await lab.a.request('stScan', {home: homes.a, folderId, timeoutMs}, timeoutMs + 5000)
  const scanned = now()
  const target = await lab.a.request<{localFiles: number; localBytes: number}>('stStatus', {home: homes.a, folderId})
  const wait = {home: homes.b, folderId, afterSequence: before.sequence, target: {localFiles: target.localFiles, localBytes: target.localBytes}, sinceEvent, timeoutMs}
  await lab.b.request('stWaitSynced', wait, timeoutMs + 5000)
  const end = now()
  return {
    ms: end - start,
    scanMs: scanned - start,
    appBytes: (await counters()) - counters0,
    tunBytes: (await tunBytes(lab)) - tun0,
    toolCpu: await syncthingCpu().then((cpu) => ({a: cpu.a - tool0.a, b: cpu.b - tool0.b})),
    nebulaCpu: (await cpuOnBoth(lab, 'nebula')) - nebula0,
  }
}

/**
 * `rsync -a --stats SOURCE rsync://b/bench/` from a's namespace, as a user would run it. A shell
 * runs rsync and then prints its own /proc stat, whose children's times are then rsync's.
 */
export async function rsyncRound(lab: BenchLab, source: string, timeoutMs: number): Promise<Transfer> {
  const [tun0, nebula0, daemon0] = [await tunBytes(lab), await cpuOnBoth(lab, 'nebula'), await cpuSeconds(lab.nodes.b.ns, 'rsync')]
  const target = `rsync://${lab.nodes.b.overlayIp}:${rsyncPort}/bench/`
  const script = 'rsync -a --stats "$1" "$2" && cat /proc/$$/stat'
  const start = now()
  const {stdout} = await runIn(lab.nodes.a.ns, 'sh', ['-c', script, 'sh', source, target], timeoutMs)
  const ms = now() - start
  // The daemon's child for this connection counts once the daemon has reaped it.
  await pollUntil(async () => (await pidsOf(lab.nodes.b.ns, 'rsync')).length <= 1, {timeoutMs: 5000, intervalMs: 50, onTimeout: () => false})
  const stat = (name: string) => Number(new RegExp(`${name}: ([\\d,]+)`).exec(stdout)?.[1]?.replaceAll(',', '') ?? Number.NaN)
  return {
    ms,
    appBytes: stat('Total bytes sent') + stat('Total bytes received'),
    tunBytes: (await tunBytes(lab)) - tun0,
    toolCpu: {a: statSeconds(stdout.trim().split('\n').at(-1) ?? ''), b: (await cpuSeconds(lab.nodes.b.ns, 'rsync')) - daemon0},
    nebulaCpu: (await cpuOnBoth(lab, 'nebula')) - nebula0,
  }
}

/** One line for the log. */
export function describe(transfer: Transfer): string {
  const scan = transfer.scanMs === undefined ? '' : ` (scan ${(transfer.scanMs / 1000).toFixed(2)} s)`
  const {a, b} = transfer.toolCpu
  const cpu = `, tool CPU a ${a.toFixed(1)} s + b ${b.toFixed(1)} s`
  const moved = `${(transfer.appBytes / MiB).toFixed(1)} MiB counted, ${(transfer.tunBytes / MiB).toFixed(1)} MiB on b's tun`
  return `${(transfer.ms / 1000).toFixed(2)} s${scan}, ${moved}${cpu}, nebula CPU ${transfer.nebulaCpu.toFixed(1)} s`
}
