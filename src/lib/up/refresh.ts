import {InvalidInputError, NotFoundError} from '../errors.js'
import type {Tools} from '../exec.js'
import {readDeviceToken} from '../join/invite.js'
import {reloadNebula} from '../nebula/process.js'
import {JoinedProject} from '../project/joined-project.js'
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
  /** Syncthing IDs of the project's revoked devices: the reconcile pass removes them from Syncthing. */
  revokedSyncthingIds: string[]
}

/** Key order aside (the manifest normalises it, the control plane's JSON has its own), the same entries in the same order. */
function sameEntries(ours: object[], theirs: object[]): boolean {
  const canonical = (entries: object[]) => JSON.stringify(entries.map((entry) => Object.entries(entry).sort(([a], [b]) => a.localeCompare(b))))
  return canonical(ours) === canonical(theirs)
}

/**
 * Heartbeat and refresh for a device that joined with an invite: the control plane's current
 * peers, blocklist and lighthouses go into the project's manifest (the reconcile pass shares
 * folders with the peers) and the nebula.yml rendered from it, which the running nebula reloads. Nebula does not spread
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
  const unchanged = {status: refresh.status, peersChanged: false, lighthousesChanged: false, blocklistChanged: false, nebulaReloaded: false, revokedSyncthingIds: []}
  if (refresh.status !== 'active') return unchanged
  const revokedSyncthingIds = (await options.controlPlane.deviceRevokedPeers({token})).map((peer) => peer.syncthingId)

  let project = await JoinedProject.find({home: options.home, project: options.project})
  const {manifest} = project
  const peersChanged = !sameEntries(manifest.peers, refresh.peers)
  let lighthousesChanged = !sameEntries(manifest.lighthouses, refresh.lighthouses)
  const blocklist = [...refresh.blocklist].sort()
  const blocklistChanged = JSON.stringify([...manifest.blocklist].sort()) !== JSON.stringify(blocklist)
  let lighthousesRefused: string | undefined
  if (lighthousesChanged) {
    try {
      project = await project.update({...manifest, peers: refresh.peers, blocklist, lighthouses: refresh.lighthouses}, {test: true, tools: options.tools})
    } catch (error) {
      if (!(error instanceof InvalidInputError)) throw error
      // The old lighthouses stay in the manifest, so the next pass tries again.
      lighthousesRefused = error.message
      lighthousesChanged = false
    }
  }
  if (!lighthousesChanged && (blocklistChanged || peersChanged)) project = await project.update({...manifest, peers: refresh.peers, blocklist})
  const nebulaReloaded = blocklistChanged || lighthousesChanged ? await reloadNebula({projectDir: project.dir}) : false
  return {status: refresh.status, peersChanged, lighthousesChanged, ...(lighthousesRefused ? {lighthousesRefused} : {}), blocklistChanged, nebulaReloaded, revokedSyncthingIds}
}
