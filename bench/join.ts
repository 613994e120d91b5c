/**
 * Join to first synced byte: how long a new device waits, from the start of its `vidsync join`,
 * until data its project already shares starts to arrive. A lab (src/lib/lab) is built with
 * vidsync's own commands and their defaults, as `vidsync lab up` does; before the second device
 * is registered, d1 gets a file in its shared folder and Syncthing has indexed it. Then each later
 * device goes through what a user does (key create, the operator's device register, join, up
 * --detach, sync add) and this bench watches its folder for the first byte on disk (a block
 * allocated in Syncthing's temp file) and the whole file. Needs root, nebula, syncthing and a
 * built CLI (`npm run build`); everything runs in the lab's namespaces and `lab down` removes it.
 *
 *   VIDSYNC_BENCH_JOIN_DEVICES=4     lighthouse plus this many devices: d2 and later are measured
 */
import {randomFillSync} from 'node:crypto'
import {existsSync} from 'node:fs'
import {mkdtemp, open, readdir, rm, stat} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {labDown, type LabNode, type LabState, labUp, vidsyncCli} from '../src/lib/lab/lab.js'
import {pollUntil} from '../src/lib/poll.js'
import {root, runIn, waitFor} from './dataplane/lab.js'
import {median, MiB} from './dataplane/measure.js'
import {type BenchRun, result, type Result} from './harness.js'

const devices = Number(process.env.VIDSYNC_BENCH_JOIN_DEVICES ?? 4)
const fileMiB = 64
const fileName = 'seed.bin'
/** How often the new device's folder is looked at. */
const pollMs = 20

async function writeSeed(path: string): Promise<void> {
  const file = await open(path, 'w')
  try {
    const chunk = Buffer.alloc(MiB)
    for (let i = 0; i < fileMiB; i++) await file.write(randomFillSync(chunk))
  } finally {
    await file.close()
  }
}

/** Until d1's Syncthing has indexed the seed: `vidsync sync list` in d1's namespace shows its bytes. */
async function waitIndexed(node: LabNode): Promise<void> {
  const cli = vidsyncCli(root)
  await waitFor(`${fileName} indexed on ${node.name}`, 120_000, 500, async () => {
    const {stdout} = await runIn(node.ns, cli.node, [cli.script, 'sync', 'list', '--home', node.home, '--json'])
    const {folders} = JSON.parse(stdout) as {folders: {globalBytes: number}[]}
    return folders.some((folder) => folder.globalBytes >= fileMiB * MiB) || undefined
  })
}

/**
 * Watches `folder` until a file in it has allocated blocks (Syncthing writes into a sparse temp
 * file, so its size says nothing) and until the seed is there whole. Times in ms since the epoch.
 */
function watchArrival(folder: string, timeoutMs: number): Promise<{firstByteAt: number; completeAt: number}> {
  let firstByteAt: number | undefined
  const arrived = async () => {
    const names = (await readdir(folder).catch(() => [] as string[])).filter((name) => !name.startsWith('.st'))
    const infos = await Promise.all(names.map(async (name) => ({name, info: await stat(join(folder, name)).catch(() => undefined)})))
    const now = Date.now()
    if (firstByteAt === undefined && infos.some(({info}) => info?.isFile() && info.blocks > 0)) firstByteAt = now
    if (firstByteAt !== undefined && infos.some(({name, info}) => name === fileName && info?.size === fileMiB * MiB)) return {firstByteAt, completeAt: now}
    return undefined
  }
  return pollUntil(arrived, {
    timeoutMs,
    intervalMs: pollMs,
    onTimeout: () => {
      throw new Error(`${fileName} did not arrive in ${folder} within ${timeoutMs / 1000}s`)
    },
  })
}

const stepMs = (state: LabState, step: string) => state.timings.find((timing) => timing.step === step)

export const run: BenchRun = async ({log}) => {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) throw new Error('the join bench needs Linux and root (network namespaces)')
  if (!existsSync(join(root, 'dist', 'commands'))) throw new Error('dist/ is missing: run `npm run build` first')
  const home = await mkdtemp(join(tmpdir(), 'vidsync-bench-join-'))
  const cli = vidsyncCli(root)
  const arrivals = new Map<string, Promise<{firstByteAt: number; completeAt: number}>>()
  try {
    const state = await labUp({
      home,
      devices,
      cli,
      beforeDevice: async (device, current) => {
        const [first] = current.devices
        if (device === first || !first?.folder) return
        if (arrivals.size === 0) {
          await writeSeed(join(first.folder, fileName))
          await waitIndexed(first)
          log(`${fileName} (${fileMiB} MiB) indexed on ${first.name}`)
        }
        const arrival = watchArrival(join(device.home, 'shared'), 180_000)
        arrival.catch(() => undefined) // awaited below; a lab failure must not leave it unhandled
        arrivals.set(device.name, arrival)
      },
    })
    const rows: Result[] = []
    const samples: {firstByte: number; complete: number}[] = []
    for (const [name, arrival] of arrivals) {
      const {firstByteAt, completeAt} = await arrival
      const joined = stepMs(state, `${name} join`)
      if (!joined) throw new Error(`no join step for ${name}`)
      const steps = ['join', 'nebula up', 'up', 'sync add'].map((step) => `${step} ${((stepMs(state, `${name} ${step}`)?.ms ?? 0) / 1000).toFixed(1)} s`)
      const sample = {firstByte: (firstByteAt - joined.startedAt) / 1000, complete: (completeAt - joined.startedAt) / 1000}
      log(`${name}: first byte ${sample.firstByte.toFixed(1)} s after join began, whole file ${sample.complete.toFixed(1)} s (${steps.join(', ')})`)
      samples.push(sample)
    }
    const of = `median of ${samples.length} devices`
    rows.push(
      result(`join -> first byte of existing data on the new device (${of})`, median(samples.map((sample) => sample.firstByte)), 's', ['<', 10]),
      result(`join -> first byte, slowest device`, Math.max(...samples.map((sample) => sample.firstByte)), 's'),
      result(`join -> whole ${fileMiB} MiB file on the new device (${of})`, median(samples.map((sample) => sample.complete)), 's'),
    )
    for (const step of ['join', 'nebula up', 'up', 'sync add']) {
      const values = [...arrivals.keys()].map((name) => (stepMs(state, `${name} ${step}`)?.ms ?? 0) / 1000)
      rows.push(result(`vidsync ${step} on the new device (${of})`, median(values), 's'))
    }
    return rows
  } finally {
    const down = await labDown({home, cli}).catch((error: Error) => error)
    if (down instanceof Error) log(`lab down: ${down.message}`)
    await rm(home, {recursive: true, force: true})
  }
}
