/**
 * Reading nebula's log, whatever the release and format:
 * - logrus text (1.6 to 1.10): `time="..." level=error msg="Failed to open udp listener" error="..."`
 * - logrus JSON (`logging.format: json`): `{"level":"info","msg":"...","vpnIp":"10.99.7.1",...}`
 * - slog text (1.11+, logging/logger.go): `time=... level=INFO msg="Handshake message received" vpnAddrs=[10.99.7.1]`
 * - slog JSON: `{"time":"...","level":"INFO","msg":"...","vpnAddrs":["10.99.7.1"]}`
 * A few start errors (config loading) are plain text.
 */

export interface LogLine {
  /** Lower case: info, error, fatal, ... (slog's INFO reads info). */
  level: string
  msg: string
  fields: Record<string, string>
}

const pair = /([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)/g

function unquote(raw: string): string {
  if (!raw.startsWith('"')) return raw
  try {
    return JSON.parse(raw) as string // Go's %q quoting is JSON's for everything nebula prints
  } catch {
    return raw.slice(1, -1)
  }
}

/** A JSON value as the text format would print it: arrays as `[a b]`, like Go's %v. */
function textOf(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(textOf).join(' ')}]`
  if (typeof value === 'object' && value !== null) return JSON.stringify(value)
  return String(value)
}

function parseJsonLine(line: string): Record<string, string> | undefined {
  try {
    const parsed = JSON.parse(line) as unknown
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined
    return Object.fromEntries(Object.entries(parsed).map(([key, value]) => [key, textOf(value)]))
  } catch {
    return undefined
  }
}

export function parseLogLine(line: string): LogLine | undefined {
  const trimmed = line.trim()
  let fields: Record<string, string> | undefined = trimmed.startsWith('{') ? parseJsonLine(trimmed) : undefined
  if (fields === undefined) {
    fields = {}
    for (const [, key = '', raw = ''] of trimmed.matchAll(pair)) fields[key] = unquote(raw)
  }
  const {level, msg, ...rest} = fields
  delete rest.time
  return level === undefined || msg === undefined ? undefined : {level: level.toLowerCase(), msg, fields: rest}
}

/** `msg: error (other=fields)`, the way a person reads it. */
export function describeLogLine(line: string): string {
  const parsed = parseLogLine(line)
  if (parsed === undefined) return line.trim()
  const {error, ...others} = parsed.fields
  const extra = Object.entries(others).map(([key, value]) => `${key}=${value}`)
  return `${parsed.msg}${error ? `: ${error}` : ''}${extra.length ? ` (${extra.join(' ')})` : ''}`
}

const logLines = (log: string) => log.split('\n').filter((line) => line.trim() !== '')

const isFailure = (line: string) => /^panic: /.test(line) || /^(error|fatal|panic)/.test(parseLogLine(line)?.level ?? '')

/** Why nebula stopped: its last error, fatal or Go panic line, else its last line. */
export function failureReason(log: string): string | undefined {
  const lines = logLines(log)
  const errors = lines.filter(isFailure)
  const last = errors.at(-1) ?? lines.at(-1)
  return last === undefined ? undefined : describeLogLine(last)
}

/** `10.99.7.1`, `[10.99.7.1]` or `[10.99.7.1 fd00::1]`: the overlay addresses a log field names. */
function addressesOf(value: string | undefined): string[] {
  if (value === undefined) return []
  return value
    .replace(/^\[|\]$/g, '')
    .split(/[\s,]+/)
    .filter(Boolean)
}

/**
 * Overlay IPs that completed a handshake with this node: `msg="Handshake message received"` with
 * `vpnIp=10.99.7.1` (to 1.9) or `vpnAddrs=[10.99.7.1]` (1.10+), logged by the initiator on the
 * answer (stage 2) and by the responder on the request (stage 1). Either way a packet from that
 * peer arrived and was authenticated. ("..., but no vpnNetworks in common." does not count.)
 */
export function handshakePeers(log: string): Set<string> {
  const peers = new Set<string>()
  for (const line of logLines(log)) {
    const parsed = parseLogLine(line)
    if (parsed?.msg !== 'Handshake message received') continue
    for (const address of [...addressesOf(parsed.fields.vpnIp), ...addressesOf(parsed.fields.vpnAddrs)]) peers.add(address)
  }
  return peers
}

/** How a tunnel carries packets: straight to the peer's UDP address, or through a relay (a lighthouse with `am_relay`). */
export type TunnelPath = 'direct' | 'relayed'

/** A JSON-logged address with no value (`null`), a nil *udp.Addr (1.6, `<nil>`) or a zero netip.AddrPort (1.7-1.9). */
const noAddress = new Set(['', 'null', '<nil>', 'invalid AddrPort'])

/**
 * The path one handshake line says the packet took (handshake_ix.go at each tag):
 * - 1.10+ `from=` is a ViaSender: `192.0.2.3:4242`, or `192.0.2.1:4242 (relayed)`; in JSON
 *   `{"direct":"..."}` or `{"relay":"..."}` (its String and MarshalJSON).
 * - 1.6 to 1.9 log `udpAddr=` with the peer's address for a direct packet; a relayed one has no
 *   address (`<nil>`, `invalid AddrPort`, JSON null), and the responder's "Handshake message sent"
 *   names the relay in `relay=`.
 */
function pathOf(fields: Record<string, string>): TunnelPath | undefined {
  const {from, relay, udpAddr} = fields
  if (from !== undefined) return /\(relayed\)$/.test(from) || from.startsWith('{"relay"') ? 'relayed' : 'direct'
  if (relay !== undefined && !noAddress.has(relay)) return 'relayed'
  if (udpAddr !== undefined) return noAddress.has(udpAddr) ? 'relayed' : 'direct'
  return undefined
}

const handshakeMessages = new Set(['Handshake message received', 'Handshake message sent'])

/** A tunnel as this run's log shows it: the path of its latest handshake and the peer's certificate name. */
export interface LoggedTunnel {
  path: TunnelPath
  name?: string
}

/**
 * The latest completed handshake with each peer in this log (nebula rotates it per run, so these
 * are this run's tunnels), keyed by overlay IP. Which peers answer now is a different question (a
 * ping over the overlay): a peer can appear here and be gone since.
 */
export function handshakeTunnels(log: string): Map<string, LoggedTunnel> {
  const tunnels = new Map<string, LoggedTunnel>()
  for (const line of logLines(log)) {
    const parsed = parseLogLine(line)
    if (parsed === undefined || !handshakeMessages.has(parsed.msg)) continue
    const path = pathOf(parsed.fields)
    if (path === undefined) continue
    const name = parsed.fields.certName
    for (const address of [...addressesOf(parsed.fields.vpnIp), ...addressesOf(parsed.fields.vpnAddrs)]) tunnels.set(address, name ? {path, name} : {path})
  }
  return tunnels
}

/** The path of the latest completed handshake with each peer in this log, keyed by overlay IP. */
export function handshakePaths(log: string): Map<string, TunnelPath> {
  return new Map([...handshakeTunnels(log)].map(([address, tunnel]) => [address, tunnel.path]))
}
