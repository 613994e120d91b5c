import {isIPv4} from 'node:net'

import YAML from 'yaml'

import {parseEndpoint} from '../devices/endpoint.js'
import {InvalidInputError} from '../errors.js'
import {type CaEndorsement, isEndorsement} from '../pki/endorse.js'

/** A lighthouse of the project, as the control plane lists it. */
export interface ManifestLighthouse {
  name: string
  ip: string
  /** Its public underlay address, HOST:PORT. */
  endpoint: string
  relay: boolean
}

export interface ManifestPeer {
  name: string
  ip: string
  syncthingId: string | null
}

/** A project folder as this device sees it: its access and its peers'. */
export interface ManifestFolder {
  /** Stable ID: Syncthing's folder ID is `<project>.<id>` on every device. */
  id: string
  name: string
  /** Devices accept it on their own into ~/vidsync/<project>/<name>. */
  autoAccept: boolean
  mode: 'send-receive' | 'send-only' | 'receive-only' | 'none'
  devices: {name: string; mode: ManifestFolder['mode']}[]
  /** The latest size (bytes) a device sharing it reported; absent when none has. */
  sizeBytes?: number
}

/** The project's default bandwidth limits in KiB/s (Syncthing's unit); null: none in that direction. */
export interface ManifestSyncLimits {
  upKiBps: number | null
  downKiBps: number | null
}

/**
 * vidsync.json: the data a bundle carries besides the certificates. A device renders its own
 * nebula.yml from this and nothing else, so it holds no configuration, only facts about the project.
 */
export interface BundleManifest {
  version: 1
  project: string
  cidr: string
  device: string
  ip: string
  groups: string[]
  lighthouse: boolean
  fingerprint: string
  notAfter: string
  operatorGeneratedKey: boolean
  lighthouses: ManifestLighthouse[]
  peers: ManifestPeer[]
  /** Fingerprints of the project's revoked certificates. */
  blocklist: string[]
  /** The project's folders; absent in bundles made before vidsync had project folders. */
  folders?: ManifestFolder[]
  /** The project's default limits, for devices that set none of their own; absent in older bundles. */
  syncLimits?: ManifestSyncLimits
  /** During a CA rotation: each newer CA of ca.crt endorsed by its predecessor; absent otherwise. */
  caEndorsements?: CaEndorsement[]
  issuedAt: string
}

const namePattern = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/
const groupPattern = /^[a-z0-9][a-z0-9_-]{0,62}$/
const fingerprintPattern = /^[0-9a-f]{64}$/
const folderIdPattern = /^[0-9a-f]{12}$/
const modes = new Set(['send-receive', 'send-only', 'receive-only', 'none'])
const syncthingIdPattern = /^[A-Z2-7]{7}(-[A-Z2-7]{7}){7}$/
// The bounds keep a hostile manifest from making a device render or print megabytes.
const maxListLength = 4096

/** Parses IPv4 "a.b.c.d" to a number, or undefined. */
function ipv4Number(ip: string): number | undefined {
  if (!isIPv4(ip)) return undefined
  return ip.split('.').reduce((value, octet) => value * 256 + Number(octet), 0)
}

/** Whether `ip` lies inside `cidr` (IPv4). */
export function cidrContains(cidr: string, ip: string): boolean {
  const [base = '', bitsText = ''] = cidr.split('/')
  const bits = Number(bitsText)
  const network = ipv4Number(base)
  const address = ipv4Number(ip)
  if (network === undefined || address === undefined || !Number.isInteger(bits) || bits < 8 || bits > 30) return false
  const size = 2 ** (32 - bits)
  return Math.floor(address / size) === Math.floor(network / size)
}

function isEndpoint(text: string): boolean {
  try {
    return parseEndpoint(text) !== undefined && text === text.trim()
  } catch {
    return false
  }
}

class ManifestProblem extends Error {}

function check(ok: boolean, what: string): void {
  if (!ok) throw new ManifestProblem(what)
}

const isString = (value: unknown): value is string => typeof value === 'string'
const isWhole = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0

function list(value: unknown, what: string): unknown[] {
  check(Array.isArray(value) && value.length <= maxListLength, `${what} is not a list`)
  return value as unknown[]
}

function record(value: unknown, what: string): Record<string, unknown> {
  check(typeof value === 'object' && value !== null && !Array.isArray(value), `${what} is not an object`)
  return value as Record<string, unknown>
}

function name(value: unknown, what: string): string {
  check(isString(value) && namePattern.test(value), `${what} is not a valid name`)
  return value as string
}

function overlayIp(value: unknown, cidr: string, what: string): string {
  check(isString(value) && cidrContains(cidr, value), `${what} is not an address in ${cidr}`)
  return value as string
}

function date(value: unknown, what: string, optional = false): string {
  if (optional && value === '') return ''
  check(isString(value) && value.length <= 40 && !Number.isNaN(Date.parse(value)), `${what} is not a date`)
  return value as string
}

/**
 * The blocklist of bundles made before manifests carried one, read from their nebula.yml. Only
 * that field: nothing else of a bundle's config reaches the device.
 */
export function legacyBlocklist(nebulaYml: string | undefined): unknown {
  if (nebulaYml === undefined) return []
  // maxAliasCount bounds "billion laughs" alias expansion; a bad file is simply not a blocklist.
  const doc = YAML.parseDocument(nebulaYml, {version: '1.1', uniqueKeys: false})
  if (doc.errors.length > 0) throw new ManifestProblem('its nebula.yml is not valid YAML')
  let config: unknown
  try {
    config = doc.toJS({maxAliasCount: 100})
  } catch {
    throw new ManifestProblem('its nebula.yml expands too many aliases')
  }
  if (config === null || config === undefined) return []
  if (typeof config !== 'object' || Array.isArray(config)) throw new ManifestProblem('its nebula.yml is not a mapping')
  const {pki} = config as {pki?: unknown}
  const blocklist = typeof pki === 'object' && pki !== null ? (pki as {blocklist?: unknown}).blocklist : undefined
  return blocklist ?? []
}

function validate(raw: unknown, nebulaYml: string | undefined): BundleManifest {
  const input = record(raw, 'vidsync.json')
  check(input.version === 1, 'its version is not 1')
  const project = name(input.project, 'project')
  check(isString(input.cidr) && /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(input.cidr) && cidrContains(input.cidr, input.cidr.split('/')[0] ?? ''), 'cidr is not a network')
  const cidr = input.cidr as string
  const lighthouses = list(input.lighthouses, 'lighthouses').map((entry, index) => {
    const lighthouse = record(entry, `lighthouses[${index}]`)
    const endpoint = lighthouse.endpoint
    check(isString(endpoint) && isEndpoint(endpoint), `lighthouses[${index}].endpoint is not HOST:PORT`)
    check(typeof lighthouse.relay === 'boolean', `lighthouses[${index}].relay is not true or false`)
    return {
      name: name(lighthouse.name, `lighthouses[${index}].name`),
      ip: overlayIp(lighthouse.ip, cidr, `lighthouses[${index}].ip`),
      endpoint: endpoint as string,
      relay: lighthouse.relay as boolean,
    }
  })
  const peers = list(input.peers, 'peers').map((entry, index) => {
    const peer = record(entry, `peers[${index}]`)
    check(peer.syncthingId === null || (isString(peer.syncthingId) && syncthingIdPattern.test(peer.syncthingId)), `peers[${index}].syncthingId is not a Syncthing device ID`)
    return {name: name(peer.name, `peers[${index}].name`), ip: overlayIp(peer.ip, cidr, `peers[${index}].ip`), syncthingId: peer.syncthingId as string | null}
  })
  const blocklist = list(input.blocklist ?? legacyBlocklist(nebulaYml), 'blocklist').map((entry, index) => {
    check(isString(entry) && fingerprintPattern.test(entry), `blocklist[${index}] is not a certificate fingerprint`)
    return entry as string
  })
  const groups = list(input.groups, 'groups').map((entry, index) => {
    check(isString(entry) && groupPattern.test(entry), `groups[${index}] is not a valid group`)
    return entry as string
  })
  const folders = input.folders === undefined ? undefined : list(input.folders, 'folders').map((entry, index) => {
    const folder = record(entry, `folders[${index}]`)
    check(isString(folder.id) && folderIdPattern.test(folder.id), `folders[${index}].id is not a folder ID`)
    check(typeof folder.autoAccept === 'boolean', `folders[${index}].autoAccept is not true or false`)
    check(isString(folder.mode) && modes.has(folder.mode), `folders[${index}].mode is not an access mode`)
    const devices = list(folder.devices, `folders[${index}].devices`).map((device, at) => {
      const item = record(device, `folders[${index}].devices[${at}]`)
      check(isString(item.mode) && modes.has(item.mode), `folders[${index}].devices[${at}].mode is not an access mode`)
      return {name: name(item.name, `folders[${index}].devices[${at}].name`), mode: item.mode as ManifestFolder['mode']}
    })
    check(folder.sizeBytes === undefined || isWhole(folder.sizeBytes), `folders[${index}].sizeBytes is not a number of bytes`)
    const size = folder.sizeBytes === undefined ? {} : {sizeBytes: folder.sizeBytes as number}
    return {id: folder.id as string, name: name(folder.name, `folders[${index}].name`), autoAccept: folder.autoAccept as boolean, mode: folder.mode as ManifestFolder['mode'], devices, ...size}
  })
  const limits = input.syncLimits === undefined ? undefined : record(input.syncLimits, 'syncLimits')
  const limit = (value: unknown, what: string) => {
    check(value === null || isWhole(value), `syncLimits.${what} is not a rate in KiB/s`)
    return value as number | null
  }
  const syncLimits = limits === undefined ? undefined : {upKiBps: limit(limits.upKiBps, 'upKiBps'), downKiBps: limit(limits.downKiBps, 'downKiBps')}
  const caEndorsements = input.caEndorsements === undefined ? undefined : list(input.caEndorsements, 'caEndorsements').map((entry, index) => {
    check(isEndorsement(entry) && Object.keys(entry).length === 3, `caEndorsements[${index}] is not a CA endorsement`)
    const {ca, endorser, signature} = entry as CaEndorsement
    return {ca, endorser, signature}
  })
  check(typeof input.lighthouse === 'boolean' && typeof input.operatorGeneratedKey === 'boolean', 'lighthouse or operatorGeneratedKey is not true or false')
  check(isString(input.fingerprint) && (input.fingerprint === '' || fingerprintPattern.test(input.fingerprint)), 'fingerprint is not a certificate fingerprint')
  return {
    version: 1,
    project,
    cidr,
    device: name(input.device, 'device'),
    ip: overlayIp(input.ip, cidr, 'ip'),
    groups,
    lighthouse: input.lighthouse as boolean,
    fingerprint: input.fingerprint as string,
    notAfter: date(input.notAfter, 'notAfter', true),
    operatorGeneratedKey: input.operatorGeneratedKey as boolean,
    lighthouses,
    peers,
    blocklist,
    ...(folders === undefined ? {} : {folders}),
    ...(syncLimits === undefined ? {} : {syncLimits}),
    ...(caEndorsements === undefined ? {} : {caEndorsements}),
    issuedAt: date(input.issuedAt, 'issuedAt'),
  }
}

/**
 * Reads and checks a vidsync.json: every field typed and in range (names, addresses inside the
 * project's network, fingerprints), so nothing hostile is rendered into nebula.yml or printed.
 * `nebulaYml` is the config of an older bundle, read only for its blocklist.
 */
export function parseManifest(
  raw: Buffer | string | undefined,
  origin: string,
  nebulaYml?: string,
  remedy = 'ask the operator for a new bundle',
): BundleManifest {
  let parsed: unknown
  try {
    parsed = JSON.parse(raw?.toString() ?? '')
  } catch {
    throw new InvalidInputError(`${origin} has an unreadable vidsync.json: ${remedy}`)
  }
  try {
    return validate(parsed, nebulaYml)
  } catch (error) {
    if (!(error instanceof ManifestProblem)) throw error
    throw new InvalidInputError(`${origin} has an invalid vidsync.json (${error.message}): ${remedy}`)
  }
}

/** The manifest as vidsync writes it. */
export const serializeManifest = (manifest: BundleManifest): string => `${JSON.stringify(manifest, null, 2)}\n`
