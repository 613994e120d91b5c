import {randomBytes} from 'node:crypto'
import {constants} from 'node:fs'
import {access, lstat, rm, stat, writeFile} from 'node:fs/promises'
import {BlockList, isIP} from 'node:net'
import {basename, join, relative, resolve} from 'node:path'

import {ConflictError, InvalidInputError, NotFoundError, ToolFailedError} from '../errors.js'
import {syncthingPort} from '../nebula/config.js'
import type {FolderConfig, FolderType, SyncthingClient} from './client.js'

export const folderTypes: FolderType[] = ['sendreceive', 'sendonly', 'receiveonly']

/**
 * Versioning for new folders: "simple", keeping the 5 most recent versions of each file that a
 * peer replaced or deleted (in .stversions). Bounded disk use and easy to explain; staggered
 * keeps far more versions of large files that change often.
 */
export const defaultVersioning = {type: 'simple', params: {keep: '5'}}

/**
 * Free space below which Syncthing stops writing to a new folder: 2 GB. Its default, 1% of the
 * volume, is 40 GB on a 4 TB media drive but 100 MB on a 10 GB one, too little for one clip.
 */
export const defaultMinDiskFree = {value: 2, unit: 'GB'}
/** The same floor in bytes (Syncthing's GB is 10^9 bytes): accepting a folder keeps it free too. */
export const minDiskFreeBytes = defaultMinDiskFree.value * 1e9

/**
 * Seconds Syncthing's file watcher waits before scanning a change: 1 instead of its 10. A 32 MiB
 * save was complete on the peer a median 1.0 to 1.1 s after its close with 1 s, 2.2 s with 2 s,
 * 5.2 s with 5 s and 10.1 s with 10 s (target: under 3 s). A 1 GiB file written over 5 s was
 * scanned, announced and pulled once with 1 s, as with 5 and 10 s. The cost: Syncthing also scans
 * a file still changing 6x the delay after its first change (and drops that hash), so a file that
 * grows for over 6 s is hashed more often, never announced more often (BENCHMARKS.md "Latency
 * after a save", bench/watcher.ts).
 */
export const defaultWatcherDelayS = 1

export interface Peer {
  deviceId: string
  name: string
  overlayIp: string
  /** Where the peer's Syncthing listens [default: 22000]; only tests and unusual setups change it. */
  port?: number
}

function subnet(cidr: string): BlockList {
  const [network = '', prefix = ''] = cidr.split('/')
  const family = isIP(network)
  const list = new BlockList()
  try {
    if (!family || !/^\d{1,3}$/.test(prefix)) throw new Error('malformed')
    list.addSubnet(network, Number(prefix), family === 6 ? 'ipv6' : 'ipv4')
  } catch {
    throw new InvalidInputError(`invalid project network "${cidr}": expected a CIDR such as 10.99.1.0/24`)
  }
  return list
}

function inSubnet(list: BlockList, ip: string): boolean {
  const family = isIP(ip)
  return family !== 0 && list.check(ip, family === 6 ? 'ipv6' : 'ipv4')
}

/** The IP of "tcp://IP:port", "IP:port" or "[IPv6]:port". */
export function hostOf(address: string): string {
  const rest = address.replace(/^[a-z0-9+]+:\/\//i, '')
  if (rest.startsWith('[')) return rest.slice(1, rest.indexOf(']'))
  const colon = rest.lastIndexOf(':')
  return colon < 0 ? rest : rest.slice(0, colon)
}

const dialAddress = (ip: string, port = syncthingPort) => `tcp://${isIP(ip) === 6 ? `[${ip}]` : ip}:${port}`

/**
 * Whether names that differ only in case are different files in `dir`: a file named in mixed case
 * is created, looked up in lower case, and removed. Syncthing's caseSensitiveFS skips its own
 * case checks, which cost a few ms of CPU per new file (3x to 4x on 5,000 small files, BENCHMARKS.md),
 * and must only be set where this is known: a directory we cannot write to counts as insensitive.
 */
export async function isCaseSensitive(dir: string): Promise<boolean> {
  const name = `.vidsync-CaseProbe-${randomBytes(6).toString('hex')}`
  try {
    await writeFile(join(dir, name), '', {flag: 'wx'})
  } catch {
    return false
  }
  try {
    return (await lstat(join(dir, name.toLowerCase())).catch(() => undefined)) === undefined
  } finally {
    await rm(join(dir, name), {force: true})
  }
}

type PeerChange = 'added' | 'updated' | 'unchanged'

/**
 * Adds a peer as a device reachable at its overlay address only, or points an existing device
 * there: addresses inside the project network are replaced, others (another project's) kept.
 */
async function upsertPeer(client: SyncthingClient, peer: Peer, cidr: string): Promise<PeerChange> {
  const address = dialAddress(peer.overlayIp, peer.port)
  const existing = await client.device(peer.deviceId)
  if (!existing) {
    await client.putDevice({deviceID: peer.deviceId, name: peer.name, addresses: [address], allowedNetworks: [cidr]})
    return 'added'
  }
  const network = subnet(cidr)
  // "dynamic" means discovery, which cannot find peers on the overlay.
  const kept = existing.addresses.filter((other) => other !== 'dynamic' && !inSubnet(network, hostOf(other)))
  const addresses = [...kept, address]
  const allowedNetworks = existing.allowedNetworks.includes(cidr) ? existing.allowedNetworks : [...existing.allowedNetworks, cidr]
  const name = existing.name || peer.name
  if (JSON.stringify([addresses, allowedNetworks, name]) === JSON.stringify([existing.addresses, existing.allowedNetworks, existing.name])) {
    return 'unchanged'
  }
  await client.patchDevice(peer.deviceId, {addresses, allowedNetworks, name})
  return 'updated'
}

/** Adds devices to a folder's share, keeping every device it already has. */
async function shareWith(client: SyncthingClient, folder: FolderConfig, deviceIds: string[], fields: Partial<FolderConfig> = {}): Promise<void> {
  const known = new Set(folder.devices.map((device) => device.deviceID))
  const added = deviceIds.filter((id) => !known.has(id)).map((deviceID) => ({deviceID}))
  const changed = Object.entries(fields).some(([key, value]) => folder[key] !== value)
  if (added.length === 0 && !changed) return
  await client.patchFolder(folder.id, {...fields, devices: [...folder.devices, ...added]})
}

async function existingFolder(client: SyncthingClient, folderId: string): Promise<FolderConfig> {
  const folder = await client.folder(folderId)
  if (!folder) throw new NotFoundError(`no Syncthing folder "${folderId}": see \`vidsync sync list\``)
  return folder
}

/**
 * The folder ID used when none is given: the project and the folder's name, so that devices
 * sharing "Footage" in project studio all arrive at the same ID (studio-footage) on their own.
 */
export function defaultFolderId(project: string, path: string): string {
  const name = basename(resolve(path))
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 48)
  return `${project}-${name || 'folder'}`
}

export interface AddFolderOptions {
  client: SyncthingClient
  path: string
  /** Names the default folder ID. */
  project: string
  folderId?: string
  /** [default: the directory's name] */
  label?: string
  /** [default: sendreceive for a new folder; an existing folder keeps its type] */
  type?: FolderType
  peers: Peer[]
  /** The project's overlay network: peers may connect from and be dialled at addresses in it only. */
  projectCidr: string
  /** Devices already configured here to share the folder with too, their settings untouched. */
  alsoShareWith?: string[]
}

export interface AddFolderResult {
  folderId: string
  label: string
  path: string
  type: string
  created: boolean
  /** Syncthing skips its case checks: set on new folders where the file system is case-sensitive. */
  caseSensitiveFS: boolean
  /** The devices the folder is shared with now, this device excluded. */
  devices: string[]
  peers: {deviceId: string; name: string; change: PeerChange}[]
}

/** Whether `inner` is `outer` or inside it. */
export function isWithin(inner: string, outer: string): boolean {
  const rel = relative(resolve(outer), resolve(inner))
  return rel === '' || (!rel.startsWith('..') && !rel.startsWith('/') && rel !== '..' && !/^[a-zA-Z]:/.test(rel))
}

/** Refuses a directory that is missing, a file, or not writable by this user (what the disk alone says). */
export async function checkWritableDir(path: string, shown = path): Promise<void> {
  const info = await stat(path).catch(() => undefined)
  if (!info) throw new InvalidInputError(`${shown} does not exist: create the directory first`)
  if (!info.isDirectory()) throw new InvalidInputError(`${shown} is not a directory`)
  if (!(await access(path, constants.W_OK).then(() => true, () => false))) throw new InvalidInputError(`${shown} is not writable by this user: Syncthing could not write what peers send`)
}

/**
 * Refuses, before anything is written, a directory that cannot be shared as `folderId`: missing,
 * a file, not writable, or inside (or around) a directory another folder shares.
 */
export async function checkShareableDir(client: SyncthingClient, path: string, folderId: string, shown = path): Promise<void> {
  await checkWritableDir(path, shown)
  for (const other of await client.folders()) {
    if (other.id === folderId) continue
    if (isWithin(path, other.path) || isWithin(other.path, path)) {
      throw new ConflictError(`${shown} ${isWithin(path, other.path) ? 'is inside' : 'contains'} ${other.path}, which folder ${other.label || other.id} already shares: folders must not nest`)
    }
  }
}

/**
 * Shares a directory with the project's peers. An existing folder with this ID keeps every
 * device it had (read, merge, write); it is never moved to another path. Syncthing creates
 * the .stfolder marker itself.
 */
export async function addFolder(options: AddFolderOptions): Promise<AddFolderResult> {
  const {client} = options
  const path = resolve(options.path)
  if (options.type !== undefined && !folderTypes.includes(options.type)) {
    throw new InvalidInputError(`invalid folder type "${options.type}": expected ${folderTypes.join(', ')}`)
  }
  subnet(options.projectCidr)
  const folderId = options.folderId ?? defaultFolderId(options.project, path)
  if (!/^[^\s/\\]{1,64}$/.test(folderId)) throw new InvalidInputError(`invalid folder ID "${folderId}": up to 64 characters, no spaces or slashes`)

  await checkShareableDir(client, path, folderId, options.path)
  const existing = await client.folder(folderId)
  if (existing && resolve(existing.path) !== path) {
    throw new ConflictError(
      `folder ID "${folderId}" already shares ${existing.path}: remove the old share with \`vidsync sync remove ${folderId}\``,
      {hint: `or pass --id to share ${path} under another ID`},
    )
  }
  const {myID} = await client.status()
  const peers = options.peers.filter((peer) => peer.deviceId !== myID)
  // Devices first: Syncthing silently drops unknown devices from a folder.
  const changes: AddFolderResult['peers'] = []
  for (const peer of peers) {
    changes.push({deviceId: peer.deviceId, name: peer.name, change: await upsertPeer(client, peer, options.projectCidr)})
  }
  const deviceIds = [...new Set([...peers.map((peer) => peer.deviceId), ...(options.alsoShareWith ?? []).filter((id) => id !== myID)])]
  if (existing) {
    await shareWith(client, existing, deviceIds, options.type === undefined ? {} : {type: options.type})
  } else {
    await client.putFolder({
      id: folderId,
      label: options.label ?? basename(path),
      path,
      type: options.type ?? 'sendreceive',
      devices: deviceIds.map((deviceID) => ({deviceID})),
      versioning: defaultVersioning,
      minDiskFree: defaultMinDiskFree,
      fsWatcherDelayS: defaultWatcherDelayS,
      caseSensitiveFS: await isCaseSensitive(path),
    })
  }

  const folder = await existingFolder(client, folderId)
  const shared = folder.devices.map((device) => device.deviceID).filter((id) => id !== myID)
  const dropped = deviceIds.filter((id) => !shared.includes(id))
  if (dropped.length > 0) throw new ToolFailedError(`Syncthing did not share ${folderId} with ${dropped.join(', ')}`, 'devices dropped')
  const caseSensitiveFS = folder.caseSensitiveFS === true
  return {folderId, label: folder.label, path: folder.path, type: folder.type, created: !existing, caseSensitiveFS, devices: shared, peers: changes}
}

/** Stops sharing a folder; its files stay on disk. */
export async function removeFolder(options: {client: SyncthingClient; folderId: string}): Promise<{folderId: string; label: string; path: string}> {
  const folder = await existingFolder(options.client, options.folderId)
  await options.client.deleteFolder(folder.id)
  return {folderId: folder.id, label: folder.label, path: folder.path}
}

export interface FolderState {
  folderId: string
  label: string
  path: string
  type: string
  paused: boolean
  /** Syncthing's folder state: idle, scanning, syncing, error, ... */
  state: string
  /** Percent of the cluster's latest version present here. */
  completion: number
  globalBytes: number
  needBytes: number
  devices: string[]
  error?: string
}

/** Every folder with how complete it is on this device. */
export async function listFolders(options: {client: SyncthingClient}): Promise<FolderState[]> {
  const {client} = options
  const [folders, {myID}] = await Promise.all([client.folders(), client.status()])
  return Promise.all(
    folders.map(async (folder) => {
      const base = {
        folderId: folder.id,
        label: folder.label,
        path: folder.path,
        type: folder.type,
        paused: folder.paused,
        devices: folder.devices.map((device) => device.deviceID).filter((id) => id !== myID),
      }
      if (folder.paused) return {...base, state: 'paused', completion: 0, globalBytes: 0, needBytes: 0}
      const [status, completion] = await Promise.all([client.folderStatus(folder.id), client.completion(folder.id)])
      return {
        ...base,
        state: status.state,
        completion: completion.completion,
        globalBytes: completion.globalBytes,
        needBytes: completion.needBytes,
        ...(status.error ? {error: status.error} : {}),
      }
    }),
  )
}

export interface PeerState {
  deviceId: string
  name: string
  connected: boolean
  paused: boolean
  /** "IP:port" of the connection, empty when not connected. */
  address: string
  type: string
  clientVersion: string
  inBytesTotal: number
  outBytesTotal: number
}

export interface SyncStatus {
  /** Per folder, also how complete each connected peer is. */
  folders: (FolderState & {peers: {deviceId: string; completion: number; needBytes: number}[]})[]
  peers: PeerState[]
  /** Byte counters since Syncthing started, with their time: two samples give a rate. */
  total: {at: string; inBytesTotal: number; outBytesTotal: number}
}

export async function syncStatus(options: {client: SyncthingClient}): Promise<SyncStatus> {
  const {client} = options
  const [folders, connections, devices, {myID}] = await Promise.all([listFolders({client}), client.connections(), client.devices(), client.status()])
  const names = new Map(devices.map((device) => [device.deviceID, device.name]))
  const peers = Object.entries(connections.connections)
    .filter(([deviceId]) => deviceId !== myID)
    .map(([deviceId, connection]) => ({
      deviceId,
      name: names.get(deviceId) ?? '',
      connected: connection.connected,
      paused: connection.paused,
      address: connection.address,
      type: connection.type,
      clientVersion: connection.clientVersion,
      inBytesTotal: connection.inBytesTotal,
      outBytesTotal: connection.outBytesTotal,
    }))
  const connected = new Set(peers.filter((peer) => peer.connected).map((peer) => peer.deviceId))
  const withPeers = await Promise.all(
    folders.map(async (folder) => ({
      ...folder,
      peers: await Promise.all(
        folder.devices
          .filter((deviceId) => connected.has(deviceId) && !folder.paused)
          .map(async (deviceId) => {
            const remote = await client.completion(folder.folderId, deviceId)
            return {deviceId, completion: remote.completion, needBytes: remote.needBytes}
          }),
      ),
    })),
  )
  return {folders: withPeers, peers, total: connections.total}
}

/**
 * Makes sure `peers` are devices at their overlay addresses and share every folder in `folders`.
 * Idempotent: writes only what is missing.
 */
export async function sharePeers(options: {client: SyncthingClient; projectCidr: string; folders: string[]; peers: Peer[]}): Promise<void> {
  const {client} = options
  const {myID} = await client.status()
  const peers = options.peers.filter((peer) => peer.deviceId !== myID)
  if (peers.length === 0) return
  for (const peer of peers) await upsertPeer(client, peer, options.projectCidr)
  for (const folderId of options.folders) {
    await shareWith(client, await existingFolder(client, folderId), peers.map((peer) => peer.deviceId))
  }
}

/**
 * Removes `deviceIds` from this Syncthing: from every folder's shares, then as devices. Returns
 * the IDs that were configured here (the others were already gone). For revoked devices.
 */
export async function removeDevices(options: {client: SyncthingClient; deviceIds: string[]}): Promise<string[]> {
  const {client} = options
  const configured = new Set((await client.devices()).map((device) => device.deviceID))
  const removing = new Set(options.deviceIds.filter((id) => configured.has(id)))
  if (removing.size === 0) return []
  for (const folder of await client.folders()) {
    if (folder.devices.some((device) => removing.has(device.deviceID))) {
      await client.patchFolder(folder.id, {devices: folder.devices.filter((device) => !removing.has(device.deviceID))})
    }
  }
  for (const id of removing) await client.deleteDevice(id)
  return [...removing]
}

/** The devices configured here (this one excluded) that are dialled at an address inside the project network. */
export async function projectDeviceIds(options: {client: SyncthingClient; projectCidr: string}): Promise<string[]> {
  const network = subnet(options.projectCidr)
  const [devices, {myID}] = await Promise.all([options.client.devices(), options.client.status()])
  return devices
    .filter((device) => device.deviceID !== myID && device.addresses.some((address) => inSubnet(network, hostOf(address))))
    .map((device) => device.deviceID)
}

/**
 * Shares `folders` with every configured device dialled inside the project network: devices
 * accepted before a folder existed (`up` runs before `sync add`) get it on the next pass.
 * Idempotent: writes only what is missing.
 */
export async function shareWithProjectDevices(options: {client: SyncthingClient; projectCidr: string; folders: string[]}): Promise<void> {
  const {client} = options
  const deviceIds = await projectDeviceIds({client, projectCidr: options.projectCidr})
  if (deviceIds.length === 0) return
  for (const folderId of options.folders) await shareWith(client, await existingFolder(client, folderId), deviceIds)
}

/** This project's folders here: named after the project, or shared with a device inside its network. */
export async function projectFolders(options: {client: SyncthingClient; project: string; projectCidr: string}): Promise<string[]> {
  const {client} = options
  const network = subnet(options.projectCidr)
  const [folders, devices] = await Promise.all([client.folders(), client.devices()])
  const inProject = new Set(
    devices.filter((device) => device.addresses.some((address) => inSubnet(network, hostOf(address)))).map((device) => device.deviceID),
  )
  return folders
    .filter((folder) => folder.id.startsWith(`${options.project}-`) || folder.devices.some((device) => inProject.has(device.deviceID)))
    .map((folder) => folder.id)
}

export interface AcceptPendingOptions {
  client: SyncthingClient
  projectCidr: string
  /** Folder IDs to share with each accepted device. */
  folders: string[]
  /** Port the accepted devices listen on [default: 22000]. */
  syncPort?: number
  /** Syncthing IDs never accepted (revoked devices, which may connect until nebula has cut them off): ignored. */
  refused?: string[]
}

export interface PendingDecision {
  deviceId: string
  name: string
  address: string
}

/**
 * Accepts devices that tried to connect from inside the project's overlay network (Nebula has
 * already checked their certificate) and shares `folders` with them. Devices connecting from
 * anywhere else stay pending.
 */
export async function acceptPendingDevices(options: AcceptPendingOptions): Promise<{accepted: PendingDecision[]; ignored: PendingDecision[]}> {
  const {client} = options
  const network = subnet(options.projectCidr)
  // Unknown folders are an error even when nobody is pending.
  await Promise.all(options.folders.map((folderId) => existingFolder(client, folderId)))
  const accepted: PendingDecision[] = []
  const ignored: PendingDecision[] = []
  const peers: Peer[] = []
  for (const [deviceId, pending] of Object.entries(await client.pendingDevices())) {
    const decision = {deviceId, name: pending.name, address: pending.address}
    const ip = hostOf(pending.address)
    if (!inSubnet(network, ip) || options.refused?.includes(deviceId)) {
      ignored.push(decision)
      continue
    }
    peers.push({deviceId, name: pending.name || deviceId.slice(0, 7), overlayIp: ip, port: options.syncPort})
    accepted.push(decision)
  }
  await sharePeers({client, projectCidr: options.projectCidr, folders: options.folders, peers})
  return {accepted, ignored}
}
