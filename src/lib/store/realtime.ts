import type {RealtimeChannel, SupabaseClient} from '@supabase/supabase-js'

import type {ChangeFeed, ChangeFeedHandle} from './control-plane.js'

/** A project's topic as migration 010 draws it: unguessable, so knowing it is the permission to listen. */
const topicPattern = /^vidsync:[0-9a-f]{32}$/

/** Waits before subscribing again after the server closed the channel: doubling from the first, up to the last. */
const resubscribeDelaysMs = {first: 1000, max: 30_000}

/**
 * After a move to a new topic, the refresh for what was broadcast on it before the subscription
 * comes within this many ms (at random): every device of the project moves at once after a
 * revocation, and these refreshes should not queue with the revocation's own delta fetches.
 */
const movedRefreshSpreadMs = 10_000

/**
 * Supabase Realtime: Broadcast from the database on the project's topic (migration 010), heard on
 * a public channel of that name. The only payload is the new version. realtime-js reconnects a
 * dropped socket and rejoins the channel by itself (with its own bounded backoff); a channel the
 * server closes is subscribed again here, with a doubling delay. After each rejoin `onChange()` is
 * called without a version, since broadcasts sent meanwhile are lost. Not subscribed: not `active`,
 * and the device's slow poll carries on. move() leaves the topic for a new one (drawn when a device
 * left the project, migration 012) and, once subscribed to it, calls `onChange()` within
 * `movedRefreshSpreadMs` for what was broadcast on it before.
 */
export class RealtimeChangeFeed implements ChangeFeed {
  readonly source = 'topic'

  constructor(
    private readonly client: Pick<SupabaseClient, 'channel' | 'removeChannel' | 'realtime'>,
    private readonly options: {movedRefreshSpreadMs?: number} = {},
  ) {}

  async listen(first: string, onChange: (version?: number) => void): Promise<ChangeFeedHandle> {
    if (!topicPattern.test(first)) throw new Error('invalid Realtime topic')
    let topic = first
    let closed = false
    let active = false
    let subscribedBefore = false
    let moved = false
    let channel: RealtimeChannel | undefined
    let timer: NodeJS.Timeout | undefined
    let delay = resubscribeDelaysMs.first

    const subscribe = () => {
      const next = this.client.channel(topic, {config: {private: false, broadcast: {self: false, ack: false}}})
      channel = next
      next.on('broadcast', {event: 'version'}, (message: {payload?: {version?: unknown}}) => {
        const version = Number(message.payload?.version)
        onChange(Number.isSafeInteger(version) ? version : undefined)
      })
      next.subscribe((status) => {
        if (closed || channel !== next) return
        if (status === 'SUBSCRIBED') {
          if (active) return
          active = true
          delay = resubscribeDelaysMs.first
          if (moved) timer = setTimeout(onChange, Math.random() * (this.options.movedRefreshSpreadMs ?? movedRefreshSpreadMs))
          else if (subscribedBefore) onChange()
          subscribedBefore = true
          moved = false
          return
        }
        active = false
        // CHANNEL_ERROR and TIMED_OUT: realtime-js rejoins by itself. CLOSED: it does not.
        if (status !== 'CLOSED') return
        channel = undefined
        void this.client.removeChannel(next)
        timer = setTimeout(subscribe, delay)
        delay = Math.min(delay * 2, resubscribeDelaysMs.max)
      })
    }

    /** Leaves the current channel (none while a resubscription waits). */
    const leave = async () => {
      active = false
      if (timer) clearTimeout(timer)
      timer = undefined
      const current = channel
      channel = undefined
      if (current) await this.client.removeChannel(current)
    }

    subscribe()
    return {
      get active() {
        return active
      },
      move: async (next: string) => {
        if (!topicPattern.test(next)) throw new Error('invalid Realtime topic')
        if (closed || next === topic) return
        await leave()
        topic = next
        delay = resubscribeDelaysMs.first
        // Broadcasts on the new topic before the subscription are missed: one refresh once subscribed.
        moved = true
        subscribe()
      },
      close: async () => {
        closed = true
        await leave()
        this.client.realtime.disconnect()
      },
    }
  }
}
