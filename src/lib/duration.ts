import {InvalidInputError} from './errors.js'

const secondsPerUnit: Record<string, number> = {s: 1, m: 60, h: 3600, d: 86_400, w: 604_800}

/** Parses durations such as `90s`, `30m`, `24h`, `7d`, `1h30m` (or a bare number of seconds) into seconds. */
export function parseDuration(text: string, what = 'duration'): number {
  const trimmed = text.trim()
  if (/^\d+$/.test(trimmed)) return Number.parseInt(trimmed, 10)
  const parts = [...trimmed.matchAll(/(\d+)([smhdw])/g)]
  if (parts.length === 0 || parts.map((part) => part[0]).join('') !== trimmed) {
    throw new InvalidInputError(`invalid ${what} "${text}": use a number with a unit, such as 90s, 30m, 24h, 7d or 1h30m`)
  }
  return parts.reduce((total, [, amount, unit]) => total + Number(amount) * (secondsPerUnit[unit ?? 's'] ?? 1), 0)
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
