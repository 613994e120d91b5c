import {InvalidInputError} from './errors.js'

const secondsPerUnit: Record<string, number> = {s: 1, m: 60, h: 3600, d: 86_400, w: 604_800}

/**
 * The longest duration any flag takes: 50 years fits the control plane's 32-bit seconds and
 * nebula-cert's durations, so nothing further along fails with "value out of range".
 */
export const maxDurationSeconds = 50 * 365 * 86_400

/** Parses durations such as `90s`, `30m`, `24h`, `7d`, `1h30m` (or a bare number of seconds) into seconds. */
export function parseDuration(text: string, what = 'duration'): number {
  const trimmed = text.trim()
  const parts = /^\d+$/.test(trimmed) ? [[trimmed, trimmed, 's']] : [...trimmed.matchAll(/(\d+)([smhdw])/g)]
  if (parts.length === 0 || parts.map((part) => part[0]).join('') !== trimmed) {
    throw new InvalidInputError(`invalid ${what} "${text.slice(0, 80)}": use a number with a unit, such as 90s, 30m, 24h, 7d or 1h30m`)
  }
  const seconds = parts.reduce((total, [, amount, unit]) => total + Number(amount) * (secondsPerUnit[unit ?? 's'] ?? 1), 0)
  if (!(seconds <= maxDurationSeconds)) throw new InvalidInputError(`invalid ${what} "${text.slice(0, 80)}": at most 50 years (${maxDurationSeconds}s)`)
  return seconds
}

/** The inverse of parseDuration for display: 86400 -> "1d", 5400 -> "1h30m". */
export function formatDuration(seconds: number): string {
  if (seconds === 0) return '0s'
  let rest = seconds
  let text = ''
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = secondsPerUnit[unit] ?? 1
    if (rest >= size) {
      text += `${Math.floor(rest / size)}${unit}`
      rest %= size
    }
  }
  return text
}
