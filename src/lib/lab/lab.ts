import {createHash} from 'node:crypto'
import {mkdir, readdir, readFile, rm, rmdir, writeFile} from 'node:fs/promises'
import {join, resolve} from 'node:path'

import {
  ConflictError,
  type ErrorCode,
  ExitCode,
  InvalidInputError,
  MissingDependencyError,
  PermissionError,
  ToolFailedError,
  UnavailableError,
  VidsyncError,
} from '../errors.js'
import {runTool, startDaemon} from '../exec.js'
import {currentPlatform} from '../platform/index.js'
import {ensureDir, publishNew, withTempDir, writeFileAtomic} from '../files.js'
import {createNetns, listNetns, parseShaping, removeNetns} from './netns.js'

/** How to run vidsync itself: the lab is built only with vidsync's own commands. */
export interface LabCli {
  /** The Node binary (process.execPath). */
  node: string
  /** vidsync's bin/run.js. */
  script: string
}

export interface LabNode {
  name: string
  ns: string
  underlayIp: string
  /** The node's vidsync home. */
  home: string
  /** Known once the node has joined. */
  overlayIp: string | null
  /** nebula's PID, once it runs. */
  nebulaPid: number | null
  /** A device's shared folder (Syncthing folder lab-shared), once it syncs; null on the lighthouse. */
  folder?: string | null
}

export interface LabStep {
  step: string
  /** When it started, in ms since the epoch. */
  startedAt: number
  ms: number
}

/** What `<lab home>/lab.json` records, from before the first namespace exists, so `lab down` finds everything. */
export interface LabState {
  version: 1
  home: string
  /** Every namespace of the lab starts with it (see labPrefix). */
  prefix: string
  status: 'starting' | 'up'
  project: string
  cidr: string
  shaping: {rate?: string; delay?: string} | null
  /** The lab's namespaces, the bridge's included, once created. */
  namespaces: string[]
  /** The operator's home: CA and embedded control plane. */
  operatorHome: string
  lighthouse: LabNode
  devices: LabNode[]
  timings: LabStep[]
}

export interface LabUpOptions {
  /** The lab home [see defaultLabHome]. */
  home: string
  devices: number
  /** Link rate per node and direction, tc units: `1gbit`. */
  rate?: string
  /** One-way delay added to what each node sends: the RTT between two nodes is twice this. */
  delay?: string
  cli: LabCli
  /** Limit for each step [default: 60 s]. */
  timeoutMs?: number
  /** Runs before each device is registered, with the nodes up so far: to put data on them first, say. */
  beforeDevice?: (device: LabNode, state: LabState) => Promise<void>
}

export interface LabDownResult {
  home: string
  /** False when there was nothing to remove. */
  found: boolean
  /** Nodes whose running daemons vidsync's own commands stopped. */
  stopped: string[]
  /** PIDs that were still running in the lab's namespaces and had to be ended. */
  killed: number[]
  namespaces: string[]
}

const project = 'lab'
const cidr = '10.213.0.0/24'
const lighthousePort = 4242
const maxDevices = 249 // 192.0.2.2 to .250, after the lighthouse's .1

/** This vidsync, installed at `root`: the Node running it and its bin/run.js. */
export const vidsyncCli = (root: string): LabCli => ({node: process.execPath, script: join(root, 'bin', 'run.js')})

/** Where a lab lives when no other home is given. */
export const defaultLabHome = (vidsyncHome: string) => join(vidsyncHome, 'lab')

/** `vsl-` plus a hash of the lab home: recognisable, and two lab homes never share a namespace. */
export const labPrefix = (home: string) => `vsl-${createHash('sha256').update(resolve(home)).digest('hex').slice(0, 8)}-`

const statePath = (home: string) => join(home, 'lab.json')
const logsDir = (home: string) => join(home, 'logs')
/** What a lab writes in its home besides lab.json and logs/ (kept until the next `lab up`); removed by name, nothing else is. */
const labEntry = /^(operator|lh|d\d+|bundles)$/

export async function readLabState(home: string): Promise<LabState | undefined> {
  const text = await readFile(statePath(resolve(home)), 'utf8').catch(() => undefined)
  return text === undefined ? undefined : (JSON.parse(text) as LabState)
}

const saveState = (state: LabState) => writeFileAtomic(statePath(state.home), `${JSON.stringify(state, null, 2)}\n`, 0o600)

/** Publishes the first state file without replacing one, so of two concurrent `lab up` only one goes on. */
async function createState(state: LabState): Promise<void> {
  await ensureDir(state.home)
  await withTempDir(state.home, async (temp) => {
    await writeFile(join(temp, 'lab.json'), JSON.stringify(state, null, 2), {mode: 0o600})
    await publishNew([{from: join(temp, 'lab.json'), to: statePath(state.home)}], () => alreadyUp(state.home))
  })
}

const alreadyUp = (home: string) => new ConflictError(`a lab is already up in ${home}: remove it first with \`vidsync lab down\``)

async function checkLinuxRoot(): Promise<void> {
  const platform = currentPlatform()
  if (platform.os !== 'linux') throw new MissingDependencyError('the lab needs Linux network namespaces: run it on Linux (a VM will do)')
  if (!(await platform.canCreateTun())) throw new PermissionError('the lab manages network namespaces, which needs root: run it with sudo')
}

const childEnv = {VIDSYNC_DATABASE_URL: '', VIDSYNC_SUPABASE_URL: '', NODE_NO_WARNINGS: '1'}

/**
 * Runs `vidsync ARGS --home HOME --json` inside a namespace and returns its JSON. Through
 * startDaemon with a log file rather than runTool: a failing command reports its error as JSON on
 * stdout, which runTool does not keep; the log also stays for reading.
 */
async function vidsync<T>(cli: LabCli, run: {label: string; ns: string; home: string; args: string[]; logPath: string; timeoutMs: number}): Promise<T> {
  const args = ['netns', 'exec', run.ns, cli.node, cli.script, ...run.args, '--home', run.home, '--json']
  const daemon = await startDaemon('ip', args, {logPath: run.logPath, env: childEnv})
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    void daemon.stop()
  }, run.timeoutMs)
  const exit = await daemon.exited.finally(() => clearTimeout(timer))
  if (timedOut) throw new UnavailableError(`${run.label} did not finish within ${run.timeoutMs / 1000}s: see ${run.logPath}`)
  const output = await readFile(run.logPath, 'utf8')
  let json: {error?: {code?: string; message?: string}} | undefined
  try {
    json = JSON.parse(output.slice(output.search(/^\{/m)))
  } catch {
    // reported below
  }
  if (exit.exitCode === 0 && json) return json as T
  const {code, message} = json?.error ?? {}
  if (code !== undefined && code in ExitCode && message) throw new VidsyncError(`${run.label}: ${message}`, code as ErrorCode)
  const reason = exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.exitCode}`
  throw new ToolFailedError(`${run.label} failed (${reason}): see ${run.logPath}`, reason)
}

/**
 * Brings up a lab on this machine: network namespaces for a lighthouse and `devices` devices (see
 * createNetns), set up only with vidsync's own commands on the embedded backend, and each device's
 * overlay up. The operator works in the lighthouse's namespace. On failure the lab is removed again.
 */
export async function labUp(options: LabUpOptions): Promise<LabState> {
  if (!Number.isInteger(options.devices) || options.devices < 1 || options.devices > maxDevices) {
    throw new InvalidInputError(`a lab has 1 to ${maxDevices} devices, not ${options.devices}`)
  }
  const shaping = parseShaping(options)
  await checkLinuxRoot()
  const versionFlags = [['ip', '-V'], ['tc', '-V'], ['nebula-cert', '-version'], ['nebula', '-version'], ['syncthing', '--version']] as const
  await Promise.all(versionFlags.map(([tool, flag]) => runTool(tool, [flag]))) // MissingDependencyError with an install hint

  const home = resolve(options.home)
  const prefix = labPrefix(home)
  if (await readLabState(home)) throw alreadyUp(home)
  const leftovers = await listNetns(prefix)
  if (leftovers.length > 0) throw new ConflictError(`an earlier lab in ${home} left ${leftovers.join(', ')}: remove it with \`vidsync lab down\``)

  const node = (name: string, index: number): LabNode => ({
    name,
    ns: `${prefix}${name}`,
    underlayIp: `192.0.2.${index + 1}`,
    home: join(home, name),
    overlayIp: null,
    nebulaPid: null,
  })
  const state: LabState = {
    version: 1,
    home,
    prefix,
    status: 'starting',
    project,
    cidr,
    shaping: shaping ? {rate: options.rate, delay: options.delay} : null,
    namespaces: [],
    operatorHome: join(home, 'operator'),
    lighthouse: node('lh', 0),
    devices: Array.from({length: options.devices}, (_, index) => node(`d${index + 1}`, index + 1)),
    timings: [],
  }
  await createState(state)
  try {
    // A dead lab's files (its namespaces are gone, checked above); the new state file stays.
    await removeLabFiles(home)
    await rm(logsDir(home), {recursive: true, force: true})
    await ensureDir(logsDir(home))
    await ensureDir(join(home, 'bundles'))
    const timeoutMs = options.timeoutMs ?? 60_000

    const timed = async <T>(step: string, work: () => Promise<T>): Promise<T> => {
      const startedAt = Date.now()
      const result = await work()
      state.timings.push({step, startedAt, ms: Date.now() - startedAt})
      return result
    }
    const run: Run = (label, where, args) => {
      const logPath = join(logsDir(home), `${String(state.timings.length + 1).padStart(3, '0')}-${label.replaceAll(' ', '-')}.log`)
      return timed(label, () => vidsync(options.cli, {label, ...where, args, logPath, timeoutMs}))
    }
    const operator = {ns: state.lighthouse.ns, home: state.operatorHome}
    let caFingerprint = ''
    /** join (pinning the lab's CA, as a user confirms the operator's fingerprint) + nebula up on a node, then sync. */
    const bringUp = async (target: LabNode, bundle: string, joinArgs: string[]) => {
      const joinCommand = ['join', bundle, '--ca-fingerprint', caFingerprint, ...joinArgs]
      target.overlayIp = (await run<{device: {ip: string}}>(`${target.name} join`, target, joinCommand)).device.ip
      target.nebulaPid = (await run<{pid: number}>(`${target.name} nebula up`, target, ['nebula', 'up', project, '--detach'])).pid
      await saveState(state)
      if (target !== state.lighthouse) {
        target.folder = await bringUpSync(run, target)
        await saveState(state)
      }
    }

    const names = [state.lighthouse, ...state.devices].map((each) => each.name)
    state.namespaces = (await timed('namespaces', () => createNetns({prefix, nodes: names, shaping}))).namespaces
    await saveState(state)
    caFingerprint = (await run<{fingerprint: string}>('ca init', operator, ['ca', 'init', '--name', 'vidsync-lab'])).fingerprint
    await run('project create', operator, ['project', 'create', project, '--cidr', cidr])
    await run('pool populate', operator, ['pool', 'populate', project])
    // The project folder every lab device shares as <home>/shared (listed in their bundles).
    await run('folder create', operator, ['folder', 'create', project, 'shared'])
    const {lighthouse} = state
    const lighthouseBundle = join(home, 'bundles', 'lh.zip')
    const endpoint = `${lighthouse.underlayIp}:${lighthousePort}`
    await run('lighthouse add', operator, ['lighthouse', 'add', project, '--name', 'lh', '--endpoint', endpoint, '--generate-key', '--out', lighthouseBundle])
    await bringUp(lighthouse, lighthouseBundle, [])
    for (const device of state.devices) {
      await options.beforeDevice?.(device, state)
      const keys = await run<{publicKeyPath: string; privateKeyPath: string}>(`${device.name} key create`, device, ['key', 'create'])
      const {deviceId} = await run<{deviceId: string}>(`${device.name} sync id`, device, ['sync', 'id'])
      const bundle = join(home, 'bundles', `${device.name}.zip`)
      const register = ['device', 'register', project, '--name', device.name, '--public-key', keys.publicKeyPath, '--syncthing-id', deviceId, '--out', bundle]
      await run(`${device.name} device register`, operator, register)
      await bringUp(device, bundle, ['--key', keys.privateKeyPath])
    }
    state.status = 'up'
    await saveState(state)
    return state
  } catch (error) {
    await labDown({home, cli: options.cli}).catch(() => undefined) // the step's error is the one to report
    throw error
  }
}

/** Runs one timed vidsync command in a namespace with a home (see vidsync) and returns its JSON. */
type Run = <T>(label: string, where: {ns: string; home: string}, args: string[]) => Promise<T>

/**
 * Syncthing on a lab device, right after its overlay: `vidsync up --detach` with its defaults
 * (it reuses the running nebula and starts the reconcile loop), then the lab's shared folder. Devices registered
 * later list the earlier ones as peers; the earlier ones accept them from the overlay.
 */
async function bringUpSync(run: Run, node: LabNode): Promise<string> {
  await run(`${node.name} up`, node, ['up', project, '--detach'])
  const folder = join(node.home, 'shared')
  await mkdir(folder, {recursive: true})
  await run(`${node.name} sync add`, node, ['sync', 'add', folder, '--project', project, '--name', 'shared'])
  return folder
}

/**
 * Removes the lab in `home`: stops each node's daemons with vidsync's own commands where its
 * namespace still exists, ends by PID whatever still runs in the lab's namespaces, deletes them by
 * name, and removes the lab's files, the state file last. Complete and idempotent, also after a
 * crash or without the state file: the namespaces are found by the lab's prefix.
 */
export async function labDown(options: {home: string; cli: LabCli; timeoutMs?: number}): Promise<LabDownResult> {
  await checkLinuxRoot()
  const home = resolve(options.home)
  const state = await readLabState(home)
  const namespaces = await listNetns(labPrefix(home))
  const nodes = state ? [state.lighthouse, ...state.devices] : []
  const joined = nodes.filter((node) => node.overlayIp !== null && namespaces.includes(node.ns))
  if (joined.length > 0) await ensureDir(logsDir(home))
  const stopped = await Promise.all(
    joined.map(async (node) => {
      const logPath = join(logsDir(home), `down-${node.name}.log`)
      const where = {ns: node.ns, home: node.home, logPath, timeoutMs: options.timeoutMs ?? 30_000}
      try {
        // Devices: the reconcile loop, Syncthing and nebula (`vidsync down`); the lighthouse runs nebula only.
        const args = node === state?.lighthouse ? ['nebula', 'down', project] : ['down', project]
        const down = await vidsync<{stopped?: boolean; nebula?: {stopped: boolean}}>(options.cli, {...where, label: `${node.name} down`, args})
        return (down.nebula?.stopped ?? down.stopped) ? [node.name] : []
      } catch {
        return [] // ended by PID below
      }
    }),
  )
  const killed = await removeNetns(namespaces)
  const hadFiles = await removeLabFiles(home)
  await rm(statePath(home), {force: true})
  await rmdir(home).catch(() => undefined) // only when nothing else is in it
  return {home, found: state !== undefined || namespaces.length > 0 || hadFiles, stopped: stopped.flat(), killed, namespaces}
}

/** Removes what a lab writes in its home except the state file; true when there was any. */
async function removeLabFiles(home: string): Promise<boolean> {
  const entries = (await readdir(home).catch(() => [])).filter((name) => labEntry.test(name))
  await Promise.all(entries.map((name) => rm(join(home, name), {recursive: true, force: true})))
  return entries.length > 0
}
