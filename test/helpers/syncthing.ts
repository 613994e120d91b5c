import {createServer} from 'node:net'

import {isAlive, stopPid} from '../../src/lib/exec.js'
import {pollUntil} from '../../src/lib/poll.js'
import {SyncthingClient} from '../../src/lib/syncthing/client.js'
import {startManagedSyncthing, stopManagedSyncthing, writeManagedConfig, type ManagedSyncthing} from '../../src/lib/syncthing/managed.js'
import {tempDir} from './temp.js'

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({host: '127.0.0.1', port: 0}, resolve)
  })
  const address = server.address()
  await new Promise((resolve) => server.close(resolve))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

/** pollUntil every 250 ms, a check that throws counting as not yet. */
export const waitFor = <T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> =>
  pollUntil(() => check().catch(() => undefined), {timeoutMs, intervalMs: 250, what})

export interface TestSyncthing extends ManagedSyncthing {
  home: string
  listenPort: number
  client: SyncthingClient
}

const started: {home: string; pid: number}[] = []

/** A home with the managed config on loopback ports (written, not started). */
export async function prepareTestHome(): Promise<{home: string; guiPort: number; listenPort: number}> {
  const home = await tempDir('vidsync-st-')
  const guiPort = await freePort()
  const listenPort = await freePort()
  await writeManagedConfig({vidsyncHome: home, guiPort, listenAddresses: [`tcp://127.0.0.1:${listenPort}`]})
  return {home, guiPort, listenPort}
}

/** Starts a managed Syncthing in a throw-away home, GUI and sync listener on 127.0.0.1 only. */
export async function startTestSyncthing(prepared?: {home: string; listenPort: number}): Promise<TestSyncthing> {
  const {home, listenPort} = prepared ?? (await prepareTestHome())
  const managed = await startManagedSyncthing({vidsyncHome: home})
  started.push({home, pid: managed.pid})
  return {...managed, home, listenPort, client: new SyncthingClient({url: managed.url, apiKey: managed.apiKey})}
}

/** For an `after` hook: stops every instance started here, by PID. */
export async function stopTestSyncthings(): Promise<void> {
  for (const {home, pid} of started.splice(0)) {
    await stopManagedSyncthing({vidsyncHome: home, timeoutMs: 5000}).catch(() => undefined)
    if (isAlive(pid)) await stopPid(pid, 5000)
  }
}
