/**
 * A MINIMAL STAND-IN FOR SUPABASE'S POSTGREST, FOR TESTS ONLY. It is not PostgREST.
 *
 * It serves exactly what vidsync's Supabase transport uses: `POST /rest/v1/rpc/<fn>` with named
 * arguments in a JSON body. Like Supabase it maps the `apikey` header to a database role (two
 * fixed test keys: anon and service_role; anything else is refused as Supabase's gateway does),
 * sets the client address header a gateway would (x-real-ip), and selects the schema from the
 * Content-Profile header, allowing only the exposed schemas. Like PostgREST it runs each call in
 * one transaction (read-only for STABLE and IMMUTABLE functions) after `set_config('role', ...)`,
 * `request.headers` and `request.jwt.claims`,
 * executes the real function on real Postgres, answers a set as a JSON array and errors as
 * {code, message, details, hint} with PostgREST's HTTP statuses.
 */
import {createServer, type IncomingMessage, type ServerResponse} from 'node:http'
import type {AddressInfo} from 'node:net'
import {buffer} from 'node:stream/consumers'

import pg from 'pg'

export const standInKeys = {anon: 'standin-anon-key.not-a-jwt', service_role: 'standin-service-role-key.not-a-jwt'} as const

export type ApiRole = keyof typeof standInKeys

export interface StandIn {
  /** The Supabase project URL to give supabase-js. */
  url: string
  /** Every call answered, in order. */
  calls: {fn: string; role: ApiRole | null; status: number}[]
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

const roleOfKey = new Map<string, ApiRole>(Object.entries(standInKeys).map(([role, key]) => [key, role as ApiRole]))

/** PostgREST's SQLSTATE to HTTP status table, the part vidsync can meet. */
function httpStatus(code: string, role: ApiRole): number {
  if (code === '42501') return role === 'anon' ? 401 : 403
  if (code === '23503' || code === '23505') return 409
  if (code === '42883' || code === '42P01') return 404
  if (/^(08|53)/.test(code) && code !== '53400') return 503
  if (/^(09|25|2D|38|39|3B|40|5[4-8]|F0|HV|XX)/.test(code) || code === '53400') return 500
  if (/^(0L|0P|28)/.test(code)) return 403
  return 400
}

async function lookUp(pool: pg.Pool, schema: string, fn: string): Promise<FunctionInfo | undefined> {
  const {rows} = await pool.query<{read_only: boolean; retset: boolean; returns_void: boolean; names: string[] | null; modes: string[] | null; types: string[]; defaults: number}>(
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

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, {'content-type': 'application/json; charset=utf-8'})
  res.end(JSON.stringify(body))
}

const pgError = (code: string, message: string, hint: string | null = null) => ({code, message, details: null, hint})

export async function startPostgrestStandIn(options: {databaseUrl: string; exposedSchemas?: string[]}): Promise<StandIn> {
  const exposed = options.exposedSchemas ?? ['vidsync']
  const pool = new pg.Pool({connectionString: options.databaseUrl, max: 20})
  pool.on('error', () => {})
  const calls: StandIn['calls'] = []

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const fn = /^\/rest\/v1\/rpc\/([a-z_][a-z0-9_]*)$/.exec(req.url ?? '')?.[1]
    const role = roleOfKey.get(String(req.headers.apikey ?? '')) ?? null
    const reply = (status: number, body: unknown) => {
      calls.push({fn: fn ?? req.url ?? '', role, status})
      send(res, status, body)
    }
    if (!role) return reply(401, {message: 'Invalid API key', hint: 'Double check your Supabase `anon` or `service_role` API key.'})
    if (req.method !== 'POST' || !fn) return reply(404, pgError('PGRST125', `Invalid path ${req.url}`))
    const schema = String(req.headers['content-profile'] ?? 'public')
    if (!exposed.includes(schema)) {
      return reply(406, pgError('PGRST106', `Invalid schema: ${schema}`, `Only the following schemas are exposed: ${exposed.join(', ')}`))
    }
    const body = (await buffer(req)).toString()
    const args = (body ? JSON.parse(body) : {}) as Record<string, unknown>
    const info = await lookUp(pool, schema, fn)
    const given = Object.keys(args)
    const required = info?.args.slice(0, info.args.length - info.defaults) ?? []
    if (!info || given.some((name) => !info.args.some((arg) => arg.name === name)) || required.some((arg) => !given.includes(arg.name))) {
      return reply(404, pgError('PGRST202', `Could not find the function ${schema}.${fn}(${given.join(', ')}) in the schema cache`,
        'If a new function was created in the database with this name and parameters, try reloading the schema cache.'))
    }
    const params = given.map((name) => args[name])
    const call = `"${schema}"."${fn}"(${given.map((name, index) => `${name} => $${index + 1}::${info.args.find((arg) => arg.name === name)?.type}`).join(', ')})`
    const sql = info.returnsVoid
      ? `SELECT ${call}, 'null'::json AS body`
      : info.retset
        ? `SELECT coalesce(json_agg(_r), '[]'::json) AS body FROM ${call} _r`
        : `SELECT to_json(${call}) AS body`
    // Supabase's gateway reports the client address; a client cannot choose it.
    const headers = {...req.headers, 'x-real-ip': (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '')}
    const client = await pool.connect()
    try {
      await client.query(info.readOnly ? 'BEGIN READ ONLY' : 'BEGIN')
      await client.query("SELECT set_config('role', $1, true), set_config('request.headers', $2, true), set_config('request.jwt.claims', $3, true)", [
        role,
        JSON.stringify(headers),
        JSON.stringify({role}),
      ])
      const {rows} = await client.query<{body: unknown}>(sql, params)
      await client.query('COMMIT')
      reply(200, rows[0]?.body ?? null)
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      const {code = 'XX000', message = String(error), detail = null, hint = null} = error as {code?: string; message?: string; detail?: string | null; hint?: string | null}
      reply(httpStatus(code, role), {code, message, details: detail, hint})
    } finally {
      client.release()
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => send(res, 500, pgError('XX000', String(error))))
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
