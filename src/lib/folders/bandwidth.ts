import type {ManifestSyncLimits} from '../bundle/manifest.js'
import {InvalidInputError, NotFoundError} from '../errors.js'
import {type DeviceSettings, JoinedProject} from '../project/joined-project.js'
import type {ControlPlane} from '../store/control-plane.js'
import type {SyncthingClient} from '../syncthing/client.js'
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

/** A limit's source as people read it. */
export const limitFrom: Record<LimitSource, string> = {device: "this device's", project: "the project's default", none: 'no limit set'}

export interface EffectiveLimits extends BandwidthLimits {
  upFrom: LimitSource
  downFrom: LimitSource
}

type OwnLimits = NonNullable<DeviceSettings['limits']>

/** Per direction: this device's own limit, else the project's default, else none. */
export function effectiveLimits(own: OwnLimits, project: ManifestSyncLimits | undefined): DeviceLimits {
  const pick = (mine: number | undefined, theirs: number | null | undefined): [number, LimitSource] =>
    mine === undefined ? (theirs ? [theirs, 'project'] : [0, 'none']) : [mine, 'device']
  const [upKiBps, upFrom] = pick(own.upKiBps, project?.upKiBps)
  const [downKiBps, downFrom] = pick(own.downKiBps, project?.downKiBps)
  return {upKiBps, downKiBps, upFrom, downFrom}
}

/** Sets Syncthing's limits to `own` over the project's defaults (only what differs is written). */
async function applyLimits(client: SyncthingClient, own: OwnLimits, project: ManifestSyncLimits | undefined): Promise<EffectiveLimits> {
  const wanted = effectiveLimits(own, project)
  const current = await client.options()
  if (Number(current.maxSendKbps ?? 0) !== wanted.upKiBps || Number(current.maxRecvKbps ?? 0) !== wanted.downKiBps || current.limitBandwidthInLan !== true) {
    await client.patchOptions({maxSendKbps: wanted.upKiBps, maxRecvKbps: wanted.downKiBps, limitBandwidthInLan: true})
  }
  return {...wanted, limitBandwidthInLan: true}
}

/**
 * The reconcile loop's part: the project's default limits apply where this device set none of its
 * own. The first time, limits already set in Syncthing (`sync limit` before vidsync kept them) are
 * taken as the device's own. Undefined when there is nothing to manage (no default known, none set).
 */
export async function followProjectLimits(options: {client: SyncthingClient; project: JoinedProject}): Promise<EffectiveLimits | undefined> {
  const {client, project} = options
  const settings = await project.settings()
  let own = settings.limits
  if (own === undefined) {
    const current = await client.options()
    const up = Number(current.maxSendKbps ?? 0)
    const down = Number(current.maxRecvKbps ?? 0)
    own = {...(up > 0 ? {upKiBps: up} : {}), ...(down > 0 ? {downKiBps: down} : {})}
    if (project.manifest.syncLimits === undefined && Object.keys(own).length === 0) return undefined
    await project.saveSettings({...settings, limits: own})
  }
  return applyLimits(client, own, project.manifest.syncLimits)
}

/** A device's rate flag: a rate or none (this device's own), or "default" (the project's). */
const ownRate = (text: string, what: string): number | undefined => (text.trim().toLowerCase() === 'default' ? undefined : parseRate(text, what))

/**
 * `sync limit`: records this device's own limits in its joined project (`default` or `reset`
 * gives a direction back to the project's default) and applies them. Without a joined project
 * the limits go to Syncthing alone.
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
  await project?.saveSettings({...settings, limits: own})
  return applyLimits(options.client, own, project?.manifest.syncLimits)
}

/** The limits this device applies (KiB/s, 0: none) and where each comes from. */
export type DeviceLimits = Omit<EffectiveLimits, 'limitBandwidthInLan'>

/** The limits this device applies now and where each comes from (for `sync list`). */
export async function deviceLimits(project: JoinedProject): Promise<DeviceLimits> {
  return effectiveLimits((await project.settings()).limits ?? {}, project.manifest.syncLimits)
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
