import {PermissionError, ToolFailedError, UnavailableError} from '../errors.js'

const migrationBanner = '*** Database migration in progress ***'

/** Syncthing 2.0.3+ migrating a 1.x database: every path answers 200, text/plain, this banner and the log so far. */
const isMigrationPage = (response: Response, text: string) =>
  (response.headers.get('content-type') ?? '').startsWith('text/plain') && text.startsWith(migrationBanner)

/** Syncthing 2 is migrating its database from 1.x (minutes for large folders): wait, never stop it. */
export class SyncthingMigratingError extends UnavailableError {
  /** Its latest log line, e.g. "... INF Still migrating folder (folder=abcd-1234 files=120000 ...)". */
  readonly progress: string
  constructor(url: string, page: string) {
    const progress = page.slice(migrationBanner.length).trim().split('\n').at(-1)?.trim() ?? ''
    super(`Syncthing at ${url} is migrating its database to 2.x: wait until it finishes${progress ? ` (${progress})` : ''}`, {
      hint: 'this can take minutes for large folders; do not stop Syncthing meanwhile',
    })
    this.progress = progress
  }
}

/** Syncthing's JSON shapes (v1.19), with the fields vidsync reads; the rest is kept as it came. */
export interface DeviceConfig {
  deviceID: string
  name: string
  addresses: string[]
  allowedNetworks: string[]
  [field: string]: unknown
}

export interface FolderDevice {
  deviceID: string
  [field: string]: unknown
}

export type FolderType = 'sendreceive' | 'sendonly' | 'receiveonly'

export interface FolderConfig {
  id: string
  label: string
  path: string
  type: FolderType | 'receiveencrypted'
  devices: FolderDevice[]
  paused: boolean
  versioning: {type: string; params: Record<string, string>; [field: string]: unknown}
  [field: string]: unknown
}

export interface OptionsConfig {
  listenAddresses: string[]
  globalAnnounceEnabled: boolean
  localAnnounceEnabled: boolean
  relaysEnabled: boolean
  natEnabled: boolean
  urAccepted: number
  crashReportingEnabled: boolean
  autoUpgradeIntervalH: number
  startBrowser: boolean
  [field: string]: unknown
}

export interface SyncthingConfig {
  version: number
  folders: FolderConfig[]
  devices: DeviceConfig[]
  options: OptionsConfig
  [field: string]: unknown
}

export interface SystemStatus {
  myID: string
  /** Per listen address; `error` is set when Syncthing cannot listen there. */
  connectionServiceStatus: Record<string, {error: string | null; lanAddresses: string[]}>
  [field: string]: unknown
}

/** Devices that tried to connect but are not configured, by device ID; `address` is "IP:port". */
export type PendingDevices = Record<string, {time: string; name: string; address: string}>

/** Folders that devices offer and this device has not added, by folder ID (/rest/cluster/pending/folders). */
export type PendingFolders = Record<string, {offeredBy: Record<string, {time: string; label: string; receiveEncrypted?: boolean; remoteEncrypted?: boolean}>}>

export interface ConnectionStats {
  connected: boolean
  paused: boolean
  address: string
  clientVersion: string
  type: string
  inBytesTotal: number
  outBytesTotal: number
}

export interface Connections {
  connections: Record<string, ConnectionStats>
  total: {at: string; inBytesTotal: number; outBytesTotal: number}
}

export interface Completion {
  completion: number
  globalBytes: number
  needBytes: number
  globalItems: number
  needItems: number
  needDeletes: number
}

export interface FolderStatus {
  state: string
  globalBytes: number
  needBytes: number
  inSyncBytes: number
  pullErrors: number
  error?: string
  [field: string]: unknown
}

export interface SyncthingEvent {
  id: number
  type: string
  time: string
  data: unknown
}

export interface SyncthingClientOptions {
  /** GUI/API address, e.g. http://127.0.0.1:8384 */
  url: string
  apiKey: string
  timeoutMs?: number
}

/** Network errors by their cause code, in words. */
const unreachableReasons: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'unknown host',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
}

/** The one client of Syncthing's REST API: typed calls, a bounded time per call, typed errors. */
export class SyncthingClient {
  readonly url: string
  // Private so that it never shows up when the client is logged or serialised.
  readonly #apiKey: string
  readonly #timeoutMs: number

  constructor(options: SyncthingClientOptions) {
    this.url = options.url.replace(/\/+$/, '')
    this.#apiKey = options.apiKey
    this.#timeoutMs = options.timeoutMs ?? 10_000
  }

  async ping(): Promise<void> {
    await this.request('GET', '/rest/system/ping')
  }

  /** Asks Syncthing to exit cleanly (POST /rest/system/shutdown). */
  async shutdown(): Promise<void> {
    await this.request('POST', '/rest/system/shutdown')
  }

  status(): Promise<SystemStatus> {
    return this.request('GET', '/rest/system/status')
  }

  config(): Promise<SyncthingConfig> {
    return this.request('GET', '/rest/config')
  }

  devices(): Promise<DeviceConfig[]> {
    return this.request('GET', '/rest/config/devices')
  }

  /** Undefined when Syncthing does not know the device. */
  device(deviceId: string): Promise<DeviceConfig | undefined> {
    return this.request('GET', `/rest/config/devices/${encodeURIComponent(deviceId)}`, undefined, {missingOk: true})
  }

  /** Adds or replaces a device; fields left out get Syncthing's defaults. */
  async putDevice(device: Partial<DeviceConfig> & {deviceID: string}): Promise<void> {
    await this.request('PUT', `/rest/config/devices/${encodeURIComponent(device.deviceID)}`, device)
  }

  /** Changes only the given fields of an existing device (arrays are replaced, not extended). */
  async patchDevice(deviceId: string, fields: Partial<DeviceConfig>): Promise<void> {
    await this.request('PATCH', `/rest/config/devices/${encodeURIComponent(deviceId)}`, fields)
  }

  async deleteDevice(deviceId: string): Promise<void> {
    await this.request('DELETE', `/rest/config/devices/${encodeURIComponent(deviceId)}`)
  }

  folders(): Promise<FolderConfig[]> {
    return this.request('GET', '/rest/config/folders')
  }

  /** Undefined when there is no folder with this ID. */
  folder(folderId: string): Promise<FolderConfig | undefined> {
    return this.request('GET', `/rest/config/folders/${encodeURIComponent(folderId)}`, undefined, {missingOk: true})
  }

  /** Adds or replaces a folder; fields left out get Syncthing's defaults. */
  async putFolder(folder: Partial<FolderConfig> & {id: string}): Promise<void> {
    await this.request('PUT', `/rest/config/folders/${encodeURIComponent(folder.id)}`, folder)
  }

  async patchFolder(folderId: string, fields: Partial<FolderConfig>): Promise<void> {
    await this.request('PATCH', `/rest/config/folders/${encodeURIComponent(folderId)}`, fields)
  }

  async deleteFolder(folderId: string): Promise<void> {
    await this.request('DELETE', `/rest/config/folders/${encodeURIComponent(folderId)}`)
  }

  options(): Promise<OptionsConfig> {
    return this.request('GET', '/rest/config/options')
  }

  async patchOptions(fields: Partial<OptionsConfig>): Promise<void> {
    await this.request('PATCH', '/rest/config/options', fields)
  }

  pendingDevices(): Promise<PendingDevices> {
    return this.request('GET', '/rest/cluster/pending/devices')
  }

  pendingFolders(): Promise<PendingFolders> {
    return this.request('GET', '/rest/cluster/pending/folders')
  }

  /** Undoes the local changes of a receive-only folder (POST /rest/db/revert). */
  async revert(folderId: string): Promise<void> {
    await this.request('POST', `/rest/db/revert?${new URLSearchParams({folder: folderId})}`)
  }

  connections(): Promise<Connections> {
    return this.request('GET', '/rest/system/connections')
  }

  /** How complete `folder` is on `device` (this device when absent). Costly for Syncthing: call sparingly. */
  completion(folderId: string, deviceId?: string): Promise<Completion> {
    const query = new URLSearchParams({folder: folderId, ...(deviceId === undefined ? {} : {device: deviceId})})
    return this.request('GET', `/rest/db/completion?${query}`)
  }

  folderStatus(folderId: string): Promise<FolderStatus> {
    return this.request('GET', `/rest/db/status?${new URLSearchParams({folder: folderId})}`)
  }

  /** Events after `since`; long-polls up to `timeoutS` seconds when there are none yet (or until `signal` aborts). */
  events(options: {since?: number; limit?: number; timeoutS?: number; types?: string[]; signal?: AbortSignal} = {}): Promise<SyncthingEvent[]> {
    const timeoutS = options.timeoutS ?? 5
    const query = new URLSearchParams({since: String(options.since ?? 0), timeout: String(timeoutS)})
    if (options.limit !== undefined) query.set('limit', String(options.limit))
    if (options.types?.length) query.set('events', options.types.join(','))
    return this.request('GET', `/rest/events?${query}`, undefined, {timeoutMs: timeoutS * 1000 + this.#timeoutMs, signal: options.signal})
  }

  private async request<T>(
    method: string,
    path: string,
    body?: unknown,
    options: {missingOk?: boolean; timeoutMs?: number; signal?: AbortSignal} = {},
  ): Promise<T> {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs
    let response: Response
    let text: string
    try {
      response = await fetch(`${this.url}${path}`, {
        method,
        headers: {'X-API-Key': this.#apiKey, ...(body === undefined ? {} : {'Content-Type': 'application/json'})},
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: options.signal ? AbortSignal.any([AbortSignal.timeout(timeoutMs), options.signal]) : AbortSignal.timeout(timeoutMs),
      })
      // Inside the try: a long-poll (/rest/events) sends its headers at once and waits in the body.
      text = await response.text()
    } catch (error) {
      throw this.unreachable(error, timeoutMs)
    }
    if (response.ok && isMigrationPage(response, text)) throw new SyncthingMigratingError(this.url, text)
    if (response.ok) return (text === '' ? undefined : JSON.parse(text)) as T
    if (response.status === 404 && options.missingOk) return undefined as T
    if (response.status === 401 || response.status === 403) {
      throw new PermissionError(
        `Syncthing at ${this.url} rejected the API key: set the key from its config.xml (<gui><apikey>) in VIDSYNC_SYNCTHING_API_KEY`,
        {hint: 'or pass it with --api-key'},
      )
    }
    const reason = text.trim().split('\n')[0] || response.statusText
    throw new ToolFailedError(`Syncthing refused ${method} ${path.split('?')[0]}: ${reason} (HTTP ${response.status})`, reason)
  }

  private unreachable(error: unknown, timeoutMs: number): UnavailableError {
    const name = (error as Error).name
    const cause = (error as {cause?: NodeJS.ErrnoException}).cause
    const reason =
      name === 'TimeoutError' || name === 'AbortError'
        ? `no answer within ${timeoutMs / 1000}s`
        : (unreachableReasons[cause?.code ?? ''] ?? cause?.code ?? cause?.message ?? (error as Error).message)
    return new UnavailableError(`cannot reach Syncthing at ${this.url} (${reason}): is it running? start it with \`vidsync sync up\``)
  }
}
