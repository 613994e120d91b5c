import {createHash} from 'node:crypto'
import {mkdir, readdir, readFile, stat} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'

import {pollUntil} from '../../src/lib/poll.js'
import {cli, root} from '../helpers/cli.js'
import type {Shaping} from '../../src/lib/lab/netns.js'
import {createLab, type Lab, removeLab, runIn} from '../helpers/netns.js'
import {removeTempDirs, tempDir} from '../helpers/temp.js'

export const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')

/** pollUntil for the e2e tests: a check that throws counts as not yet, and its last error ends the timeout message. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, options: {timeoutMs?: number; intervalMs?: number} = {}): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 60_000
  let lastError: Error | undefined
  const attempt = async () => {
    try {
      const value = await check()
      lastError = undefined
      return value
    } catch (error) {
      lastError = error as Error
      return undefined
    }
  }
  return pollUntil(attempt, {
    timeoutMs,
    intervalMs: options.intervalMs ?? 300,
    onTimeout: () => {
      throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}${lastError ? `: ${lastError.message}` : ''}`)
    },
  })
}

/** Children of a process, over all its threads (Syncthing 1.19's monitor runs the worker as its child). */
export async function childPids(pid: number): Promise<number[]> {
  const tasks = await readdir(`/proc/${pid}/task`).catch((): string[] => [])
  const lists = await Promise.all(tasks.map((task) => readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '')))
  return [...new Set(lists.join(' ').split(/\s+/).filter(Boolean).map(Number))]
}

/** One measured number per line, beside mocha's own output. */
export const note = (text: string) => process.stdout.write(`      · ${text}\n`)

/** The sha256 of a file, or undefined when it is missing or does not have `size` bytes (yet). */
export async function fileHash(path: string, size?: number): Promise<string | undefined> {
  const info = await stat(path).catch(() => undefined)
  if (!info?.isFile() || (size !== undefined && info.size !== size)) return undefined
  const data = await readFile(path).catch(() => undefined)
  return data && sha256(data)
}

export interface ArrivalRate {
  /** Bytes per second between the samples where 10% and 90% of the file had arrived. */
  bytesPerSecond: number
  /** From the first byte on disk to the file complete. */
  totalSeconds: number
}

/**
 * How fast a file of `size` bytes arrives in `dir`, measured on the receiver's disk: Syncthing
 * writes the blocks it pulls into a sparse temp file (.syncthing.NAME.tmp, its allocated blocks are
 * the bytes received) and renames it once complete. Sampled every 20 ms; the rate is taken between
 * 10% and 90% so that the start (Syncthing's limiter lets a burst of 512 KiB through, requests are
 * pipelined) and the end (hash check, rename) do not count.
 */
export async function arrivalRate(dir: string, name: string, size: number, timeoutMs = 120_000): Promise<ArrivalRate> {
  const samples: {at: number; bytes: number}[] = []
  const sample = async (): Promise<ArrivalRate | undefined> => {
    const at = performance.now()
    const complete = (await stat(join(dir, name)).catch(() => undefined))?.size === size
    const temp = complete ? undefined : await stat(join(dir, `.syncthing.${name}.tmp`)).catch(() => undefined)
    const bytes = complete ? size : Math.min(size, (temp?.blocks ?? 0) * 512)
    if (bytes > 0) samples.push({at, bytes})
    if (!complete) return undefined
    const first = samples[0] ?? {at, bytes}
    const crossing = (fraction: number) => samples.find((entry) => entry.bytes >= fraction * size) ?? {at, bytes}
    const [low, high] = [crossing(0.1), crossing(0.9)]
    return {bytesPerSecond: high.at > low.at ? ((high.bytes - low.bytes) * 1000) / (high.at - low.at) : Number.NaN, totalSeconds: (at - first.at) / 1000}
  }
  return pollUntil(sample, {timeoutMs, intervalMs: 20, what: `${name} whole in ${dir}`})
}

export interface RunResult {
  exitCode: number | undefined
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any
  stdout: string
  stderr: string
}

function parseJson(text: string): unknown {
  try {
    return text ? JSON.parse(text) : undefined
  } catch {
    return undefined
  }
}

/** A script run by `node` inside a namespace: one call of Syncthing's REST API on its loopback. */
const restScript = `
const [url, method, body] = process.argv.slice(1)
const response = await fetch(url, {
  method,
  headers: {'X-API-Key': process.env.VST_API_KEY, ...(body ? {'Content-Type': 'application/json'} : {})},
  body: body || undefined,
  signal: AbortSignal.timeout(10000),
})
const text = await response.text()
if (!response.ok) {
  process.stderr.write(response.status + ' ' + text)
  process.exit(1)
}
process.stdout.write(text)
`

export interface MeshOptions {
  project: string
  cidr: string
  devices: string[]
  /** Extra environment for every command, e.g. VIDSYNC_NEBULA to run another nebula release. */
  env?: Record<string, string>
  /** Each device's HOME is its vidsync home (where ~/vidsync/<project>/<folder> auto-accepts go), not the host's. */
  ownHomes?: boolean
  /** The lighthouse also relays (`lighthouse add --relay`) for devices that cannot reach each other. */
  relay?: boolean
  /** Every node's underlay link shaped with tc (rate in bit/s, delay), as `vidsync lab up --rate` does. */
  shaping?: Shaping
  /**
   * A Postgres control plane for the operator and the devices instead of the operator's embedded
   * database: a URL that works inside the namespaces too (see `socketUrl` in test/helpers/postgres.ts).
   */
  databaseUrl?: string
}

/**
 * A lighthouse and devices in network namespaces, set up the way an operator and end users do it
 * with the built CLI: the operator (embedded backend, home in a temp dir) creates the project and
 * registers each device; each device makes its key, joins from its bundle, runs `up --detach` and
 * shares `<home>/shared`. `stop()` undoes everything by PID and name, also after a partial start.
 */
export class Mesh {
  lab: Lab | undefined
  operator = ''
  /** The operator's CA fingerprint: every device pins it at its first join. */
  caFingerprint = ''
  /** The stable ID of the project folder "shared". */
  sharedId = ''
  readonly homes: Record<string, string> = {}
  readonly folders: Record<string, string> = {}
  readonly overlayIps: Record<string, string> = {}
  readonly project: string
  readonly cidr: string
  readonly devices: string[]
  readonly env: Record<string, string>
  readonly ownHomes: boolean
  readonly relay: boolean
  readonly shaping: Shaping | undefined
  readonly databaseUrl: string

  constructor(options: MeshOptions) {
    this.project = options.project
    this.cidr = options.cidr
    this.devices = options.devices
    this.env = options.env ?? {}
    this.ownHomes = options.ownHomes ?? false
    this.relay = options.relay ?? false
    this.shaping = options.shaping
    this.databaseUrl = options.databaseUrl ?? ''
  }

  /** Syncthing's ID of the project folder "shared" that `start` creates: <project>.<its stable ID>. */
  get folderId(): string {
    return `${this.project}.${this.sharedId}`
  }

  ns(node: string): string {
    const ns = this.lab?.nodes[node]?.ns
    if (!ns) throw new Error(`no lab node ${node}`)
    return ns
  }

  /** The built CLI inside a node's namespace, as that device's user runs it (always --json). */
  async on(node: string, args: string[], timeoutMs = 60_000, input?: string): Promise<RunResult> {
    const result = await runIn(this.ns(node), process.execPath, [`${root}bin/run.js`, ...args, '--home', this.homes[node] ?? '', '--json'], {
      // The nebula service's root-only copy of the overlay: in the node's temp home, not the machine's /etc/vidsync.
      env: {VIDSYNC_SYSTEM_DIR: join(this.homes[node] ?? '', 'system'), ...this.env, VIDSYNC_DATABASE_URL: this.databaseUrl, ...(this.ownHomes ? {HOME: this.homes[node] ?? ''} : {})},
      timeoutMs,
      input,
    })
    return {exitCode: result.exitCode, json: parseJson(result.stdout), stdout: result.stdout, stderr: result.stderr}
  }

  /** Same, and the command must succeed. */
  async must(node: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
    const result = await this.on(node, args, timeoutMs)
    expect(result.exitCode, `${node}: vidsync ${args.join(' ')}: ${result.stdout} ${result.stderr}`).to.equal(0)
    return result
  }

  /** An operator command on the host (embedded backend in the operator's home, or the Postgres control plane); must succeed. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async admin(...args: string[]): Promise<any> {
    // The first command that opens the embedded database migrates it: slow on a loaded machine.
    const result = await cli([...args, '--json'], {...this.env, VIDSYNC_HOME: this.operator, VIDSYNC_DATABASE_URL: this.databaseUrl}, {timeoutMs: 180_000})
    expect(result.exitCode, `vidsync ${args.join(' ')}: ${result.stdout} ${result.stderr}`).to.equal(0)
    return result.json
  }

  /** The lab, the operator's project and a running lighthouse. */
  async start(): Promise<void> {
    this.lab = await createLab(['lh', ...this.devices], this.shaping)
    this.operator = await tempDir()
    for (const node of ['lh', ...this.devices]) this.homes[node] = await tempDir()
    if (this.databaseUrl) await this.admin('db', 'migrate')
    this.caFingerprint = (await this.admin('ca', 'init')).fingerprint
    await this.admin('project', 'create', this.project, '--cidr', this.cidr, '--quarantine', '1m')
    await this.admin('pool', 'populate', this.project)
    this.sharedId = (await this.admin('folder', 'create', this.project, 'shared')).id
    const bundle = join(this.operator, 'lh.zip')
    await this.admin('lighthouse', 'add', this.project, '--name', 'lh', '--endpoint', `${this.lab.nodes.lh?.ip}:4242`, '--generate-key', '--out', bundle, ...(this.relay ? ['--relay'] : []))
    await this.must('lh', ['join', bundle, '--ca-fingerprint', this.caFingerprint])
    await this.must('lh', ['nebula', 'up', '--detach'])
  }

  /** The device's key pair and Syncthing ID, made on the device. */
  async prepare(node: string): Promise<{publicKeyPath: string; deviceId: string}> {
    const key = await this.must(node, ['key', 'create'])
    const {deviceId} = (await this.on(node, ['sync', 'id'])).json
    return {publicKeyPath: key.json.publicKeyPath, deviceId}
  }

  /** The operator registers the device (with `extra` flags such as --group); returns its bundle. */
  async register(node: string, device: {publicKeyPath: string; deviceId: string}, ...extra: string[]): Promise<string> {
    const bundle = join(this.operator, `${node}.zip`)
    await this.admin('device', 'register', this.project, '--name', node, '--public-key', device.publicKeyPath, '--syncthing-id', device.deviceId, '--out', bundle, ...extra)
    return bundle
  }

  /**
   * Devices join with one invite code (Postgres control plane), each under its node's name, while
   * the operator's `device approve --watch` approves them: they get a device token, so their `up`
   * loop refreshes from the control plane and renews its certificate there.
   */
  async joinWithInvite(nodes: string[]): Promise<void> {
    const {code} = await this.admin('invite', 'create', this.project, '--uses', String(nodes.length))
    const joins = Promise.all(nodes.map((node) => this.on(node, ['join', '-', '--name', node, '--wait', '90s'], 120_000, code)))
    await this.admin('device', 'approve', this.project, '--watch', '--count', String(nodes.length), '--timeout', '90s', '--yes')
    for (const [index, joined] of (await joins).entries()) expect(joined.exitCode, `${nodes[index]}: join: ${joined.stdout} ${joined.stderr}`).to.equal(0)
  }

  /** join, `up --detach`, `sync add <home>/shared`: the results of up and sync add. */
  async bringUp(node: string, bundle: string, interval = '1s'): Promise<{up: RunResult; added: RunResult}> {
    await this.must(node, ['join', bundle, '--ca-fingerprint', this.caFingerprint])
    return this.startSharing(node, interval)
  }

  /** A joined device: `up --detach`, `sync add <home>/shared`: the results of up and sync add. */
  async startSharing(node: string, interval = '1s'): Promise<{up: RunResult; added: RunResult}> {
    const up = await this.on(node, ['up', '--detach', '--interval', interval])
    expect(up.exitCode, `${node}: up: ${up.stdout} ${up.stderr}`).to.equal(0)
    this.overlayIps[node] = up.json.overlayIp
    this.folders[node] = join(this.homes[node] ?? '', 'shared')
    await mkdir(this.folders[node] ?? '', {recursive: true})
    const added = await this.on(node, ['sync', 'add', this.folders[node] ?? ''])
    expect(added.exitCode, `${node}: sync add: ${added.stdout} ${added.stderr}`).to.equal(0)
    return {up, added}
  }

  /** One device from nothing to sharing its folder. */
  async addDevice(node: string, interval = '1s'): Promise<{up: RunResult; added: RunResult}> {
    return this.bringUp(node, await this.register(node, await this.prepare(node)), interval)
  }

  /** Several devices: keys in parallel, registration one by one (one operator database), then join and up in parallel. */
  async addDevices(nodes: string[], interval = '1s'): Promise<void> {
    const prepared = await Promise.all(nodes.map((node) => this.prepare(node)))
    const bundles: string[] = []
    for (const [index, node] of nodes.entries()) bundles.push(await this.register(node, prepared[index] ?? {publicKeyPath: '', deviceId: ''}))
    await Promise.all(nodes.map((node, index) => this.bringUp(node, bundles[index] ?? '', interval)))
  }

  /** One call of the Syncthing REST API of a device (inside its namespace). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async rest(node: string, method: string, path: string, body?: unknown): Promise<any> {
    const apiKey = (await readFile(join(this.homes[node] ?? '', 'syncthing', 'apikey'), 'utf8')).trim()
    const args = ['--input-type=module', '-e', restScript, `http://127.0.0.1:8384${path}`, method, body === undefined ? '' : JSON.stringify(body)]
    const result = await runIn(this.ns(node), process.execPath, args, {env: {VST_API_KEY: apiKey}, timeoutMs: 20_000})
    if (result.exitCode !== 0) throw new Error(`${node}: ${method} ${path}: ${result.stderr || `exit ${result.exitCode}`}`)
    return parseJson(result.stdout)
  }

  /**
   * kill -9 of a device's Syncthing (the monitor and its worker); resolves once another one
   * answers its API: the PIDs killed, the new PID and the time from the kill.
   */
  async killSyncthing(node: string): Promise<{killed: number[]; pid: number; restartMs: number}> {
    const pidPath = join(this.homes[node] ?? '', 'syncthing', 'syncthing.pid')
    const pidNow = async () => Number((await readFile(pidPath, 'utf8').catch(() => '')).split('\n')[0])
    const before = await pidNow()
    const killed = [before, ...(await childPids(before))]
    const killedAt = Date.now()
    for (const pid of killed) process.kill(pid, 'SIGKILL')
    const check = async () => {
      const pid = await pidNow()
      if (!pid || pid === before) return undefined
      await this.rest(node, 'GET', '/rest/system/ping')
      return pid
    }
    const pid = await waitFor(`a new Syncthing answering on ${node}`, check, {timeoutMs: 60_000, intervalMs: 100})
    return {killed, pid, restartMs: Date.now() - killedAt}
  }

  /** Asks a device's Syncthing to rescan the shared folder now instead of after its watcher delay (~10 s). */
  async scan(...nodes: string[]): Promise<void> {
    await Promise.all(nodes.map((node) => this.rest(node, 'POST', `/rest/db/scan?folder=${encodeURIComponent(this.folderId)}`)))
  }

  /** The Syncthing device ID of each node, from the managed instance. */
  async deviceId(node: string): Promise<string> {
    return (await this.rest(node, 'GET', '/rest/system/status')).myID
  }

  /**
   * Whether a TCP connection from `from` reaches Syncthing's port on `to`'s overlay address within
   * `timeoutMs`: only through a nebula tunnel between the two.
   */
  async reaches(from: string, to: string, timeoutMs = 2000): Promise<boolean> {
    const script = `const socket = require('node:net').connect({host: process.argv[1], port: 22000, timeout: ${timeoutMs}})
socket.on('connect', () => process.exit(0)).on('timeout', () => process.exit(1)).on('error', () => process.exit(1))`
    const result = await runIn(this.ns(from), process.execPath, ['-e', script, this.overlayIps[to] ?? ''], {timeoutMs: timeoutMs + 5000})
    return result.exitCode === 0
  }

  /** What each device's Syncthing says about peers and the shared folder, and its log's end: for failure reports. */
  async diagnose(): Promise<string> {
    const lines: string[] = []
    const ids = new Map<string, string>()
    for (const node of this.devices) ids.set(await this.deviceId(node).catch(() => '?'), node)
    const name = (id: string) => ids.get(id) ?? id.slice(0, 7)
    for (const node of this.devices) {
      const part = async (label: string, get: () => Promise<unknown>) => {
        const value = await get().catch((error: Error) => `error: ${error.message}`)
        lines.push(`${node} ${label}: ${typeof value === 'string' ? value : JSON.stringify(value)}`)
      }
      const folder = encodeURIComponent(this.folderId)
      await part('connections', async () => {
        const {connections} = await this.rest(node, 'GET', '/rest/system/connections')
        return Object.entries(connections as Record<string, {connected: boolean; address: string}>).map(([id, c]) => `${name(id)} ${c.connected ? `up ${c.address}` : 'down'}`)
      })
      await part('folder shared with', async () => (await this.rest(node, 'GET', `/rest/config/folders/${folder}`)).devices.map((d: {deviceID: string}) => name(d.deviceID)))
      await part('folder status', async () => {
        const status = await this.rest(node, 'GET', `/rest/db/status?folder=${folder}`)
        return {state: status.state, error: status.error, globalFiles: status.globalFiles, localFiles: status.localFiles, needFiles: status.needFiles, pullErrors: status.pullErrors}
      })
      await part('pending', async () => ({
        devices: Object.keys((await this.rest(node, 'GET', '/rest/cluster/pending/devices')) ?? {}).map(name),
        folders: await this.rest(node, 'GET', '/rest/cluster/pending/folders'),
      }))
      const log = await readFile(join(this.homes[node] ?? '', 'syncthing', 'syncthing.log'), 'utf8').catch(() => '')
      lines.push(`${node} syncthing.log:`, ...log.trimEnd().split('\n').slice(-12).map((line) => `    ${line}`))
    }
    return lines.join('\n')
  }

  /** Everything `start` and the devices started, by PID and name; safe after a partial start. */
  async stop(): Promise<void> {
    if (this.lab) {
      await Promise.all(this.devices.filter((node) => this.homes[node]).map((node) => this.on(node, ['down']).catch(() => undefined)))
      if (this.homes.lh) await this.on('lh', ['nebula', 'down']).catch(() => undefined)
    }
    await removeLab(this.lab)
    this.lab = undefined
    await removeTempDirs()
  }
}
