import {isIP} from 'node:net'

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
