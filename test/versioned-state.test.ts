import {randomBytes} from 'node:crypto'
import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'
import pg from 'pg'

import {newSecret, sha256Hex} from '../src/lib/invites/secrets.js'
import {ControlPlane, type DeviceSync, SqlRpc} from '../src/lib/store/control-plane.js'
import {PostgresChangeFeed} from '../src/lib/store/listen.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {PostgresClient} from '../src/lib/store/sql-client.js'
import {SyncCursor} from '../src/lib/up/refresh.js'
import {listenForChanges, Waker} from '../src/lib/up/up.js'
import {createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'
import {eventually} from './helpers/eventually.js'
import {asRole} from './helpers/roles.js'

const fakePublicKey = () =>
  `-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${randomBytes(32).toString('base64')}\n-----END NEBULA X25519 PUBLIC KEY-----\n`
const syncthingId = (letter: string) => Array.from({length: 8}, () => letter.repeat(7)).join('-')

type Full = Extract<DeviceSync, {state: 'full'}>
type Delta = Extract<DeviceSync, {state: 'delta'}>

function expectState<S extends DeviceSync['state']>(sync: DeviceSync, state: S): Extract<DeviceSync, {state: S}> {
  expect(sync.state, JSON.stringify(sync)).to.equal(state)
  return sync as Extract<DeviceSync, {state: S}>
}

describe('versioned project state (migration 007)', function () {
  this.timeout(120_000)
  let database: ThrowawayDatabase
  let pool: pg.Pool
  let owner: PostgresClient
  let operator: ControlPlane
  let device: ControlPlane

  /** A device that redeemed an invite of `project` and was approved, with a made-up certificate valid for a day. */
  async function joinedDevice(project: string, name: string) {
    const code = newSecret('invite')
    await operator.createInvite({project, codeSha256: sha256Hex(code)})
    const token = newSecret('device')
    await device.redeemInvite({code, token, device: name, publicKey: fakePublicKey()})
    const [request] = (await operator.listJoinRequests({project})).filter((r) => r.device === name)
    const candidate = await operator.approveJoinRequest({requestId: request?.id ?? 0})
    const fingerprint = randomBytes(32).toString('hex')
    const bundle = {'ca.crt': 'ca', 'node.crt': 'cert', 'nebula.yml': 'pki: {}', 'vidsync.json': '{}'}
    const signed = {ip: candidate.ip, fingerprint, notAfter: new Date(Date.now() + 86_400_000).toISOString(), certPem: 'cert', bundle}
    await operator.approveJoinRequest({requestId: request?.id ?? 0, signed})
    return {token, fingerprint, ip: candidate.ip, name}
  }

  const sync = (token: string, knownVersion?: number | null, id?: string) => device.deviceSync({token, knownVersion, syncthingId: id})
  const full = async (token: string) => expectState(await sync(token), 'full') as Full
  const version = async (project: string) =>
    Number((await owner.query<{version: string}>('SELECT v.version FROM vidsync.project_versions v JOIN vidsync.projects p ON p.id = v.project_id WHERE p.name = $1', [project]))[0]?.version)

  before(async () => {
    database = await createThrowawayDatabase('versioned')
    owner = new PostgresClient(database.url)
    await migrate(owner, await loadMigrations())
    pool = new pg.Pool({connectionString: database.url, max: 30})
    pool.on('error', () => {})
    operator = new ControlPlane(new SqlRpc(asRole(pool, 'service_role')))
    // Devices call through the API's anon role, as with Supabase's anon key.
    device = new ControlPlane(new SqlRpc(asRole(pool, 'anon')))
    for (const [name, cidr] of [['alpha', '10.97.0.0/20'], ['beta', '10.97.16.0/24']] as const) {
      await operator.createProject({name, cidr})
      await operator.populatePool({project: name})
    }
  })

  after(async () => {
    await pool?.end()
    await owner?.close()
    await database?.drop()
  })

  it('answers a device that is up to date with "unchanged", a few dozen bytes as the API returns them', async () => {
    const a = await joinedDevice('alpha', 'quiet-a')
    await joinedDevice('alpha', 'quiet-b')
    const first = await full(a.token)
    expect(first).to.include({project: 'alpha', device: 'quiet-a', status: 'active', ip: a.ip, cidr: '10.97.0.0/20'})
    expect(first.channel).to.match(/^vidsync_[0-9]+$/)
    expect(first.peers.map((peer) => peer.name)).to.include('quiet-b')
    expect(await sync(a.token, first.version)).to.deep.equal({state: 'unchanged', version: first.version})
    // The body PostgREST sends for the call (json_agg of the rows), as anon.
    const [body] = await asRole(pool, 'anon').query<{json: string}>(
      "SELECT coalesce(json_agg(_r), '[]')::text AS json FROM vidsync.device_sync(p_token => $1, p_known_version => $2) _r",
      [a.token, first.version],
    )
    expect(body?.json).to.match(/"state":"unchanged"/)
    expect(Buffer.byteLength(body?.json ?? '')).to.be.below(100)
  })

  it('sends only what changed: added, changed and removed peers, blocklist additions, lighthouses when they change', async () => {
    const watcher = await joinedDevice('alpha', 'delta-w')
    const changing = await joinedDevice('alpha', 'delta-c')
    const leaving = await joinedDevice('alpha', 'delta-l')
    const before = await full(watcher.token)
    const added = await joinedDevice('alpha', 'delta-n')
    await sync(changing.token, undefined, syncthingId('C'))
    await operator.revokeDevice({project: 'alpha', device: 'delta-l'})

    const delta = expectState(await sync(watcher.token, before.version), 'delta') as Delta
    expect(delta.status).to.equal('active')
    expect(delta.peers).to.have.deep.members([
      {name: 'delta-n', ip: added.ip, syncthingId: null},
      {name: 'delta-c', ip: changing.ip, syncthingId: syncthingId('C')},
    ])
    expect(delta.removed).to.deep.equal(['delta-l'])
    expect(delta.blocklistAdded).to.deep.equal([leaving.fingerprint])
    expect(delta.blocklistRemoved).to.deep.equal([])
    expect(delta).not.to.have.property('lighthouses')
    expect(delta.version).to.equal(await version('alpha'))
    // A device left: its project's Realtime topic was drawn anew (migration 012).
    expect(delta.topic).to.match(/^vidsync:[0-9a-f]{32}$/).and.not.equal(before.topic)
    // Served from the shared delta the watcher's call kept: the same, less the device itself.
    const own = expectState(await sync(changing.token, before.version), 'delta') as Delta
    expect(own.peers).to.deep.equal(delta.peers.filter((peer) => peer.name !== 'delta-c'))
    expect({...own, peers: []}).to.deep.equal({...delta, peers: []})
    // Applying it to what the device had gives the snapshot of the new version.
    const after = await full(watcher.token)
    const merged = [...before.peers.filter((peer) => !delta.removed.includes(peer.name) && !delta.peers.some((p) => p.name === peer.name)), ...delta.peers]
    expect(merged).to.have.deep.members(after.peers)
    expect([...before.blocklist, ...delta.blocklistAdded].sort()).to.deep.equal([...after.blocklist].sort())

    await operator.registerDevice({
      project: 'alpha', device: 'delta-lh', publicKey: fakePublicKey(), publicKeySha256: randomBytes(32).toString('hex'),
      lighthouse: {endpoint: 'lh.example.net:4242', relay: true},
    })
    const withLighthouse = expectState(await sync(watcher.token, delta.version), 'delta') as Delta
    expect(withLighthouse.lighthouses?.map((lighthouse) => lighthouse.name)).to.include('delta-lh')
    expect(withLighthouse.peers).to.deep.equal([])
    // A revoked device learns its status, and nothing else.
    expect(await sync(leaving.token, before.version)).to.deep.equal({
      state: 'full', version: null, project: 'alpha', device: 'delta-l', status: 'revoked', lighthouses: [], blocklist: [], peers: [],
    })
  })

  it('catches a device that was offline for a day up from a full snapshot', async () => {
    const sleeper = await joinedDevice('alpha', 'sleeper')
    const old = await full(sleeper.token)
    await joinedDevice('alpha', 'while-asleep')
    // A day passes: the changes since the sleeper's version are older than the retention (12 h).
    await owner.query("UPDATE vidsync.project_changes SET at = at - interval '25 hours'")
    const late = await joinedDevice('alpha', 'next-morning')
    const caughtUp = expectState(await sync(sleeper.token, old.version), 'full') as Full
    expect(caughtUp.peers.map((peer) => peer.name)).to.include.members(['while-asleep', 'next-morning'])
    const [{peers} = {peers: []}] = await asRole(pool, 'anon').query<{peers: unknown[]}>('SELECT peers FROM vidsync.device_refresh($1)', [sleeper.token])
    expect(caughtUp.peers).to.have.deep.members(peers)
    // From that snapshot on, deltas again.
    await operator.revokeDevice({project: 'alpha', device: late.name})
    expect((expectState(await sync(sleeper.token, caughtUp.version), 'delta') as Delta).removed).to.deep.equal(['next-morning'])
  })

  it('never loses a version to concurrent changes: parallel transactions each take their own, in commit order', async () => {
    const watcher = await joinedDevice('alpha', 'race-w')
    const victims = []
    for (const name of ['race-v1', 'race-v2', 'race-v3']) victims.push(await joinedDevice('alpha', name))
    const start = await full(watcher.token)
    const startVersion = Number(start.version)
    const names = Array.from({length: 12}, (_, i) => `race-n${i}`)
    // Each change in its own transaction on its own connection, held open a random moment.
    const inTransaction = async (work: (client: pg.PoolClient) => Promise<unknown>) => {
      const client = await pool.connect()
      try {
        await client.query('BEGIN')
        await client.query("SELECT set_config('role', 'service_role', true)")
        await work(client)
        await client.query('SELECT pg_sleep($1)', [Math.random() * 0.05])
        await client.query('COMMIT')
      } catch (error) {
        await client.query('ROLLBACK')
        throw error
      } finally {
        client.release()
      }
    }
    await Promise.all([
      ...names.map((name) =>
        inTransaction((client) =>
          client.query('SELECT * FROM vidsync.register_device($1, $2, $3, $4)', ['alpha', name, fakePublicKey(), randomBytes(32).toString('hex')]),
        ),
      ),
      ...victims.map((victim) => inTransaction((client) => client.query('SELECT * FROM vidsync.revoke_device($1, $2)', ['alpha', victim.name]))),
      // A device publishing its Syncthing ID meanwhile is a change too.
      sync(watcher.token, undefined, syncthingId('D')),
    ])
    const expected = names.length + victims.length + 1
    const end = await version('alpha')
    expect(end).to.equal(startVersion + expected)
    const versions = await owner.query<{version: string; subjects: string[]}>(
      `SELECT c.version, array_agg(DISTINCT c.subject) AS subjects FROM vidsync.project_changes c JOIN vidsync.projects p ON p.id = c.project_id
        WHERE p.name = 'alpha' AND c.version > $1 AND c.kind IN ('peer', 'lighthouse') GROUP BY c.version ORDER BY c.version`,
      [start.version],
    )
    // One version per transaction, none skipped, none shared.
    expect(versions.map((row) => Number(row.version))).to.deep.equal(Array.from({length: expected}, (_, i) => startVersion + 1 + i))
    expect(versions.every((row) => row.subjects.length === 1)).to.equal(true)
    const delta = expectState(await sync(watcher.token, start.version), 'delta') as Delta
    expect(delta.peers.map((peer) => peer.name)).to.include.members(names)
    expect(delta.removed).to.have.members(victims.map((victim) => victim.name))
    expect(delta.blocklistAdded).to.have.members(victims.map((victim) => victim.fingerprint))
  })

  it('shows a device of another project nothing: no change, no notification, no table', async () => {
    const b = await joinedDevice('beta', 'other-b')
    const a = await joinedDevice('alpha', 'other-a')
    const fullB = await full(b.token)
    const fullA = await full(a.token)
    expect(fullB.channel).not.to.equal(fullA.channel)
    const heard: Record<string, string[]> = {alpha: [], beta: []}
    const listener = new pg.Client({connectionString: database.url})
    await listener.connect()
    try {
      listener.on('notification', (message) => heard[message.channel === fullA.channel ? 'alpha' : 'beta']?.push(message.payload ?? ''))
      await listener.query(`LISTEN ${fullA.channel}`)
      await listener.query(`LISTEN ${fullB.channel}`)
      await joinedDevice('alpha', 'other-a2')
      await operator.revokeDevice({project: 'alpha', device: 'other-a2'})
      await eventually(() => (heard.alpha?.length ?? 0) >= 2, 10_000, "alpha's notifications")
      // The payload is the version alone: no name, address or fingerprint.
      expect(heard.alpha?.every((payload) => /^[0-9]+$/.test(payload))).to.equal(true)
      expect(heard.beta).to.deep.equal([])
    } finally {
      await listener.end()
    }
    expect(await sync(b.token, fullB.version)).to.deep.equal({state: 'unchanged', version: fullB.version})
    const delta = expectState(await sync(a.token, fullA.version), 'delta') as Delta
    expect(delta.removed).to.deep.equal(['other-a2'])
    const anon = asRole(pool, 'anon')
    for (const table of ['project_versions', 'project_changes']) {
      const failure = await anon.query(`SELECT * FROM vidsync.${table}`).then(() => undefined, (error: {code?: string}) => error.code)
      expect(failure, table).to.equal('42501')
    }
    const recording = await anon.query("SELECT vidsync.record_change(1, 'peer', 'x')").then(() => undefined, (error: {code?: string}) => error.code)
    expect(recording).to.equal('42501')
  })

  it('writes a heartbeat at most every heartbeat_seconds, and a refresh without one writes nothing', async () => {
    const d = await joinedDevice('alpha', 'beat')
    const row = async () => (await owner.query<{last_seen_at: Date; xmin: string}>("SELECT last_seen_at, xmin::text FROM vidsync.devices WHERE name = 'beat'"))[0]
    const first = await full(d.token)
    const seen = await row()
    expect(seen?.last_seen_at).to.be.instanceOf(Date)
    await sync(d.token, first.version)
    await asRole(pool, 'anon').query('SELECT * FROM vidsync.device_refresh($1)', [d.token])
    expect(await row()).to.deep.equal(seen)
    const [{seconds} = {seconds: 0}] = await owner.query<{seconds: number}>('SELECT vidsync.heartbeat_seconds() AS seconds')
    await owner.query("UPDATE vidsync.devices SET last_seen_at = now() - make_interval(secs => $1 + 1) WHERE name = 'beat'", [seconds])
    await sync(d.token, first.version)
    expect((await row())?.last_seen_at.getTime()).to.be.greaterThan(Date.now() - 60_000)
    // Liveness for the reclaim of stale devices reads it: a device that refreshes is never stale.
    expect((await operator.reclaimStale({project: 'alpha', staleSeconds: 3600, dryRun: true})).map((s) => s.device)).not.to.include('beat')
  })

  it("counts a revocation's acknowledgements: the active devices whose applied version reached the revocation's (migration 013)", async () => {
    await operator.createProject({name: 'acks', cidr: '10.97.32.0/24'})
    await operator.populatePool({project: 'acks'})
    const [a, b, c] = [await joinedDevice('acks', 'ack-a'), await joinedDevice('acks', 'ack-b'), await joinedDevice('acks', 'ack-c')]
    await joinedDevice('acks', 'ack-gone')
    expect(await operator.revocation({project: 'acks', device: 'ack-a'})).to.equal(null)
    const before = await version('acks')
    await operator.revokeDevice({project: 'acks', device: 'ack-gone'})
    const revoked = await version('acks')
    const acks = () => operator.revocation({project: 'acks', device: 'ack-gone'})
    expect(await acks()).to.deep.include({version: revoked, acknowledged: 0, pending: 3, pendingDevices: ['ack-a', 'ack-b', 'ack-c']})

    // Acknowledged by what the device applied, not by what it was sent: a refresh alone counts nothing.
    await sync(a.token, before)
    expect((await acks())?.acknowledged).to.equal(0)
    const row = async () => (await owner.query<{applied_version: string | null; xmin: string}>("SELECT applied_version, xmin::text FROM vidsync.devices WHERE name = 'ack-a'"))[0]
    expect(await device.deviceSync({token: a.token, knownVersion: revoked, appliedVersion: revoked})).to.deep.equal({state: 'unchanged', version: revoked})
    const written = await row()
    expect(written?.applied_version).to.equal(String(revoked))
    // The same or an older version again writes nothing (the row keeps its xmin), and never goes back.
    await device.deviceSync({token: a.token, knownVersion: revoked, appliedVersion: revoked})
    await device.deviceSync({token: a.token, knownVersion: revoked, appliedVersion: before})
    expect(await row()).to.deep.equal(written)
    // A version applied before the revocation does not acknowledge it; one beyond the project's is capped.
    await device.deviceSync({token: b.token, knownVersion: before, appliedVersion: before})
    await device.deviceSync({token: c.token, knownVersion: revoked, appliedVersion: revoked + 1000})
    expect((await owner.query<{applied_version: string}>("SELECT applied_version FROM vidsync.devices WHERE name = 'ack-c'"))[0]?.applied_version).to.equal(String(revoked))
    expect(await acks()).to.deep.include({acknowledged: 2, pending: 1, pendingDevices: ['ack-b']})
    // A later revocation needs a later version: the devices that applied only the first are pending for it.
    await operator.revokeDevice({project: 'acks', device: 'ack-c'})
    expect(await operator.revocation({project: 'acks', device: 'ack-c'})).to.deep.include({acknowledged: 0, pending: 2})
    expect(await acks()).to.deep.include({acknowledged: 1, pending: 1, pendingDevices: ['ack-b']})
    // Devices of earlier releases call device_sync without the argument, by name, as before.
    const [old] = await asRole(pool, 'anon').query<{state: string}>('SELECT * FROM vidsync.device_sync(p_token => $1, p_known_version => $2)', [b.token, before])
    expect(old?.state).to.equal('delta')
  })

  it("reports a version as applied once: the cursor's next refresh carries it, later ones do not", () => {
    const cursor = new SyncCursor(() => 0)
    cursor.polled()
    expect(cursor.due).to.equal(false)
    cursor.applied()
    expect(cursor.unreported).to.equal(undefined) // no version yet
    cursor.version = 7
    cursor.applied()
    expect([cursor.unreported, cursor.due]).to.deep.equal([7, true])
    cursor.reported(7)
    cursor.applied()
    expect([cursor.unreported, cursor.due]).to.deep.equal([undefined, false])
    cursor.version = 9
    cursor.applied()
    expect(cursor.unreported).to.equal(9)
  })

  it('drops a revoked certificate from the blocklist once it expired, as a change devices receive', async () => {
    const watcher = await joinedDevice('alpha', 'expiry-w')
    const revoked = await joinedDevice('alpha', 'expiry-r')
    await operator.revokeDevice({project: 'alpha', device: 'expiry-r'})
    const before = await full(watcher.token)
    expect(before.blocklist).to.include(revoked.fingerprint)
    // Expires now: after the project's last blocklist check (which may be under a second ago), before the next refresh.
    await owner.query('UPDATE vidsync.certificates SET not_after = clock_timestamp() WHERE fingerprint = $1', [revoked.fingerprint])
    const delta = expectState(await sync(watcher.token, before.version), 'delta') as Delta
    expect(delta.blocklistRemoved).to.deep.equal([revoked.fingerprint])
    expect((await full(watcher.token)).blocklist).not.to.include(revoked.fingerprint)
    expect(await sync(watcher.token, delta.version)).to.deep.equal({state: 'unchanged', version: delta.version})
    // A certificate that expired before its device was revoked never joins it.
    const expired = await joinedDevice('alpha', 'expiry-e')
    await owner.query("UPDATE vidsync.certificates SET not_after = now() - interval '1 hour' WHERE fingerprint = $1", [expired.fingerprint])
    await operator.revokeDevice({project: 'alpha', device: 'expiry-e'})
    const revocation = expectState(await sync(watcher.token, delta.version), 'delta') as Delta
    expect(revocation.removed).to.deep.equal(['expiry-e'])
    expect(revocation.blocklistAdded).to.deep.equal([])
  })

  it("wakes a device's loop within 10 s of a revocation, through LISTEN on its own connection", async () => {
    const d = await joinedDevice('alpha', 'push-d')
    const controlPlane = new ControlPlane(new SqlRpc(asRole(pool, 'anon')))
    controlPlane.changes = new PostgresChangeFeed(database.url)
    const cursor = new SyncCursor()
    const first = await full(d.token)
    cursor.version = first.version ?? undefined
    cursor.channel = first.channel
    cursor.polled()
    expect(cursor.due).to.equal(false)
    const waker = new Waker()
    const push = listenForChanges({controlPlane, cursor, waker, log: () => {}})
    push.passed()
    try {
      // LISTEN is set up asynchronously; a change notified before it would not be heard.
      await sleep(500)
      const victim = await joinedDevice('alpha', 'push-v')
      await eventually(() => waker.arm().aborted, 10_000, 'the wake after a registration')
      waker.reset()
      const started = Date.now()
      await operator.revokeDevice({project: 'alpha', device: victim.name})
      await eventually(() => waker.arm().aborted, 10_000, 'the wake after a revocation')
      expect(Date.now() - started).to.be.below(10_000)
      expect(cursor.due).to.equal(true)
      const delta = expectState(await controlPlane.deviceSync({token: d.token, knownVersion: cursor.version}), 'delta') as Delta
      expect(delta.removed).to.include('push-v')
    } finally {
      await push.close()
    }
  })
})
