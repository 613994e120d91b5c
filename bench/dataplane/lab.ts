/**
 * The dataplane bench's lab: a lighthouse and two devices (a, b) in network namespaces made with
 * src/lib/lab/netns.ts (underlay 192.0.2.0/24 on a bridge, optional tbf/netem shaping), Nebula started
 * directly from configs rendered by renderNebulaConfig, an agent per device namespace
 * (agent.ts) for TCP tests and Syncthing's REST API, Syncthing started with the real CLI
 * (`vidsync sync up --detach`) and an rsync daemon on b's overlay address. Every process it starts
 * is recorded by PID and ended by PID in close(), then the namespaces are deleted by name (which
 * also ends, by PID, anything still running in them).
 */
import {type ChildProcess, spawn} from 'node:child_process'
import {mkdir, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'

import YAML from 'yaml'

import {isAlive, runTool, startDaemon, stopPid, type Daemon} from '../../src/lib/exec.js'
import {createNetns, removeNetns, type Shaping} from '../../src/lib/lab/netns.js'
import {renderNebulaConfig} from '../../src/lib/nebula/config.js'
import {pollUntil} from '../../src/lib/poll.js'

export const root = fileURLToPath(new URL('../..', import.meta.url))
const agentScript = fileURLToPath(new URL('agent.ts', import.meta.url))

/** The overlay of the bench: addresses that exist only on nebula's tun devices inside the lab. */
export const cidr = '10.98.0.0/24'
export const tunDev = 'nebula1'
export const nebulaPort = 4242
/** Ports the bench opens on the overlay besides Syncthing's 22000: the raw TCP test and rsync. */
export const tcpTestPort = 5201
export const rsyncPort = 873

/** Keys of nebula.yml the bench varies; `undefined` removes the key (Nebula's default). */
export interface NebulaVariant {
  mtu: number
  routines: number
  /** listen.read_buffer and write_buffer in bytes; undefined = the kernel default. */
  socketBuffer?: number
}

/** The naive config the issue compares against: mtu 1300, one routine, default socket buffers. */
export const naiveNebula: NebulaVariant = {mtu: 1300, routines: 1}
/** What renderNebulaConfig generates for these keys (kept in step with src/lib/nebula/config.ts by a check in nebulaConfig). */
export const generatedNebula: NebulaVariant = {mtu: 1440, routines: 2, socketBuffer: 10_485_760}

export interface Certs {
  caPem: string
  nodes: Record<NodeName, {certPem: string; keyPem: string; overlayIp: string}>
}

export type NodeName = 'lh' | 'a' | 'b'
export const nodeNames: NodeName[] = ['lh', 'a', 'b']
export const overlayIps: Record<NodeName, string> = {lh: '10.98.0.1', a: '10.98.0.2', b: '10.98.0.3'}

interface Pending {
  resolve(value: unknown): void
  reject(error: Error): void
  timer: NodeJS.Timeout
}

/** The host side of one agent: requests with a bounded wait each. */
export class Agent {
  readonly pid: number
  readonly #child: ChildProcess
  readonly #pending = new Map<number, Pending>()
  #nextId = 1
  #stderr: string[] = []

  constructor(child: ChildProcess, readonly node: string) {
    if (child.pid === undefined) throw new Error(`the agent in ${node} did not start`)
    this.pid = child.pid
    this.#child = child
    createInterface({input: child.stdout!}).on('line', (line) => {
      let message: {id: number; ok: boolean; value?: unknown; error?: string}
      try {
        message = JSON.parse(line)
      } catch {
        return
      }
      const pending = this.#pending.get(message.id)
      if (!pending) return
      this.#pending.delete(message.id)
      clearTimeout(pending.timer)
      if (message.ok) pending.resolve(message.value)
      else pending.reject(new Error(`${node}: ${message.error}`))
    })
    createInterface({input: child.stderr!}).on('line', (line) => {
      this.#stderr.push(line)
      this.#stderr.splice(0, Math.max(0, this.#stderr.length - 20))
    })
    child.once('exit', (code, signal) => {
      const error = new Error(`the agent in ${node} ended (${signal ?? `exit ${code}`}): ${this.#stderr.join(' | ')}`)
      for (const pending of this.#pending.values()) {
        clearTimeout(pending.timer)
        pending.reject(error)
      }
      this.#pending.clear()
    })
  }

  /** One request; rejected when the agent does not answer within `timeoutMs`. */
  request<T>(op: string, args: object = {}, timeoutMs = 30_000): Promise<T> {
    const id = this.#nextId++
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        reject(new Error(`${this.node}: ${op} got no answer within ${timeoutMs / 1000}s`))
      }, timeoutMs)
      this.#pending.set(id, {resolve: resolve as (value: unknown) => void, reject, timer})
      this.#child.stdin!.write(`${JSON.stringify({id, op, args})}\n`)
    })
  }

  async close(): Promise<void> {
    this.#child.stdin?.end()
    await pollUntil(() => !isAlive(this.pid), {timeoutMs: 3000, intervalMs: 50, onTimeout: () => false})
    if (isAlive(this.pid)) await stopPid(this.pid, 3000)
  }
}

export interface LabNode {
  name: NodeName
  ns: string
  underlayIp: string
  overlayIp: string
  dir: string
  /** The node's vidsync home (its managed Syncthing lives in <home>/syncthing). */
  home: string
}

/** Runs a program in a namespace and waits for it (bounded), through runTool's typed errors. */
export const runIn = (ns: string, file: string, args: string[], timeoutMs = 60_000) =>
  runTool('ip', ['netns', 'exec', ns, file, ...args], {timeoutMs, env: {VIDSYNC_DATABASE_URL: '', VIDSYNC_SUPABASE_URL: '', NODE_NO_WARNINGS: '1'}})

export class BenchLab {
  readonly nodes: Record<NodeName, LabNode>
  readonly namespaces: string[]
  readonly #agents: Agent[] = []
  readonly #daemons: Daemon[] = []
  #nebula = new Map<NodeName, Daemon>()
  #syncthingHomes: LabNode[] = []

  /** The agents in a's and b's namespaces. */
  a!: Agent
  b!: Agent

  private constructor(
    nodes: Record<NodeName, LabNode>,
    namespaces: string[],
    readonly certs: Certs,
    readonly dir: string,
  ) {
    this.nodes = nodes
    this.namespaces = namespaces
  }

  /**
   * Namespaces `<prefix>br`, `<prefix>lh`, `<prefix>a`, `<prefix>b` and the agents in a and b;
   * the caller must close() it, also on failure.
   */
  static async create(options: {prefix: string; dir: string; certs: Certs; shaping?: Shaping}): Promise<BenchLab> {
    const netns = await createNetns({prefix: options.prefix, nodes: nodeNames, shaping: options.shaping})
    const nodes = {} as Record<NodeName, LabNode>
    for (const name of nodeNames) {
      const node = netns.nodes[name]
      const dir = join(options.dir, name)
      nodes[name] = {name, ns: node?.ns ?? '', underlayIp: node?.ip ?? '', overlayIp: overlayIps[name], dir, home: join(dir, 'home')}
    }
    const lab = new BenchLab(nodes, netns.namespaces, options.certs, options.dir)
    try {
      for (const node of Object.values(nodes)) await mkdir(node.home, {recursive: true})
      lab.a = await lab.agent('a')
      lab.b = await lab.agent('b')
    } catch (error) {
      await lab.close()
      throw error
    }
    return lab
  }

  /** nebula.yml for `node`: vidsync's generated config, with the variant's keys and the bench's ports opened. */
  nebulaConfig(node: LabNode, variant?: NebulaVariant): string {
    const lighthouse = this.nodes.lh
    const rendered = renderNebulaConfig({
      caPath: join(node.dir, 'ca.crt'),
      certPath: join(node.dir, 'node.crt'),
      keyPath: join(node.dir, 'node.key'),
      lighthouses: [{overlayIp: lighthouse.overlayIp, endpoints: [`${lighthouse.underlayIp}:${nebulaPort}`]}],
      amLighthouse: node.name === 'lh',
      listenPort: nebulaPort,
      cidr,
      tunDev,
    })
    const config = YAML.parse(rendered)
    const generated = {mtu: config.tun.mtu, routines: config.routines, socketBuffer: config.listen.read_buffer}
    if (JSON.stringify(generated) !== JSON.stringify(generatedNebula)) {
      throw new Error(`renderNebulaConfig now generates ${JSON.stringify(generated)}: update generatedNebula in bench/dataplane/lab.ts and BENCHMARKS.md`)
    }
    config.firewall.inbound.push(
      {port: tcpTestPort, proto: 'tcp', cidr},
      {port: rsyncPort, proto: 'tcp', cidr},
    )
    if (variant) {
      config.tun.mtu = variant.mtu
      config.routines = variant.routines
      if (variant.socketBuffer === undefined) {
        delete config.listen.read_buffer
        delete config.listen.write_buffer
      } else {
        config.listen.read_buffer = variant.socketBuffer
        config.listen.write_buffer = variant.socketBuffer
      }
    }
    return YAML.stringify(config, {version: '1.1'})
  }

  /** Starts nebula on every node (generated config, or `variant`) and waits until a and b reach each other over the overlay. */
  async startNebula(label: string, variant?: NebulaVariant): Promise<void> {
    if (this.#nebula.size > 0) throw new Error('nebula is already running in this lab')
    for (const node of Object.values(this.nodes)) {
      const certs = this.certs.nodes[node.name]
      await writeFile(join(node.dir, 'ca.crt'), this.certs.caPem)
      await writeFile(join(node.dir, 'node.crt'), certs.certPem)
      await writeFile(join(node.dir, 'node.key'), certs.keyPem, {mode: 0o600})
      const configPath = join(node.dir, `nebula-${label}.yml`)
      await writeFile(configPath, this.nebulaConfig(node, variant), {mode: 0o600})
      // `ip netns exec` execs nebula, so the PID is nebula's.
      const daemon = await startDaemon('ip', ['netns', 'exec', node.ns, 'nebula', '-config', configPath], {logPath: join(node.dir, `nebula-${label}.log`)})
      this.#nebula.set(node.name, daemon)
    }
    for (const node of Object.values(this.nodes)) {
      await waitFor(`${node.name}'s tun device`, 15_000, 100, async () => {
        const {stdout} = await runTool('ip', ['-n', node.ns, '-o', 'addr', 'show', 'dev', tunDev]).catch(() => ({stdout: ''}))
        return stdout.includes(`${node.overlayIp}/`) ? true : undefined
      })
    }
    // The first packets wait for the handshake via the lighthouse. A refused connection to the
    // test port (open in the firewall, nothing listening) proves the round trip.
    for (const [from, to] of [
      [this.a, this.nodes.b],
      [this.b, this.nodes.a],
    ] as const) {
      await waitFor(`${from.node} to reach ${to.name} over the overlay`, 20_000, 100, async () =>
        (await from.request<boolean>('tcpProbe', {host: to.overlayIp, port: tcpTestPort, timeoutMs: 1000}, 5000)) ? true : undefined,
      )
    }
  }

  async stopNebula(): Promise<void> {
    await Promise.all([...this.#nebula.values()].map((daemon) => daemon.stop(5000)))
    this.#nebula.clear()
  }

  /** Starts the agent in `node`'s namespace and waits until it answers. */
  private async agent(name: NodeName): Promise<Agent> {
    const node = this.nodes[name]
    const child = spawn('ip', ['netns', 'exec', node.ns, process.execPath, '--import', 'tsx', agentScript], {
      cwd: root,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: {...process.env, NODE_NO_WARNINGS: '1'},
    })
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve)
      child.once('error', reject)
    })
    const agent = new Agent(child, name)
    this.#agents.push(agent)
    await agent.request('ping', {}, 30_000)
    return agent
  }

  /** `vidsync sync up --detach` in the node's namespace, listening on its overlay address only. */
  async startSyncthing(name: NodeName): Promise<{deviceId: string; pid: number}> {
    const node = this.nodes[name]
    this.#syncthingHomes.push(node)
    const args = [join(root, 'bin', 'run.js'), 'sync', 'up', '--detach', '--listen', `tcp://${node.overlayIp}:22000`, '--home', node.home, '--json']
    const {stdout} = await runIn(node.ns, process.execPath, args, 60_000)
    const started = JSON.parse(stdout) as {deviceId: string; pid: number}
    return {deviceId: started.deviceId, pid: started.pid}
  }

  /** An rsync daemon on b's overlay address serving module `bench` at `path`, reachable from a. */
  async startRsyncd(path: string): Promise<void> {
    const b = this.nodes.b
    const config = join(b.dir, 'rsyncd.conf')
    await writeFile(config, `use chroot = no\nuid = root\ngid = root\n[bench]\n  path = ${path}\n  read only = no\n`)
    const daemon = await startDaemon(
      'ip',
      ['netns', 'exec', b.ns, 'rsync', '--daemon', '--no-detach', `--config=${config}`, `--address=${b.overlayIp}`, `--port=${rsyncPort}`],
      {logPath: join(b.dir, 'rsyncd.log')},
    )
    this.#daemons.push(daemon)
    await waitFor('the rsync daemon', 15_000, 200, async () =>
      runIn(this.nodes.a.ns, 'rsync', [`rsync://${b.overlayIp}:${rsyncPort}/`], 5000).then(
        () => true,
        () => undefined,
      ),
    )
  }

  /**
   * Ends everything: agents, Syncthing (`vidsync sync down`, by its pid file), rsyncd and nebula by
   * PID, then the namespaces by name (removeNetns ends by PID whatever still runs in them).
   * Never throws; returns what it could not do.
   */
  async close(): Promise<string[]> {
    const problems: string[] = []
    const attempt = async (what: string, work: () => Promise<unknown>) => {
      try {
        await work()
      } catch (error) {
        problems.push(`${what}: ${error instanceof Error ? error.message : String(error)}`)
      }
    }
    await Promise.all(this.#agents.map((agent) => attempt(`agent ${agent.node}`, () => agent.close())))
    for (const node of this.#syncthingHomes) {
      await attempt(`sync down ${node.name}`, () => runIn(node.ns, process.execPath, [join(root, 'bin', 'run.js'), 'sync', 'down', '--home', node.home, '--json'], 30_000))
    }
    await Promise.all(this.#daemons.map((daemon) => attempt(`daemon ${daemon.pid}`, () => daemon.stop(5000))))
    await attempt('nebula', () => this.stopNebula())
    await attempt('namespaces', () => removeNetns(this.namespaces))
    return problems
  }
}

/** pollUntil with the benches' argument order: `check` every `everyMs` until it returns a value, at most `timeoutMs`. */
export const waitFor = <T>(what: string, timeoutMs: number, everyMs: number, check: () => Promise<T | undefined>): Promise<T> =>
  pollUntil(check, {timeoutMs, intervalMs: everyMs, what})
