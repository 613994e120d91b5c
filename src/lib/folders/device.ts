import {constants} from 'node:fs'
import {access, mkdir, readdir, readFile, stat, writeFile} from 'node:fs/promises'
import {homedir} from 'node:os'
import {basename, join, resolve} from 'node:path'

import type {BundleManifest, ManifestFolder} from '../bundle/manifest.js'
import {ConflictError, ExhaustedError, InvalidInputError, NotFoundError, PermissionError} from '../errors.js'
import {readDeviceToken} from '../join/invite.js'
import {JoinedProject} from '../project/joined-project.js'
import type {ControlPlane} from '../store/control-plane.js'
import type {FolderConfig, FolderType, SyncthingClient} from '../syncthing/client.js'
import {formatBytes} from '../output/status.js'
import {deviceLimits, type DeviceLimits} from './bandwidth.js'
import {freeSpace} from '../platform/index.js'
import {addFolder, type AddFolderResult, checkShareableDir, checkWritableDir, minDiskFreeBytes, type Peer, projectDeviceIds} from '../syncthing/folders.js'
import {type AccessMode, checkFolderName, deviceCreateFolder, deviceFolderReport, deviceFolders, withSizes} from './store.js'

/** Syncthing's folder ID of a project folder: the same on every device, whatever the local path. */
export const syncthingFolderId = (project: string, id: string) => `${project}.${id}`

const folderTypes: Record<Exclude<AccessMode, 'none'>, FolderType> = {'send-receive': 'sendreceive', 'send-only': 'sendonly', 'receive-only': 'receiveonly'}

/** Syncthing's folder type for an access mode; undefined for none (not shared here). */
export const folderTypeOf = (mode: AccessMode): FolderType | undefined => (mode === 'none' ? undefined : folderTypes[mode])

/** Where a folder is accepted when no directory is given: ~/vidsync/<project>/<folder>. */
export const defaultFolderPath = (project: string, name: string, home = homedir()) => join(home, 'vidsync', project, name)

/** Where a folder accepted without a directory goes: <root>/<folder> when this device chose a root (`sync auto-accept --into`), else the default. */
const acceptPath = (project: string, name: string, options: {folderRoot?: string; userHome?: string}) =>
  options.folderRoot ? join(options.folderRoot, name) : defaultFolderPath(project, name, options.userHome)

/** The file of shared ignore patterns in every project folder: it syncs, and .stignore includes it. */
export const sharedIgnoreFile = '.vidsync-ignore'

/** Media defaults: OS litter, editors' caches and render temporaries that must not travel. */
export const defaultIgnorePatterns = [
  '// Shared by every device of the project (vidsync): edit here, the change syncs to all.',
  '(?d).DS_Store',
  '(?d)Thumbs.db',
  '(?d)desktop.ini',
  '(?d)._*',
  '(?d).Spotlight-V100',
  '(?d).Trashes',
  '// Editor caches and render temporaries',
  '(?d)Adobe Premiere Pro Auto-Save',
  '(?d)Media Cache Files',
  '(?d)Media Cache',
  '(?d)*.pek',
  '(?d)*.cfa',
  '(?d)*.ims',
  '(?d)CacheClip',
  '(?d)*.fcpcache',
  '(?d)Render Files',
  '(?d)*.tmp',
  '(?d)*.part',
  '(?d)~$*',
]

/** The project's folders as this device knows them (bundle or last refresh). */
export const projectFoldersOf = (manifest: BundleManifest): ManifestFolder[] => manifest.folders ?? []

/** Syncthing IDs of the peers that must not get `folder` (access none), by the manifest's names. */
function excludedIds(manifest: BundleManifest, folder: ManifestFolder): Set<string> {
  const none = new Set(folder.devices.filter((device) => device.mode === 'none').map((device) => device.name))
  return new Set(manifest.peers.filter((peer) => peer.syncthingId && none.has(peer.name)).map((peer) => peer.syncthingId as string))
}

function allowedPeers(manifest: BundleManifest, folder: ManifestFolder): Peer[] {
  const excluded = excludedIds(manifest, folder)
  return manifest.peers.flatMap((peer) => (peer.syncthingId && !excluded.has(peer.syncthingId) ? [{deviceId: peer.syncthingId, name: peer.name, overlayIp: peer.ip}] : []))
}

/** Shares `path` as the project folder with the peers that have access (and these devices already configured here). */
async function shareAs(client: SyncthingClient, manifest: BundleManifest, folder: ManifestFolder, path: string, alsoShareWith: string[]): Promise<AddFolderResult> {
  const type = accessibleType(manifest, folder)
  const excluded = excludedIds(manifest, folder)
  return addFolder({
    client,
    path,
    project: manifest.project,
    folderId: syncthingFolderId(manifest.project, folder.id),
    label: folder.name,
    type,
    peers: allowedPeers(manifest, folder),
    projectCidr: manifest.cidr,
    alsoShareWith: alsoShareWith.filter((id) => !excluded.has(id)),
  })
}

/** This device's folder type for `folder`, or a PermissionError when its access is none. */
function accessibleType(manifest: BundleManifest, folder: ManifestFolder): FolderType {
  const type = folderTypeOf(folder.mode)
  if (type === undefined) throw new PermissionError(`this device has no access to folder ${folder.name} of ${manifest.project} (mode none): ask the operator`)
  return type
}

/** The project folder `name` this device knows of, or a NotFoundError. */
function folderNamed(manifest: BundleManifest, name: string): ManifestFolder {
  const folder = projectFoldersOf(manifest).find((candidate) => candidate.name === checkFolderName(name))
  if (!folder) throw new NotFoundError(`project ${manifest.project} has no folder "${name}": see \`vidsync sync list\``)
  return folder
}

/** Writes the default shared ignore file when the folder has none, and makes .stignore include it. */
export async function ensureSharedIgnores(dir: string, options: {createDefaults: boolean}): Promise<boolean> {
  const shared = join(dir, sharedIgnoreFile)
  if (options.createDefaults) await writeFile(shared, `${defaultIgnorePatterns.join('\n')}\n`, {flag: 'wx'}).catch(() => undefined)
  // Only once the file exists: Syncthing stops a folder whose .stignore includes a missing file.
  if (!(await stat(shared).catch(() => undefined))) return false
  const stignore = join(dir, '.stignore')
  const current = await readFile(stignore, 'utf8').catch(() => '')
  const include = `#include ${sharedIgnoreFile}`
  if (current.split('\n').some((line) => line.trim() === include)) return false
  await writeFile(stignore, `${include}\n${current}`)
  return true
}

/** This device's token, when it joined with an invite (it can then ask the control plane). */
const tokenOf = (home: string, project: string) => readDeviceToken(home, project).catch((error: unknown) => (error instanceof NotFoundError ? undefined : Promise.reject(error)))

/** Syncthing states in which a folder's globalBytes is the cluster's size (not mid-scan, not failed). */
const settledStates = new Set(['idle', 'syncing', 'sync-preparing', 'sync-waiting', 'cleaning', 'clean-waiting'])

/** The size (Syncthing's globalBytes) of each project folder shared here, by the project's folder ID. */
export async function sharedFolderSizes(client: SyncthingClient, manifest: BundleManifest): Promise<Record<string, number>> {
  const configured = new Map((await client.folders()).map((folder): [string, FolderConfig] => [folder.id, folder]))
  const sizes: Record<string, number> = {}
  for (const folder of projectFoldersOf(manifest)) {
    const shared = configured.get(syncthingFolderId(manifest.project, folder.id))
    if (!shared || shared.paused) continue
    const status = await client.folderStatus(shared.id)
    if (settledStates.has(String(status.state)) && !status.error) sizes[folder.id] = Number(status.globalBytes ?? 0)
  }
  return sizes
}

/**
 * Replaces the manifest's folder list with the control plane's (devices that joined with an
 * invite), reporting the sizes of the folders shared here on the way: a device about to accept
 * a folder compares the latest report with its free space. The project's default limits come too.
 */
export async function refreshFolders(options: {home: string; project: string; controlPlane: ControlPlane; client: SyncthingClient}): Promise<ManifestFolder[] | undefined> {
  const token = await tokenOf(options.home, options.project)
  if (token === undefined) return undefined
  const project = await JoinedProject.find({home: options.home, project: options.project})
  const sizes = await sharedFolderSizes(options.client, project.manifest)
  const settings = await deviceFolderReport(options.controlPlane, {token, sizes})
  const folders = withSizes(await deviceFolders(options.controlPlane, {token}), settings.sizes)
  const updated = {...project.manifest, folders, syncLimits: settings.syncLimits}
  if (JSON.stringify([project.manifest.folders ?? [], project.manifest.syncLimits]) !== JSON.stringify([folders, settings.syncLimits])) await project.update(updated)
  return folders
}

/**
 * Refuses a folder of `sizeBytes` that would leave less than Syncthing's minDiskFree floor free
 * where `path` goes (ExhaustedError, exit 5). An unknown size (no device reported one yet) passes:
 * Syncthing itself stops writing at the floor.
 */
export async function checkFreeSpace(options: {path: string; name: string; sizeBytes?: number}): Promise<{freeBytes: number; sizeBytes: number | null}> {
  const free = await freeSpace(options.path)
  if (options.sizeBytes === undefined) return {freeBytes: free.bytes, sizeBytes: null}
  if (free.bytes < options.sizeBytes + minDiskFreeBytes) {
    throw new ExhaustedError(
      `folder ${options.name} needs ${formatBytes(options.sizeBytes)} plus ${formatBytes(minDiskFreeBytes)} kept free, but ${free.checked} has ${formatBytes(free.bytes)} free: nothing was set up`,
      {hint: `accept it into a directory on a larger disk (\`vidsync sync accept ${options.name} DIR\`), or free ${formatBytes(options.sizeBytes + minDiskFreeBytes - free.bytes)} there`},
    )
  }
  return {freeBytes: free.bytes, sizeBytes: options.sizeBytes}
}

/** The project folder `name`: from the manifest, else created in the control plane when this device can. */
async function findOrCreate(options: {home: string; project: JoinedProject; name: string; controlPlane?: ControlPlane}): Promise<ManifestFolder> {
  const {manifest} = options.project
  const known = projectFoldersOf(manifest).find((folder) => folder.name === options.name)
  if (known) return known
  const token = options.controlPlane ? await tokenOf(options.home, manifest.project) : undefined
  if (!options.controlPlane || token === undefined) {
    throw new NotFoundError(
      `project ${manifest.project} has no folder "${options.name}" in this device's bundle: the operator creates it with \`vidsync folder create ${manifest.project} ${options.name}\` and renews this device's bundle`,
    )
  }
  const created = await deviceCreateFolder(options.controlPlane, {token, name: options.name})
  const folders = [...projectFoldersOf(manifest).filter((folder) => folder.id !== created.id), created]
  await options.project.update({...manifest, folders})
  return created
}

export interface ShareFolderOptions {
  client: SyncthingClient
  home: string
  project?: string
  path: string
  /** [default: the directory's name, in lowercase with hyphens] */
  name?: string
  controlPlane?: ControlPlane
}

export interface ShareFolderResult extends AddFolderResult {
  project: string
  name: string
  /** The project folder's stable ID. */
  id: string
  mode: AccessMode
  ignoresIncluded: boolean
}

/** A folder name from a directory's name: "My Footage" becomes "my-footage". */
export function nameFromPath(path: string): string {
  return (
    basename(resolve(path))
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 63)
      .replace(/-+$/, '') || 'folder'
  )
}

/**
 * Shares DIR as the project folder NAME: Syncthing's folder ID comes from the project and the
 * folder's ID, so devices with differently named directories share one folder. Its type follows
 * this device's access; it is shared with the project's devices that have access.
 */
export async function shareProjectFolder(options: ShareFolderOptions): Promise<ShareFolderResult> {
  const name = checkFolderName(options.name ?? nameFromPath(options.path))
  const project = await JoinedProject.find({home: options.home, project: options.project})
  const {manifest} = project
  const path = resolve(options.path)
  // Before the folder is looked up or created in the project: a directory that cannot be shared leaves nothing behind.
  await checkWritableDir(path, options.path)
  const folder = await findOrCreate({home: options.home, project, name, controlPlane: options.controlPlane})
  accessibleType(manifest, folder)
  const folderId = syncthingFolderId(manifest.project, folder.id)
  await checkShareableDir(options.client, path, folderId, options.path)
  // Before Syncthing's first scan: devices that write the same defaults then agree on them at once.
  const ignoresIncluded = await ensureSharedIgnores(path, {createDefaults: true})
  const result = await shareAs(options.client, manifest, folder, path, await projectDeviceIds({client: options.client, projectCidr: manifest.cidr}))
  return {...result, project: manifest.project, name, id: folder.id, mode: folder.mode, ignoresIncluded}
}

/** Pending offers by Syncthing folder ID: the project devices offering each. */
async function offers(client: SyncthingClient, projectCidr: string): Promise<Map<string, string[]>> {
  const inProject = new Set(await projectDeviceIds({client, projectCidr}))
  const pending = (await client.pendingFolders()) ?? {}
  const result = new Map<string, string[]>()
  for (const [folderId, offer] of Object.entries(pending)) {
    // Only devices of the project (configured at an overlay address, their certificate checked by Nebula).
    const from = Object.keys(offer.offeredBy ?? {}).filter((id) => inProject.has(id))
    if (from.length > 0) result.set(folderId, from)
  }
  return result
}

async function isEmptyDir(path: string): Promise<boolean | undefined> {
  const entries = await readdir(path).catch((error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? undefined : Promise.reject(error)))
  return entries === undefined ? undefined : entries.length === 0
}

export interface AcceptOptions {
  client: SyncthingClient
  home: string
  project?: string
  name: string
  /** [default: <folder root>/<name> (`sync auto-accept --into`) or ~/vidsync/<project>/<name>, which must be missing or empty] */
  path?: string
  userHome?: string
}

type AcceptOfferOptions = Omit<AcceptOptions, 'home' | 'project'> & {manifest: BundleManifest; folderRoot?: string}

export interface AcceptResult {
  project: string
  name: string
  id: string
  folderId: string
  path: string
  type: FolderType
  offeredBy: string[]
  /** The folder's size as the last device sharing it reported, null when none has yet (not checked then). */
  sizeBytes: number | null
  /** Free space where it went, before accepting. */
  freeBytes: number
}

/**
 * Accepts a project folder that a device of the project offers: the directory (created when
 * missing) is shared as the folder with the devices that have access. All checks come first:
 * nothing is written in Syncthing or on disk when one fails.
 */
export async function acceptFolder(options: AcceptOptions): Promise<AcceptResult> {
  const project = await JoinedProject.find({home: options.home, project: options.project})
  return acceptOffer({...options, manifest: project.manifest, folderRoot: (await project.settings()).folderRoot})
}

async function acceptOffer(options: AcceptOfferOptions): Promise<AcceptResult> {
  const {manifest} = options
  const folder = folderNamed(manifest, options.name)
  const {name} = folder
  const type = accessibleType(manifest, folder)
  const folderId = syncthingFolderId(manifest.project, folder.id)
  const existing = await options.client.folder(folderId)
  if (existing) throw new ConflictError(`folder ${name} is already shared here, in ${existing.path}`)
  const offeredBy = (await offers(options.client, manifest.cidr)).get(folderId)
  if (!offeredBy) throw new NotFoundError(`no device of ${manifest.project} offers folder ${name} now (the offer is gone, or no peer shares it yet): see \`vidsync sync list\``)
  const path = resolve(options.path ?? acceptPath(manifest.project, name, options))
  const info = await stat(path).catch(() => undefined)
  if (info && !info.isDirectory()) throw new InvalidInputError(`${path} is not a directory`)
  // The default location must be new: an existing non-empty directory there was not made for this folder.
  if (options.path === undefined && info && !(await isEmptyDir(path))) {
    throw new ConflictError(`${path} already exists and is not empty: pass the directory to accept ${name} into`)
  }
  await checkShareableDirOrParent(options.client, path, folderId)
  const space = await checkFreeSpace({path, name, sizeBytes: folder.sizeBytes})
  await mkdir(path, {recursive: true})
  const result = await shareAs(options.client, manifest, folder, path, [...offeredBy, ...(await projectDeviceIds({client: options.client, projectCidr: manifest.cidr}))])
  await ensureSharedIgnores(path, {createDefaults: false})
  return {project: manifest.project, name, id: folder.id, folderId, path: result.path, type, offeredBy, ...space}
}

/** checkShareableDir for a directory that may not exist yet: its nearest existing parent must be writable. */
async function checkShareableDirOrParent(client: SyncthingClient, path: string, folderId: string): Promise<void> {
  if (await stat(path).catch(() => undefined)) return checkShareableDir(client, path, folderId)
  let parent = resolve(path, '..')
  while (!(await stat(parent).catch(() => undefined)) && parent !== resolve(parent, '..')) parent = resolve(parent, '..')
  if (!(await access(parent, constants.W_OK).then(() => true, () => false))) throw new InvalidInputError(`cannot create ${path}: ${parent} is not writable by this user`)
  for (const other of await client.folders()) {
    if (resolve(path).startsWith(`${resolve(other.path)}/`)) throw new ConflictError(`${path} is inside ${other.path}, which folder ${other.label || other.id} already shares: folders must not nest`)
  }
}

export interface FolderPass {
  /** Folders accepted on their own (the project says auto-accept). */
  accepted: string[]
  /** Offers left alone, with why. */
  skipped: {name: string; reason: string}[]
  /** Folders whose type or devices changed to follow the access rules. */
  updated: string[]
}

/**
 * The reconcile loop's part for project folders: each folder shared here gets the type and the
 * devices its access rules say; offers from the project's devices of auto-accept folders (or any,
 * with `autoAccept`: the device says so) are accepted into ~/vidsync/<project>/<name> (or
 * <folderRoot>/<name>) when that is missing or empty (never over files).
 */
export async function applyProjectFolders(options: {client: SyncthingClient; manifest: BundleManifest; userHome?: string; autoAccept?: boolean; folderRoot?: string}): Promise<FolderPass> {
  const {client, manifest} = options
  const pass: FolderPass = {accepted: [], skipped: [], updated: []}
  const folders = projectFoldersOf(manifest)
  if (folders.length === 0) return pass
  const configured = new Map((await client.folders()).map((folder): [string, FolderConfig] => [folder.id, folder]))
  const projectDevices = await projectDeviceIds({client, projectCidr: manifest.cidr})
  const pending = await offers(client, manifest.cidr)
  for (const folder of folders) {
    const folderId = syncthingFolderId(manifest.project, folder.id)
    const existing = configured.get(folderId)
    const type = folderTypeOf(folder.mode)
    if (existing) {
      const excluded = excludedIds(manifest, folder)
      const {myID} = await client.status()
      const wanted = new Set([...existing.devices.map((device) => device.deviceID), ...projectDevices])
      const devices = [...wanted].filter((id) => id === myID || !excluded.has(id)).map((deviceID) => existing.devices.find((device) => device.deviceID === deviceID) ?? {deviceID})
      const fields: Partial<FolderConfig> = {}
      if (type === undefined ? !existing.paused : existing.type !== type || existing.paused) Object.assign(fields, type === undefined ? {paused: true} : {type, paused: false})
      if (JSON.stringify(devices.map((d) => d.deviceID).sort()) !== JSON.stringify(existing.devices.map((d) => d.deviceID).sort())) fields.devices = devices
      if (Object.keys(fields).length > 0) {
        await client.patchFolder(folderId, fields)
        pass.updated.push(folder.name)
      }
      if (type !== undefined) await ensureSharedIgnores(existing.path, {createDefaults: false})
      continue
    }
    if (!pending.has(folderId)) continue
    if (type === undefined) continue
    if (!(folder.autoAccept || options.autoAccept)) continue
    const path = acceptPath(manifest.project, folder.name, options)
    if ((await isEmptyDir(path)) === false) {
      pass.skipped.push({name: folder.name, reason: `${path} exists and is not empty`})
      continue
    }
    try {
      await acceptOffer({client, manifest, name: folder.name, userHome: options.userHome, folderRoot: options.folderRoot})
      pass.accepted.push(folder.name)
    } catch (error) {
      pass.skipped.push({name: folder.name, reason: (error as Error).message})
    }
  }
  return pass
}

/** Where a project folder stands on this device. */
export type ProjectFolderStateName = 'shared' | 'offered' | 'declined' | 'available' | 'no-access'

export interface ProjectFolderState {
  name: string
  id: string
  /** Syncthing's folder ID: <project>.<id>. */
  folderId: string
  mode: AccessMode
  state: ProjectFolderStateName
  /** The local directory when shared here, else null. */
  path: string | null
  /** The folder's size: the project's latest version once shared here, else as a device sharing it last reported (null: none has). */
  sizeBytes: number | null
  /** Syncthing's folder state when shared here (idle, scanning, syncing, ...), else null. */
  syncState: string | null
  /** Receive-only devices: files changed here that are never sent (revert with `vidsync sync revert`), else null. */
  localChanges: number | null
  /** Syncthing IDs of the project's devices that offer it. */
  offeredBy: string[]
}

async function localChangesOf(client: SyncthingClient, folderId: string): Promise<number> {
  const status = await client.folderStatus(folderId)
  return Number(status.receiveOnlyTotalItems ?? 0)
}

/** Each project folder: shared here (with size and state), offered, declined, available or without access. */
export async function projectFolderStates(options: {client: SyncthingClient; home: string; project?: string}): Promise<{project: string; folders: ProjectFolderState[]; bandwidth: DeviceLimits}> {
  const {client} = options
  const joined = await JoinedProject.find({home: options.home, project: options.project})
  const {manifest} = joined
  const configured = new Map((await client.folders()).map((folder): [string, FolderConfig] => [folder.id, folder]))
  const pending = await offers(client, manifest.cidr)
  const declined = new Set((await client.devices()).flatMap((device) => ((device.ignoredFolders as {id: string}[] | undefined) ?? []).map((folder) => folder.id)))
  const folders = await Promise.all(
    projectFoldersOf(manifest).map(async (folder): Promise<ProjectFolderState> => {
      const folderId = syncthingFolderId(manifest.project, folder.id)
      const shared = configured.get(folderId)
      const base = {name: folder.name, id: folder.id, folderId, mode: folder.mode, offeredBy: pending.get(folderId) ?? []}
      if (shared) {
        const [status, completion] = shared.paused ? [undefined, undefined] : await Promise.all([client.folderStatus(folderId), client.completion(folderId)])
        return {
          ...base,
          state: 'shared',
          path: shared.path,
          sizeBytes: completion?.globalBytes ?? null,
          syncState: shared.paused ? 'paused' : (status?.error ?? status?.state ?? null),
          localChanges: shared.type === 'receiveonly' && status ? Number(status.receiveOnlyTotalItems ?? 0) : null,
        }
      }
      const state: ProjectFolderStateName = folder.mode === 'none' ? 'no-access' : declined.has(folderId) ? 'declined' : pending.has(folderId) ? 'offered' : 'available'
      return {...base, state, path: null, sizeBytes: folder.sizeBytes ?? null, syncState: null, localChanges: null}
    }),
  )
  return {project: manifest.project, folders, bandwidth: await deviceLimits(options.home)}
}

export interface RevertResult {
  name: string
  folderId: string
  path: string
  /** Files and directories changed here that Syncthing restores or removes. */
  localChanges: number
}

/** Undoes the local changes of a receive-only project folder (Syncthing's revert). */
export async function revertLocalChanges(options: {client: SyncthingClient; home: string; project?: string; name: string}): Promise<RevertResult> {
  const {manifest} = await JoinedProject.find({home: options.home, project: options.project})
  const folder = folderNamed(manifest, options.name)
  const {name} = folder
  const folderId = syncthingFolderId(manifest.project, folder.id)
  const shared = await options.client.folder(folderId)
  if (!shared) throw new NotFoundError(`folder ${name} is not shared here: see \`vidsync sync list\``)
  if (shared.type !== 'receiveonly') throw new ConflictError(`folder ${name} is ${shared.type} here: only a receive-only folder has local changes to revert`)
  const localChanges = await localChangesOf(options.client, folderId)
  await options.client.revert(folderId)
  return {name, folderId, path: shared.path, localChanges}
}

/**
 * Declines a project folder that devices offer: Syncthing remembers it (ignoredFolders of each
 * offering device), stops offering it here, and the up loop never accepts it on its own.
 */
export async function declineFolder(options: {client: SyncthingClient; home: string; project?: string; name: string}): Promise<{name: string; folderId: string; declinedFrom: string[]}> {
  const {manifest} = await JoinedProject.find({home: options.home, project: options.project})
  const folder = folderNamed(manifest, options.name)
  const {name} = folder
  const folderId = syncthingFolderId(manifest.project, folder.id)
  if (await options.client.folder(folderId)) throw new ConflictError(`folder ${name} is shared here: stop sharing it with \`vidsync sync remove ${folderId}\` first`)
  const offeredBy = (await offers(options.client, manifest.cidr)).get(folderId)
  if (!offeredBy) throw new NotFoundError(`no device of ${manifest.project} offers folder ${name} now: nothing to decline`)
  for (const deviceId of offeredBy) {
    const device = await options.client.device(deviceId)
    const ignored = ((device?.ignoredFolders as {id: string}[] | undefined) ?? []).filter((entry) => entry.id !== folderId)
    await options.client.patchDevice(deviceId, {ignoredFolders: [...ignored, {id: folderId, label: name, time: new Date().toISOString()}]})
  }
  return {name, folderId, declinedFrom: offeredBy}
}

/**
 * `sync auto-accept`: whether this device accepts every offered folder on its own (not only those
 * the project marks auto-accept), and where folders accepted without a directory go (INTO/<folder>).
 * INTO may not exist yet; it must not be a file.
 */
export async function setAutoAccept(options: {home: string; project?: string; enabled: boolean; into?: string}): Promise<{project: string; autoAccept: boolean; folderRoot: string}> {
  const project = await JoinedProject.find({home: options.home, project: options.project})
  const folderRoot = options.into === undefined ? undefined : resolve(options.into)
  if (folderRoot !== undefined && (await stat(folderRoot).catch(() => undefined))?.isDirectory() === false) throw new InvalidInputError(`${folderRoot} is not a directory`)
  const settings = await project.settings()
  const next = {...settings, autoAccept: options.enabled, ...(folderRoot === undefined ? {} : {folderRoot})}
  await project.saveSettings(next)
  return {project: project.name, autoAccept: options.enabled, folderRoot: next.folderRoot ?? join(homedir(), 'vidsync', project.name)}
}
