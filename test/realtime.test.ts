import {randomBytes} from 'node:crypto'
import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'

import {newSecret, sha256Hex} from '../src/lib/invites/secrets.js'
import {ControlPlane, type DeviceSync} from '../src/lib/store/control-plane.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {RealtimeChangeFeed} from '../src/lib/store/realtime.js'
import {PostgresClient} from '../src/lib/store/sql-client.js'
import {SupabaseRpc} from '../src/lib/store/supabase.js'
import {SyncCursor} from '../src/lib/up/refresh.js'
import {listenForChanges, Waker} from '../src/lib/up/up.js'
import {createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'
import {eventually} from './helpers/eventually.js'
import {startPostgrestStandIn, type StandIn, standInKeys} from './helpers/postgrest.js'
import {realtimeSendStandIn, type RealtimeStandIn, startRealtimeStandIn} from './helpers/realtime.js'

type Full = Extract<DeviceSync, {state: 'full'}>

const fakePublicKey = () => `-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${randomBytes(32).toString('base64')}\n-----END NEBULA X25519 PUBLIC KEY-----\n`

describe('push through Supabase Realtime (migration 010): trigger, realtime.send, socket, device loop', function () {
  this.timeout(60_000)
  let database: ThrowawayDatabase
  let realtime: RealtimeStandIn
  let api: StandIn
  let operator: ControlPlane
  const device = () => {
    const rpc = new SupabaseRpc({url: api.url, key: standInKeys.anon})
    const controlPlane = new ControlPlane(rpc)
    // The refresh after a move to a new topic at once, not within 10 s.
    controlPlane.changes = new RealtimeChangeFeed(rpc.client, {movedRefreshSpreadMs: 0})
    return controlPlane
  }

  async function joinedDevice(project: string, name: string) {
    const code = newSecret('invite')
    await operator.createInvite({project, codeSha256: sha256Hex(code)})
    const token = newSecret('device')
    const controlPlane = device()
    await controlPlane.redeemInvite({code, token, device: name, publicKey: fakePublicKey()})
    const [request] = (await operator.listJoinRequests({project})).filter((r) => r.device === name)
    const candidate = await operator.approveJoinRequest({requestId: request?.id ?? 0})
    const bundle = {'ca.crt': 'ca', 'node.crt': 'cert', 'nebula.yml': 'pki: {}', 'vidsync.json': '{}'}
    const signed = {ip: candidate.ip, fingerprint: randomBytes(32).toString('hex'), notAfter: new Date(Date.now() + 86_400_000).toISOString(), certPem: 'cert', bundle}
    await operator.approveJoinRequest({requestId: request?.id ?? 0, signed})
    const full = (await controlPlane.deviceSync({token})) as Full
    return {token, name, controlPlane, full}
  }

  /** The device's loop as runAgent sets it up, with the slow poll a minute away. */
  function subscribedLoop(d: {controlPlane: ControlPlane; full: Full}) {
    const cursor = new SyncCursor()
    cursor.version = d.full.version ?? undefined
    cursor.topic = d.full.topic
    cursor.polled()
    const waker = new Waker()
    const push = listenForChanges({controlPlane: d.controlPlane, cursor, waker, log: () => {}})
    push.passed()
    return {cursor, waker, push}
  }

  before(async () => {
    database = await createThrowawayDatabase('realtime')
    const owner = new PostgresClient(database.url)
    await migrate(owner, await loadMigrations())
    await owner.query(realtimeSendStandIn)
    await owner.close()
    realtime = await startRealtimeStandIn({databaseUrl: database.url})
    api = await startPostgrestStandIn({databaseUrl: database.url, onUpgrade: realtime.onUpgrade})
    operator = new ControlPlane(new SupabaseRpc({url: api.url, key: standInKeys.service_role}))
    for (const [name, cidr] of [['alpha', '10.98.0.0/24'], ['beta', '10.98.1.0/24']] as const) {
      await operator.createProject({name, cidr})
      await operator.populatePool({project: name})
    }
  })

  after(async () => {
    await api?.close()
    await realtime?.close()
    await database?.drop()
  })

  it("wakes a subscribed device's loop within 10 s of a revocation, with the version as the only payload", async () => {
    const d = await joinedDevice('alpha', 'rt-d')
    expect(d.full.topic).to.match(/^vidsync:[0-9a-f]{32}$/)
    const {cursor, waker, push} = subscribedLoop(d)
    try {
      await eventually(() => push.push.active, 10_000, 'the subscription')
      expect(push.push).to.deep.equal({via: 'realtime', active: true})
      expect(realtime.joins).to.include(`realtime:${d.full.topic}`)
      const victim = await joinedDevice('alpha', 'rt-v')
      await eventually(() => waker.arm().aborted, 10_000, 'the wake after a registration')
      waker.reset()
      cursor.version = (await d.controlPlane.deviceSync({token: d.token, knownVersion: cursor.version})).version ?? undefined
      cursor.polled()
      const started = Date.now()
      await operator.revokeDevice({project: 'alpha', device: victim.name})
      const afterCommit = await eventually(() => waker.arm().aborted, 10_000, 'the wake after a revocation')
      const latency = Date.now() - started
      console.log(`      push latency: ${latency} ms from the revocation's API call to the loop's wake (${afterCommit} ms after it answered)`) // eslint-disable-line no-console
      expect(latency).to.be.below(10_000)
      expect(cursor.due).to.equal(true)
      const delta = await d.controlPlane.deviceSync({token: d.token, knownVersion: cursor.version})
      expect(delta.state === 'delta' && delta.removed).to.deep.equal(['rt-v'])
      // What went out: the project's topic, event 'version', public, and the version (plus Realtime's message id) alone.
      const last = realtime.sent.at(-1)
      expect(last).to.include({topic: d.full.topic, event: 'version', private: false})
      expect(Object.keys(last?.payload ?? {}).sort()).to.deep.equal(['id', 'version'])
      expect(last?.payload.version).to.equal(delta.version)
    } finally {
      await push.close()
    }
  })

  it("never tells another project's device the topic, and a guessed topic hears nothing", async () => {
    const a = await joinedDevice('alpha', 'rt-a')
    const b = await joinedDevice('beta', 'rt-b')
    expect(b.full.topic).to.match(/^vidsync:[0-9a-f]{32}$/)
    expect(b.full.topic).not.to.equal(a.full.topic)
    // The table that holds the topics is not the API roles' to read (only device_sync, by token, answers one).
    const owner = new PostgresClient(database.url)
    try {
      const denied = await owner.transaction(async (tx) => {
        await tx.query('SET LOCAL ROLE anon')
        return tx.query('SELECT topic FROM vidsync.project_versions').then(() => 'read', (error: Error) => error.message)
      })
      expect(denied).to.match(/permission denied/)
    } finally {
      await owner.close()
    }
    const victim = await joinedDevice('alpha', 'rt-x')
    const beta = subscribedLoop(b)
    const heard: (number | undefined)[] = []
    const guessed = await new RealtimeChangeFeed(new SupabaseRpc({url: api.url, key: standInKeys.anon}).client).listen(
      `vidsync:${randomBytes(16).toString('hex')}`,
      (version) => heard.push(version),
    )
    const alpha = subscribedLoop(a)
    try {
      await eventually(() => beta.push.push.active && guessed.active && alpha.push.push.active, 10_000, 'the subscriptions')
      await operator.revokeDevice({project: 'alpha', device: victim.name})
      await eventually(() => alpha.waker.arm().aborted, 10_000, "alpha's wake")
      await sleep(300)
      expect(beta.waker.arm().aborted, "beta's loop woke for alpha's change").to.equal(false)
      expect(heard).to.deep.equal([])
    } finally {
      await Promise.all([beta.push.close(), guessed.close(), alpha.push.close()])
    }
  })

  it('draws a new topic when a device is revoked: the others wake on the old one, move, and hear later changes; the revoked one hears nothing more', async () => {
    const stay = await joinedDevice('alpha', 'rt-stay')
    const gone = await joinedDevice('alpha', 'rt-gone')
    const oldTopic = stay.full.topic as string
    expect(gone.full.topic).to.equal(oldTopic)
    const loop = subscribedLoop(stay)
    // The revoked device keeps listening on the topic it knows.
    const heard: (number | undefined)[] = []
    const revoked = await new RealtimeChangeFeed(new SupabaseRpc({url: api.url, key: standInKeys.anon}).client).listen(oldTopic, (version) => heard.push(version))
    try {
      await eventually(() => loop.push.push.active && revoked.active, 10_000, 'the subscriptions')
      await operator.revokeDevice({project: 'alpha', device: gone.name})
      // The revocation's own version goes out on the old topic: both hear it.
      await eventually(() => loop.waker.arm().aborted && heard.length === 1, 10_000, 'the wake after the revocation')
      const delta = await stay.controlPlane.deviceSync({token: stay.token, knownVersion: loop.cursor.version})
      if (delta.state !== 'delta') throw new Error(`expected a delta, got ${delta.state}`)
      expect(heard).to.deep.equal([delta.version])
      expect(delta.removed).to.deep.equal(['rt-gone'])
      expect(delta.topic).to.match(/^vidsync:[0-9a-f]{32}$/)
      expect(delta.topic).not.to.equal(oldTopic)
      const answer = await gone.controlPlane.deviceSync({token: gone.token, knownVersion: loop.cursor.version})
      expect(answer).to.deep.equal({state: 'full', version: null, project: 'alpha', device: 'rt-gone', status: 'revoked', lighthouses: [], blocklist: [], peers: []})
      // The loop's pass applies the delta (refreshFromControlPlane) and moves the feed to the new topic.
      loop.waker.reset()
      loop.cursor.version = delta.version
      loop.cursor.topic = delta.topic
      loop.cursor.polled()
      loop.push.passed()
      await eventually(() => realtime.joins.includes(`realtime:${delta.topic}`) && loop.push.push.active, 10_000, 'the move to the new topic')
      // Once subscribed it refreshes once (a broadcast before the subscription would be missed).
      await eventually(() => loop.waker.arm().aborted, 2000, 'the refresh after the move')
      loop.waker.reset()
      loop.cursor.polled()
      await joinedDevice('alpha', 'rt-later')
      await eventually(() => loop.waker.arm().aborted, 10_000, 'the wake on the new topic')
      expect(realtime.sent.at(-1)?.topic).to.equal(delta.topic)
      await sleep(300)
      expect(heard, 'the revoked device heard a change after its revocation').to.deep.equal([delta.version])
    } finally {
      await Promise.all([loop.push.close(), revoked.close()])
    }
  })

  it('makes the change when the broadcast cannot be sent', async () => {
    const owner = new PostgresClient(database.url)
    const d = await joinedDevice('alpha', 'rt-nogrant')
    try {
      await owner.query('REVOKE USAGE ON SCHEMA realtime FROM service_role')
      const before = realtime.sent.length
      await operator.revokeDevice({project: 'alpha', device: d.name})
      const answer = await d.controlPlane.deviceSync({token: d.token})
      expect(answer.state !== 'unchanged' && answer.status).to.equal('revoked')
      expect(realtime.sent.length).to.equal(before)
    } finally {
      await owner.query('GRANT USAGE ON SCHEMA realtime TO service_role')
      await owner.close()
    }
  })

  it('polls while the socket is down or the channel closed, then resubscribes and refreshes once', async () => {
    const d = await joinedDevice('alpha', 'rt-drop')
    const {cursor, waker, push} = subscribedLoop(d)
    try {
      await eventually(() => push.push.active, 10_000, 'the subscription')
      realtime.dropConnections()
      await eventually(() => !push.push.active, 5000, 'the fallback to polling')
      expect(push.push).to.deep.equal({via: 'realtime', active: false})
      // realtime-js reconnects (first after 1 s) and rejoins; broadcasts meanwhile may be lost, so the loop refreshes.
      await eventually(() => push.push.active, 10_000, 'the resubscription')
      await eventually(() => waker.arm().aborted, 2000, 'the refresh after resubscribing')
      expect(cursor.due).to.equal(true)
      waker.reset()
      cursor.polled()
      await operator.revokeDevice({project: 'alpha', device: (await joinedDevice('alpha', 'rt-after')).name})
      await eventually(() => waker.arm().aborted, 10_000, 'the wake after the resubscription')
      // A channel the server closes is not rejoined by realtime-js: the feed subscribes again (after 1 s).
      waker.reset()
      cursor.polled()
      const joins = realtime.joins.length
      realtime.closeChannels()
      await eventually(() => !push.push.active, 5000, 'the fallback to polling after the close')
      await eventually(() => push.push.active && realtime.joins.length > joins, 10_000, 'the new subscription')
      await eventually(() => waker.arm().aborted, 2000, 'the refresh after subscribing again')
    } finally {
      await push.close()
    }
  })
})
