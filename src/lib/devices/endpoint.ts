import {lookup} from 'node:dns/promises'
import {isIP} from 'node:net'
import {setTimeout as sleep} from 'node:timers/promises'

import {InvalidInputError} from '../errors.js'

export interface Endpoint {
  host: string
  port: number
}

const hostnamePattern = /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/

/** Parses a lighthouse's public underlay address: `host:port` or `[ipv6]:port`. */
export function parseEndpoint(text: string): Endpoint {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(text.trim())
  if (!match) {
    throw new InvalidInputError(`invalid endpoint "${text}": expected HOST:PORT, such as lighthouse.example.org:4242 or 192.0.2.1:4242`)
  }
  const [, bracketed, plain, portText] = match
  const host = bracketed ?? plain ?? ''
  const port = Number(portText)
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new InvalidInputError(`invalid port in endpoint "${text}": expected 1 to 65535`)
  }
  const validHost = bracketed ? isIP(host) === 6 : isIP(host) === 4 || (!/^[\d.]+$/.test(host) && hostnamePattern.test(host))
  if (!validHost) throw new InvalidInputError(`invalid host "${host}" in endpoint "${text}": expected an IP address or a DNS name`)
  return {host, port}
}

export const formatEndpoint = ({host, port}: Endpoint): string => (isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`)

export interface ResolveCheckOptions {
  /** How long to wait for the resolver. */
  timeoutMs?: number
  /** The resolver; the system's (getaddrinfo, as nebula uses) by default. */
  lookup?: (host: string) => Promise<unknown>
}

/**
 * Devices look a lighthouse's host name up when nebula starts: a name that does not resolve here
 * probably does not resolve there either. Returns why, or undefined when it resolves (or is an IP).
 */
export async function endpointResolveProblem(text: string, options: ResolveCheckOptions = {}): Promise<string | undefined> {
  const {host} = parseEndpoint(text)
  if (isIP(host)) return undefined
  const timeoutMs = options.timeoutMs ?? 5000
  const resolve = options.lookup ?? ((name: string) => lookup(name))
  const timer = new AbortController()
  try {
    await Promise.race([
      resolve(host),
      sleep(timeoutMs, undefined, {signal: timer.signal}).then(() => Promise.reject(new Error(`no answer within ${timeoutMs / 1000} s`))),
    ])
    return undefined
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? (error as Error).message
    return `${host} does not resolve on this machine (${reason}): devices need it to find the lighthouse; check its DNS record, or give its IP address`
  } finally {
    timer.abort()
  }
}
