import {basename} from 'node:path'

import type {BundleFiles} from '../bundle/bundle.js'
import {renderBundleReadme} from '../bundle/readme.js'
import {lighthousesFor, renderNebulaConfig} from '../nebula/config.js'
import type {DeviceRecord, ProjectNetwork} from '../store/control-plane.js'
import {parseEndpoint} from './endpoint.js'

/** vidsync.json: what `join` and the sync layer need to know, beside the Nebula files. */
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
  lighthouses: {name: string; ip: string; endpoint: string; relay: boolean}[]
  peers: {name: string; ip: string; syncthingId: string | null}[]
  issuedAt: string
}

export interface BundleInput {
  project: string
  network: ProjectNetwork
  /** The project's live devices, this one included. */
  devices: DeviceRecord[]
  device: DeviceRecord
  caCertPem: string
  certPem: string
  privateKeyPem?: string
  outPath: string
}

/** The files of one device's bundle, its nebula.yml built from the project's current state. */
export function bundleFiles(input: BundleInput): BundleFiles {
  const {device, network} = input
  const {lighthouses, relayIps} = lighthousesFor(network.lighthouses, device.name)
  const nebulaYml = renderNebulaConfig({
    cidr: network.cidr,
    lighthouses,
    amLighthouse: device.lighthouse,
    // A lighthouse listens where its public endpoint says; other devices take any free port.
    listenPort: device.lighthouse && device.endpoint ? parseEndpoint(device.endpoint).port : 0,
    blocklist: network.blocklist,
    relays: {
      useRelays: !device.relay,
      amRelay: device.relay,
      relayIps,
    },
  })
  const manifest: BundleManifest = {
    version: 1,
    project: input.project,
    cidr: network.cidr,
    device: device.name,
    ip: device.ip,
    groups: device.groups,
    lighthouse: device.lighthouse,
    fingerprint: device.fingerprint ?? '',
    notAfter: device.notAfter ?? '',
    operatorGeneratedKey: input.privateKeyPem !== undefined,
    lighthouses: network.lighthouses,
    peers: input.devices
      .filter((peer) => !peer.lighthouse && peer.name !== device.name && peer.status === 'active')
      .map((peer) => ({name: peer.name, ip: peer.ip, syncthingId: peer.syncthingId})),
    issuedAt: new Date().toISOString(),
  }
  return {
    'ca.crt': input.caCertPem,
    'node.crt': input.certPem,
    'nebula.yml': nebulaYml,
    'README.md': renderBundleReadme({
      project: input.project,
      device: device.name,
      overlayIp: device.ip,
      lighthouses,
      notAfter: manifest.notAfter,
      includesPrivateKey: manifest.operatorGeneratedKey,
      bundleName: basename(input.outPath),
    }),
    'vidsync.json': `${JSON.stringify(manifest, null, 2)}\n`,
    ...(input.privateKeyPem === undefined ? {} : {'node.key': input.privateKeyPem}),
  }
}
