import {Chalk} from 'chalk'

import {describeLimit} from '../folders/bandwidth.js'
import type {DeviceStatus} from '../up/status.js'
import {formatWhen} from './time.js'

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

export function formatBytes(bytes: number): string {
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`
}

function bar(percent: number, width = 24): string {
  const filled = Math.round((Math.min(100, Math.max(0, percent)) / 100) * width)
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`
}

/** The human view of `vidsync status`: overlay, peers, and a progress bar per folder. */
export function renderStatus(status: DeviceStatus, options: {color: boolean}): string {
  const paint = new Chalk({level: options.color ? 1 : 0})
  const good = (ok: boolean, text: string) => (ok ? paint.green(text) : paint.red(text))
  const {overlay, syncthing} = status
  const lines = [
    ...status.certificates.warnings.map((warning) => `${paint.yellow('warning')}   ${warning}`),
    `overlay   ${good(overlay.running && overlay.tunUp, overlay.running ? 'up' : 'down')}  ${overlay.overlayIp} on ${overlay.tunDev ?? 'no interface yet'}` +
      (overlay.lighthouseReachable === null ? '' : `, lighthouse ${good(overlay.lighthouseReachable, overlay.lighthouseReachable ? 'answers' : 'silent')}`),
  ]
  const {certificate} = status.certificates
  if (certificate) lines.push(`cert      ${good(!certificate.expiring, certificate.expired ? 'expired' : 'valid')} until ${formatWhen(certificate.notAfter)}`)
  if (status.overlayPeers.length > 0) {
    const answering = status.overlayPeers.filter((peer) => peer.reachable).length
    const state = (peer: DeviceStatus['overlayPeers'][number]) => (peer.reachable ? (peer.path ?? 'yes') : 'no')
    const named = (peer: DeviceStatus['overlayPeers'][number]) => `${peer.name}${peer.lighthouse ? ' (lighthouse)' : ''} ${good(peer.reachable, state(peer))}`
    lines.push(`overlay peers ${answering}/${status.overlayPeers.length} answer: ${status.overlayPeers.map(named).join(', ')}`)
  }
  if (!syncthing.reachable) return [...lines, `syncthing ${paint.red('unreachable')}: ${syncthing.problem}`].join('\n')
  const connected = syncthing.peers.filter((peer) => peer.connected)
  lines.push(`peers     ${connected.length}/${syncthing.peers.length} connected`)
  for (const peer of syncthing.peers) {
    lines.push(`  ${good(peer.connected, peer.connected ? '●' : '○')} ${peer.name || peer.deviceId.slice(0, 7)} ${peer.address}`)
  }
  if (status.rate) {
    lines.push(`rate      in ${formatBytes(status.rate.inBytesPerSecond)}/s, out ${formatBytes(status.rate.outBytesPerSecond)}/s`)
  }
  const {bandwidth} = status
  lines.push(`limits    up ${describeLimit(bandwidth, 'up')}, down ${describeLimit(bandwidth, 'down')}`)
  lines.push(`folders   ${syncthing.folders.length}`)
  for (const folder of syncthing.folders) {
    const done = folder.globalBytes - folder.needBytes
    lines.push(
      `  ${bar(folder.completion)} ${folder.completion.toFixed(0).padStart(3)}%  ${folder.folderId}  ${formatBytes(done)} of ${formatBytes(folder.globalBytes)}  ${folder.state}${folder.error ? `: ${paint.red(folder.error)}` : ''}`,
    )
    for (const peer of folder.peers) lines.push(`      ${peer.deviceId.slice(0, 7)} ${peer.completion.toFixed(0)}%`)
  }
  return lines.join('\n')
}
