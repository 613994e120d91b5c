import semver from 'semver'

/**
 * What each supported release line of nebula and Syncthing can do, read from upstream's source at
 * the release tags (slackhq/nebula cmd/nebula-cert/*.go, cert/cert_v*.go, handshake_ix.go,
 * logging/; syncthing/syncthing cmd/syncthing/main.go, cmd/syncthing/generate, internal/slogutil).
 * vidsync picks flags, certificate versions and parsers from these rows, never from an error text.
 */

export type CertVersion = 1 | 2

export interface NebulaCapabilities {
  /** Certificate versions this nebula (and its nebula-cert) can create and use. */
  certVersions: CertVersion[]
  /** `nebula-cert print -json`: one object per line (to 1.9), or one JSON array (1.10+, print.go). */
  printJson: 'object-per-line' | 'array'
  /** How `nebula-cert sign` takes the overlay address: `-ip` (to 1.9) or `-networks` (1.10+, -ip deprecated). */
  networksFlag: '-ip' | '-networks'
  /** `nebula-cert ca/sign -version N` exists (1.10+; `ca` defaults to 2 there). */
  certVersionFlag: boolean
  /** nebula's log: logrus (to 1.10) or log/slog (1.11+, logging/logger.go); text or JSON either way. */
  log: 'logrus' | 'slog'
  /** The handshake log names the peer `vpnIp=10.0.0.1` (to 1.9) or `vpnAddrs=[10.0.0.1]` (1.10+). */
  handshakePeerField: 'vpnIp' | 'vpnAddrs'
}

export interface SyncthingCapabilities {
  /** Query that prints the long version: `--version` (1.x, 2.0.3+) or only the `version` subcommand (2.0.0-2.0.2). */
  versionArgs: string[]
  /** Extra `generate` flags; the rest goes through `generateEnv`, which every line reads. */
  generateArgs: string[]
  /**
   * STNODEFAULTFOLDER: 1.x `generate`/`serve` (cmdutil/options_common.go); 2.x has no default folder.
   * STNOPORTPROBING: 2.x (`--no-port-probing`); 1.x has only the `--skip-port-probing` flag.
   */
  generateEnv: Record<string, string>
  /** `serve` flags beyond the common ones: 1.x log line flags (2.x keeps `--logflags` as a no-op). */
  serveArgs: string[]
  /** Log lines: `2006/01/02 15:04:05 INFO: msg` (1.x, --logflags=3) or `2006-01-02 15:04:05 INF msg (k=v)` (2.x slog). */
  log: 'v1' | 'slog'
  /** On first start after an upgrade from 1.x, 2.x migrates its database; from 2.0.3 a temporary API answers meanwhile. */
  migratesDatabase: boolean
  migrationApi: boolean
}

interface Row<T> {
  range: string
  capabilities: T
}

const nebulaV1Only: NebulaCapabilities = {
  certVersions: [1],
  printJson: 'object-per-line',
  networksFlag: '-ip',
  certVersionFlag: false,
  log: 'logrus',
  handshakePeerField: 'vpnIp',
}
const nebula110: NebulaCapabilities = {
  certVersions: [1, 2],
  printJson: 'array',
  networksFlag: '-networks',
  certVersionFlag: true,
  log: 'logrus',
  handshakePeerField: 'vpnAddrs',
}

export const nebulaTable: Row<NebulaCapabilities>[] = [
  {range: '>=1.6.0 <1.10.0', capabilities: nebulaV1Only},
  {range: '>=1.10.0 <1.11.0', capabilities: nebula110},
  {range: '>=1.11.0 <1.12.0', capabilities: {...nebula110, log: 'slog'}},
]

const syncthing2: SyncthingCapabilities = {
  versionArgs: ['--version'],
  generateArgs: [],
  generateEnv: {STNOPORTPROBING: '1'},
  serveArgs: [],
  log: 'slog',
  migratesDatabase: true,
  migrationApi: true,
}

export const syncthingTable: Row<SyncthingCapabilities>[] = [
  {
    range: '>=1.19.0 <2.0.0',
    capabilities: {
      versionArgs: ['--version'],
      generateArgs: ['--skip-port-probing'],
      generateEnv: {STNODEFAULTFOLDER: '1'},
      serveArgs: ['--logflags=3'],
      log: 'v1',
      migratesDatabase: false,
      migrationApi: false,
    },
  },
  {range: '>=2.0.0 <2.0.3', capabilities: {...syncthing2, versionArgs: ['version'], migrationApi: false}},
  {range: '>=2.0.3 <3.0.0', capabilities: syncthing2},
]

/** The oldest and newest supported release, for messages. */
export const supported = {nebula: '1.6 to 1.11', syncthing: '1.19 to 2.x'} as const

/** The capabilities of `version` (x.y.z), or undefined when that release is outside the table. */
export function lookup<T>(table: Row<T>[], version: string): T | undefined {
  return table.find((row) => semver.satisfies(version, row.range, {includePrerelease: true}))?.capabilities
}

/** The oldest nebula release that can use certificates of `version`. */
export function minimumNebulaFor(version: CertVersion): string {
  const row = nebulaTable.find((candidate) => candidate.capabilities.certVersions.includes(version))
  return semver.minVersion(row?.range ?? '>=1.6.0')?.version ?? '1.6.0'
}

/** "nebula 1.10.0 or newer": what a project issuing `version` certificates needs on every device. */
export function nebulaNeededFor(version: CertVersion): string {
  return `nebula ${minimumNebulaFor(version)} or newer`
}
