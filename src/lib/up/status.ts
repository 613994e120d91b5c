import {readFile} from 'node:fs/promises'

import {cidrContains} from '../bundle/manifest.js'
import {deviceLimits, type DeviceLimits} from '../folders/bandwidth.js'
import {handshakeTunnels, type LoggedTunnel, type TunnelPath} from '../nebula/log.js'
import {answersOverOverlay, type NebulaStatus, nebulaStatus, preflight} from '../nebula/process.js'
import {JoinedProject} from '../project/joined-project.js'
import type {Tools} from '../exec.js'
import {VidsyncError} from '../errors.js'
import {type SyncStatus, syncStatus} from '../syncthing/folders.js'
import {connectSyncthing, readManagedConfig} from '../syncthing/managed.js'
import {type ToolReport, toolReports} from '../versions/report.js'
import {type CertificateCheck, certificateCheck} from './expiry.js'

/** A lighthouse or peer of the project as the overlay sees it now. */
export interface OverlayPeer {
  name: string
  overlayIp: string
  lighthouse: boolean
  /** It answers a ping through nebula now (false while nebula is down). */
  reachable: boolean
  /**
   * How the tunnel to it carries packets, from nebula's log of this run: `direct` (UDP straight
   * to the peer) or `relayed` (through a lighthouse that relays); null when it does not answer now
   * or nebula has logged no completed handshake with it.
   */
  path: TunnelPath | null
}

export interface DeviceStatus {
  overlay: NebulaStatus
  /** The project's lighthouses (first) and peers: whether each answers over the overlay now, and by which path. */
  overlayPeers: OverlayPeer[]
  syncthing: ({reachable: true} & SyncStatus) | {reachable: false; problem: string}
  /** nebula and Syncthing found on this device and whether the project can use them. */
  versions: ToolReport[]
  /** The device's certificate and the project's CA, with a warning from 7 (device) and 90 days (CA) before their end. */
  certificates: CertificateCheck
  /** Bytes per second in and out over all peers since the previous sample (absent on the first). */
  rate?: {inBytesPerSecond: number; outBytesPerSecond: number}
  /** The upload and download limits this device applies, and where each comes from. */
  bandwidth: DeviceLimits
}

/**
 * Each lighthouse and peer: a ping over the overlay says whether it answers now; the latest
 * completed handshake in nebula's log of this run says whether that tunnel is direct or relayed.
 * (nebula 1.6 has no admin API, and its sshd's list-hostmap would be an admin interface no bundle
 * may open: see docs/platforms.md.) Peers that joined after this device's bundle was issued are
 * not in its manifest: those nebula handshook with in this run are listed too, by their
 * certificate's name.
 */
async function overlayPeersOf(project: JoinedProject, overlay: NebulaStatus): Promise<OverlayPeer[]> {
  const tunnels = overlay.running ? handshakeTunnels(await readFile(project.logPath, 'utf8').catch(() => '')) : new Map<string, LoggedTunnel>()
  const {manifest} = project
  const lighthouses = manifest.lighthouses.filter((lighthouse) => lighthouse.name !== manifest.device)
  const all = [...lighthouses.map((lighthouse) => ({name: lighthouse.name, ip: lighthouse.ip, lighthouse: true})), ...manifest.peers.map((peer) => ({name: peer.name, ip: peer.ip, lighthouse: false}))]
  const known = new Set([project.overlayIp, ...all.map((entry) => entry.ip)])
  for (const [ip, tunnel] of tunnels) {
    if (!known.has(ip) && cidrContains(manifest.cidr, ip)) all.push({name: tunnel.name ?? ip, ip, lighthouse: false})
  }
  return Promise.all(
    all.map(async ({name, ip, lighthouse}) => {
      const reachable = overlay.tunUp && (await answersOverOverlay(ip))
      return {name, overlayIp: ip, lighthouse, reachable, path: reachable ? (tunnels.get(ip)?.path ?? null) : null}
    }),
  )
}

/** Overlay and sync state of this device; pass the previous sample to get transfer rates. */
export async function deviceStatus(options: {home: string; project?: string; previous?: DeviceStatus}): Promise<DeviceStatus> {
  const project = await JoinedProject.find({home: options.home, project: options.project})
  const dir = project.dir
  const overlay = await nebulaStatus({projectDir: dir})
  const overlayPeers = await overlayPeersOf(project, overlay)
  const versions = await toolReports({projectDir: dir})
  const certificates = await certificateCheck({home: options.home, project})
  const bandwidth = await deviceLimits(options.home)
  let syncthing: DeviceStatus['syncthing']
  try {
    const {client} = await connectSyncthing({vidsyncHome: options.home})
    syncthing = {reachable: true, ...(await syncStatus({client}))}
  } catch (error) {
    if (!(error instanceof VidsyncError)) throw error
    syncthing = {reachable: false, problem: error.message}
  }
  const before = options.previous?.syncthing
  if (!before?.reachable || !syncthing.reachable) return {overlay, overlayPeers, syncthing, versions, certificates, bandwidth}
  const seconds = (Date.parse(syncthing.total.at) - Date.parse(before.total.at)) / 1000
  if (seconds <= 0) return {overlay, overlayPeers, syncthing, versions, certificates, bandwidth}
  const rate = {
    inBytesPerSecond: Math.max(0, (syncthing.total.inBytesTotal - before.total.inBytesTotal) / seconds),
    outBytesPerSecond: Math.max(0, (syncthing.total.outBytesTotal - before.total.outBytesTotal) / seconds),
  }
  return {overlay, overlayPeers, syncthing, versions, certificates, rate, bandwidth}
}

export interface DoctorCheck {
  name: string
  ok: boolean
  /** What is wrong and what to do, when not ok. */
  fix?: string
  /** Still ok, but something needs doing soon (a certificate that expires within days), and what. */
  warning?: string
}

/** Checks every step from joined project to syncing folders and says what to fix. */
export async function doctor(options: {home: string; project?: string; tools?: Tools}): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = []
  const check = (name: string, problem: string | undefined) => checks.push(problem ? {name, ok: false, fix: problem} : {name, ok: true})
  let project: JoinedProject
  try {
    project = await JoinedProject.find({home: options.home, project: options.project})
    check('project joined', undefined)
  } catch (error) {
    check('project joined', (error as Error).message)
    return checks
  }
  const dir = project.dir
  const certificates = await certificateCheck({home: options.home, project, tools: options.tools})
  const expiryWarnings = certificates.warnings.slice(0, certificates.warnings.length - certificates.renewalWarnings.length)
  const [certificateWarning, ...caWarnings] = certificates.certificate?.expiring ? expiryWarnings : [undefined, ...expiryWarnings]
  const certificate = certificates.certificate
  if (certificate === null) check('certificate valid', `${project.certPath} is not a readable certificate: run \`vidsync join <bundle>\` again`)
  else if (certificate.expired) check('certificate valid', certificateWarning)
  else checks.push({name: 'certificate valid', ok: true, ...(certificateWarning ? {warning: certificateWarning} : {})})
  const caExpired = certificates.cas.length > 0 && certificates.cas.every((ca) => ca.expired)
  if (caExpired) check('CA valid', caWarnings.join('; '))
  else checks.push({name: 'CA valid', ok: true, ...(caWarnings.length > 0 ? {warning: caWarnings.join('; ')} : {})})
  if (certificates.renewalWarnings.length > 0) checks.push({name: 'certificate renewal', ok: true, warning: certificates.renewalWarnings.join('; ')})
  for (const step of await preflight({projectDir: dir, tools: options.tools})) check(`nebula ${step.name}`, step.problem?.message)
  const overlay = await nebulaStatus({projectDir: dir})
  check('nebula running', overlay.running ? undefined : 'nebula is not running: start it with `vidsync up` or `vidsync nebula up`')
  if (overlay.running) {
    check('overlay address', overlay.tunUp ? undefined : `${overlay.tunDev ?? 'no interface'} does not have ${overlay.overlayIp}: see ${overlay.logPath}`)
    if (overlay.lighthouseReachable !== null) {
      check('lighthouse answers', overlay.lighthouseReachable ? undefined : `no lighthouse answered: check its endpoint and that UDP reaches it (log: ${overlay.logPath})`)
    }
  }
  for (const tool of await toolReports({projectDir: dir, tools: options.tools})) {
    const untested = tool.usable && !tool.tested ? ' (newer than vidsync is tested with)' : ''
    check(tool.version === null ? `${tool.tool} version` : `${tool.tool} ${tool.version}${untested}`, tool.problem)
  }
  const config = await readManagedConfig(options.home).then(
    () => undefined,
    () => 'vidsync has not set up Syncthing here yet: run `vidsync up` (or `vidsync sync up`)',
  )
  check('syncthing configured', config)
  const status = await deviceStatus({home: options.home, project: options.project})
  const {syncthing} = status
  check('syncthing answers', syncthing.reachable ? undefined : syncthing.problem)
  if (syncthing.reachable) {
    for (const folder of syncthing.folders) {
      check(`folder ${folder.folderId}`, folder.error ? `${folder.path}: ${folder.error}` : undefined)
    }
    const connected = syncthing.peers.filter((peer) => peer.connected).length
    check('peers connected', connected > 0 || syncthing.peers.length === 0 ? undefined : 'no peer is connected: are they up, and is the overlay reachable?')
  }
  return checks
}
