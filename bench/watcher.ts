/**
 * Latency after a save (issue 13): from the close of a file written on one device to the file
 * complete on the other, with Syncthing's file watcher (no forced rescans), for several watcher
 * delays (fsWatcherDelayS). Two managed Syncthings on loopback addresses (127.0.6.1 and .2, not
 * the overlay: this measures Syncthing's own delays, not the network). Also a file that grows for
 * 5 s: how many versions of it the sender announced (each is a rescan and an index update that the
 * peer may pull from), and how long after its close it was complete on the peer.
 *   npm run bench -- --only watcher
 */
import {createHash, randomBytes} from 'node:crypto'
import {open, readFile, rm, stat} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {SyncthingClient} from '../src/lib/syncthing/client.js'
import {startManagedSyncthing, stopManagedSyncthing, writeManagedConfig} from '../src/lib/syncthing/managed.js'
import {pollUntil} from '../src/lib/poll.js'
import {removeTempDirs, tempDir} from '../test/helpers/temp.js'
import {freePort} from '../test/helpers/syncthing.js'
import {type BenchContext, percentile, result, type Result} from './harness.js'

const MiB = 1024 * 1024

async function complete(path: string, size: number, hash: string, timeoutMs: number): Promise<number> {
  const arrived = async () => {
    const info = await stat(path).catch(() => undefined)
    return info?.size === size && createHash('sha256').update(await readFile(path)).digest('hex') === hash && Date.now()
  }
  return pollUntil(arrived, {
    timeoutMs,
    intervalMs: 20,
    onTimeout: () => {
      throw new Error(`${path} not complete within ${timeoutMs / 1000}s`)
    },
  })
}

/** Writes `size` bytes in `chunks` pieces spread over `overMs`; returns the data's hash and the close time. */
async function writeSlowly(path: string, size: number, chunks: number, overMs: number): Promise<{hash: string; closedAt: number}> {
  const hash = createHash('sha256')
  const handle = await open(path, 'w')
  try {
    for (let index = 0; index < chunks; index++) {
      const piece = randomBytes(size / chunks)
      hash.update(piece)
      await handle.write(piece)
      if (overMs > 0) await sleep(overMs / chunks)
    }
  } finally {
    await handle.close()
  }
  return {hash: hash.digest('hex'), closedAt: Date.now()}
}

export async function run({log}: BenchContext): Promise<Result[]> {
  const nodes: {home: string; dir: string; client: SyncthingClient; deviceId: string; ip: string}[] = []
  const results: Result[] = []
  try {
    for (const ip of ['127.0.6.1', '127.0.6.2']) {
      const home = await tempDir('vidsync-bench-st-')
      await writeManagedConfig({vidsyncHome: home, guiPort: await freePort(), listenAddresses: [`tcp://${ip}:22000`]})
      const managed = await startManagedSyncthing({vidsyncHome: home})
      nodes.push({home, dir: await tempDir('vidsync-bench-dir-'), client: new SyncthingClient({url: managed.url, apiKey: managed.apiKey}), deviceId: managed.deviceId, ip})
    }
    const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]]
    for (const [self, other] of [[a, b], [b, a]] as const) {
      await self.client.putDevice({deviceID: other.deviceId, name: other.ip, addresses: [`tcp://${other.ip}:22000`]})
    }
    for (const delay of [1, 2, 5, 10]) {
      const id = `bench-${delay}`
      for (const [self, other] of [[a, b], [b, a]] as const) {
        await self.client.putFolder({id, label: id, path: join(self.dir, id), type: 'sendreceive', devices: [{deviceID: other.deviceId}], fsWatcherEnabled: true, fsWatcherDelayS: delay, rescanIntervalS: 3600, markerName: '.', versioning: {type: '', params: {}}})
      }
      // Let both finish their first scan and connect.
      const ready = async () => (await a.client.folderStatus(id)).state === 'idle' && (await a.client.connections()).connections[b.deviceId]?.connected
      await pollUntil(ready, {timeoutMs: 60_000, intervalMs: 200, onTimeout: () => false})
      await sleep(2000)
      const latencies: number[] = []
      for (let rep = 0; rep < 3; rep++) {
        const name = `clip-${rep}.bin`
        const {hash, closedAt} = await writeSlowly(join(a.dir, id, name), 32 * MiB, 1, 0)
        const done = await complete(join(b.dir, id, name), 32 * MiB, hash, 60_000)
        latencies.push((done - closedAt) / 1000)
        log(`watcher delay ${delay} s: 32 MiB complete on the peer ${((done - closedAt) / 1000).toFixed(2)} s after close`)
        await sleep(1000)
      }
      results.push(result(`watcher delay ${delay} s: 32 MiB, close to complete on peer (median of 3)`, percentile(latencies, 50), 's', delay <= 2 ? ['<', 3] : undefined))
      if (delay <= 5) {
        // A 256 MiB file written over 5 s, as a render or a camera dump grows.
        const name = 'growing.bin'
        const types = ['LocalIndexUpdated']
        const since = (await a.client.events({types, timeoutS: 1, limit: 1})).at(-1)?.id ?? 0
        const {hash, closedAt} = await writeSlowly(join(a.dir, id, name), 256 * MiB, 64, 5000)
        const done = await complete(join(b.dir, id, name), 256 * MiB, hash, 180_000)
        const updates = (await a.client.events({since, types, timeoutS: 1})).filter((event) => {
          const data = event.data as {folder?: string; filenames?: string[]}
          return data.folder === id && (data.filenames ?? []).includes(name)
        })
        const versions = updates.length
        log(`watcher delay ${delay} s: 256 MiB over 5 s complete ${((done - closedAt) / 1000).toFixed(2)} s after close, ${versions} index update(s) of it`)
        results.push(result(`watcher delay ${delay} s: 256 MiB written over 5 s, close to complete on peer`, (done - closedAt) / 1000, 's'))
        results.push(result(`watcher delay ${delay} s: 256 MiB written over 5 s, index updates of it while it grew`, versions, 'updates'))
      }
      for (const node of nodes) {
        await node.client.deleteFolder(id)
        await rm(join(node.dir, id), {recursive: true, force: true})
      }
    }
  } finally {
    for (const node of nodes) await stopManagedSyncthing({vidsyncHome: node.home, timeoutMs: 10_000}).catch(() => undefined)
    await removeTempDirs()
  }
  return results
}
