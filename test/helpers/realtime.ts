/**
 * A MINIMAL STAND-IN FOR SUPABASE REALTIME'S BROADCAST, FOR TESTS ONLY. It is not Realtime.
 *
 * It serves what vidsync's change feed (src/lib/store/realtime.ts) uses, as the client in
 * node_modules speaks it (@supabase/realtime-js 2.109.0 over @supabase/phoenix 0.4.4, the
 * lockfile's versions) and as Supabase Realtime answers (supabase/realtime):
 * - Gateway: `GET /realtime/v1/websocket?apikey=<key>&vsn=1.0.0` upgraded to a WebSocket; a key
 *   that is not one of the project's is refused (401), as Supabase's gateway does.
 * - Protocol vsn 1.0.0 only (realtime-js RealtimeClient.js `VSN_1_0_0`: JSON.stringify/parse of
 *   {join_ref, ref, topic, event, payload}); 2.0.0's binary broadcast frames are not spoken.
 * - `heartbeat` on topic `phoenix` is answered with `phx_reply` {status: ok} (Phoenix's socket
 *   closes a connection whose heartbeat goes unanswered).
 * - `phx_join` of a public channel (config.private false) on any topic is answered ok with
 *   {postgres_changes: []} (RealtimeChannel.js subscribe(): SUBSCRIBED); a private channel's join
 *   is refused (RLS on a JWT's claims is not implemented). `phx_leave` ends the membership, and so
 *   does `phx_close` sent by the server (closeChannels), which Phoenix's client does not rejoin.
 * - Broadcast from the database: realtime.send(payload jsonb, event text, topic text, private
 *   boolean DEFAULT true) as in supabase/realtime lib/realtime/tenants/repo/migrations/
 *   20260211000000_squash_migrations.ex (adds an `id` to the payload, turns its own errors into
 *   warnings), except that it sends with pg_notify instead of inserting into realtime.messages
 *   for the replication stream. A public message on topic T reaches the members of channel
 *   `realtime:T` (realtime-js prefixes channel names with `realtime:`) as event `broadcast` with
 *   payload {type: broadcast, event, payload}, as RealtimeChannel's on('broadcast') expects.
 *
 * Not done: broadcasts sent by clients, presence, postgres_changes, private channels and their
 * RLS, access_token refreshes (ignored), replay, rate limits, the 2.0.0 serializer, message storage.
 */
import type {IncomingMessage} from 'node:http'
import type {Duplex} from 'node:stream'

import pg from 'pg'
import {type WebSocket, WebSocketServer} from 'ws'

import {standInKeys} from './postgrest.js'

const notifyChannel = 'vidsync_realtime_standin'

/** The stand-in's realtime.send, created in the test database (Supabase creates the real one), with upstream's schema grant (configure_grants in the same file). */
export const realtimeSendStandIn = `
CREATE SCHEMA IF NOT EXISTS realtime;
CREATE OR REPLACE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  final_payload jsonb;
BEGIN
  BEGIN
    final_payload := CASE WHEN payload ? 'id' THEN payload ELSE jsonb_set(payload, '{id}', to_jsonb(gen_random_uuid())) END;
    PERFORM pg_notify('${notifyChannel}', jsonb_build_object('topic', topic, 'event', event, 'payload', final_payload, 'private', private)::text);
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'ErrorSendingBroadcastMessage: %', SQLERRM;
  END;
END $$;
GRANT USAGE ON SCHEMA realtime TO anon, authenticated, service_role;
`

interface Message {
  topic: string
  event: string
  payload: Record<string, unknown>
  ref: string | null
  join_ref?: string | null
}

export interface RealtimeStandIn {
  /** For startPostgrestStandIn's onUpgrade. */
  onUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void
  /** Channel topics joined so far, in order (realtime:<topic>). */
  joins: string[]
  /** Messages the database sent, in order. */
  sent: {topic: string; event: string; payload: Record<string, unknown>; private: boolean}[]
  /** Ends every client's connection, as a network failure would. */
  dropConnections(): void
  /** Closes every joined channel from the server's side (`phx_close`), the sockets staying up. */
  closeChannels(): void
  close(): Promise<void>
}

export async function startRealtimeStandIn(options: {databaseUrl: string}): Promise<RealtimeStandIn> {
  const keys = new Set<string>(Object.values(standInKeys))
  const wss = new WebSocketServer({noServer: true})
  const members = new Map<WebSocket, Map<string, string | null>>()
  const joins: string[] = []
  const sent: RealtimeStandIn['sent'] = []
  const send = (socket: WebSocket, message: Message) => socket.send(JSON.stringify(message))
  const reply = (socket: WebSocket, to: Message, status: 'ok' | 'error', response: Record<string, unknown>) =>
    send(socket, {topic: to.topic, event: 'phx_reply', payload: {status, response}, ref: to.ref, join_ref: to.join_ref ?? null})

  wss.on('connection', (socket: WebSocket) => {
    const channels = new Map<string, string | null>()
    members.set(socket, channels)
    socket.on('close', () => members.delete(socket))
    socket.on('message', (data) => {
      const message = JSON.parse(String(data)) as Message
      if (message.topic === 'phoenix' && message.event === 'heartbeat') return reply(socket, message, 'ok', {})
      if (message.event === 'phx_join') {
        const config = (message.payload.config ?? {}) as {private?: boolean}
        if (config.private) return reply(socket, message, 'error', {reason: 'private channels are not implemented by the stand-in'})
        channels.set(message.topic, message.join_ref ?? null)
        joins.push(message.topic)
        return reply(socket, message, 'ok', {postgres_changes: []})
      }
      if (message.event === 'phx_leave') {
        channels.delete(message.topic)
        return reply(socket, message, 'ok', {})
      }
    })
  })

  const listener = new pg.Client({connectionString: options.databaseUrl})
  listener.on('error', () => {})
  listener.on('notification', (notification) => {
    if (notification.channel !== notifyChannel) return
    const message = JSON.parse(notification.payload ?? '{}') as RealtimeStandIn['sent'][number]
    sent.push(message)
    if (message.private) return
    const topic = `realtime:${message.topic}`
    for (const [socket, channels] of members) {
      if (channels.has(topic)) send(socket, {topic, event: 'broadcast', payload: {type: 'broadcast', event: message.event, payload: message.payload}, ref: null})
    }
  })
  await listener.connect()
  await listener.query(`LISTEN ${notifyChannel}`)

  return {
    onUpgrade(request, socket, head) {
      const url = new URL(request.url ?? '/', 'http://stand-in')
      if (url.pathname !== '/realtime/v1/websocket' || !keys.has(url.searchParams.get('apikey') ?? '') || url.searchParams.get('vsn') !== '1.0.0') {
        socket.end('HTTP/1.1 401 Unauthorized\r\nconnection: close\r\n\r\n')
        return
      }
      wss.handleUpgrade(request, socket, head, (client) => wss.emit('connection', client, request))
    },
    joins,
    sent,
    dropConnections() {
      for (const socket of members.keys()) socket.terminate()
    },
    closeChannels() {
      for (const [socket, channels] of members) {
        for (const [topic, joinRef] of channels) send(socket, {topic, event: 'phx_close', payload: {}, ref: joinRef, join_ref: joinRef})
        channels.clear()
      }
    },
    async close() {
      for (const socket of members.keys()) socket.terminate()
      await new Promise((resolve) => wss.close(resolve))
      await listener.end()
    },
  }
}
