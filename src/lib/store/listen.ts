import type pg from 'pg'

import type {ChangeFeed} from './control-plane.js'
import {loadPg} from './sql-client.js'

/** Waits between reconnections of a dropped LISTEN connection: doubling from the first, up to the last. */
const reconnectDelaysMs = {first: 1000, max: 30_000}

const channelPattern = /^vidsync_[0-9]+$/

/**
 * LISTEN/NOTIFY on a plain Postgres server: one dedicated connection per channel (a pooled one
 * would lose its LISTEN when returned). The control plane notifies a project's channel with the
 * new version in the transaction that bumps it, so it arrives at commit. A dropped connection is
 * reconnected with a bounded backoff, and `onChange()` is then called without a version, since
 * notifications sent meanwhile are lost.
 */
export class PostgresChangeFeed implements ChangeFeed {
  readonly source = 'channel'

  constructor(private readonly url: string) {}

  async listen(channel: string, onChange: (version?: number) => void): Promise<{close(): Promise<void>; readonly active: boolean}> {
    if (!channelPattern.test(channel)) throw new Error(`invalid notification channel ${channel}`)
    let closed = false
    let active = false
    let client: pg.Client | undefined
    let timer: NodeJS.Timeout | undefined
    let delay = reconnectDelaysMs.first

    const connect = async (reconnected: boolean): Promise<void> => {
      const {Client} = loadPg()
      const next = new Client({connectionString: this.url, connectionTimeoutMillis: 10_000, keepAlive: true})
      const retry = () => {
        next.removeAllListeners()
        next.on('error', () => {})
        next.end().catch(() => {})
        if (closed || client !== next) return
        active = false
        client = undefined
        timer = setTimeout(() => void connect(true), delay)
        delay = Math.min(delay * 2, reconnectDelaysMs.max)
      }
      client = next
      next.on('error', retry)
      next.on('end', retry)
      next.on('notification', (message) => {
        if (message.channel !== channel) return
        const version = Number(message.payload)
        onChange(Number.isSafeInteger(version) ? version : undefined)
      })
      try {
        await next.connect()
        await next.query(`LISTEN ${channel}`)
        active = client === next
        delay = reconnectDelaysMs.first
        if (reconnected) onChange()
      } catch (error) {
        if (!reconnected) {
          next.removeAllListeners()
          await next.end().catch(() => {})
          client = undefined
          throw error
        }
        retry()
      }
    }

    await connect(false)
    return {
      get active() {
        return active
      },
      async close() {
        closed = true
        active = false
        if (timer) clearTimeout(timer)
        const current = client
        client = undefined
        if (current) {
          current.removeAllListeners()
          current.on('error', () => {})
          await current.end().catch(() => {})
        }
      },
    }
  }
}
