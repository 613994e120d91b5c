import {randomBytes} from 'node:crypto'
import {open, readFile, rm, stat} from 'node:fs/promises'
import {createServer} from 'node:net'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {ConflictError, InvalidInputError, NotFoundError, ToolFailedError, UnavailableError} from '../errors.js'
import {identityText, isAlive, readIdentity, runTool, startDaemon, stopProcess, type Tools} from '../exec.js'
import {currentPlatform} from '../platform/index.js'
import {ensureDir, writeFileAtomic} from '../files.js'
import {syncthingPort} from '../nebula/config.js'
import {pollUntil} from '../poll.js'
import {SyncthingClient, SyncthingMigratingError} from './client.js'
import {deviceIdFromCertPem} from './device-id.js'
import {syncthingCapabilities} from '../versions/detect.js'

export const defaultGuiPort = 8384
export const defaultListenAddress = `tcp://0.0.0.0:${syncthingPort}`

/** The managed instance's files: Syncthing's own home (config, keys, database) plus ours. */
export function managedPaths(vidsyncHome: string) {
  const dir = join(vidsyncHome, 'syncthing')
  return {
    dir,
    config: join(dir, 'config.xml'),
    apiKey: join(dir, 'apikey'),
    pid: join(dir, 'syncthing.pid'),
    log: join(dir, 'syncthing.log'),
  }
}

/**
 * Options forced on the managed instance: the Nebula overlay finds peers and crosses NATs, so
 * Syncthing must not announce itself, use relays or open router ports, and it must not phone home.
 */
const safeOptions: Record<string, string> = {
  globalAnnounceEnabled: 'false',
  localAnnounceEnabled: 'false',
  relaysEnabled: 'false',
  natEnabled: 'false',
  urAccepted: '-1', // usage reporting declined
  crashReportingEnabled: 'false',
  autoUpgradeIntervalH: '0',
  startBrowser: 'false',
}

// config.xml is edited as text: Syncthing writes one element per line and no XML library is a
// dependency. Only elements directly inside <options> and <gui> are touched.
const escapeXml = (value: string) => value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const unescapeXml = (value: string) => value.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')

function section(xml: string, name: string): {start: number; body: string} {
  const match = new RegExp(`<${name}\\b[^>]*>([\\s\\S]*?)</${name}>`).exec(xml)
  if (!match) throw new InvalidInputError(`Syncthing's config.xml has no <${name}> section`)
  return {start: match.index + match[0].indexOf('>') + 1, body: match[1] ?? ''}
}

/** The text of every `<element>` in `<sectionName>`. */
export function readConfigValues(xml: string, sectionName: string, element: string): string[] {
  const {body} = section(xml, sectionName)
  return [...body.matchAll(new RegExp(`<${element}>([^<]*)</${element}>`, 'g'))].map((match) => unescapeXml(match[1] ?? ''))
}

/** Replaces every `<element>` in `<sectionName>` with one element per value, where the first one was. */
function setConfigValues(xml: string, sectionName: string, element: string, values: string[]): string {
  const {start, body} = section(xml, sectionName)
  const indent = /\n([ \t]+)</.exec(body)?.[1] ?? '    '
  const lines = values.map((value) => `${indent}<${element}>${escapeXml(value)}</${element}>\n`).join('')
  let placed = false
  let next = body.replace(new RegExp(`[ \\t]*<${element}(?:\\s[^>]*)?(?:/>|>[^<]*</${element}>)\\n?`, 'g'), () => {
    if (placed) return ''
    placed = true
    return lines
  })
  if (!placed) {
    const cut = next.lastIndexOf('\n') + 1
    next = next.slice(0, cut) + lines + next.slice(cut)
  }
  return xml.slice(0, start) + next + xml.slice(start + body.length)
}

function validateListenAddress(address: string): {host: string; port: number} {
  const match = /^tcp:\/\/(\[[0-9a-fA-F:.]+\]|[^:/[\]]+):(\d{1,5})$/.exec(address)
  const port = Number(match?.[2])
  if (!match?.[1] || port < 1 || port > 65535) {
    throw new InvalidInputError(`invalid listen address "${address}": expected tcp://IP:PORT, e.g. tcp://10.99.1.5:${syncthingPort}`)
  }
  return {host: match[1].replace(/^\[|\]$/g, ''), port}
}

function validateGuiPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InvalidInputError(`invalid GUI port ${port}: expected 1-65535`)
}

/**
 * `syncthing generate` for this release: no default folder, and no port probing (the ports are
 * ours to set afterwards, not Syncthing's to pick). Environment where every line reads it, the
 * flag where only the flag exists (1.x's --skip-port-probing).
 */
async function generateCommand(dir: string, tools?: Tools): Promise<{args: string[]; env: Record<string, string>}> {
  const {capabilities} = await syncthingCapabilities(tools)
  return {args: ['generate', `--home=${dir}`, ...capabilities.generateArgs], env: capabilities.generateEnv}
}

/** `syncthing serve` for this release: no browser, no restart loop, and 1.x's log line flags. */
async function serveArgs(dir: string, tools?: Tools): Promise<string[]> {
  const {capabilities} = await syncthingCapabilities(tools)
  return ['serve', '--home', dir, '--no-browser', '--no-restart', ...capabilities.serveArgs]
}

export interface ManagedConfigOptions {
  vidsyncHome: string
  /** [default: the port already configured, 8384 on first use] */
  guiPort?: number
  /** [default: the addresses already configured, tcp://0.0.0.0:22000 on first use] */
  listenAddresses?: string[]
  tools?: Tools
}

export interface ManagedConfig {
  configPath: string
  url: string
  apiKey: string
  guiAddress: string
  listenAddresses: string[]
}

/** Reads the managed instance's API address and key; NotFoundError when it was never set up. */
export async function readManagedConfig(vidsyncHome: string): Promise<ManagedConfig> {
  const paths = managedPaths(vidsyncHome)
  const xml = await readFile(paths.config, 'utf8').catch(() => undefined)
  if (xml === undefined) {
    throw new NotFoundError(`no vidsync-managed Syncthing in ${vidsyncHome}: start one with \`vidsync sync up\``, {hint: 'or use your own Syncthing with --syncthing-url'})
  }
  const guiAddress = readConfigValues(xml, 'gui', 'address')[0] ?? `127.0.0.1:${defaultGuiPort}`
  return {
    configPath: paths.config,
    url: `http://${guiAddress}`,
    apiKey: readConfigValues(xml, 'gui', 'apikey')[0] ?? '',
    guiAddress,
    listenAddresses: readConfigValues(xml, 'options', 'listenAddress'),
  }
}

/**
 * Creates (first time: keys via `syncthing generate`) or updates the managed config.xml while
 * Syncthing is stopped: safe options, GUI/API on loopback only, and an API key that is also
 * stored in `<home>/syncthing/apikey` (0600).
 */
export async function writeManagedConfig(options: ManagedConfigOptions): Promise<ManagedConfig> {
  if (options.guiPort !== undefined) validateGuiPort(options.guiPort)
  options.listenAddresses?.forEach(validateListenAddress)
  if (options.listenAddresses?.length === 0) throw new InvalidInputError('at least one listen address is needed')
  const paths = managedPaths(options.vidsyncHome)
  await ensureDir(paths.dir, {private: true})
  let xml = await readFile(paths.config, 'utf8').catch(() => undefined)
  const firstUse = xml === undefined
  if (xml === undefined) {
    const generate = await generateCommand(paths.dir, options.tools)
    await runTool('syncthing', generate.args, {tools: options.tools, env: generate.env})
    xml = await readFile(paths.config, 'utf8')
  }
  for (const [name, value] of Object.entries(safeOptions)) xml = setConfigValues(xml, 'options', name, [value])
  if (options.listenAddresses || firstUse) {
    xml = setConfigValues(xml, 'options', 'listenAddress', options.listenAddresses ?? [defaultListenAddress])
  }
  if (options.guiPort !== undefined || firstUse) {
    xml = setConfigValues(xml, 'gui', 'address', [`127.0.0.1:${options.guiPort ?? defaultGuiPort}`])
  }
  // Keep the key across restarts: scripts and the user's own tools may hold it.
  const apiKey = (firstUse ? undefined : readConfigValues(xml, 'gui', 'apikey')[0]) || randomBytes(24).toString('base64url')
  xml = setConfigValues(xml, 'gui', 'apikey', [apiKey])
  await writeFileAtomic(paths.config, xml, 0o600)
  await writeFileAtomic(paths.apiKey, `${apiKey}\n`, 0o600)
  return readManagedConfig(options.vidsyncHome)
}

/** Fails with a clear error when `host:port` cannot be bound (taken, or an address this machine lacks). */
async function assertCanListen(host: string, port: number, what: string, hint: string): Promise<void> {
  const server = createServer()
  const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    server.once('error', resolve)
    server.listen({host, port, exclusive: true}, () => resolve(undefined))
  })
  await new Promise((resolve) => server.close(resolve))
  if (error?.code === 'EADDRINUSE') throw new ConflictError(`${what} ${host}:${port} is already in use (another Syncthing?): stop it`, {hint})
  if (error?.code === 'EADDRNOTAVAIL') {
    throw new InvalidInputError(`${what} ${host}:${port} cannot be used: ${host} is not an address of this machine (is the Nebula overlay up?)`)
  }
  if (error) throw new InvalidInputError(`${what} ${host}:${port} cannot be used: ${error.message}`)
}

/**
 * The PID of the running managed instance (the process recorded at start, same start time). A
 * stale pid file is removed: its process is gone, its PID now names another process, or it holds
 * no start time (empty, or a PID alone as older vidsync wrote it) and so proves nothing.
 */
async function runningPid(vidsyncHome: string): Promise<number | undefined> {
  const paths = managedPaths(vidsyncHome)
  const identity = await readIdentity(paths.pid)
  if (identity && (await currentPlatform().isRunning(identity))) return identity.pid
  await rm(paths.pid, {force: true})
  return undefined
}

/** The lines Syncthing logged since `offset`. */
async function logSince(logPath: string, offset: number): Promise<string[]> {
  const handle = await open(logPath, 'r').catch(() => undefined)
  if (!handle) return []
  try {
    const {size} = await handle.stat()
    const buffer = Buffer.alloc(Math.max(0, size - offset))
    await handle.read(buffer, 0, buffer.length, offset)
    return buffer.toString().split('\n').filter((line) => line.trim() !== '')
  } finally {
    await handle.close()
  }
}

/**
 * Syncthing's own reason from the log lines it wrote since `offset`, in 1.x's format
 * (`2006/01/02 15:04:05 WARNING: Starting API/GUI: listen tcp ...: address already in use`) or
 * 2.x's (`2006-01-02 15:04:05 ERR Failed to start API (error="listen tcp ..." log.pkg=api)`).
 */
async function reasonFromLog(logPath: string, offset: number): Promise<string> {
  const lines = await logSince(logPath, offset)
  const important = lines.filter((line) => /\b(WARNING|FATAL|ERROR|WRN|ERR)\b|^panic:/.test(line)).at(-1) ?? lines.at(-1) ?? ''
  return important.replace(/^.*?\b(?:WARNING|FATAL|ERROR|INFO|WRN|ERR|INF):? /, '').trim()
}

/** Syncthing 2's migration of a 1.x database, as it logs it (lib/syncthing/utils.go TryMigrateDatabase). */
const migrationLine = /Migrating old-style database|Still migrating folder|Migrated folder|Migrating virtual mtimes|temporary GUI\/API during migration/

export interface StartupWait {
  /** How long to wait for the API to answer [default: 30 s]. */
  startTimeoutMs?: number
  /** How long a database migration (first start of Syncthing 2 after 1.x) may take [default: 2 h]. */
  migrationTimeoutMs?: number
  /** Called with Syncthing's latest migration line while it migrates its database. */
  onProgress?: (line: string) => void
}

type StartupState = 'ready' | 'exited' | 'timeout' | 'migrating'

/**
 * Waits (bounded) until the API answers; stops early with 'exited' when the process is gone.
 * While Syncthing 2 migrates its database (its temporary API answers every path with a text page,
 * or, before 2.0.3, its log says so) the bound is the migration's, and it is never interrupted.
 */
async function waitForApi(
  client: SyncthingClient,
  wait: StartupWait & {logPath: string; logOffset: number},
  exited: () => boolean,
): Promise<StartupState> {
  let deadline = Date.now() + (wait.startTimeoutMs ?? 30_000)
  let migrating = false
  let reported: string | undefined
  const progress = (line: string) => {
    if (!migrating) deadline = Math.max(deadline, Date.now() + (wait.migrationTimeoutMs ?? 2 * 3600_000))
    migrating = true
    if (line !== reported) wait.onProgress?.(line)
    reported = line
  }
  while (Date.now() < deadline) {
    if (exited()) return 'exited'
    try {
      await client.ping()
      return 'ready'
    } catch (error) {
      if (error instanceof SyncthingMigratingError) progress(error.progress)
      else if (error instanceof UnavailableError) {
        // Before 2.0.3 (and for 5 s from 2.0.16) no API answers meanwhile: its latest log line tells.
        const last = (await logSince(wait.logPath, wait.logOffset)).at(-1)
        if (last !== undefined && migrationLine.test(last)) progress(last)
      } else throw error
    }
    await sleep(migrating ? 1000 : 200)
  }
  return migrating ? 'migrating' : 'timeout'
}

function stillMigrating(pid: number, logPath: string): UnavailableError {
  return new UnavailableError(`Syncthing (pid ${pid}) is still migrating its database to 2.x; it keeps running (log: ${logPath})`, {
    hint: 'run the command again when the migration has finished',
  })
}

/** Syncthing keeps running when it cannot listen for peers, and says why in its status. */
async function listenErrors(client: SyncthingClient, listenAddresses: string[], timeoutMs = 5000): Promise<string[]> {
  let services: Awaited<ReturnType<SyncthingClient['status']>>['connectionServiceStatus'] = {}
  const listening = async () => {
    services = (await client.status()).connectionServiceStatus
    return listenAddresses.every((address) => services[address])
  }
  await pollUntil(listening, {timeoutMs, intervalMs: 200, onTimeout: () => false})
  return listenAddresses.flatMap((address) => {
    const error = services[address]?.error
    return error ? [`${address}: ${error}`] : []
  })
}

/**
 * This device's Syncthing ID, which the operator records at registration so that peers can
 * share with it. Sets the managed instance up (without starting it) the first time.
 */
export async function syncthingDeviceId(options: {vidsyncHome: string; tools?: Tools}): Promise<string> {
  const paths = managedPaths(options.vidsyncHome)
  await readManagedConfig(options.vidsyncHome).catch(() => writeManagedConfig(options))
  // From cert.pem, as Syncthing computes it: `--device-id` (1.x) became `device-id` (2.x).
  return deviceIdFromCertPem(await readFile(join(paths.dir, 'cert.pem')))
}

export interface StartManagedOptions extends ManagedConfigOptions, StartupWait {
  /** Keep running after vidsync exits. */
  detached?: boolean
}

export interface ManagedSyncthing {
  url: string
  /** For REST calls; never print it. */
  apiKey: string
  deviceId: string
  pid: number
  /** True when an instance was already running for this home and was reused. */
  adopted: boolean
  listenAddresses: string[]
  logPath: string
  /** Settles when the instance ends; only for an instance started here and not detached. */
  exited?: Promise<{exitCode?: number; signal?: string}>
}

/**
 * Starts the vidsync-managed Syncthing of `vidsyncHome` (or adopts the one already running),
 * from a config written beforehand, and waits until its API answers.
 */
export async function startManagedSyncthing(options: StartManagedOptions): Promise<ManagedSyncthing> {
  const paths = managedPaths(options.vidsyncHome)
  const startTimeoutMs = options.startTimeoutMs ?? 30_000
  const running = await runningPid(options.vidsyncHome)
  if (running !== undefined) {
    const config = await readManagedConfig(options.vidsyncHome)
    const client = new SyncthingClient({url: config.url, apiKey: config.apiKey})
    // Its latest lines: an instance migrating its database says so in the last one.
    const logOffset = Math.max(0, ((await stat(paths.log).catch(() => undefined))?.size ?? 0) - 65_536)
    const state = await waitForApi(client, {...options, logPath: paths.log, logOffset}, () => !isAlive(running))
    if (state === 'migrating') throw stillMigrating(running, paths.log)
    if (state !== 'ready') {
      throw new UnavailableError(`Syncthing (pid ${running}) is running but its API at ${config.url} does not answer: see ${paths.log}`)
    }
    const {myID} = await client.status()
    const {url, apiKey, listenAddresses} = config
    return {url, apiKey, deviceId: myID, pid: running, adopted: true, listenAddresses, logPath: paths.log}
  }

  const config = await writeManagedConfig(options)
  const guiPort = Number(config.guiAddress.split(':').at(-1))
  await assertCanListen('127.0.0.1', guiPort, "Syncthing's GUI/API address", 'pass --gui-port')
  for (const address of config.listenAddresses) {
    const {host, port} = validateListenAddress(address)
    await assertCanListen(host, port, "Syncthing's listen address", 'pass --listen tcp://IP:PORT')
  }

  const logOffset = (await stat(paths.log).catch(() => undefined))?.size ?? 0
  const daemon = await startDaemon('syncthing', await serveArgs(paths.dir, options.tools), {
    env: {STNOUPGRADE: '1'},
    logPath: paths.log,
    detached: options.detached,
    tools: options.tools,
  })
  let ended = false
  const pidWritten = currentPlatform()
    .processIdentity(daemon.pid)
    // Gone already (it failed at once): no pid file to leave behind.
    .then((identity) => (identity ? writeFileAtomic(paths.pid, identityText(identity), 0o600) : undefined))
  const exited = daemon.exited.then(async (result) => {
    ended = true
    await pidWritten.catch(() => undefined)
    if ((await readIdentity(paths.pid))?.pid === daemon.pid) await rm(paths.pid, {force: true})
    return result
  })
  const fail = async (error: Error): Promise<never> => {
    await daemon.stop()
    await exited
    throw error
  }
  await pidWritten.catch(fail)

  const client = new SyncthingClient({url: config.url, apiKey: config.apiKey})
  const state = await waitForApi(client, {...options, logPath: paths.log, logOffset}, () => ended).catch(fail)
  if (state === 'migrating') throw stillMigrating(daemon.pid, paths.log) // never stopped mid-migration
  if (state !== 'ready') {
    if (state === 'timeout') await daemon.stop()
    await exited
    const reason = (await reasonFromLog(paths.log, logOffset)) || (state === 'timeout' ? 'timed out' : 'exited')
    if (/address already in use/.test(reason)) throw new ConflictError(`Syncthing could not start: ${reason}: stop the other program`, {hint: 'or pass --gui-port'})
    const what = state === 'timeout' ? `did not answer on ${config.url} within ${startTimeoutMs / 1000}s` : 'exited while starting'
    throw new ToolFailedError(`syncthing ${what}: ${reason} (log: ${paths.log})`, reason)
  }
  const problems = await listenErrors(client, config.listenAddresses).catch(fail)
  if (problems.length > 0) {
    const message = `Syncthing cannot listen for peers on ${problems.join('; ')}`
    const taken = problems.some((problem) => /address already in use/.test(problem))
    await fail(taken ? new ConflictError(message, {hint: 'pass --listen tcp://IP:PORT'}) : new ToolFailedError(message, problems.join('; ')))
  }
  const {myID} = await client.status().catch(fail)
  return {
    url: config.url,
    apiKey: config.apiKey,
    deviceId: myID,
    pid: daemon.pid,
    adopted: false,
    listenAddresses: config.listenAddresses,
    logPath: paths.log,
    exited: options.detached ? undefined : exited,
  }
}

export interface StopManagedResult {
  stopped: boolean
  pid?: number
}

/**
 * Stops the managed instance: asks it through its REST API (POST /rest/system/shutdown) and waits
 * for it to exit; only a Syncthing that does not answer is ended by its recorded PID and start time.
 */
export async function stopManagedSyncthing(options: {vidsyncHome: string; timeoutMs?: number}): Promise<StopManagedResult> {
  const paths = managedPaths(options.vidsyncHome)
  const pid = await runningPid(options.vidsyncHome)
  const identity = await readIdentity(paths.pid)
  const config = await readManagedConfig(options.vidsyncHome).catch(() => undefined)
  const client = config && new SyncthingClient({url: config.url, apiKey: config.apiKey, timeoutMs: 5000})
  const asked = client ? await client.shutdown().then(() => true, () => false) : false
  if (!asked && pid === undefined) return {stopped: false}
  const timeoutMs = options.timeoutMs ?? 20_000
  // Gone when the API no longer answers and the recorded process has exited.
  const gone = async () => {
    const apiUp = client ? await client.ping().then(() => true, () => false) : false
    const processUp = identity ? await currentPlatform().isRunning(identity) : false
    return !apiUp && !processUp
  }
  await pollUntil(gone, {timeoutMs, onTimeout: async () => {
      if (identity) await stopProcess(identity, 5000)
    }})
  await rm(paths.pid, {force: true})
  return {stopped: true, ...(pid === undefined ? {} : {pid})}
}

export interface ConnectOptions {
  vidsyncHome: string
  /** The user's own Syncthing; without it, the managed instance. */
  url?: string
  /** [default: $VIDSYNC_SYNCTHING_API_KEY, else <gui><apikey> of configXmlPath] */
  apiKey?: string
  configXmlPath?: string
  timeoutMs?: number
}

export interface SyncthingConnection {
  client: SyncthingClient
  managed: boolean
}

/** A client for the managed instance, or for the user's own Syncthing at `url` (whose global options vidsync never changes). */
export async function connectSyncthing(options: ConnectOptions): Promise<SyncthingConnection> {
  if (options.url === undefined) {
    if (options.apiKey !== undefined || options.configXmlPath !== undefined) {
      throw new InvalidInputError('an API key or config.xml is only used with your own Syncthing: the managed Syncthing has its own', {hint: 'pass --syncthing-url with them'})
    }
    const config = await readManagedConfig(options.vidsyncHome)
    return {client: new SyncthingClient({url: config.url, apiKey: config.apiKey, timeoutMs: options.timeoutMs}), managed: true}
  }
  let apiKey = options.apiKey ?? process.env.VIDSYNC_SYNCTHING_API_KEY
  if (!apiKey && options.configXmlPath !== undefined) {
    const xml = await readFile(options.configXmlPath, 'utf8').catch(() => {
      throw new NotFoundError(`cannot read Syncthing's config ${options.configXmlPath}`)
    })
    apiKey = readConfigValues(xml, 'gui', 'apikey')[0]
  }
  if (!apiKey) {
    throw new InvalidInputError(
      `no API key for Syncthing at ${options.url}: set VIDSYNC_SYNCTHING_API_KEY`,
      {hint: 'or pass --api-key, or --syncthing-config with its config.xml'},
    )
  }
  return {client: new SyncthingClient({url: options.url, apiKey, timeoutMs: options.timeoutMs}), managed: false}
}
