import {createHash, randomBytes} from 'node:crypto'
import {mkdir, readdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {UnavailableError} from '../errors.js'
import {pollUntil} from '../poll.js'
import {type LabCli, labDown, type LabDownResult, type LabState, labUp} from './lab.js'

export interface DemoOptions {
  home: string
  devices: number
  cli: LabCli
  rate?: string
  delay?: string
  /** Size of the one big file [default 64 MiB]. */
  bigFileMiB?: number
  /** How many 16 KiB files [default 200]. */
  smallFiles?: number
  timeoutMs?: number
  onProgress?: (progress: DemoProgress[]) => void
}

export interface DemoProgress {
  device: string
  bytes: number
  totalBytes: number
}

export interface DemoDevice {
  device: string
  bytes: number
  /** From writing the data on d1 until this device had all of it (includes Syncthing noticing the change). */
  totalSeconds: number
  /** From this device's first received byte to its last. */
  transferSeconds: number
  mibPerSecond: number
  identical: boolean
}

export interface DemoResult {
  lab: LabState
  files: number
  bytes: number
  devices: DemoDevice[]
  down: LabDownResult
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')

/** Bytes of `names` present under `dir` at their full size (Syncthing writes temp files elsewhere, then renames). */
async function receivedBytes(dir: string, sizes: Map<string, number>): Promise<number> {
  let total = 0
  for (const [name, size] of sizes) {
    const info = await stat(join(dir, name)).catch(() => undefined)
    if (info?.size === size) total += size
  }
  return total
}

/**
 * The lab as a demonstration: brings a lab up, puts sample data (one big file and many small
 * ones) on d1, follows it arriving on every other device, checks it is identical, and takes the
 * lab down again, also on failure.
 */
export async function labDemo(options: DemoOptions): Promise<DemoResult> {
  const lab = await labUp(options)
  try {
    const [source, ...targets] = lab.devices
    if (!source?.folder || targets.length === 0) throw new UnavailableError('the demo needs at least two devices: pass --devices 2 or more')
    const big = randomBytes((options.bigFileMiB ?? 64) * 1024 * 1024)
    const small = Array.from({length: options.smallFiles ?? 200}, () => randomBytes(16 * 1024))
    const sizes = new Map<string, number>([['demo/big.bin', big.length], ...small.map((data, i) => [`demo/small/${i}.bin`, data.length] as [string, number])])
    const totalBytes = [...sizes.values()].reduce((sum, size) => sum + size, 0)
    await mkdir(join(source.folder, 'demo', 'small'), {recursive: true})
    await Promise.all(small.map((data, i) => writeFile(join(source.folder ?? '', 'demo', 'small', `${i}.bin`), data)))
    await writeFile(join(source.folder, 'demo', 'big.bin'), big)

    const started = Date.now()
    const firstByte = new Map<string, number>()
    const done = new Map<string, number>()
    const timeoutMs = options.timeoutMs ?? 300_000
    const arrived = async () => {
      const progress = await Promise.all(
        targets.map(async (target) => ({device: target.name, bytes: await receivedBytes(target.folder ?? '', sizes), totalBytes})),
      )
      const now = Date.now()
      for (const {device, bytes} of progress) {
        if (bytes > 0 && !firstByte.has(device)) firstByte.set(device, now)
        if (bytes === totalBytes && !done.has(device)) done.set(device, now)
      }
      options.onProgress?.(progress)
      return done.size === targets.length
    }
    await pollUntil(arrived, {
      timeoutMs,
      intervalMs: 250,
      onTimeout: () => {
        throw new UnavailableError(`the sample data did not reach every device within ${timeoutMs / 1000}s`)
      },
    })

    const devices = await Promise.all(
      targets.map(async (target): Promise<DemoDevice> => {
        const end = done.get(target.name) ?? Date.now()
        const transferSeconds = Math.max(0.25, (end - (firstByte.get(target.name) ?? started)) / 1000)
        const copy = await readFile(join(target.folder ?? '', 'demo', 'big.bin'))
        const smallOk = (await readdir(join(target.folder ?? '', 'demo', 'small'))).length === small.length
        return {
          device: target.name,
          bytes: totalBytes,
          totalSeconds: (end - started) / 1000,
          transferSeconds,
          mibPerSecond: totalBytes / 1024 / 1024 / transferSeconds,
          identical: smallOk && sha256(copy) === sha256(big),
        }
      }),
    )
    return {lab, files: sizes.size, bytes: totalBytes, devices, down: await labDown({home: options.home, cli: options.cli})}
  } catch (error) {
    await labDown({home: options.home, cli: options.cli}).catch(() => undefined)
    throw error
  }
}
