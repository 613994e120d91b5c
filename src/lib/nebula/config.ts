import YAML from 'yaml'

import type {BundleManifest} from '../bundle/manifest.js'
import {parseEndpoint} from '../devices/endpoint.js'
import {InvalidInputError, ToolFailedError} from '../errors.js'
import {runTool, type Tools} from '../exec.js'
import {describeLogLine} from './log.js'

/** Syncthing's sync protocol port: the only service vidsync opens on the overlay besides ping. */
export const syncthingPort = 22000

export interface Lighthouse {
  overlayIp: string
  /** Public underlay addresses, "host:port". */
  endpoints: string[]
}

export interface NebulaConfigOptions {
  /**
   * Files the config references. Nebula resolves relative paths against its working directory,
   * so the defaults (ca.crt, node.crt, node.key) mean "next to nebula.yml" only when it runs there.
   */
  caPath?: string
  certPath?: string
  keyPath?: string
  lighthouses: Lighthouse[]
  amLighthouse?: boolean
  listenPort?: number
  /** The project's overlay network, e.g. 10.99.1.0/24. */
  cidr: string
  /** Fingerprints of revoked certificates. */
  blocklist?: string[]
  relays?: {useRelays: boolean; amRelay: boolean; relayIps: string[]}
  /** Tun device name; Nebula picks one when absent. */
  tunDev?: string
  /** Open the Syncthing port only to certificates carrying one of these groups, instead of the whole project. */
  syncGroups?: string[]
  /**
   * Reader pairs for tun and UDP (default 2). Above 1 is Linux-only: Nebula 1.6.1 fails to start
   * on macOS and Windows ("multiqueue not implemented"), and `nebula -test` does not notice.
   */
  routines?: number
}

function validate(options: NebulaConfigOptions): void {
  for (const fingerprint of options.blocklist ?? []) {
    // Nebula accepts any string here, so a typo would silently leave a revoked device in.
    if (!/^[0-9a-f]{64}$/.test(fingerprint)) throw new InvalidInputError(`invalid certificate fingerprint in blocklist: "${fingerprint}"`)
  }
  for (const endpoint of options.lighthouses.flatMap((lighthouse) => lighthouse.endpoints)) {
    if (!/^.+:\d{1,5}$/.test(endpoint)) throw new InvalidInputError(`invalid lighthouse endpoint "${endpoint}": expected HOST:PORT`)
  }
  if (options.amLighthouse && options.listenPort === 0) throw new InvalidInputError('a lighthouse needs a fixed listen port')
}

const defaultRelays = {useRelays: true, amRelay: false, relayIps: []}

/** The project's lighthouses as one node sees them: the others, with the relays among them. */
export function lighthousesFor(records: {name: string; ip: string; endpoint: string; relay: boolean}[], self?: string) {
  const others = records.filter((record) => record.name !== self)
  return {
    lighthouses: others.map((record): Lighthouse => ({overlayIp: record.ip, endpoints: [record.endpoint]})),
    relayIps: others.filter((record) => record.relay).map((record) => record.ip),
  }
}

/**
 * Where nebula.yml names the lighthouses: static_host_map, lighthouse.hosts and relay.relays. A
 * running nebula reloads all three on SIGHUP.
 */
export function lighthouseKeys(options: Pick<NebulaConfigOptions, 'lighthouses' | 'amLighthouse' | 'relays'>) {
  const relays = options.relays ?? defaultRelays
  return {
    staticHostMap: Object.fromEntries(options.lighthouses.map((lighthouse) => [lighthouse.overlayIp, lighthouse.endpoints])),
    // A lighthouse must not report to other lighthouses.
    hosts: options.amLighthouse ? [] : options.lighthouses.map((lighthouse) => lighthouse.overlayIp),
    // Nebula ignores `relays` on a relay, and says so in its log.
    relays: relays.amRelay ? [] : relays.relayIps,
  }
}

/** The nebula.yml of one node, for Nebula 1.6.1. */
export function renderNebulaConfig(options: NebulaConfigOptions): string {
  validate(options)
  const amLighthouse = options.amLighthouse ?? false
  const relays = options.relays ?? defaultRelays
  const named = lighthouseKeys(options)
  const syncRules = options.syncGroups?.length
    ? options.syncGroups.map((group) => ({port: syncthingPort, proto: 'tcp', group}))
    : [{port: syncthingPort, proto: 'tcp', cidr: options.cidr}]
  const config = {
    pki: {
      ca: options.caPath ?? 'ca.crt',
      cert: options.certPath ?? 'node.crt',
      key: options.keyPath ?? 'node.key',
      blocklist: options.blocklist ?? [],
      disconnect_invalid: true,
    },
    static_host_map: named.staticHostMap,
    lighthouse: {am_lighthouse: amLighthouse, interval: 60, hosts: named.hosts},
    listen: {host: '0.0.0.0', port: options.listenPort ?? 4242, read_buffer: 10_485_760, write_buffer: 10_485_760},
    punchy: {punch: true, respond: true},
    relay: {relays: named.relays, am_relay: relays.amRelay, use_relays: relays.useRelays},
    tun: {disabled: false, ...(options.tunDev ? {dev: options.tunDev} : {}), mtu: 1440, tx_queue: 1000},
    routines: options.routines ?? 2,
    logging: {level: 'info', format: 'text'},
    firewall: {
      conntrack: {tcp_timeout: '12m', udp_timeout: '3m', default_timeout: '10m'},
      outbound: [{port: 'any', proto: 'any', host: 'any'}],
      // Nebula's firewall denies whatever no rule allows.
      inbound: [{port: 'any', proto: 'icmp', host: 'any'}, ...syncRules],
    },
  }
  // Nebula parses YAML 1.1 (go-yaml v2): quote what 1.1 would read as a number or boolean.
  return YAML.stringify(config, {version: '1.1'})
}

/** What a device sets for itself: where its files are and how its OS runs the tun device. */
export type DeviceNebulaSettings = Pick<NebulaConfigOptions, 'caPath' | 'certPath' | 'keyPath' | 'tunDev' | 'routines'>

/**
 * The nebula.yml of the device a manifest describes. The one rendering shared by the operator
 * (the nebula.yml kept in bundles for older vidsync versions) and by devices, which render their
 * own from the manifest's data with their own settings: nothing else reaches the config, so no
 * bundle can open ports, routes, sshd, stats or admin interfaces.
 */
export function nebulaConfigFromManifest(manifest: BundleManifest, settings: DeviceNebulaSettings = {}): string {
  const {lighthouses, relayIps} = lighthousesFor(manifest.lighthouses, manifest.device)
  const self = manifest.lighthouses.find((lighthouse) => lighthouse.name === manifest.device)
  const amRelay = self?.relay ?? false
  return renderNebulaConfig({
    ...settings,
    cidr: manifest.cidr,
    lighthouses,
    amLighthouse: manifest.lighthouse,
    // A lighthouse listens where its public endpoint says; other devices take any free port.
    listenPort: manifest.lighthouse && self ? parseEndpoint(self.endpoint).port : 0,
    blocklist: manifest.blocklist,
    relays: {useRelays: !amRelay, amRelay, relayIps},
  })
}

/**
 * Runs `nebula -test`, which also loads the certificates and key the config references and
 * resolves hostnames in static_host_map. It does not flag unknown keys.
 */
export async function testNebulaConfig(options: {configPath: string; tools?: Tools}): Promise<void> {
  try {
    await runTool('nebula', ['-test', '-config', options.configPath], {tools: options.tools})
  } catch (error) {
    if (error instanceof ToolFailedError) {
      throw new InvalidInputError(`nebula rejects ${options.configPath}: ${describeLogLine(error.reason)}`)
    }
    throw error
  }
}
