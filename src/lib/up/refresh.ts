import {ConflictError, InvalidInputError, NotFoundError} from '../errors.js'
import type {Tools} from '../exec.js'
import {withTempDir} from '../files.js'
import {readDeviceToken} from '../join/invite.js'
import {reloadNebula} from '../nebula/process.js'
import {JoinedProject, replaceTrustedCas} from '../project/joined-project.js'
import {caToPin} from '../project/trust.js'
import type {ControlPlane, DeviceSync, Lighthouse, Peer} from '../store/control-plane.js'

export interface RefreshResult {
  /** The device's status in the control plane: active, pending, revoked, ... */
  status: string
  peersChanged: boolean
  /** The project's lighthouses changed and nebula.yml names the new ones. */
  lighthousesChanged: boolean
  /** Why nebula.yml still names the old lighthouses: nebula refused the new ones (tried again next pass). */
  lighthousesRefused?: string
  blocklistChanged: boolean
  /** The CAs this device trusts changed: a rotation's endorsed CA was added, or a retired one dropped. */
  casChanged: boolean
  /** Why the control plane's CAs were not installed (an unendorsed CA): the pinned ones stay. */
  casRefused?: string
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

/** How often a device asks the control plane when nothing is pushed: every 60 to 75 s (jittered, so devices spread out). */
export const refreshPollMs = {min: 60_000, max: 75_000}

/** How the project's changes reach the device: LISTEN/NOTIFY (Postgres), Supabase Realtime, or none (the slow poll alone). */
export interface PushState {
  via: 'listen' | 'realtime' | 'none'
  /** Subscribed right now; false while (re)connecting, when the slow poll alone carries changes. */
  active: boolean
}

/** Where a device's view of its project stands: the version it has, and when to ask again. */
export class SyncCursor {
  /** The version the manifest holds; undefined before the first answer (a full snapshot). */
  version?: number
  /** The project's notification channel, once the control plane said. */
  channel?: string
  /** The project's Realtime topic (Supabase), once the control plane said. */
  topic?: string
  /** This device's status at the last refresh (active, revoked, ...); undefined before the first. */
  status?: string
  /** The Syncthing IDs of the project's revoked devices, as of the last change: every pass keeps them out. */
  revokedSyncthingIds: string[] = []
  #nextPollAt = 0
  #notified = false
  /** A version this device applied and the control plane has not been told yet. */
  #unreported?: number
  #reported?: number

  constructor(private readonly now: () => number = Date.now) {}

  /** A refresh is due: first pass, a notification, or the slow poll. */
  get due(): boolean {
    return this.#notified || this.#unreported !== undefined || this.now() >= this.#nextPollAt
  }

  /** The version applied and not yet reported, which the next refresh sends (the acknowledgement of a revocation). */
  get unreported(): number | undefined {
    return this.#unreported
  }

  /**
   * The device applied the cursor's version: nebula reloaded with its blocklist, the revoked
   * devices removed from Syncthing. The next pass reports it, unless it was reported already.
   */
  applied(): void {
    if (this.version !== undefined && (this.#reported === undefined || this.version > this.#reported)) this.#unreported = this.version
  }

  /** The control plane recorded `version` as applied. */
  reported(version: number): void {
    this.#reported = Math.max(version, this.#reported ?? version)
    if (this.#unreported !== undefined && this.#unreported <= this.#reported) this.#unreported = undefined
  }

  /** A notification (or a reconnection): refresh at the next pass unless `version` is what we have. */
  notify(version?: number): void {
    if (version === undefined || this.version === undefined || version > this.version) this.#notified = true
  }

  /** Called after each refresh: the next poll is a jittered interval away. */
  polled(): void {
    this.#notified = false
    this.#nextPollAt = this.now() + refreshPollMs.min + Math.random() * (refreshPollMs.max - refreshPollMs.min)
  }
}

const ipNumber = (ip: string) => ip.split('.').reduce((value, octet) => value * 256 + Number(octet), 0)

/** The project's state after `sync`, from the manifest's (the state of the cursor's version). */
function applySync(manifest: {peers: Peer[]; blocklist: string[]; lighthouses: Lighthouse[]}, sync: Exclude<DeviceSync, {state: 'unchanged'}>) {
  if (sync.state === 'full') return {peers: sync.peers, blocklist: [...sync.blocklist].sort(), lighthouses: sync.lighthouses}
  const replaced = new Set([...sync.removed, ...sync.peers.map((peer) => peer.name)])
  const peers = [...manifest.peers.filter((peer) => !replaced.has(peer.name)), ...sync.peers].sort((a, b) => ipNumber(a.ip) - ipNumber(b.ip))
  const removed = new Set(sync.blocklistRemoved)
  const blocklist = [...new Set([...manifest.blocklist, ...sync.blocklistAdded])].filter((fingerprint) => !removed.has(fingerprint)).sort()
  return {peers, blocklist, lighthouses: sync.lighthouses ?? manifest.lighthouses}
}

/**
 * The CAs of a rotation from the control plane (none before the project's first rotation): a new
 * one is trusted only with a valid endorsement by a CA this device pins, a retired one is
 * dropped. A refused set changes nothing and is reported.
 */
async function refreshTrustedCas(options: {project: JoinedProject; controlPlane: ControlPlane; token: string; tools?: Tools}): Promise<{casChanged: boolean; casRefused?: string}> {
  const cas = await options.controlPlane.deviceTrustedCas({token: options.token})
  if (cas.length === 0) return {casChanged: false}
  const {project} = options
  const offeredPem = Buffer.from(cas.map((ca) => ca.pem).join(''))
  const pinnedPem = await project.trustedCasPem()
  // The usual case, checked without nebula-cert: this device already trusts exactly these.
  if (offeredPem.equals(pinnedPem)) return {casChanged: false}
  try {
    const pem = await withTempDir(project.dir, async (scratch) =>
      caToPin({
        project: project.name,
        origin: 'the control plane',
        offeredPem,
        pinnedPem,
        endorsements: cas.flatMap((ca) => (ca.endorsement ? [ca.endorsement] : [])),
        scratch,
        tools: options.tools,
      }),
    )
    return {casChanged: await replaceTrustedCas(project, pem)}
  } catch (error) {
    if (!(error instanceof InvalidInputError || error instanceof ConflictError)) throw error
    return {casChanged: false, casRefused: error.message}
  }
}

/**
 * Heartbeat and refresh for a device that joined with an invite: the control plane's current
 * peers, blocklist and lighthouses go into the project's manifest (the reconcile pass shares
 * folders with the peers) and the nebula.yml rendered from it, which the running nebula reloads. Nebula does not spread
 * blocklists itself, so this is how a revocation reaches every device; a lighthouse that nebula
 * refuses (an endpoint that does not resolve, say) never holds the blocklist back. Devices joined
 * from a bundle file have no token: nothing to refresh (undefined).
 *
 * The refresh sends the version the `cursor` has and gets "unchanged" (nothing is read or
 * written here), the changes since, or a full snapshot (no cursor, or one too old). The cursor
 * moves on only once the manifest holds the new state.
 */
export async function refreshFromControlPlane(options: {
  home: string
  project: string
  controlPlane: ControlPlane
  syncthingId?: string
  tools?: Tools
  cursor?: SyncCursor
}): Promise<RefreshResult | undefined> {
  const token = await readDeviceToken(options.home, options.project).catch((error: unknown) => {
    if (error instanceof NotFoundError) return undefined
    throw error
  })
  if (token === undefined) return undefined
  const cursor = options.cursor ?? new SyncCursor()
  const appliedVersion = cursor.unreported
  const sync = await options.controlPlane.deviceSync({token, knownVersion: cursor.version, syncthingId: options.syncthingId, appliedVersion})
  if (appliedVersion !== undefined) cursor.reported(appliedVersion)
  cursor.polled()
  cursor.status = sync.state === 'unchanged' ? 'active' : sync.status
  const unchanged = {peersChanged: false, lighthousesChanged: false, blocklistChanged: false, casChanged: false, nebulaReloaded: false, revokedSyncthingIds: []}
  if (sync.state === 'unchanged') return {status: 'active', ...unchanged}
  if (sync.state === 'full' && sync.channel) cursor.channel = sync.channel
  // A delta names a new topic when a device left (migration 012): the feed moves to it.
  if (sync.topic) cursor.topic = sync.topic
  if (sync.status !== 'active') return {status: sync.status, ...unchanged}
  // Asked only when the project changed: a revocation is such a change.
  const revokedSyncthingIds = (await options.controlPlane.deviceRevokedPeers({token})).map((peer) => peer.syncthingId)
  cursor.revokedSyncthingIds = revokedSyncthingIds

  let project = await JoinedProject.find({home: options.home, project: options.project})
  const {manifest} = project
  const next = applySync(manifest, sync)
  const peersChanged = !sameEntries(manifest.peers, next.peers)
  let lighthousesChanged = !sameEntries(manifest.lighthouses, next.lighthouses)
  const blocklistChanged = JSON.stringify([...manifest.blocklist].sort()) !== JSON.stringify(next.blocklist)
  let lighthousesRefused: string | undefined
  if (lighthousesChanged) {
    try {
      project = await project.update({...manifest, ...next}, {test: true, tools: options.tools})
    } catch (error) {
      if (!(error instanceof InvalidInputError)) throw error
      // The old lighthouses stay in the manifest, so the next pass tries again.
      lighthousesRefused = error.message
      lighthousesChanged = false
    }
  }
  if (!lighthousesChanged && (blocklistChanged || peersChanged)) project = await project.update({...manifest, peers: next.peers, blocklist: next.blocklist})
  const cas = await refreshTrustedCas({project, controlPlane: options.controlPlane, token, tools: options.tools})
  const nebulaReloaded = blocklistChanged || lighthousesChanged || cas.casChanged ? await reloadNebula({projectDir: project.dir}) : false
  // The manifest now holds this version, except refused lighthouses: the next refresh (the next
  // poll) is a full snapshot, which tries them again.
  cursor.version = lighthousesRefused ? undefined : (sync.version ?? undefined)
  return {status: sync.status, peersChanged, lighthousesChanged, ...(lighthousesRefused ? {lighthousesRefused} : {}), blocklistChanged, ...cas, nebulaReloaded, revokedSyncthingIds}
}
