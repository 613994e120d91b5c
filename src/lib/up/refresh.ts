import {readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'

import YAML from 'yaml'

import {NotFoundError} from '../errors.js'
import type {Tools} from '../exec.js'
import {writeFileAtomic} from '../files.js'
import {readDeviceToken} from '../join/invite.js'
import {testNebulaConfig} from '../nebula/config.js'
import {reloadNebula} from '../nebula/process.js'
import {projectDir} from '../nebula/project.js'
import type {ControlPlane} from '../store/control-plane.js'

export interface RefreshResult {
  /** The device's status in the control plane: active, pending, revoked, ... */
  status: string
  peersChanged: boolean
  blocklistChanged: boolean
  /** Nebula was told (SIGHUP) to reload its config with the new blocklist. */
  nebulaReloaded: boolean
}

/**
 * Heartbeat and refresh for a device that joined with an invite: the control plane's current
 * peers go into vidsync.json (the reconcile pass shares folders with them) and its blocklist into
 * nebula.yml, which the running nebula reloads. Nebula does not spread blocklists itself, so
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
  const unchanged = {status: refresh.status, peersChanged: false, blocklistChanged: false, nebulaReloaded: false}
  if (refresh.status !== 'active') return unchanged

  const dir = projectDir(options.home, options.project)
  const manifestPath = join(dir, 'vidsync.json')
  const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as Record<string, unknown>
  const peersChanged = JSON.stringify([manifest.peers, manifest.lighthouses]) !== JSON.stringify([refresh.peers, refresh.lighthouses])
  if (peersChanged) {
    await writeFileAtomic(manifestPath, `${JSON.stringify({...manifest, peers: refresh.peers, lighthouses: refresh.lighthouses}, null, 2)}\n`, 0o644)
  }

  const configPath = join(dir, 'nebula.yml')
  const config = YAML.parse(await readFile(configPath, 'utf8'), {version: '1.1'}) as {pki: {blocklist?: string[]}}
  const blocklist = [...refresh.blocklist].sort()
  const blocklistChanged = JSON.stringify([...(config.pki.blocklist ?? [])].sort()) !== JSON.stringify(blocklist)
  let nebulaReloaded = false
  if (blocklistChanged) {
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
  return {status: refresh.status, peersChanged, blocklistChanged, nebulaReloaded}
}
