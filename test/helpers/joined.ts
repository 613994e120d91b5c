import type {BundleManifest} from '../../src/lib/bundle/manifest.js'

/** A PEM block of `label` around a placeholder body: for tests that never hand it to nebula. */
export const placeholderPem = (label: string, body = 'AAAA') => Buffer.from(`-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`)

/** A device's bundle manifest with the given fields replaced. */
export const sampleManifest = (fields: Partial<BundleManifest> = {}): BundleManifest => ({
  version: 1,
  project: 'films',
  cidr: '10.95.0.0/24',
  device: 'cutter',
  ip: '10.95.0.5',
  groups: [],
  lighthouse: false,
  fingerprint: 'a'.repeat(64),
  notAfter: '2030-01-01T00:00:00.000Z',
  operatorGeneratedKey: false,
  lighthouses: [{name: 'lh', ip: '10.95.0.1', endpoint: '192.0.2.1:4242', relay: true}],
  peers: [],
  blocklist: [],
  issuedAt: '2026-11-27T00:00:00.000Z',
  ...fields,
})

/** What JoinedProject.install takes, with placeholder PEMs (nothing runs nebula on them). */
export const placeholderBundle = (manifest: BundleManifest) => ({
  manifest,
  caPem: placeholderPem('NEBULA CERTIFICATE'),
  certPem: placeholderPem('NEBULA CERTIFICATE'),
  keyPem: placeholderPem('NEBULA X25519 PRIVATE KEY'),
})
