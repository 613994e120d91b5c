import {execa} from 'execa'

import {createNetns, type Netns, removeNetns, type Shaping} from '../../src/lib/lab/netns.js'

/** A network lab for tests: see src/lib/lab/netns.ts. */
export type Lab = Netns

let labCount = 0

/** `shaping` applies to every node's link in both directions (see Shaping). */
export const createLab = (names: string[], shaping?: Shaping): Promise<Lab> => createNetns({prefix: `vst-${process.pid}-${labCount++}-`, nodes: names, shaping})

/** Ends by PID whatever runs in the lab's namespaces, then deletes them by name. Idempotent. */
export async function removeLab(lab: Lab | undefined): Promise<void> {
  await removeNetns(lab?.namespaces ?? [])
}

/** Runs a program inside a namespace and waits for it (never rejects: check exitCode). */
export function runIn(ns: string, file: string, args: string[], options: {timeoutMs?: number; env?: Record<string, string>; input?: string} = {}) {
  const stdin = options.input === undefined ? {stdin: 'ignore' as const} : {input: options.input}
  return execa('ip', ['netns', 'exec', ns, file, ...args], {reject: false, timeout: options.timeoutMs ?? 60_000, env: options.env, ...stdin})
}

/** Starts a program inside a namespace without waiting; `ip netns exec` execs it, so the PID is the program's. */
export function spawnIn(ns: string, file: string, args: string[], options: {env?: Record<string, string>} = {}) {
  return execa('ip', ['netns', 'exec', ns, file, ...args], {reject: false, env: options.env, stdin: 'ignore'})
}
