import {execa} from 'execa'

/**
 * A network lab for tests: one network namespace per node, all plugged into a bridge that lives
 * in a namespace of its own. Underlay addresses are 192.0.2.<n>/24 (TEST-NET-1) and there is no
 * default route, so nothing can reach any other address. The host's namespace is never touched:
 * every link is created inside the lab's namespaces.
 */
export interface Lab {
  /** Namespace and underlay address of each node, in the order given to createLab (192.0.2.1 first). */
  nodes: Record<string, {ns: string; ip: string}>
  /** Every namespace of the lab, the bridge's included: what removeLab deletes. */
  namespaces: string[]
}

let labCount = 0

async function ip(...args: string[]): Promise<void> {
  await execa('ip', args, {timeout: 10_000})
}

export async function createLab(names: string[]): Promise<Lab> {
  if (names.length > 250 || !names.every((name) => /^[a-z0-9]{1,10}$/.test(name))) throw new Error(`bad lab node names: ${names.join(', ')}`)
  const prefix = `vst-${process.pid}-${labCount++}-`
  const bridge = `${prefix}br`
  const lab: Lab = {nodes: {}, namespaces: [bridge]}
  try {
    await ip('netns', 'add', bridge)
    await ip('-n', bridge, 'link', 'add', 'br0', 'type', 'bridge')
    await ip('-n', bridge, 'link', 'set', 'br0', 'up')
    for (const [index, name] of names.entries()) {
      const ns = `${prefix}${name}`
      const address = `192.0.2.${index + 1}`
      lab.namespaces.push(ns)
      lab.nodes[name] = {ns, ip: address}
      await ip('netns', 'add', ns)
      await ip('-n', ns, 'link', 'set', 'lo', 'up')
      // Created in the bridge's namespace with its peer moved straight into the node's.
      await ip('-n', bridge, 'link', 'add', `p${index}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns)
      await ip('-n', bridge, 'link', 'set', `p${index}`, 'master', 'br0', 'up')
      await ip('-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0')
      await ip('-n', ns, 'link', 'set', 'eth0', 'up')
    }
  } catch (error) {
    await removeLab(lab)
    throw error
  }
  return lab
}

/** Runs a program inside a namespace and waits for it (never rejects: check exitCode). */
export function runIn(ns: string, file: string, args: string[], options: {timeoutMs?: number; env?: Record<string, string>} = {}) {
  return execa('ip', ['netns', 'exec', ns, file, ...args], {reject: false, timeout: options.timeoutMs ?? 60_000, env: options.env, stdin: 'ignore'})
}

/** Starts a program inside a namespace without waiting; `ip netns exec` execs it, so the PID is the program's. */
export function spawnIn(ns: string, file: string, args: string[], options: {env?: Record<string, string>} = {}) {
  return execa('ip', ['netns', 'exec', ns, file, ...args], {reject: false, env: options.env, stdin: 'ignore'})
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function pidsIn(ns: string): Promise<number[]> {
  const result = await execa('ip', ['netns', 'pids', ns], {reject: false, timeout: 10_000})
  return result.exitCode === 0 ? result.stdout.split('\n').filter(Boolean).map(Number) : []
}

const signal = (pid: number, name: NodeJS.Signals) => {
  try {
    process.kill(pid, name)
  } catch {
    // already gone
  }
}

/**
 * Deletes the lab's namespaces by name (their links go with them), first ending by PID whatever
 * still runs inside them: a namespace with processes would outlive its name. Idempotent.
 */
export async function removeLab(lab: Lab | undefined): Promise<void> {
  for (const ns of lab?.namespaces ?? []) {
    let pids = await pidsIn(ns)
    for (const pid of pids) signal(pid, 'SIGTERM')
    for (let tries = 0; pids.length > 0 && tries < 50; tries++) {
      await sleep(100)
      pids = await pidsIn(ns)
    }
    for (const pid of pids) signal(pid, 'SIGKILL')
    await execa('ip', ['netns', 'del', ns], {reject: false, timeout: 10_000})
  }
}
