import {basename} from 'node:path'

import type {BundleFiles} from '../bundle/bundle.js'
import {type BundleManifest, type ManifestFolder, type ManifestSyncLimits, serializeManifest} from '../bundle/manifest.js'
import {renderBundleReadme} from '../bundle/readme.js'
import {lighthousesFor, nebulaConfigFromManifest} from '../nebula/config.js'
import type {ProjectTrust} from '../pki/rotation.js'
import type {DeviceRecord, ProjectNetwork} from '../store/control-plane.js'
import type {CertVersion} from '../versions/capabilities.js'

export interface BundleInput {
  project: string
  network: ProjectNetwork
  /** The project's live devices, this one included. */
  devices: DeviceRecord[]
  device: DeviceRecord
  /** The CAs the project trusts (ca.crt) and the endorsements of the newer ones. */
  trust: ProjectTrust
  certPem: string
  /** The certificate format, so the bundle's README can say which nebula the device needs. */
  certVersion: CertVersion
  privateKeyPem?: string
  outPath: string
  /** The project's folders with this device's access (absent: the manifest lists none). */
  folders?: ManifestFolder[]
  /** The project's default bandwidth limits (absent: the manifest names none). */
  syncLimits?: ManifestSyncLimits
}

/**
 * The files of one device's bundle: the project's current state as data in vidsync.json, from
 * which devices render their own nebula.yml. The bundle's nebula.yml, the same rendering with
 * neutral device settings, is only for vidsync versions that installed it as it was.
 */
export function bundleFiles(input: BundleInput): BundleFiles {
  const {device, network} = input
  const {lighthouses} = lighthousesFor(network.lighthouses, device.name)
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
    blocklist: network.blocklist,
    ...(input.folders === undefined ? {} : {folders: input.folders}),
    ...(input.syncLimits === undefined ? {} : {syncLimits: input.syncLimits}),
    ...(input.trust.endorsements.length === 0 ? {} : {caEndorsements: input.trust.endorsements}),
    issuedAt: new Date().toISOString(),
  }
  return {
    'ca.crt': input.trust.pem,
    'node.crt': input.certPem,
    'nebula.yml': nebulaConfigFromManifest(manifest),
    'README.md': renderBundleReadme({
      project: input.project,
      device: device.name,
      overlayIp: device.ip,
      lighthouses,
      notAfter: manifest.notAfter,
      certVersion: input.certVersion,
      includesPrivateKey: manifest.operatorGeneratedKey,
      bundleName: basename(input.outPath),
    }),
    'vidsync.json': serializeManifest(manifest),
    ...(input.privateKeyPem === undefined ? {} : {'node.key': input.privateKeyPem}),
  }
}
