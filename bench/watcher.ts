/**
 * Latency after a save (issue 13): from the close of a file written on one device to the file
 * complete on the other, with Syncthing's file watcher (no forced rescans), for several watcher
 * delays (fsWatcherDelayS). Two managed Syncthings on loopback addresses (127.0.6.1 and .2, not
 * the overlay: this measures Syncthing's own delays, not the network).
 *
 * - A 32 MiB file saved in one write into an idle folder, 3 times (median).
 * - Files that grow while Syncthing watches them, as a render or a camera dump does: 1 GiB written
 *   over 5 s (the case) and 256 MiB over 20 s (longer than the 6 s after which Syncthing
 *   scans a file that keeps changing when the delay is 1 s: 6x the delay, at most 60 s). For each:
 *   how many versions of it the sender announced (index updates, each a full rehash that the peer
 *   may start pulling), how often the sender's folder scanned, how many pulls of it the peer
 *   started, and how long after its close it was complete on the peer.
 *
 * Needs about 2.6 GiB free in the temp dir (the 1 GiB file on both sides and in memory); every
 * file is removed after its delay, and both Syncthings and their dirs at the end, also on Ctrl-C.
 * Took 5.5 minutes under a load average of 7 on 2 cores, 11 minutes under 12.
 *   npm run bench -- --only watcher
 */
import {createHash, randomBytes} from 'node:crypto'
import {createReadStream} from 'node:fs'
import {open, rm, stat} from 'node:fs/promises'
import {join} from 'node:path'
import {pipeline} from 'node:stream/promises'
import {setTimeout as sleep} from 'node:timers/promises'

import {pollUntil} from '../src/lib/poll.js'
import {SyncthingClient, type SyncthingEvent} from '../src/lib/syncthing/client.js'
import {startManagedSyncthing, stopManagedSyncthing, writeManagedConfig} from '../src/lib/syncthing/managed.js'
import {freePort} from '../test/helpers/syncthing.js'
import {removeTempDirs, tempDir} from '../test/helpers/temp.js'
import {type BenchContext, percentile, result, type Result, withCleanUp} from './harness.js'

const MiB = 1024 * 1024
const delaysS = [1, 2, 5, 10]
const saves = 3
/** Each written in 16 MiB (1 GiB) or 2 MiB (256 MiB) pieces, so the gaps (78 ms) stay far below half of the shortest delay. */
const growingFiles = [
  {label: '1 GiB written over 5 s', size: 1024 * MiB, pieces: 64, overMs: 5000},
  {label: '256 MiB written over 20 s', size: 256 * MiB, pieces: 128, overMs: 20_000},
]

interface Node {
  home: string
  dir: string
  client: SyncthingClient
  deviceId: string
  ip: string
}

/** SHA-256 of a file, read as a stream (the 1 GiB file need not fit a Buffer twice). */
async function fileHash(path: string): Promise<string> {
  const hash = createHash('sha256')
  await pipeline(createReadStream(path), hash)
  return hash.digest('hex')
}

/**
 * When `path` first had `size` bytes and then turned out to hold the expected data; checks every
 * 20 ms, so the time is that of the stat, not of the hash check after it.
 */
async function completeAt(path: string, size: number, hash: string, timeoutMs: number): Promise<number> {
  const complete = async () => {
    const info = await stat(path).catch(() => undefined)
    const seenAt = Date.now()
    return info?.size === size && (await fileHash(path)) === hash && seenAt
  }
  return pollUntil(complete, {timeoutMs, intervalMs: 20, what: `${path} complete`})
}

/**
 * Writes `data` in order, piece i due at i/n of `overMs` after the start (so a slow write does not
 * stretch the whole), and closes; returns when it closed and how long the writing took.
 */
async function writePaced(path: string, pieces: Buffer[], overMs: number): Promise<{closedAt: number; tookS: number}> {
  const start = Date.now()
  const handle = await open(path, 'w')
  try {
    for (const [index, piece] of pieces.entries()) {
      await handle.write(piece)
      const due = start + ((index + 1) * overMs) / pieces.length
      if (index < pieces.length - 1 && due > Date.now()) await sleep(due - Date.now())
    }
  } finally {
    await handle.close()
  }
  const closedAt = Date.now()
  return {closedAt, tookS: (closedAt - start) / 1000}
}

function randomPieces(size: number, count: number): {pieces: Buffer[]; hash: string} {
  const hash = createHash('sha256')
  const pieces = Array.from({length: count}, () => randomBytes(size / count))
  for (const piece of pieces) hash.update(piece)
  return {pieces, hash: hash.digest('hex')}
}

/** The id of the newest event of `types`; asking also makes Syncthing start buffering that set of types. */
async function lastEventId(client: SyncthingClient, types: string[]): Promise<number> {
  return (await client.events({types, timeoutS: 1, limit: 1})).at(-1)?.id ?? 0
}

/** Events of `types` after `since`, up to now (a long poll with a short timeout, repeated until none come). */
async function eventsSince(client: SyncthingClient, types: string[], since: number): Promise<SyncthingEvent[]> {
  const all: SyncthingEvent[] = []
  for (let page = 0; page < 20; page++) {
    const batch = await client.events({since: all.at(-1)?.id ?? since, types, timeoutS: 1})
    if (batch.length === 0) return all
    all.push(...batch)
  }
  return all
}

const field = (event: SyncthingEvent, name: string): unknown => (event.data as Record<string, unknown> | null)?.[name]

/** Waits until `a` is idle in `folder` and connected to `b`; bounded, rejects at the bound. */
async function folderReady(a: Node, b: Node, folder: string): Promise<void> {
  const ready = async () => (await a.client.folderStatus(folder)).state === 'idle' && (await a.client.connections()).connections[b.deviceId]?.connected
  await pollUntil(ready, {timeoutMs: 60_000, intervalMs: 200, what: `folder ${folder} idle and connected`})
}

async function measureDelay(a: Node, b: Node, delay: number, log: BenchContext['log']): Promise<Result[]> {
  const id = `bench-${delay}`
  const results: Result[] = []
  for (const [self, other] of [[a, b], [b, a]] as const) {
    await self.client.putFolder({id, label: id, path: join(self.dir, id), type: 'sendreceive', devices: [{deviceID: other.deviceId}], fsWatcherEnabled: true, fsWatcherDelayS: delay, rescanIntervalS: 3600, markerName: '.', versioning: {type: '', params: {}}})
  }
  await folderReady(a, b, id)
  // Each save lands in an idle folder, as after a pause in editing: Syncthing's watcher timer has
  // fired with nothing to do and restarts at the next change, so the scan comes `delay` after it.
  const idle = () => sleep(delay * 1000 + 500)
  await idle()

  const latencies: number[] = []
  for (let save = 0; save < saves; save++) {
    const name = `clip-${save}.bin`
    const {pieces, hash} = randomPieces(32 * MiB, 1)
    const {closedAt} = await writePaced(join(a.dir, id, name), pieces, 0)
    const done = await completeAt(join(b.dir, id, name), 32 * MiB, hash, 60_000)
    latencies.push((done - closedAt) / 1000)
    log(`watcher delay ${delay} s: 32 MiB complete on the peer ${((done - closedAt) / 1000).toFixed(2)} s after close`)
    await idle()
  }
  results.push(result(`watcher delay ${delay} s: 32 MiB, close to complete on peer (median of ${saves})`, percentile(latencies, 50), 's', ['<', 3]))

  const senderTypes = ['LocalIndexUpdated', 'StateChanged']
  const peerTypes = ['ItemStarted']
  for (const growing of growingFiles) {
    const name = `growing-${growing.size / MiB}.bin`
    const {pieces, hash} = randomPieces(growing.size, growing.pieces)
    const senderSince = await lastEventId(a.client, senderTypes)
    const peerSince = await lastEventId(b.client, peerTypes)
    const {closedAt, tookS} = await writePaced(join(a.dir, id, name), pieces, growing.overMs)
    const done = await completeAt(join(b.dir, id, name), growing.size, hash, 300_000)
    const ofFile = (event: SyncthingEvent) => field(event, 'folder') === id
    const sender = (await eventsSince(a.client, senderTypes, senderSince)).filter(ofFile)
    const updates = sender.filter((event) => event.type === 'LocalIndexUpdated' && (field(event, 'filenames') as string[] | undefined)?.includes(name)).length
    const scans = sender.filter((event) => event.type === 'StateChanged' && field(event, 'to') === 'scanning').length
    const pulls = (await eventsSince(b.client, peerTypes, peerSince)).filter((event) => ofFile(event) && field(event, 'item') === name).length
    const latency = (done - closedAt) / 1000
    log(`watcher delay ${delay} s: ${growing.label} (took ${tookS.toFixed(2)} s) complete ${latency.toFixed(2)} s after close; ${updates} index update(s), ${scans} scan(s), ${pulls} pull(s) on the peer`)
    results.push(
      result(`watcher delay ${delay} s: ${growing.label}, writing took`, tookS, 's'),
      result(`watcher delay ${delay} s: ${growing.label}, close to complete on peer`, latency, 's'),
      result(`watcher delay ${delay} s: ${growing.label}, index updates of it (versions announced)`, updates, 'updates'),
      result(`watcher delay ${delay} s: ${growing.label}, scans of the folder on the sender`, scans, 'scans'),
      result(`watcher delay ${delay} s: ${growing.label}, pulls of it started on the peer`, pulls, 'pulls'),
    )
    await idle()
  }

  for (const node of [a, b]) {
    await node.client.deleteFolder(id)
    await rm(join(node.dir, id), {recursive: true, force: true})
  }
  return results
}

export async function run({log}: BenchContext): Promise<Result[]> {
  const nodes: Node[] = []
  const cleanUp = async () => {
    for (const node of nodes) await stopManagedSyncthing({vidsyncHome: node.home, timeoutMs: 10_000}).catch(() => undefined)
    await removeTempDirs()
  }
  return withCleanUp(cleanUp, log, async () => {
    for (const ip of ['127.0.6.1', '127.0.6.2']) {
      const home = await tempDir('vidsync-bench-st-')
      const dir = await tempDir('vidsync-bench-dir-')
      await writeManagedConfig({vidsyncHome: home, guiPort: await freePort(), listenAddresses: [`tcp://${ip}:22000`]})
      const managed = await startManagedSyncthing({vidsyncHome: home})
      nodes.push({home, dir, client: new SyncthingClient({url: managed.url, apiKey: managed.apiKey}), deviceId: managed.deviceId, ip})
    }
    const [a, b] = nodes as [Node, Node]
    for (const [self, other] of [[a, b], [b, a]] as const) {
      await self.client.putDevice({deviceID: other.deviceId, name: other.ip, addresses: [`tcp://${other.ip}:22000`]})
    }
    const results: Result[] = []
    for (const delay of delaysS) results.push(...(await measureDelay(a, b, delay, log)))
    return results
  })
}
