/**
 * A MINIMAL STAND-IN FOR SUPABASE'S API (its gateway and PostgREST), FOR TESTS ONLY. It is not PostgREST.
 *
 * It serves what vidsync's Supabase transport uses, `/rest/v1/rpc/<fn>`, the way PostgREST does
 * (docs.postgrest.org, v12/v14 references; each behaviour names its page):
 * - Gateway (Supabase, not PostgREST): the `apikey` header must be one of the project's keys, else 401.
 *   The client address it reports (cf-connecting-ip, x-real-ip) is the socket's or `clientAddress`;
 *   forwarding headers sent by the client are dropped unless `passClientForwardingHeaders` is set.
 * - Authentication (references/auth): `Authorization: Bearer <JWT>` is verified as HS256 with
 *   `standInJwtSecret` (PostgREST's `jwt-secret`); the `role` claim picks the database role, no JWT
 *   means the anonymous role (`db-anon-role` = anon). A bad JWT is 401 PGRST301 (references/errors).
 * - User impersonation (references/auth): it connects as `authenticator` (LOGIN NOINHERIT, granted
 *   the API roles) and switches with `set_config('role', ...)` inside each request's transaction.
 * - Transactions (references/transactions): one per request; READ ONLY for GET and for STABLE or
 *   IMMUTABLE functions; `request.headers` and `request.jwt.claims` set for the transaction.
 * - Functions as RPC (references/api/functions): POST with named arguments as a JSON object, GET
 *   with them in the query string; any other verb is 405 PGRST101. Schema from Content-Profile (POST)
 *   or Accept-Profile (GET), default the first exposed one; others 406 PGRST106.
 * - Prefer (references/api/preferences): none is implemented, so every preference is ignored
 *   (handling=lenient, the default) or refused with 400 PGRST122 under handling=strict. vidsync sends
 *   none; `calls` records what came, so a test notices if it starts to.
 * - Errors (references/errors): {code, message, details, hint} with PostgREST's SQLSTATE to HTTP
 *   table; 42501 is 403 for an authenticated role and 401 for the anonymous one.
 *
 * Not done: tables and views, filters, embedding, counting, any Prefer, overloaded functions,
 * positional or single-object arguments, the schema cache (every call reads pg_proc), JWT
 * algorithms other than HS256, JWKS, `aud` checks, pre-request functions, connection limits.
 */
import {createHmac, timingSafeEqual} from 'node:crypto'
import {createServer, type IncomingMessage, type ServerResponse} from 'node:http'
import type {AddressInfo} from 'node:net'
import type {Duplex} from 'node:stream'
import {buffer} from 'node:stream/consumers'

import pg from 'pg'

/** PostgREST's `jwt-secret` for the stand-in (at least 32 characters, as PostgREST requires). */
export const standInJwtSecret = 'vidsync-test-jwt-secret-not-for-production-use'

const base64url = (data: string | Buffer) => Buffer.from(data).toString('base64url')

/** An HS256 JWT with `claims`, signed with `secret`: what Supabase issues as its API keys. */
export function signJwt(claims: Record<string, unknown>, secret = standInJwtSecret): string {
  const unsigned = `${base64url(JSON.stringify({alg: 'HS256', typ: 'JWT'}))}.${base64url(JSON.stringify(claims))}`
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`
}

/** The project's two API keys, JWTs with a `role` claim like Supabase's. */
export const standInKeys = {
  anon: signJwt({iss: 'vidsync-standin', role: 'anon'}),
  service_role: signJwt({iss: 'vidsync-standin', role: 'service_role'}),
} as const

export type ApiRole = keyof typeof standInKeys

const anonRole = 'anon'
const apiRoles = ['anon', 'authenticated', 'service_role']
const authenticator = 'authenticator'
/** Headers through which a client could claim another address; only the gateway sets them. */
const forwardingHeaders = ['cf-connecting-ip', 'x-real-ip', 'x-forwarded-for', 'forwarded', 'true-client-ip', 'x-client-ip']

export interface StandInCall {
  fn: string
  method: string
  /** The database role the request runs as (from its JWT); null when its key or JWT was refused. */
  role: string | null
  status: number
  /** The Prefer header as sent, if any. */
  prefer: string | null
}

export interface StandIn {
  /** The Supabase project URL to give supabase-js. */
  url: string
  /** Every call answered, in order. */
  calls: StandInCall[]
  close(): Promise<void>
}

interface FunctionInfo {
  readOnly: boolean
  retset: boolean
  returnsVoid: boolean
  /** Input argument names with their types, and how many trailing ones have defaults. */
  args: {name: string; type: string}[]
  defaults: number
}

class HttpError extends Error {
  constructor(readonly status: number, readonly body: Record<string, unknown>, readonly headers: Record<string, string> = {}) {
    super(String(body.message))
  }
}

const pgError = (code: string, message: string, details: string | null = null, hint: string | null = null) => ({code, message, details, hint})

/** PostgREST's SQLSTATE to HTTP status table (references/errors), the part vidsync can meet. */
function httpStatus(code: string, role: string): number {
  if (code === '42501') return role === anonRole ? 401 : 403
  if (code === '23503' || code === '23505') return 409
  if (code === '25006') return 405
  if (code === '42883' || code === '42P01') return 404
  if (/^(08|53)/.test(code) && code !== '53400') return 503
  if (/^(09|25|2D|38|39|3B|40|5[4-8]|F0|HV|XX|P0)/.test(code) && code !== 'P0001') return 500
  if (code === '53400') return 500
  if (/^(0L|0P|28)/.test(code)) return 403
  return 400
}

/** The verified claims of the request's JWT, or {} without one (references/auth). */
function verifiedClaims(req: IncomingMessage): Record<string, unknown> {
  const header = req.headers.authorization
  if (!header) return {}
  const invalid = (message: string) => new HttpError(401, pgError('PGRST301', message), {'www-authenticate': `Bearer error="invalid_token", error_description="${message}"`})
  const token = /^Bearer (\S+)$/i.exec(header)?.[1]
  const [head, body, signature, ...rest] = token?.split('.') ?? []
  if (!head || !body || !signature || rest.length > 0) throw invalid('Expected 3 parts in JWT; got ' + (token?.split('.').length ?? 0))
  let alg: unknown
  let claims: Record<string, unknown>
  try {
    alg = (JSON.parse(Buffer.from(head, 'base64url').toString()) as {alg?: unknown}).alg
    claims = JSON.parse(Buffer.from(body, 'base64url').toString()) as Record<string, unknown>
  } catch {
    throw invalid('JWT cryptographic operation failed')
  }
  if (alg !== 'HS256') throw invalid('Wrong or unsupported encoding algorithm')
  const expected = createHmac('sha256', standInJwtSecret).update(`${head}.${body}`).digest()
  const given = Buffer.from(signature, 'base64url')
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalid('JWSError JWSInvalidSignature')
  if (typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now()) throw invalid('JWT expired')
  return claims
}

async function lookUp(client: pg.PoolClient, schema: string, fn: string): Promise<FunctionInfo | undefined> {
  const {rows} = await client.query<{read_only: boolean; retset: boolean; returns_void: boolean; names: string[] | null; modes: string[] | null; types: string[]; defaults: number}>(
    `SELECT p.provolatile IN ('s', 'i') AS read_only, p.proretset AS retset, p.prorettype = 'void'::regtype AS returns_void, p.proargnames AS names,
            p.proargmodes::text[] AS modes, p.pronargdefaults AS defaults,
            ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) AS t) AS types
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = $1 AND p.proname = $2`,
    [schema, fn],
  )
  const [row] = rows
  if (!row || rows.length > 1) return undefined
  // proargnames also lists OUT columns; proargtypes only the inputs, which come first.
  const inputNames = (row.names ?? []).filter((_, index) => !row.modes || ['i', 'b', 'v'].includes(row.modes[index] ?? 'i'))
  return {
    readOnly: row.read_only,
    retset: row.retset,
    returnsVoid: row.returns_void,
    args: row.types.map((type, index) => ({name: inputNames[index] ?? '', type})),
    defaults: row.defaults,
  }
}

/**
 * The `authenticator` login role, NOINHERIT, that may become each API role: PostgREST's setup
 * (references/auth). Roles are cluster-wide and other test runs may create them at the same time.
 */
async function ensureAuthenticator(databaseUrl: string): Promise<void> {
  const owner = new pg.Client({connectionString: databaseUrl})
  await owner.connect()
  try {
    for (const role of [...apiRoles, authenticator]) {
      const options = role === authenticator ? 'LOGIN NOINHERIT NOCREATEDB NOCREATEROLE NOSUPERUSER' : 'NOLOGIN'
      await owner.query(`CREATE ROLE ${role} ${options}`).catch((error: {code?: string}) => {
        if (!['42710', '23505'].includes(error.code ?? '')) throw error
      })
    }
    for (let attempt = 0; ; attempt++) {
      try {
        await owner.query(`GRANT ${apiRoles.join(', ')} TO ${authenticator}`)
        break
      } catch (error) {
        // "tuple concurrently updated" when another run grants at the same moment.
        if (attempt >= 5 || (error as {code?: string}).code !== 'XX000') throw error
      }
    }
  } finally {
    await owner.end()
  }
}

export async function startPostgrestStandIn(options: {
  /** A connection string of the database's owner: used once to set up `authenticator`, then PostgREST's connections log in as that. */
  databaseUrl: string
  exposedSchemas?: string[]
  /** The client address the gateway reports [default: the connection's]. */
  clientAddress?: string
  /** Let a client's own forwarding headers through, as a gateway that trusts them would. */
  passClientForwardingHeaders?: boolean
  /** WebSocket upgrades (the gateway's /realtime/v1/websocket, see realtime.ts); refused without. */
  onUpgrade?: (request: IncomingMessage, socket: Duplex, head: Buffer) => void
}): Promise<StandIn> {
  const exposed = options.exposedSchemas ?? ['vidsync']
  await ensureAuthenticator(options.databaseUrl)
  const url = new URL(options.databaseUrl)
  url.username = authenticator
  url.password = ''
  const pool = new pg.Pool({connectionString: url.toString(), max: 20})
  pool.on('error', () => {})
  const keys = new Set<string>(Object.values(standInKeys))
  const calls: StandInCall[] = []

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestUrl = new URL(req.url ?? '/', 'http://stand-in')
    const fn = /^\/rest\/v1\/rpc\/([a-z_][a-z0-9_]*)$/.exec(requestUrl.pathname)?.[1]
    const prefer = req.headers.prefer === undefined ? null : String(req.headers.prefer)
    let role: string | null = null
    const reply = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      calls.push({fn: fn ?? requestUrl.pathname, method: req.method ?? '', role, status, prefer})
      res.writeHead(status, {'content-type': 'application/json; charset=utf-8', ...headers})
      res.end(body === undefined ? undefined : JSON.stringify(body))
    }
    try {
      if (!keys.has(String(req.headers.apikey ?? ''))) {
        return reply(401, {message: 'Invalid API key', hint: 'Double check your Supabase `anon` or `service_role` API key.'})
      }
      const claims = verifiedClaims(req)
      const claimedRole = typeof claims.role === 'string' ? claims.role : anonRole
      role = claimedRole
      if (!fn) return reply(404, pgError('PGRST125', `Invalid path specified in request URL`))
      if (req.method !== 'GET' && req.method !== 'POST') {
        return reply(405, pgError('PGRST101', 'Only GET and POST verbs are allowed for RPC'))
      }
      const profile = req.method === 'GET' ? req.headers['accept-profile'] : req.headers['content-profile']
      const schema = profile === undefined ? exposed[0] ?? 'public' : String(profile)
      if (!exposed.includes(schema)) {
        return reply(406, pgError('PGRST106', `Invalid schema: ${schema}`, null, `Only the following schemas are exposed: ${exposed.join(', ')}`))
      }
      const preferences = (prefer ?? '').split(',').map((item) => item.trim()).filter(Boolean)
      const ignored = preferences.filter((item) => !/^handling=(strict|lenient)$/.test(item))
      if (preferences.includes('handling=strict') && ignored.length > 0) {
        return reply(400, pgError('PGRST122', 'Invalid preferences given with handling=strict', `Invalid preferences: ${ignored.join(', ')}`))
      }
      const args: Record<string, unknown> =
        req.method === 'GET' ? Object.fromEntries(requestUrl.searchParams) : (JSON.parse((await buffer(req)).toString() || '{}') as Record<string, unknown>)

      // The gateway reports the client address; a client cannot choose it unless trusted.
      const clientHeaders = Object.fromEntries(
        Object.entries(req.headers).filter(([name]) => options.passClientForwardingHeaders || !forwardingHeaders.includes(name)),
      )
      const address = options.clientAddress ?? (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '')
      const headers = {'cf-connecting-ip': address, 'x-real-ip': address, ...clientHeaders}

      const client = await pool.connect()
      try {
        const info = await lookUp(client, schema, fn)
        const given = Object.keys(args)
        const required = info?.args.slice(0, info.args.length - info.defaults) ?? []
        if (!info || given.some((name) => !info.args.some((arg) => arg.name === name)) || required.some((arg) => !given.includes(arg.name))) {
          return reply(404, pgError('PGRST202', `Could not find the function ${schema}.${fn}(${given.join(', ')}) in the schema cache`, null,
            'If a new function was created in the database with this name and parameters, try reloading the schema cache.'))
        }
        const call = `"${schema}"."${fn}"(${given.map((name, index) => `${name} => $${index + 1}::${info.args.find((arg) => arg.name === name)?.type}`).join(', ')})`
        const sql = info.returnsVoid
          ? `SELECT ${call}, 'null'::json AS body`
          : info.retset
            ? `SELECT coalesce(json_agg(_r), '[]'::json) AS body FROM ${call} _r`
            : `SELECT to_json(${call}) AS body`
        await client.query(req.method === 'GET' || info.readOnly ? 'BEGIN READ ONLY' : 'BEGIN')
        try {
          await client.query("SELECT set_config('role', $1, true), set_config('request.headers', $2, true), set_config('request.jwt.claims', $3, true)", [
            claimedRole,
            JSON.stringify(headers),
            JSON.stringify(claims),
          ])
          const {rows} = await client.query<{body: unknown}>(sql, given.map((name) => args[name]))
          await client.query('COMMIT')
          reply(200, rows[0]?.body ?? null)
        } catch (error) {
          await client.query('ROLLBACK').catch(() => {})
          const {code = 'XX000', message = String(error), detail = null, hint = null} = error as {code?: string; message?: string; detail?: string | null; hint?: string | null}
          reply(httpStatus(code, claimedRole), {code, message, details: detail, hint})
        }
      } finally {
        client.release()
      }
    } catch (error) {
      if (error instanceof HttpError) return reply(error.status, error.body, error.headers)
      if (error instanceof SyntaxError) return reply(400, pgError('PGRST102', 'Empty or invalid json'))
      throw error
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      res.writeHead(500, {'content-type': 'application/json; charset=utf-8'})
      res.end(JSON.stringify(pgError('XX000', String(error))))
    })
  })
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (options.onUpgrade) options.onUpgrade(request, socket, head)
    else socket.destroy()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    async close() {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
      await pool.end()
    },
  }
}
