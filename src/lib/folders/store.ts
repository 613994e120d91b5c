import {InvalidInputError} from '../errors.js'
import type {ControlPlane} from '../store/control-plane.js'

/** Access of a device to a project folder. */
export const accessModes = ['send-receive', 'send-only', 'receive-only', 'none'] as const
export type AccessMode = (typeof accessModes)[number]

/** A project folder's name: as the control plane's folders.name check. */
export const folderNamePattern = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/
/** A project folder's stable ID. */
export const folderIdPattern = /^[0-9a-f]{12}$/

/** Refuses a bad folder name in one line, before anything is written (exit 2). */
export function checkFolderName(name: string): string {
  if (!folderNamePattern.test(name)) {
    const shown = name.length > 64 ? `${name.slice(0, 64)}...` : name
    throw new InvalidInputError(
      `invalid folder name "${shown}": use 1-63 lowercase letters, digits and hyphens (no slashes, spaces or accents), starting and ending with a letter or digit`,
    )
  }
  return name
}

export interface AccessRule {
  kind: 'group' | 'device'
  subject: string
  mode: AccessMode
}

/** A project folder as the operator sees it. */
export interface ProjectFolder {
  project: string
  /** Stable ID; Syncthing's folder ID on every device is `<project>.<id>`. */
  id: string
  name: string
  autoAccept: boolean
  /** Access of devices no rule names. */
  defaultMode: AccessMode
  access: AccessRule[]
  /** The device that created it, null when the operator did. */
  createdBy: string | null
  createdAt: string
}

/** A project folder as one device sees it: its own access and its peers'. */
export interface DeviceFolder {
  id: string
  name: string
  autoAccept: boolean
  mode: AccessMode
  devices: {name: string; mode: AccessMode}[]
  /** The latest size (bytes) a device sharing it reported; absent when none has. */
  sizeBytes?: number
}

interface FolderRow {
  project: string
  folder_id: string
  name: string
  auto_accept: boolean
  default_mode: AccessMode
  access: AccessRule[]
  created_by: string | null
  created_at: Date | string
}

interface DeviceFolderRow {
  folder_id: string
  name: string
  auto_accept: boolean
  mode: AccessMode
  devices: {name: string; mode: AccessMode}[]
}

const toFolder = (row: FolderRow): ProjectFolder => ({
  project: row.project,
  id: row.folder_id,
  name: row.name,
  autoAccept: row.auto_accept,
  defaultMode: row.default_mode,
  access: row.access,
  createdBy: row.created_by,
  createdAt: new Date(row.created_at).toISOString(),
})

const toDeviceFolder = (row: DeviceFolderRow): DeviceFolder => ({
  id: row.folder_id,
  name: row.name,
  autoAccept: row.auto_accept,
  mode: row.mode,
  devices: row.devices,
})

const one = <R>(rows: R[], fn: string): R => {
  const [row] = rows
  if (!row) throw new Error(`${fn} returned no row`)
  return row
}

export async function createFolder(controlPlane: ControlPlane, options: {project: string; name: string; autoAccept?: boolean; defaultMode?: AccessMode}): Promise<ProjectFolder> {
  checkFolderName(options.name)
  const rows = await controlPlane.rpc.call<FolderRow>('create_folder', {
    p_project: options.project,
    p_name: options.name,
    p_auto_accept: options.autoAccept ?? false,
    p_default_mode: options.defaultMode ?? 'send-receive',
  })
  return toFolder(one(rows, 'create_folder'))
}

export async function listProjectFolders(controlPlane: ControlPlane, options: {project: string}): Promise<ProjectFolder[]> {
  return (await controlPlane.rpc.call<FolderRow>('list_folders', {p_project: options.project})).map(toFolder)
}

export async function removeProjectFolder(controlPlane: ControlPlane, options: {project: string; name: string}): Promise<{project: string; id: string; name: string}> {
  const row = one(await controlPlane.rpc.call<{project: string; folder_id: string; name: string}>('remove_folder', {p_project: options.project, p_name: options.name}), 'remove_folder')
  return {project: row.project, id: row.folder_id, name: row.name}
}

export interface SetAccessOptions {
  project: string
  name: string
  /** Whose access: a group, a device, or the folder's default for devices no rule names. */
  target: {group: string} | {device: string} | {default: true}
  /** undefined removes the rule. */
  mode?: AccessMode
}

export async function setFolderAccess(controlPlane: ControlPlane, options: SetAccessOptions): Promise<ProjectFolder> {
  const [kind, subject] = 'group' in options.target ? ['group', options.target.group] : 'device' in options.target ? ['device', options.target.device] : ['default', undefined]
  const rows = await controlPlane.rpc.call<FolderRow>('set_folder_access', {p_project: options.project, p_name: options.name, p_kind: kind, p_subject: subject ?? null, p_mode: options.mode ?? null})
  return toFolder(one(rows, 'set_folder_access'))
}

/** The project's folders with this device's access, for its bundle (operator side). */
export async function foldersForDevice(controlPlane: ControlPlane, options: {project: string; device: string}): Promise<DeviceFolder[]> {
  return (await controlPlane.rpc.call<DeviceFolderRow>('device_folders_for', {p_project: options.project, p_device: options.device})).map(toDeviceFolder)
}

/** Device side, by its token: the project's folders with this device's access. */
export async function deviceFolders(controlPlane: ControlPlane, options: {token: string}): Promise<DeviceFolder[]> {
  return (await controlPlane.rpc.call<DeviceFolderRow>('device_folders', {p_token: options.token})).map(toDeviceFolder)
}

/** Device side: creates the project folder `name` (or finds it) and returns it. */
export async function deviceCreateFolder(controlPlane: ControlPlane, options: {token: string; name: string}): Promise<DeviceFolder> {
  checkFolderName(options.name)
  return toDeviceFolder(one(await controlPlane.rpc.call<DeviceFolderRow>('device_create_folder', {p_token: options.token, p_name: options.name}), 'device_create_folder'))
}

/** What the control plane tells a project's devices about its folders: default limits and latest sizes. */
export interface FolderSettings {
  /** The project's default limits in KiB/s (Syncthing's unit); null: no default in that direction. */
  syncLimits: {upKiBps: number | null; downKiBps: number | null}
  /** The latest size (bytes) a device sharing each folder reported, by folder ID. */
  sizes: Record<string, number>
}

interface FolderSettingsRow {
  sync_up_kibps: number | null
  sync_down_kibps: number | null
  sizes: Record<string, number | string>
}

const toFolderSettings = (row: FolderSettingsRow): FolderSettings => ({
  syncLimits: {upKiBps: row.sync_up_kibps, downKiBps: row.sync_down_kibps},
  sizes: Object.fromEntries(Object.entries(row.sizes).map(([id, bytes]) => [id, Number(bytes)])),
})

/** Operator side: the project's default limits and folder sizes (for bundles and `project set`). */
export async function projectFolderSettings(controlPlane: ControlPlane, options: {project: string}): Promise<FolderSettings> {
  return toFolderSettings(one(await controlPlane.rpc.call<FolderSettingsRow>('project_folder_settings', {p_project: options.project}), 'project_folder_settings'))
}

/** Operator side: sets both default limits (KiB/s; null: none in that direction). */
export async function setProjectSyncLimits(controlPlane: ControlPlane, options: {project: string; upKiBps: number | null; downKiBps: number | null}): Promise<FolderSettings> {
  const rows = await controlPlane.rpc.call<FolderSettingsRow>('set_project_sync_limits', {p_project: options.project, p_up: options.upKiBps, p_down: options.downKiBps})
  return toFolderSettings(one(rows, 'set_project_sync_limits'))
}

/** Device side, by its token: reports the sizes of the folders it shares (by folder ID) and reads the project's settings. */
export async function deviceFolderReport(controlPlane: ControlPlane, options: {token: string; sizes: Record<string, number>}): Promise<FolderSettings> {
  return toFolderSettings(one(await controlPlane.rpc.call<FolderSettingsRow>('device_folder_report', {p_token: options.token, p_sizes: options.sizes}), 'device_folder_report'))
}

/** The folders with the latest size reported for each (where one was). */
export const withSizes = (folders: DeviceFolder[], sizes: Record<string, number>): DeviceFolder[] =>
  folders.map((folder) => (sizes[folder.id] === undefined ? folder : {...folder, sizeBytes: sizes[folder.id]}))

/** What a device's bundle says about folders (embedded backend): its folders with their sizes, and the project's default limits. */
export async function bundleFolders(controlPlane: ControlPlane, options: {project: string; device: string}): Promise<{folders: DeviceFolder[]; syncLimits: FolderSettings['syncLimits']}> {
  const settings = await projectFolderSettings(controlPlane, {project: options.project})
  return {folders: withSizes(await foldersForDevice(controlPlane, options), settings.sizes), syncLimits: settings.syncLimits}
}
