import {InvalidInputError} from '../errors.js'
import type {SyncthingClient} from '../syncthing/client.js'

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

/**
 * Sets this device's upload and download limits (undefined keeps one as it is) and makes them
 * apply to the overlay: Syncthing exempts peers at private (LAN) addresses unless limitBandwidthInLan.
 */
export async function setBandwidth(options: {client: SyncthingClient; up?: string; down?: string}): Promise<BandwidthLimits> {
  const fields = {
    ...(options.up === undefined ? {} : {maxSendKbps: parseRate(options.up, 'upload')}),
    ...(options.down === undefined ? {} : {maxRecvKbps: parseRate(options.down, 'download')}),
    limitBandwidthInLan: true,
  }
  await options.client.patchOptions(fields)
  const current = await options.client.options()
  return {upKiBps: Number(current.maxSendKbps ?? 0), downKiBps: Number(current.maxRecvKbps ?? 0), limitBandwidthInLan: current.limitBandwidthInLan === true}
}
