/**
 * The dataplane bench's helper inside one lab namespace, started by the bench as
 * `ip netns exec NS node --import tsx bench/dataplane/agent.ts`. It answers JSON-line requests on
 * stdin (`{id, op, args}`) with JSON lines on stdout (`{id, ok, value | error}`), so that everything
 * that needs the namespace's network (TCP tests, the Syncthing REST API on the namespace's own
 * 127.0.0.1) runs here while the bench keeps time outside. It ends when stdin closes.
 */
import {readFile} from 'node:fs/promises'
import {createConnection, createServer, type Server} from 'node:net'
import {createInterface} from 'node:readline'

import {SyncthingClient, type FolderConfig, type FolderStatus} from '../../src/lib/syncthing/client.js'
import {addFolder, type Peer} from '../../src/lib/syncthing/folders.js'
import {managedPaths, readManagedConfig} from '../../src/lib/syncthing/managed.js'
import {waitFor} from './lab.js'

// --- raw TCP: a receiver that counts bytes and a sender that writes for a while -------------------

interface Receiver {
  server: Server
  bytes: number
  firstByte?: number
  lastEnd?: number
  ended: number
}
const receivers = new Map<number, Receiver>()

async function tcpListen(args: {host: string; port: number}): Promise<null> {
  const receiver: Receiver = {server: createServer(), bytes: 0, ended: 0}
  receiver.server.on('connection', (socket) => {
    socket.on('data', (chunk: Buffer) => {
      receiver.firstByte ??= performance.now()
      receiver.bytes += chunk.length
    })
    socket.on('end', () => {
      receiver.lastEnd = performance.now()
      receiver.ended++
    })
    socket.on('error', () => undefined)
  })
  await new Promise<void>((resolve, reject) => {
    receiver.server.once('error', reject)
    receiver.server.listen({host: args.host, port: args.port}, resolve)
  })
  receivers.set(args.port, receiver)
  return null
}

/** Waits until `streams` senders have finished; bytes and the time from the first byte to the last end. */
async function tcpCollect(args: {port: number; streams: number; timeoutMs: number}): Promise<{bytes: number; ms: number}> {
  const receiver = receivers.get(args.port)
  if (!receiver) throw new Error(`no receiver on port ${args.port}`)
  try {
    await waitFor('the TCP senders to finish', args.timeoutMs, 20, async () => (receiver.ended >= args.streams ? true : undefined))
    return {bytes: receiver.bytes, ms: (receiver.lastEnd ?? 0) - (receiver.firstByte ?? 0)}
  } finally {
    receivers.delete(args.port)
    await new Promise((resolve) => receiver.server.close(resolve))
  }
}

/** `streams` connections, each writing one 1 MiB buffer over and over for `seconds`, with backpressure. */
async function tcpSend(args: {host: string; port: number; seconds: number; streams: number}): Promise<{bytes: number}> {
  const chunk = Buffer.alloc(1 << 20, 0x5a)
  const stopAt = performance.now() + args.seconds * 1000
  let bytes = 0
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const socket = createConnection({host: args.host, port: args.port})
      socket.setTimeout(30_000, () => socket.destroy(new Error('TCP sender stalled for 30 s')))
      socket.once('error', reject)
      socket.once('close', () => resolve())
      const pump = () => {
        while (performance.now() < stopAt) {
          bytes += chunk.length
          if (!socket.write(chunk)) return void socket.once('drain', pump)
        }
        socket.end()
      }
      socket.once('connect', pump)
    })
  await Promise.all(Array.from({length: args.streams}, one))
  return {bytes}
}

/**
 * Whether a TCP SYN to host:port gets an answer within `timeoutMs`: an accepted connection or a
 * refusal (RST) both mean the packet crossed the overlay and came back. No ping on this machine.
 */
async function tcpProbe(args: {host: string; port: number; timeoutMs: number}): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({host: args.host, port: args.port})
    const done = (answered: boolean) => {
      socket.destroy()
      resolve(answered)
    }
    socket.setTimeout(args.timeoutMs, () => done(false))
    socket.once('connect', () => done(true))
    socket.once('error', (error: NodeJS.ErrnoException) => done(error.code === 'ECONNREFUSED'))
  })
}

// --- Syncthing, through its REST API on this namespace's loopback ------------------------------------

async function clientFor(home: string): Promise<SyncthingClient> {
  const config = await readManagedConfig(home)
  return new SyncthingClient({url: config.url, apiKey: config.apiKey, timeoutMs: 30_000})
}

/** Shares `path` as `folderId` with `peers` the way `vidsync sync add` does, then applies bench-specific folder fields. */
async function stShare(args: {home: string; folderId: string; path: string; peers: Peer[]; cidr: string; folder: Partial<FolderConfig>}) {
  const client = await clientFor(args.home)
  await addFolder({client, path: args.path, project: 'bench', folderId: args.folderId, peers: args.peers, projectCidr: args.cidr})
  if (Object.keys(args.folder).length > 0) await client.patchFolder(args.folderId, args.folder)
  return (await client.folder(args.folderId)) ?? null
}

async function stPatchFolder(args: {home: string; folderId: string; folder: Partial<FolderConfig>}) {
  await (await clientFor(args.home)).patchFolder(args.folderId, args.folder)
  return null
}

async function stPatchOptions(args: {home: string; options: Record<string, unknown>}) {
  await (await clientFor(args.home)).patchOptions(args.options)
  return null
}

/** Waits (bounded) until the folder is idle with nothing to pull, e.g. after a settings change restarted it. */
async function stWaitIdle(args: {home: string; folderId: string; timeoutMs: number}) {
  const client = await clientFor(args.home)
  return waitFor(`${args.folderId} to be idle`, args.timeoutMs, 200, async () => {
    const status = (await client.folderStatus(args.folderId)) as FolderStatus & {needTotalItems: number}
    return status.state === 'idle' && status.needTotalItems === 0 ? true : undefined
  })
}

async function stWaitConnected(args: {home: string; deviceId: string; timeoutMs: number}) {
  const client = await clientFor(args.home)
  const connection = await waitFor(`a Syncthing connection to ${args.deviceId.slice(0, 7)}`, args.timeoutMs, 200, async () => {
    const found = (await client.connections()).connections[args.deviceId]
    return found?.connected ? found : undefined
  })
  return {address: connection.address, type: connection.type}
}

/** POST /rest/db/scan with the key from <home>/syncthing/apikey: Syncthing answers when the scan is done. */
async function stScan(args: {home: string; folderId: string; timeoutMs: number}): Promise<null> {
  const {url} = await readManagedConfig(args.home)
  const apiKey = (await readFile(managedPaths(args.home).apiKey, 'utf8')).trim()
  const response = await fetch(`${url}/rest/db/scan?${new URLSearchParams({folder: args.folderId})}`, {
    method: 'POST',
    headers: {'X-API-Key': apiKey},
    signal: AbortSignal.timeout(args.timeoutMs),
  })
  if (!response.ok) throw new Error(`scan of ${args.folderId} failed: HTTP ${response.status} ${await response.text()}`)
  return null
}

async function stStatus(args: {home: string; folderId: string}): Promise<FolderStatus> {
  return (await clientFor(args.home)).folderStatus(args.folderId)
}

type Counts = {localFiles: number; localBytes: number}

/**
 * The newest StateChanged event's ID, so that a wait can start after it. Syncthing keeps a buffer
 * per event mask from the first request for it on: this also starts that buffer before the scan.
 */
async function stLastEventId(args: {home: string}): Promise<number> {
  const events = await (await clientFor(args.home)).events({since: 0, limit: 1, types: ['StateChanged'], timeoutS: 1})
  return events.at(-1)?.id ?? 0
}

/**
 * Waits until this folder holds what the sender has (`target`, the sender's local counts after
 * its scan), has nothing left to pull, is idle, and its sequence moved past `afterSequence` (so an
 * edit that keeps the counts still has to arrive). /rest/db/status walks the folder's database,
 * which costs Syncthing real CPU with thousands of files, so it is asked only when the folder
 * turns idle (StateChanged events, long-polled from `sinceEvent`) and once a second besides.
 */
async function stWaitSynced(args: {home: string; folderId: string; afterSequence: number; target: Counts; sinceEvent: number; timeoutMs: number}) {
  const client = await clientFor(args.home)
  const deadline = Date.now() + args.timeoutMs
  let since = args.sinceEvent
  for (;;) {
    const status = (await client.folderStatus(args.folderId)) as FolderStatus & Counts & {sequence: number; needTotalItems: number}
    if (status.pullErrors > 0) throw new Error(`${args.folderId}: ${status.pullErrors} pull errors (${status.error ?? 'see the Syncthing log'})`)
    const done =
      status.sequence > args.afterSequence &&
      status.state === 'idle' &&
      status.needTotalItems === 0 &&
      status.localFiles === args.target.localFiles &&
      status.localBytes === args.target.localBytes
    if (done) return status
    if (Date.now() > deadline) throw new Error(`timed out after ${args.timeoutMs / 1000}s waiting for ${args.folderId} to finish syncing`)
    // Until the folder turns idle again, or a second has passed.
    for (const end = Date.now() + 1000; Date.now() < end; ) {
      const events = await client.events({since, types: ['StateChanged'], timeoutS: 1})
      since = events.at(-1)?.id ?? since
      const idle = events.some((event) => {
        const data = event.data as {folder?: string; to?: string}
        return data.folder === args.folderId && data.to === 'idle'
      })
      if (idle) break
    }
  }
}

/** Bytes on the Syncthing connection with `deviceId`, as Syncthing counts them (after TLS, before compression). */
async function stCounters(args: {home: string; deviceId: string}) {
  const connection = (await (await clientFor(args.home)).connections()).connections[args.deviceId]
  if (!connection) throw new Error(`no Syncthing connection with ${args.deviceId.slice(0, 7)}`)
  return {inBytes: connection.inBytesTotal, outBytes: connection.outBytesTotal}
}

// --- the namespace's own interfaces -----------------------------------------------------------------

async function linkBytes(args: {dev: string}) {
  const read = async (what: string) => Number(await readFile(`/sys/class/net/${args.dev}/statistics/${what}`, 'utf8'))
  return {rx: await read('rx_bytes'), tx: await read('tx_bytes')}
}

/** This namespace's UDP counters (/proc/net/snmp): datagrams nebula received, and those the kernel dropped for want of socket buffer. */
async function udpStats() {
  const lines = (await readFile('/proc/net/snmp', 'utf8')).split('\n').filter((line) => line.startsWith('Udp: '))
  const [names, values] = lines.map((line) => line.split(/\s+/).slice(1))
  const get = (name: string) => Number(values?.[names?.indexOf(name) ?? -1] ?? Number.NaN)
  return {inDatagrams: get('InDatagrams'), rcvbufErrors: get('RcvbufErrors'), sndbufErrors: get('SndbufErrors')}
}

const ops: Record<string, (args: never) => Promise<unknown>> = {
  ping: async () => 'pong',
  tcpListen,
  tcpCollect,
  tcpSend,
  tcpProbe,
  stShare,
  stPatchFolder,
  stPatchOptions,
  stWaitConnected,
  stWaitIdle,
  stScan,
  stStatus,
  stWaitSynced,
  stLastEventId,
  stCounters,
  linkBytes,
  udpStats,
}

const reply = (message: object) => process.stdout.write(`${JSON.stringify(message)}\n`)

const lines = createInterface({input: process.stdin})
lines.on('line', (line) => {
  let request: {id: number; op: string; args: unknown}
  try {
    request = JSON.parse(line)
  } catch {
    return
  }
  const op = ops[request.op]
  if (!op) return reply({id: request.id, ok: false, error: `unknown op ${request.op}`})
  op(request.args as never).then(
    (value) => reply({id: request.id, ok: true, value: value ?? null}),
    (error: unknown) => reply({id: request.id, ok: false, error: error instanceof Error ? error.message : String(error)}),
  )
})
lines.on('close', () => {
  for (const receiver of receivers.values()) receiver.server.close()
  process.exit(0)
})
