/**
 * Reading nebula 1.6.1's text log (logrus): `time="..." level=error msg="..." key=value key="quoted"`.
 * Fatal start errors look like `level=error msg="Failed to open udp listener" error="..."` or
 * `level=fatal msg="failed to set tun address: operation not permitted"`; a few (config loading)
 * are plain text.
 */

export interface LogLine {
  level: string
  msg: string
  fields: Record<string, string>
}

const pair = /(\w+)=("(?:[^"\\]|\\.)*"|\S*)/g

function unquote(raw: string): string {
  if (!raw.startsWith('"')) return raw
  try {
    return JSON.parse(raw) as string // Go's %q quoting is JSON's for everything nebula prints
  } catch {
    return raw.slice(1, -1)
  }
}

export function parseLogLine(line: string): LogLine | undefined {
  const fields: Record<string, string> = {}
  for (const [, key = '', raw = ''] of line.matchAll(pair)) fields[key] = unquote(raw)
  const {level, msg, ...rest} = fields
  delete rest.time
  return level === undefined || msg === undefined ? undefined : {level, msg, fields: rest}
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

const isFailure = (line: string) => /^panic: /.test(line) || /^(error|fatal|panic)$/.test(parseLogLine(line)?.level ?? '')

/** Why nebula stopped: its last error, fatal or Go panic line, else its last line. */
export function failureReason(log: string): string | undefined {
  const lines = logLines(log)
  const errors = lines.filter(isFailure)
  const last = errors.at(-1) ?? lines.at(-1)
  return last === undefined ? undefined : describeLogLine(last)
}

/**
 * Overlay IPs that completed a handshake with this node: `msg="Handshake message received" ...
 * vpnIp=10.99.7.1`, logged by the initiator on the answer (stage 2) and by the responder on the
 * request (stage 1). Either way a packet from that peer arrived and was authenticated.
 */
export function handshakePeers(log: string): Set<string> {
  const peers = new Set<string>()
  for (const line of logLines(log)) {
    const parsed = parseLogLine(line)
    if (parsed?.msg === 'Handshake message received' && parsed.fields.vpnIp) peers.add(parsed.fields.vpnIp)
  }
  return peers
}
