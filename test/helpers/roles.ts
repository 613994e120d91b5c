import type pg from 'pg'

import type {SqlClient} from '../../src/lib/store/sql-client.js'

export type ApiRole = 'anon' | 'authenticated' | 'service_role'

export interface RequestOptions {
  /** The HTTP request's headers as PostgREST passes them (request.headers); none: a direct connection. */
  headers?: Record<string, string>
  /** The JWT's claims (request.jwt.claims); {role} when absent. */
  claims?: Record<string, unknown>
  /** Undo even a success. */
  rollback?: boolean
}

/**
 * A SqlClient whose every statement runs in its own transaction as `role`, with the settings that
 * PostgREST makes (role, request.headers, request.jwt.claims): what a request through Supabase's
 * API sees. Without `headers` nothing but the role is set, like a direct connection.
 */
export function asRole(pool: pg.Pool, role: ApiRole, options: RequestOptions = {}): SqlClient {
  const client: SqlClient = {
    async query<R>(text: string, params?: unknown[]): Promise<R[]> {
      const connection = await pool.connect()
      try {
        await connection.query('BEGIN')
        await connection.query("SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)", [
          role,
          JSON.stringify(options.claims ?? {role}),
        ])
        if (options.headers) await connection.query("SELECT set_config('request.headers', $1, true)", [JSON.stringify(options.headers)])
        const result = await connection.query(text, params)
        await connection.query(options.rollback ? 'ROLLBACK' : 'COMMIT')
        return result.rows as R[]
      } catch (error) {
        await connection.query('ROLLBACK')
        throw error
      } finally {
        connection.release()
      }
    },
    exec: async (script) => void (await client.query(script)),
    transaction: (work) => work(client),
    close: async () => {},
  }
  return client
}

/** One open transaction on its own connection, as `role` (or the connecting role), for races. */
export async function openTransaction(pool: pg.Pool, role?: ApiRole): Promise<pg.PoolClient> {
  const connection = await pool.connect()
  await connection.query('BEGIN')
  if (role) await connection.query("SELECT set_config('role', $1, true)", [role])
  return connection
}
