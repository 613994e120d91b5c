import {stat} from 'node:fs/promises'

import semver from 'semver'
import which from 'which'

import {MissingDependencyError, ToolFailedError} from '../errors.js'
import {resolveTools, runTool, type Tools} from '../exec.js'
import {
  lookup,
  type NebulaCapabilities,
  nebulaTable,
  supported,
  type SyncthingCapabilities,
  syncthingTable,
} from './capabilities.js'

export type VersionedTool = 'nebula-cert' | 'nebula' | 'syncthing'

export interface ToolVersion {
  tool: VersionedTool
  /** The binary that was asked, as found on PATH. */
  path: string
  /** x.y.z, e.g. 1.6.1 (Debian's "v1.19.2-ds1" reads 1.19.2). */
  version: string
  /** The line the program printed. */
  raw: string
  /** Within the range vidsync is tested with; a newer release is used with the newest known row. */
  tested: boolean
}

export interface Detected<T> extends ToolVersion {
  capabilities: T
}

const toolKey = {'nebula-cert': 'nebulaCert', nebula: 'nebula', syncthing: 'syncthing'} as const

/** Versions already asked in this run, per binary path and modification time (an upgrade in place is noticed). */
const cache = new Map<string, Promise<{version: string; raw: string}>>()

/** Reads the version line of nebula / nebula-cert (`Version: 1.10.3`) or Syncthing (`syncthing v2.0.10 "Hafnium Hornet" (...)`). */
export function parseVersionLine(tool: VersionedTool, output: string): {version: string; raw: string} | undefined {
  const pattern = tool === 'syncthing' ? /^syncthing v?(\d+\.\d+\.\d+)\S*.*$/m : /^Version:\s*v?(\d+\.\d+\.\d+)\S*\s*$/m
  const match = pattern.exec(output)
  return match?.[1] === undefined ? undefined : {version: match[1], raw: match[0].trim()}
}

async function ask(tool: VersionedTool, tools: Tools): Promise<{version: string; raw: string}> {
  let output: string
  if (tool === 'syncthing') {
    // `--version` (1.x, 2.0.3+) or the `version` subcommand (every 2.x): both are documented queries.
    output = await runTool(tool, ['--version'], {tools}).then(
      (result) => result.stdout,
      async (error: unknown) => {
        if (!(error instanceof ToolFailedError)) throw error
        return (await runTool(tool, ['version'], {tools})).stdout
      },
    )
  } else {
    output = (await runTool(tool, ['-version'], {tools})).stdout
  }
  const parsed = parseVersionLine(tool, output)
  if (parsed === undefined) {
    const first = output.trim().split('\n')[0] ?? ''
    throw new MissingDependencyError(`cannot tell which ${tool} release ${tools[toolKey[tool]]} is (it printed "${first}"): install a released build`)
  }
  return parsed
}

/** The version of `tool` as configured (VIDSYNC_NEBULA_CERT etc. or PATH), asked once per binary per run. */
export async function toolVersion(tool: VersionedTool, tools: Tools = resolveTools()): Promise<ToolVersion> {
  const file = tools[toolKey[tool]]
  const path = await which(file, {nothrow: true})
  if (path === null) {
    await runTool(tool, ['-version'], {tools}) // throws the usual "not found" with its install hint
    throw new MissingDependencyError(`${tool} not found at ${file}`)
  }
  const {mtimeMs} = await stat(path)
  const key = `${path}\0${mtimeMs}`
  let pending = cache.get(key)
  if (pending === undefined) {
    pending = ask(tool, tools)
    cache.set(key, pending)
    pending.catch(() => cache.delete(key))
  }
  const {version, raw} = await pending
  return {tool, path, version, raw, tested: false}
}

function capabilitiesOf<T>(found: ToolVersion, table: {range: string; capabilities: T}[], range: string): Detected<T> {
  const row = lookup(table, found.version)
  if (row !== undefined) return {...found, tested: true, capabilities: row}
  const newest = table.at(-1)
  if (newest && semver.gtr(found.version, newest.range)) return {...found, tested: false, capabilities: newest.capabilities}
  throw new MissingDependencyError(`${found.tool} ${found.version} (${found.path}) is too old: vidsync supports ${range}`)
}

/** What this nebula or nebula-cert supports; exit 8 when it is older than vidsync supports. */
export async function nebulaCapabilities(tool: 'nebula' | 'nebula-cert', tools?: Tools): Promise<Detected<NebulaCapabilities>> {
  return capabilitiesOf(await toolVersion(tool, tools), nebulaTable, `nebula ${supported.nebula}`)
}

/** What this Syncthing supports; exit 8 when it is older than vidsync supports. */
export async function syncthingCapabilities(tools?: Tools): Promise<Detected<SyncthingCapabilities>> {
  return capabilitiesOf(await toolVersion('syncthing', tools), syncthingTable, `Syncthing ${supported.syncthing}`)
}
