import {readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'

import YAML from 'yaml'

import {NotFoundError} from '../errors.js'
import type {Tools} from '../exec.js'
import {writeFileAtomic} from '../files.js'
import {readDeviceToken} from '../join/invite.js'
import {lighthouseKeys, lighthousesFor, testNebulaConfig} from '../nebula/config.js'
import {reloadNebula} from '../nebula/process.js'
import {projectDir} from '../nebula/project.js'
import type {ControlPlane} from '../store/control-plane.js'

export interface RefreshResult {
  /** The device's status in the control plane: active, pending, revoked, ... */
  status: string
  peersChanged: boolean
  /** The project's lighthouses changed: nebula.yml names the new ones. */
  lighthousesChanged: boolean
  blocklistChanged: boolean
  /** Nebula was told (SIGHUP) to reload its config with the new blocklist. */
  nebulaReloaded: boolean
}

/**
 * Heartbeat and refresh for a device that joined with an invite: the control plane's current
 * peers go into vidsync.json (the reconcile pass shares folders with them), its blocklist and
 * lighthouses into nebula.yml, which the running nebula reloads. Nebula does not spread blocklists itself, so
 * this is how a revocation reaches every device. Devices joined from a bundle file have no
 * token: nothing to refresh (undefined).
 */
export async function refreshFromControlPlane(options: {
  home: string
  project: string
  controlPlane: ControlPlane
  syncthingId?: string
  tools?: Tools
}): Promise<RefreshResult | undefined> {
  const token = await readDeviceToken(options.home, options.project).catch((error: unknown) => {
    if (error instanceof NotFoundError) return undefined
    throw error
  })
  if (token === undefined) return undefined
  const refresh = await options.controlPlane.deviceRefresh({token, syncthingId: options.syncthingId})
  const unchanged = {status: refresh.status, peersChanged: false, lighthousesChanged: false, blocklistChanged: false, nebulaReloaded: false}
  if (refresh.status !== 'active') return unchanged

  const dir = projectDir(options.home, options.project)
  const manifestPath = join(dir, 'vidsync.json')
  const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as Record<string, unknown>
  const peersChanged = JSON.stringify(manifest.peers) !== JSON.stringify(refresh.peers)
  const lighthousesChanged = JSON.stringify(manifest.lighthouses) !== JSON.stringify(refresh.lighthouses)

  const configPath = join(dir, 'nebula.yml')
  const config = YAML.parse(await readFile(configPath, 'utf8'), {version: '1.1'}) as NebulaYml
  const blocklist = [...refresh.blocklist].sort()
  const blocklistChanged = JSON.stringify([...(config.pki.blocklist ?? [])].sort()) !== JSON.stringify(blocklist)
  let nebulaReloaded = false
  if (lighthousesChanged) {
    // A device that joined with an invite is never a lighthouse itself.
    const {lighthouses, relayIps} = lighthousesFor(refresh.lighthouses, String(manifest.device))
    const named = lighthouseKeys({lighthouses, relays: {useRelays: config.relay.use_relays, amRelay: config.relay.am_relay, relayIps}})
    config.static_host_map = named.staticHostMap
    config.lighthouse.hosts = named.hosts
    config.relay.relays = named.relays
  }
  if (blocklistChanged || lighthousesChanged) {
    config.pki.blocklist = blocklist
    const text = YAML.stringify(config, {version: '1.1'})
    // Checked beside the real one (same directory, same absolute paths) before it replaces it.
    const candidate = join(dir, '.nebula.yml.candidate')
    await writeFileAtomic(candidate, text, 0o644)
    try {
      await testNebulaConfig({configPath: candidate, tools: options.tools})
    } finally {
      await rm(candidate, {force: true})
    }
    await writeFileAtomic(configPath, text, 0o644)
    nebulaReloaded = await reloadNebula({projectDir: dir})
  }
  // After nebula.yml: a config that nebula refused leaves the manifest old, so the next pass tries again.
  if (peersChanged || lighthousesChanged) {
    await writeFileAtomic(manifestPath, `${JSON.stringify({...manifest, peers: refresh.peers, lighthouses: refresh.lighthouses}, null, 2)}\n`, 0o644)
  }
  return {status: refresh.status, peersChanged, lighthousesChanged, blocklistChanged, nebulaReloaded}
}

/** The parts of nebula.yml that a refresh rewrites; the rest is kept as it is. */
interface NebulaYml {
  pki: {blocklist?: string[]}
  static_host_map: Record<string, string[]>
  lighthouse: {hosts: string[]}
  relay: {relays: string[]; am_relay: boolean; use_relays: boolean}
}
