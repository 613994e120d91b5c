import {createClient, type PostgrestError} from '@supabase/supabase-js'
import WebSocket from 'ws'

import {IncompatibleSchemaError, PermissionError, UnavailableError, VidsyncError} from '../errors.js'
import {mapDatabaseError, type Rpc} from './control-plane.js'

export interface SupabaseOptions {
  /** The project URL, e.g. https://abcd.supabase.co. */
  url: string
  /** The service-role key (operators) or the anon key (devices). Never printed. */
  key: string
}

/** Replaces every occurrence of `secret` in `text`, so that no error carries the key. */
export function redactSecret(text: string, secret: string): string {
  return secret ? text.split(secret).join('***') : text
}

/** Calls `vidsync.<fn>` through Supabase's API (PostgREST `POST /rest/v1/rpc/<fn>`). No transactions. */
export class SupabaseRpc implements Rpc {
  /** Also the Realtime client of the device's change feed (realtime.ts); it connects only when a channel is subscribed. */
  readonly client

  constructor(private readonly options: SupabaseOptions) {
    this.client = createClient(options.url, options.key, {
      auth: {persistSession: false, autoRefreshToken: false, detectSessionInUrl: false},
      // Node 20 has no global WebSocket, so realtime-js takes `ws` (its documented transport for
      // Node < 22), on every Node for one code path. Protocol 1.0.0: Phoenix's JSON messages,
      // which Supabase Realtime speaks alongside 2.0.0's binary broadcast frames.
      realtime: {transport: WebSocket as never, vsn: '1.0.0'},
      db: {schema: 'vidsync'},
    })
  }

  async call<R>(fn: string, args: Record<string, unknown> = {}): Promise<R[]> {
    const {data, error, status} = await this.client.rpc(fn, args)
    if (error) throw this.toError(fn, error, status)
    if (data === null || data === undefined) return []
    return (Array.isArray(data) ? data : [data]) as R[]
  }

  private toError(fn: string, error: PostgrestError, status: number): Error {
    const redact = (text: string | null | undefined) => redactSecret(text ?? '', this.options.key)
    const where = `Supabase at ${this.options.url}`
    if (status === 0) {
      // supabase-js reports network failures with status 0 and the cause in details.
      const cause = redact(error.details).split('\n').find((line) => line.startsWith('Caused by:')) ?? redact(error.message)
      return new UnavailableError(`cannot reach ${where} (${cause.replace(/^Caused by:\s*/, '')}): check VIDSYNC_SUPABASE_URL`)
    }
    if (error.code === '42501') {
      return new PermissionError(
        `this key may not call vidsync.${fn}: operator commands need the service-role key, devices the anon key, in VIDSYNC_SUPABASE_KEY`,
      )
    }
    if (status === 401 || status === 403) {
      return new PermissionError(`${where} refused the key in VIDSYNC_SUPABASE_KEY (HTTP ${status}): ${redact(error.message)}`)
    }
    if (error.code === 'PGRST106') {
      return new IncompatibleSchemaError(`${where} does not expose the vidsync schema: add it to the API's exposed schemas (see docs/supabase.md)`)
    }
    if (error.code === 'PGRST202') {
      return new IncompatibleSchemaError(
        `${where} has no function vidsync.${fn}: run \`vidsync db migrate --database-url <direct connection>\`, then reload the API's schema cache`,
      )
    }
    const mapped = mapDatabaseError({code: error.code, message: redact(error.message)})
    if (mapped instanceof VidsyncError) return mapped
    return new Error(`vidsync.${fn} failed on ${where} (HTTP ${status}, ${error.code || 'no code'}): ${redact(error.message)}`)
  }
}
