import {relativeTime} from '../output/time.js'

/** A device certificate is announced as expiring this long before its end. */
export const deviceWarnSeconds = 7 * 86_400

/** A CA is announced this long before its end: replacing it means a rotation, which takes a while. */
export const caWarnSeconds = 90 * 86_400

/** Where a certificate stands against its warning window. */
export interface Expiry {
  notAfter: string
  /** Seconds until notAfter (negative once expired). */
  secondsLeft: number
  expired: boolean
  /** Expired, or inside its warning window. */
  expiring: boolean
}

export function expiryOf(notAfter: string, warnSeconds: number, now: Date = new Date()): Expiry {
  const secondsLeft = Math.floor((Date.parse(notAfter) - now.getTime()) / 1000)
  return {notAfter, secondsLeft, expired: secondsLeft <= 0, expiring: secondsLeft <= warnSeconds}
}

/** "expired 2 days ago" or "expires in 5 days". */
export function expiryPhrase(expiry: Pick<Expiry, 'notAfter' | 'expired'>, now: Date = new Date()): string {
  return `${expiry.expired ? 'expired' : 'expires'} ${relativeTime(expiry.notAfter, now)}`
}

/** Whether `notAfter` (a device's certificate end, or null) falls within `seconds` from now. */
export function expiresWithin(notAfter: string | null, seconds: number, now: Date = new Date()): boolean {
  return notAfter !== null && Date.parse(notAfter) - now.getTime() <= seconds * 1000
}
