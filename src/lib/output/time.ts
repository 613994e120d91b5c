import {formatDistanceStrict} from 'date-fns'

const dayMs = 86_400_000

/** "in 364 days", "3 hours ago": days up to about two years, then years; hours and minutes within a day. */
export function relativeTime(when: Date | string, now: Date = new Date()): string {
  const date = new Date(when)
  const distanceMs = Math.abs(date.getTime() - now.getTime())
  const unit = distanceMs < dayMs || distanceMs > 2 * 365 * dayMs ? undefined : 'day'
  return formatDistanceStrict(date, now, {addSuffix: true, unit, roundingMethod: 'floor'})
}

/** A timestamp for people: the date and time in UTC, then how far off it is ("2027-11-26 14:03 UTC, in 364 days"). */
export function formatWhen(when: Date | string | null | undefined, now: Date = new Date()): string {
  if (when === null || when === undefined) return '-'
  const date = new Date(when)
  if (Number.isNaN(date.getTime())) return String(when)
  return `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC, ${relativeTime(date, now)}`
}
