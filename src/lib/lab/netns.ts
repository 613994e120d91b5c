import {InvalidInputError, MissingDependencyError, ToolFailedError} from '../errors.js'
import {runTool, stopPid} from '../exec.js'

/**
 * Network namespaces for the lab: one per node, all plugged into a bridge that lives in a
 * namespace of its own. Underlay addresses are 192.0.2.<n>/24 (TEST-NET-1) and there is no
 * default route, so nothing can reach any other address. The host's namespace is never touched:
 * every link is created inside the lab's namespaces.
 */
export interface Netns {
  /** Namespace and underlay address of each node, in the order given (192.0.2.1 first). */
  nodes: Record<string, {ns: string; ip: string}>
  /** Every namespace, the bridge's included. */
  namespaces: string[]
}

/**
 * Link shaping. Each node's own veth end gets `delay` on what it sends, and both ends get `rate`:
 * every node has a `rate` link in each direction, and a packet from one node to another is delayed
 * once, so the round trip between any two nodes is 2 x delay (plus serialisation at rate). A rate
 * alone is a token bucket (tbf); a delay needs netem, which some kernels lack.
 */
export interface Shaping {
  /** Bits per second. */
  rate?: number
  /** One-way delay in milliseconds. */
  delayMs?: number
}

const rateUnits: Record<string, number> = {bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9}
const delayUnits: Record<string, number> = {us: 1e-3, ms: 1, s: 1000}

/** Parses `--rate 1gbit` and `--delay 10ms` (tc's units); undefined when neither is given. */
export function parseShaping(options: {rate?: string; delay?: string}): Shaping | undefined {
  const parse = (text: string | undefined, units: Record<string, number>, what: string, example: string) => {
    if (text === undefined) return undefined
    const match = /^(\d+(?:\.\d+)?)([a-z]+)$/.exec(text.trim().toLowerCase())
    const unit = units[match?.[2] ?? '']
    const value = Number(match?.[1]) * (unit ?? Number.NaN)
    if (!(value > 0)) throw new InvalidInputError(`invalid ${what} "${text}": use a number with one of ${Object.keys(units).join(', ')}, such as ${example}`)
    return value
  }
  const rate = parse(options.rate, rateUnits, 'rate', '100mbit or 1gbit')
  const delayMs = parse(options.delay, delayUnits, 'delay', '10ms')
  return rate === undefined && delayMs === undefined ? undefined : {rate, delayMs}
}

const ip = (...args: string[]) => runTool('ip', args, {timeoutMs: 10_000})

/**
 * The qdisc and its arguments for one veth end. netem counts the packets it holds back against
 * `limit`: room for a round trip at `rate`. tbf lets through bursts of 1 ms at `rate` and queues
 * up to 20 ms, like a router's buffer.
 */
function qdiscArgs(rate: number | undefined, delayMs: number | undefined): string[] {
  if (delayMs === undefined) {
    const burstBytes = Math.max(4096, Math.ceil((rate ?? 0) / 8 / 1000))
    return ['tbf', 'rate', `${rate}bit`, 'burst', String(burstBytes), 'latency', '20ms']
  }
  const bdpPackets = (((rate ?? 0) / 8) * (delayMs / 1000)) / 1500
  return [
    'netem',
    ...(rate ? ['rate', `${rate}bit`] : []),
    'delay',
    `${delayMs}ms`,
    'limit',
    String(Math.max(1000, Math.ceil(2 * bdpPackets))),
  ]
}

async function shape(ns: string, dev: string, args: string[]): Promise<void> {
  try {
    await runTool('tc', ['-n', ns, 'qdisc', 'add', 'dev', dev, 'root', ...args], {timeoutMs: 10_000})
  } catch (error) {
    if (error instanceof ToolFailedError && /qdisc kind is unknown/i.test(error.reason)) {
      throw new MissingDependencyError(
        args[0] === 'netem'
          ? 'this kernel has no netem qdisc (sch_netem), which --delay needs: load it with `modprobe sch_netem` ' +
              '(Debian/Ubuntu: in linux-modules-extra-$(uname -r)), or shape with --rate alone'
          : 'this kernel has no tbf qdisc (sch_tbf), which --rate needs: load it with `modprobe sch_tbf`, or run the lab without shaping',
      )
    }
    throw error
  }
}

/**
 * Creates the namespaces `<prefix>br` (the bridge) and `<prefix><name>` for each node. On failure
 * whatever was created is removed again.
 */
export async function createNetns(options: {prefix: string; nodes: string[]; shaping?: Shaping}): Promise<Netns> {
  const {prefix, nodes, shaping} = options
  if (!/^[a-z0-9-]{1,30}$/.test(prefix) || nodes.length > 250 || !nodes.every((name) => /^[a-z0-9]{1,10}$/.test(name))) {
    throw new InvalidInputError(`bad lab namespace names: ${prefix} ${nodes.join(', ')}`)
  }
  const bridge = `${prefix}br`
  const netns: Netns = {nodes: {}, namespaces: [bridge]}
  try {
    await ip('netns', 'add', bridge)
    await ip('-n', bridge, 'link', 'add', 'br0', 'type', 'bridge')
    await ip('-n', bridge, 'link', 'set', 'br0', 'up')
    for (const [index, name] of nodes.entries()) {
      const ns = `${prefix}${name}`
      const address = `192.0.2.${index + 1}`
      netns.namespaces.push(ns)
      netns.nodes[name] = {ns, ip: address}
      await ip('netns', 'add', ns)
      await ip('-n', ns, 'link', 'set', 'lo', 'up')
      // Created in the bridge's namespace with its peer moved straight into the node's.
      await ip('-n', bridge, 'link', 'add', `p${index}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns)
      await ip('-n', bridge, 'link', 'set', `p${index}`, 'master', 'br0', 'up')
      await ip('-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0')
      await ip('-n', ns, 'link', 'set', 'eth0', 'up')
      if (shaping) {
        await shape(ns, 'eth0', qdiscArgs(shaping.rate, shaping.delayMs))
        if (shaping.rate) await shape(bridge, `p${index}`, qdiscArgs(shaping.rate, undefined))
      }
    }
  } catch (error) {
    await removeNetns(netns.namespaces)
    throw error
  }
  return netns
}

/** The namespaces on this machine whose names start with `prefix`. */
export async function listNetns(prefix: string): Promise<string[]> {
  const {stdout} = await ip('netns', 'list')
  // Lines look like `name` or `name (id: 3)`.
  return stdout
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name !== '' && name.startsWith(prefix))
}

async function pidsIn(ns: string): Promise<number[]> {
  const {stdout} = await ip('netns', 'pids', ns)
  return stdout.split('\n').filter(Boolean).map(Number)
}

/**
 * Ends by PID whatever runs in each namespace (a namespace with processes would outlive its name),
 * then deletes the namespaces by name. Names that do not exist are skipped, so it is idempotent.
 * Returns the PIDs it had to end.
 */
export async function removeNetns(namespaces: string[]): Promise<number[]> {
  const existing = new Set(await listNetns(''))
  const ended: number[] = []
  await Promise.all(
    [...new Set(namespaces)]
      .filter((ns) => existing.has(ns))
      .map(async (ns) => {
        // A process may fork while we end its parent: look again, a bounded number of times.
        let pids = await pidsIn(ns)
        for (let round = 0; pids.length > 0 && round < 5; round++) {
          ended.push(...pids)
          await Promise.all(pids.map((pid) => stopPid(pid, 5000)))
          pids = await pidsIn(ns)
        }
        await ip('netns', 'del', ns)
      }),
  )
  return [...new Set(ended)]
}
