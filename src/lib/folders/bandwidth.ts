import type {ManifestSyncLimits} from '../bundle/manifest.js'
import {InvalidInputError, NotFoundError} from '../errors.js'
import {type DeviceSettings, JoinedProject, joinedProjectNames, projectDir} from '../project/joined-project.js'
import type {ControlPlane} from '../store/control-plane.js'
import type {OptionsConfig, SyncthingClient} from '../syncthing/client.js'
import {projectFolderSettings, setProjectSyncLimits} from './store.js'

const bitUnits: Record<string, number> = {kbit: 1e3, mbit: 1e6, gbit: 1e9}

/**
 * A rate such as "50mbit", "1.5gbit" or "800kbit" in Syncthing's unit, KiB/s (its maxSendKbps
 * and maxRecvKbps count 1024-byte units per second); "0" or "none" is no limit.
 */
export function parseRate(text: string, what: string): number {
  const trimmed = text.trim().toLowerCase()
  if (trimmed === '0' || trimmed === 'none') return 0
  const match = /^(\d+(?:\.\d+)?)\s*(kbit|mbit|gbit)$/.exec(trimmed)
  const bitsPerSecond = match ? Number(match[1]) * (bitUnits[match[2] ?? ''] ?? 0) : Number.NaN
  if (!Number.isFinite(bitsPerSecond) || bitsPerSecond <= 0 || bitsPerSecond > 1e12) {
    throw new InvalidInputError(`invalid ${what} rate "${text.slice(0, 40)}": expected a number with kbit, mbit or gbit (per second), such as 50mbit, or none`)
  }
  return Math.max(1, Math.round(bitsPerSecond / 8 / 1024))
}

/** KiB/s back to a rate as people write it. */
export function formatRate(kibPerSecond: number): string {
  if (kibPerSecond === 0) return 'none'
  const bits = kibPerSecond * 1024 * 8
  return bits >= 1e9 ? `${(bits / 1e9).toFixed(2)}gbit` : bits >= 1e6 ? `${(bits / 1e6).toFixed(1)}mbit` : `${Math.round(bits / 1e3)}kbit`
}

export interface BandwidthLimits {
  /** KiB/s, 0 when unlimited. */
  upKiBps: number
  downKiBps: number
  /** Syncthing applies limits to LAN peers too: the overlay's addresses are private, so without it no limit would hold. */
  limitBandwidthInLan: boolean
}

/** Where a limit comes from: this device's own, the project's default, or neither (no limit). */
export type LimitSource = 'device' | 'project' | 'none'

/** One project's limits on this device (KiB/s, 0: none) and where each comes from. */
export interface ProjectLimits {
  upKiBps: number
  downKiBps: number
  upFrom: LimitSource
  downFrom: LimitSource
}

/**
 * The limits Syncthing applies. They are Syncthing-wide, and one Syncthing serves every project
 * joined here: per direction the smallest of the joined projects' limits holds (a project without
 * one constrains nothing), and `upProject`/`downProject` name the project it comes from (null: none).
 */
export interface DeviceLimits extends ProjectLimits {
  upProject: string | null
  downProject: string | null
}

export interface EffectiveLimits extends DeviceLimits, BandwidthLimits {}

type OwnLimits = NonNullable<DeviceSettings['limits']>

/** Per direction: this device's own limit, else the project's default, else none. */
export function effectiveLimits(own: OwnLimits, project: ManifestSyncLimits | undefined): ProjectLimits {
  const pick = (mine: number | undefined, theirs: number | null | undefined): [number, LimitSource] =>
    mine === undefined ? (theirs ? [theirs, 'project'] : [0, 'none']) : [mine, 'device']
  const [upKiBps, upFrom] = pick(own.upKiBps, project?.upKiBps)
  const [downKiBps, downFrom] = pick(own.downKiBps, project?.downKiBps)
  return {upKiBps, downKiBps, upFrom, downFrom}
}

/** Every project joined in `home` that opens (a broken one is skipped: it cannot be synced either). */
async function joinedProjects(home: string): Promise<JoinedProject[]> {
  const opened = await Promise.all((await joinedProjectNames(home)).map((name) => JoinedProject.open(projectDir(home, name)).catch(() => undefined)))
  return opened.filter((project) => project !== undefined)
}

/** Per direction the smallest limit of the joined projects (names sorted: a tie goes to the first), as Syncthing must apply it. */
export async function deviceLimits(home: string): Promise<DeviceLimits> {
  const result: DeviceLimits = {upKiBps: 0, downKiBps: 0, upFrom: 'none', downFrom: 'none', upProject: null, downProject: null}
  for (const project of await joinedProjects(home)) {
    const limits = effectiveLimits((await project.settings()).limits ?? {}, project.manifest.syncLimits)
    if (limits.upKiBps > 0 && (result.upKiBps === 0 || limits.upKiBps < result.upKiBps)) Object.assign(result, {upKiBps: limits.upKiBps, upFrom: limits.upFrom, upProject: project.name})
    if (limits.downKiBps > 0 && (result.downKiBps === 0 || limits.downKiBps < result.downKiBps)) Object.assign(result, {downKiBps: limits.downKiBps, downFrom: limits.downFrom, downProject: project.name})
  }
  return result
}

/** One direction as people read it: "8.0mbit (project films's default)". */
export function describeLimit(limits: DeviceLimits, direction: 'up' | 'down'): string {
  const [rate, from, project] = direction === 'up' ? [limits.upKiBps, limits.upFrom, limits.upProject] : [limits.downKiBps, limits.downFrom, limits.downProject]
  const source = from === 'none' || project === null ? 'no limit set' : from === 'device' ? `this device's for project ${project}` : `project ${project}'s default`
  return `${formatRate(rate)} (${source})`
}

/** Sets Syncthing's limits to what the joined projects' settings and defaults make them (only what differs is written). */
async function applyLimits(client: SyncthingClient, home: string): Promise<EffectiveLimits> {
  const wanted = await deviceLimits(home)
  const current = await client.options()
  if (Number(current.maxSendKbps ?? 0) !== wanted.upKiBps || Number(current.maxRecvKbps ?? 0) !== wanted.downKiBps || current.limitBandwidthInLan !== true) {
    await client.patchOptions({maxSendKbps: wanted.upKiBps, maxRecvKbps: wanted.downKiBps, limitBandwidthInLan: true})
  }
  return {...wanted, limitBandwidthInLan: true}
}

/**
 * The reconcile loop's part: the project's default limits apply where this device set none of its
 * own, and Syncthing gets the smallest of all joined projects' limits. The first time, limits
 * already set in Syncthing (`sync limit` before vidsync kept them) are taken as this project's own,
 * unless another joined project keeps limits (then they are that project's). Undefined when there
 * is nothing to manage (no default known, none set).
 */
export async function followProjectLimits(options: {client: SyncthingClient; home: string; project: JoinedProject}): Promise<EffectiveLimits | undefined> {
  const {client, home, project} = options
  const settings = await project.settings()
  if (settings.limits === undefined) {
    const others = (await joinedProjects(home)).filter((other) => other.name !== project.name)
    const othersKeepLimits = (await Promise.all(others.map(async (other) => (await other.settings()).limits !== undefined))).includes(true)
    const current: Partial<OptionsConfig> = othersKeepLimits ? {} : await client.options()
    const up = Number(current.maxSendKbps ?? 0)
    const down = Number(current.maxRecvKbps ?? 0)
    const own = {...(up > 0 ? {upKiBps: up} : {}), ...(down > 0 ? {downKiBps: down} : {})}
    if (project.manifest.syncLimits === undefined && Object.keys(own).length === 0 && !othersKeepLimits) return undefined
    await project.saveSettings({...settings, limits: own})
  }
  return applyLimits(client, home)
}

/** A device's rate flag: a rate or none (this device's own), or "default" (the project's). */
const ownRate = (text: string, what: string): number | undefined => (text.trim().toLowerCase() === 'default' ? undefined : parseRate(text, what))

/**
 * `sync limit`: records this device's own limits in its joined project (`default` or `reset`
 * gives a direction back to the project's default) and applies the smallest of all joined
 * projects' limits. Without a joined project the limits go to Syncthing alone.
 */
export async function setDeviceLimits(options: {client: SyncthingClient; home: string; project?: string; up?: string; down?: string; reset?: boolean}): Promise<EffectiveLimits> {
  const project = await JoinedProject.find({home: options.home, project: options.project}).catch((error: unknown) => {
    if (error instanceof NotFoundError && options.project === undefined) return undefined
    throw error
  })
  const settings = (await project?.settings()) ?? {}
  const own: OwnLimits = options.reset ? {} : {...settings.limits}
  for (const [key, text, what] of [['upKiBps', options.up, 'upload'], ['downKiBps', options.down, 'download']] as const) {
    if (text === undefined) continue
    const rate = ownRate(text, what)
    if (rate === undefined && !project) throw new InvalidInputError(`no project is joined here: there is no project default for the ${what} limit`)
    if (rate === undefined) delete own[key]
    else own[key] = rate
  }
  if (!project) {
    const limits = effectiveLimits(own, undefined)
    await options.client.patchOptions({maxSendKbps: limits.upKiBps, maxRecvKbps: limits.downKiBps, limitBandwidthInLan: true})
    return {...limits, upProject: null, downProject: null, limitBandwidthInLan: true}
  }
  await project.saveSettings({...settings, limits: own})
  return applyLimits(options.client, options.home)
}

/** Operator: the project's default limits for devices without their own ("none" or "default": no default). Unnamed directions keep theirs. */
export async function setProjectLimits(controlPlane: ControlPlane, options: {project: string; up?: string; down?: string}): Promise<ManifestSyncLimits> {
  const current = (await projectFolderSettings(controlPlane, {project: options.project})).syncLimits
  const rate = (text: string | undefined, what: string, kept: number | null) =>
    text === undefined ? kept : ['none', 'default'].includes(text.trim().toLowerCase()) ? null : parseRate(text, what)
  const upKiBps = rate(options.up, 'upload', current.upKiBps)
  const downKiBps = rate(options.down, 'download', current.downKiBps)
  return (await setProjectSyncLimits(controlPlane, {project: options.project, upKiBps, downKiBps})).syncLimits
}
