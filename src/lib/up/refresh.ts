import {readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'

import YAML from 'yaml'

import {InvalidInputError, NotFoundError} from '../errors.js'
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
  /** The project's lighthouses changed and nebula.yml names the new ones. */
  lighthousesChanged: boolean
  /** Why nebula.yml still names the old lighthouses: nebula refused the new ones (tried again next pass). */
  lighthousesRefused?: string
  blocklistChanged: boolean
  /** Nebula was told (SIGHUP) to reload its config. */
  nebulaReloaded: boolean
}

/** The parts of nebula.yml that a refresh rewrites; the rest is kept as it is. */
interface NebulaYml {
  pki: {blocklist?: string[]}
  static_host_map: Record<string, string[]>
  lighthouse: {hosts: string[]}
  relay: {relays: string[]; am_relay: boolean; use_relays: boolean}
}

/** Checks `config` with `nebula -test` beside the real nebula.yml (same directory, same absolute paths), then installs it. */
async function installNebulaConfig(dir: string, config: NebulaYml, tools?: Tools): Promise<void> {
  const text = YAML.stringify(config, {version: '1.1'})
  const candidate = join(dir, '.nebula.yml.candidate')
  await writeFileAtomic(candidate, text, 0o644)
  try {
    await testNebulaConfig({configPath: candidate, tools})
  } finally {
    await rm(candidate, {force: true})
  }
  await writeFileAtomic(join(dir, 'nebula.yml'), text, 0o644)
}

/**
 * Heartbeat and refresh for a device that joined with an invite: the control plane's current
 * peers go into vidsync.json (the reconcile pass shares folders with them), its blocklist and
 * lighthouses into nebula.yml, which the running nebula reloads. Nebula does not spread
 * blocklists itself, so this is how a revocation reaches every device; a lighthouse that nebula
 * refuses (an endpoint that does not resolve, say) never holds the blocklist back. Devices joined
 * from a bundle file have no token: nothing to refresh (undefined).
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
  let lighthousesChanged = JSON.stringify(manifest.lighthouses) !== JSON.stringify(refresh.lighthouses)

  const config = YAML.parse(await readFile(join(dir, 'nebula.yml'), 'utf8'), {version: '1.1'}) as NebulaYml
  const blocklist = [...refresh.blocklist].sort()
  const blocklistChanged = JSON.stringify([...(config.pki.blocklist ?? [])].sort()) !== JSON.stringify(blocklist)
  const withBlocklist = {...config, pki: {...config.pki, blocklist}}
  let lighthousesRefused: string | undefined
  if (lighthousesChanged) {
    // A device that joined with an invite is never a lighthouse itself.
    const {lighthouses, relayIps} = lighthousesFor(refresh.lighthouses, String(manifest.device))
    const named = lighthouseKeys({lighthouses, relays: {useRelays: config.relay.use_relays, amRelay: config.relay.am_relay, relayIps}})
    const relay = {...config.relay, relays: named.relays}
    const withLighthouses = {...withBlocklist, static_host_map: named.staticHostMap, lighthouse: {...config.lighthouse, hosts: named.hosts}, relay}
    try {
      await installNebulaConfig(dir, withLighthouses, options.tools)
    } catch (error) {
      if (!(error instanceof InvalidInputError)) throw error
      lighthousesRefused = error.message
      lighthousesChanged = false
    }
  }
  if (blocklistChanged && !lighthousesChanged) await installNebulaConfig(dir, withBlocklist, options.tools)
  const nebulaReloaded = blocklistChanged || lighthousesChanged ? await reloadNebula({projectDir: dir}) : false
  // After nebula.yml: lighthouses that nebula refused stay out of the manifest, so the next pass tries again.
  if (peersChanged || lighthousesChanged) {
    const lighthouses = lighthousesChanged ? refresh.lighthouses : manifest.lighthouses
    await writeFileAtomic(manifestPath, `${JSON.stringify({...manifest, peers: refresh.peers, lighthouses}, null, 2)}\n`, 0o644)
  }
  return {status: refresh.status, peersChanged, lighthousesChanged, ...(lighthousesRefused ? {lighthousesRefused} : {}), blocklistChanged, nebulaReloaded}
}
