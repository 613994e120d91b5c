/**
 * Migration 006 (issue 15, server side), on real Postgres with Supabase's roles: each finding is
 * tried as the hostile or careless caller would, and the test checks the answer and that nothing
 * else changed in the database.
 */
import {randomBytes} from 'node:crypto'
import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'
import pg from 'pg'

import {ConflictError, UnavailableError, type VidsyncError} from '../src/lib/errors.js'
import {newSecret, sha256Hex} from '../src/lib/invites/secrets.js'
import {ControlPlane, requestSource, type Rpc, SqlRpc} from '../src/lib/store/control-plane.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {PostgresClient} from '../src/lib/store/sql-client.js'
import {createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'
import {asRole, openTransaction, type RequestOptions} from './helpers/roles.js'

const fakePublicKey = () =>
  `-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${randomBytes(32).toString('base64')}\n-----END NEBULA X25519 PUBLIC KEY-----\n`
const syncthingId = (letter: string) => Array.from({length: 8}, () => letter.repeat(7)).join('-')

async function rejection(promise: Promise<unknown>): Promise<VidsyncError & {code?: string}> {
  try {
    await promise
  } catch (error) {
    return error as VidsyncError & {code?: string}
  }
  throw new Error('expected the call to fail')
}

describe('control-plane hardening (migration 006) on Postgres', function () {
  this.timeout(120_000)
  let database: ThrowawayDatabase
  let pool: pg.Pool
  let owner: PostgresClient
  let operator: ControlPlane
  /** A device calling through the API with these request headers (none: a direct connection). */
  const device = (options: RequestOptions = {headers: {}}) => new ControlPlane(new SqlRpc(asRole(pool, 'anon', options)))
  const viaProxy = (header: string, value: string) => device({headers: {[header]: value}})
  const trustHeader = (header: string | null) => owner.query('SELECT * FROM vidsync.set_trusted_proxy_header($1)', [header])

  async function invite(project: string, maxUses = 1) {
    const code = newSecret('invite')
    const created = await operator.createInvite({project, codeSha256: sha256Hex(code), maxUses})
    return {code, id: created.id}
  }

  /** Approves with a made-up certificate: the SQL does not read it. */
  async function approve(requestId: number) {
    const candidate = await operator.approveJoinRequest({requestId})
    const bundle = {'ca.crt': 'ca', 'node.crt': 'cert', 'nebula.yml': 'pki: {}', 'vidsync.json': '{}'}
    const notAfter = new Date(Date.now() + 86_400_000).toISOString()
    const signed = {ip: candidate.ip, fingerprint: randomBytes(32).toString('hex'), notAfter, certPem: 'cert', bundle}
    return operator.approveJoinRequest({requestId, signed})
  }

  async function joinedDevice(project: string, name: string) {
    const {code} = await invite(project)
    const token = newSecret('device')
    await device().redeemInvite({code, token, device: name, publicKey: fakePublicKey()})
    const request = (await operator.listJoinRequests({project})).find((r) => r.device === name)
    await approve(request?.id ?? 0)
    return token
  }

  /** Every row of the tables a call may change, to show that a refused call changed none. */
  const snapshot = () =>
    owner.query<{t: string}>(`SELECT json_build_object(
        'devices', (SELECT json_agg(d ORDER BY d.id) FROM vidsync.devices d),
        'pool', (SELECT json_agg(i ORDER BY i.project_id, i.ip) FROM vidsync.ip_pool i WHERE i.device_id IS NOT NULL),
        'invites', (SELECT json_agg(i ORDER BY i.id) FROM vidsync.invites i),
        'requests', (SELECT json_agg(r ORDER BY r.id) FROM vidsync.join_requests r),
        'audit', (SELECT count(*) FROM vidsync.audit_log),
        'settings', (SELECT json_agg(s ORDER BY s.name) FROM vidsync.settings s))::text AS t`)

  const attempts = (inviteId: number | null) =>
    owner.query<{source: string | null; ok: boolean}>(
      'SELECT source, ok FROM vidsync.redeem_attempts WHERE invite_id IS NOT DISTINCT FROM $1 ORDER BY id', [inviteId])

  /** Waits, bounded, until a call of this database waits for a lock: the loser of a race is at the contested row. */
  async function someoneWaitsForALock(): Promise<void> {
    for (let poll = 0; poll < 200; poll++) {
      const [row] = await owner.query<{n: number}>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
      if ((row?.n ?? 0) > 0) return
      await sleep(25)
    }
    throw new Error('no call waited for a lock within 5 s')
  }

  before(async () => {
    database = await createThrowawayDatabase('hardening')
    owner = new PostgresClient(database.url)
    await migrate(owner, await loadMigrations())
    pool = new pg.Pool({connectionString: database.url, max: 20})
    pool.on('error', () => {})
    operator = new ControlPlane(new SqlRpc(asRole(pool, 'service_role')))
    for (const [name, cidr] of [['alpha', '10.96.1.0/24'], ['beta', '10.96.2.0/24']] as const) {
      await operator.createProject({name, cidr})
      await operator.populatePool({project: name})
    }
  })

  afterEach(async () => {
    await owner.query('DELETE FROM vidsync.redeem_attempts')
    await trustHeader(null)
  })

  after(async () => {
    await pool?.end()
    await owner?.close()
    await database?.drop()
  })

  describe('5: the rate-limited source comes only from the header the operator trusts', () => {
    it('trusts no header by default: a forged x-real-ip neither locks its address out nor is recorded', async () => {
      const victim = '198.51.100.9'
      for (let i = 0; i < 12; i++) {
        const refused = await rejection(viaProxy('x-real-ip', victim).redeemInvite({code: newSecret('invite'), token: newSecret('device'), device: `f-${i}`, publicKey: fakePublicKey()}))
        expect(refused.message).to.match(/unknown invite code/)
      }
      expect((await attempts(null)).map((a) => a.source)).to.deep.equal(Array.from({length: 12}, () => null))
      const {code} = await invite('alpha')
      expect(await viaProxy('x-real-ip', victim).redeemInvite({code, token: newSecret('device'), device: 'victim-1', publicKey: fakePublicKey()}))
        .to.include({status: 'pending'})
      expect((await operator.listJoinRequests({project: 'alpha'})).find((r) => r.device === 'victim-1')?.source).to.equal(null)
    })

    it('limits per source by the trusted header only; other headers cannot move a caller to another source', async () => {
      await trustHeader('cf-connecting-ip')
      const attacker = '203.0.113.66'
      for (let i = 0; i < 10; i++) {
        // Each time with a different x-real-ip: ignored, the trusted header says who it is.
        await rejection(device({headers: {'cf-connecting-ip': attacker, 'x-real-ip': `192.0.2.${i + 1}`}})
          .redeemInvite({code: newSecret('invite'), token: newSecret('device'), device: `a-${i}`, publicKey: fakePublicKey()}))
      }
      const {code} = await invite('alpha', 2)
      const before = await snapshot()
      const limited = await rejection(viaProxy('cf-connecting-ip', attacker).redeemInvite({code, token: newSecret('device'), device: 'a-ok', publicKey: fakePublicKey()}))
      expect(limited).to.be.instanceOf(UnavailableError)
      expect(limited.message).to.equal(`too many failed invite redemptions from ${attacker}: retry in 15 minutes`)
      expect(await snapshot()).to.deep.equal(before)
      // The addresses the attacker put in x-real-ip are not locked out.
      await device({headers: {'cf-connecting-ip': '192.0.2.1'}}).redeemInvite({code, token: newSecret('device'), device: 'b-ok', publicKey: fakePublicKey()})
      expect((await operator.listJoinRequests({project: 'alpha'})).find((r) => r.device === 'b-ok')?.source).to.equal('192.0.2.1')
    })

    it('takes the last entry of a list (the one the proxy appended) and refuses what is not an address', async () => {
      await trustHeader('x-forwarded-for')
      // request_source is called by redeem_invite as its owner: ask it as the owner, with the headers PostgREST sets.
      const source = (value: string) =>
        owner.transaction(async (tx) => {
          await tx.query("SELECT set_config('request.headers', $1, true)", [JSON.stringify({'x-forwarded-for': value})])
          return (await tx.query<{source: string | null}>('SELECT vidsync.request_source() AS source'))[0]?.source
        })
      expect(await source('6.6.6.6, 198.51.100.20')).to.equal('198.51.100.20')
      expect(await source('2001:db8::1')).to.equal('2001:db8::1')
      expect(await source('\u001b[2J\u001b[Hdevice approved')).to.equal(null)
      expect(await source('999.1.1.1')).to.equal(null)
      expect(await source('1'.repeat(5000))).to.equal(null)
      const [direct] = await owner.query<{source: string}>('SELECT vidsync.request_source() AS source')
      expect(direct?.source).to.equal('127.0.0.1')
    })

    it('limits redemptions per invite whatever the source, known or not', async () => {
      const {code, id} = await invite('beta', 100)
      for (let i = 0; i < 20; i++) {
        await device().redeemInvite({code, token: newSecret('device'), device: `burst-${i}`, publicKey: fakePublicKey()})
      }
      const before = await snapshot()
      const limited = await rejection(device().redeemInvite({code, token: newSecret('device'), device: 'burst-x', publicKey: fakePublicKey()}))
      expect(limited.message).to.equal('too many redemptions of this invite: retry in a minute')
      expect(await snapshot()).to.deep.equal(before)
      expect((await operator.listInvites({project: 'beta'})).find((i) => i.id === id)?.uses).to.equal(20)
    })

    it('lets only the operator name the trusted header, and only a header name', async () => {
      const before = await snapshot()
      const denied = await rejection(asRole(pool, 'anon', {headers: {}}).query("SELECT * FROM vidsync.set_trusted_proxy_header('x-real-ip')"))
      expect(denied.code).to.equal('42501')
      const readSettings = await rejection(asRole(pool, 'anon', {headers: {}}).query('SELECT * FROM vidsync.settings'))
      expect(readSettings.code).to.equal('42501')
      const invalid = await rejection(operator.rpc.call('set_trusted_proxy_header', {p_header: 'X-Real-IP\r\nInjected: 1'}))
      expect(invalid.message).to.match(/^invalid header name/)
      expect(await snapshot()).to.deep.equal(before)
      await operator.rpc.call('set_trusted_proxy_header', {p_header: 'cf-connecting-ip'})
      expect(await owner.query('SELECT name, value FROM vidsync.settings')).to.deep.equal([{name: 'trusted_proxy_header', value: 'cf-connecting-ip'}])
      const [audited] = await owner.query<{actor: string; detail: unknown}>(
        "SELECT actor, detail FROM vidsync.audit_log WHERE action = 'settings.trusted_proxy_header' ORDER BY id DESC LIMIT 1")
      expect(audited).to.deep.equal({actor: 'service_role', detail: {header: 'cf-connecting-ip'}})
    })
  })

  describe('6: a request source is an address, bounded, and shown only as one', () => {
    it('refuses to store a source that is not an address', async () => {
      const {code} = await invite('alpha')
      await device().redeemInvite({code, token: newSecret('device'), device: 'src-1', publicKey: fakePublicKey()})
      for (const bad of ['\u001b[2J\u001b[31mforged line', 'a'.repeat(40), '10.0.0.1\n']) {
        const refused = await rejection(owner.query("UPDATE vidsync.join_requests SET source = $1 WHERE name = 'src-1'", [bad]))
        expect(refused.code, JSON.stringify(bad)).to.equal('23514')
      }
      expect((await operator.listJoinRequests({project: 'alpha'})).find((r) => r.device === 'src-1')?.source).to.equal(null)
    })

    it('hands the operator an address, "local" or null, never other text a control plane answers', async () => {
      const row = {id: 1, project: 'alpha', device: 'cam', public_key: 'k', groups: [], invite_id: 1, created_at: new Date()}
      const answering = (source: string | null): Rpc => ({call: async <R>() => [{...row, source}] as R[]})
      const sourceOf = async (source: string | null) => (await new ControlPlane(answering(source)).listJoinRequests())[0]?.source
      expect(await sourceOf('\u001b[2J\u001b[Hforged')).to.equal(null)
      expect(await sourceOf('10.0.0.1\u001b[2J')).to.equal(null)
      expect(await sourceOf('2001:db8::7')).to.equal('2001:db8::7')
      expect(await sourceOf('local')).to.equal('local')
      expect(requestSource('192.0.2.4')).to.equal('192.0.2.4')
    })
  })

  describe('13: device_refresh and the audit log', () => {
    it('refuses a Syncthing ID that another live device of the project holds, and changes nothing', async () => {
      const first = await joinedDevice('alpha', 'st-1')
      const second = await joinedDevice('alpha', 'st-2')
      await device().deviceRefresh({token: first, syncthingId: syncthingId('A')})
      const before = await snapshot()
      const refused = await rejection(device().deviceRefresh({token: second, syncthingId: syncthingId('A').toLowerCase()}))
      expect(refused).to.be.instanceOf(ConflictError)
      expect(refused.message).to.equal(`Syncthing ID ${syncthingId('A')} is already used by device "st-1" of project "alpha": each device needs its own Syncthing`)
      expect(await snapshot()).to.deep.equal(before)
      // The same machine may be a device of another project.
      const other = await joinedDevice('beta', 'st-3')
      expect((await device().deviceRefresh({token: other, syncthingId: syncthingId('A')})).status).to.equal('active')
      const registered = await rejection(operator.registerDevice({
        project: 'alpha', device: 'st-4', publicKey: fakePublicKey(), publicKeySha256: randomBytes(32).toString('hex'), syncthingId: syncthingId('A'),
      }))
      expect(registered.message).to.equal('this Syncthing ID is already used by device "st-1" of project "alpha"')
    })

    it('lets one of two concurrent claims of a Syncthing ID win, the other gets the conflict message', async () => {
      const first = await joinedDevice('alpha', 'race-st-1')
      const second = await joinedDevice('alpha', 'race-st-2')
      const winner = await openTransaction(pool, 'anon')
      try {
        await winner.query('SELECT * FROM vidsync.device_refresh($1, $2)', [first, syncthingId('B')])
        const loser = device().deviceRefresh({token: second, syncthingId: syncthingId('B')})
        await someoneWaitsForALock()
        await winner.query('COMMIT')
        const refused = await rejection(loser)
        expect(refused).to.be.instanceOf(ConflictError)
        expect(refused.message).to.equal('this Syncthing ID is already used by another device of project "alpha"')
      } finally {
        winner.release()
      }
      const rows = await owner.query<{name: string; syncthing_id: string | null}>(
        "SELECT name, syncthing_id FROM vidsync.devices WHERE name LIKE 'race-st-%' ORDER BY name")
      expect(rows).to.deep.equal([{name: 'race-st-1', syncthing_id: syncthingId('B')}, {name: 'race-st-2', syncthing_id: null}])
    })

    it('audits a change of Syncthing ID with the role that acted, whatever JWT claims the caller sets', async () => {
      const token = await joinedDevice('beta', 'audit-1')
      const forged = {headers: {}, claims: {role: 'service_role', sub: 'operator'}}
      await device(forged).deviceRefresh({token, syncthingId: syncthingId('C')})
      await device(forged).deviceRefresh({token, syncthingId: syncthingId('C')}) // a plain heartbeat: nothing to audit
      await device(forged).deviceRefresh({token, syncthingId: syncthingId('D')})
      const rows = await owner.query<{actor: string; detail: Record<string, unknown>}>(
        "SELECT actor, detail FROM vidsync.audit_log WHERE action = 'device.syncthing_id' AND detail->>'device' = 'audit-1' ORDER BY id")
      expect(rows).to.deep.equal([
        {actor: 'anon', detail: {device: 'audit-1', old: null, new: syncthingId('C')}},
        {actor: 'anon', detail: {device: 'audit-1', old: syncthingId('C'), new: syncthingId('D')}},
      ])
      // A direct connection sets claims freely too: the actor is the role it logged in as.
      await owner.transaction(async (tx) => {
        await tx.query("SELECT set_config('request.jwt.claims', '{\"role\":\"service_role\"}', true)")
        await new ControlPlane(new SqlRpc(tx)).createProject({name: 'gamma', cidr: '10.96.3.0/24'})
      })
      const [created] = await owner.query<{actor: string}>("SELECT actor FROM vidsync.audit_log WHERE action = 'project.create' AND detail->>'name' = 'gamma'")
      expect(created?.actor).to.equal(new URL(database.url).username)
    })
  })

  describe('14: redeem_invite counts every refusal, and answers it so that the count commits', () => {
    it('counts a name or key already taken as a failed attempt, without taking a use', async () => {
      await trustHeader('cf-connecting-ip')
      const {code, id} = await invite('alpha', 30)
      const publicKey = fakePublicKey()
      await viaProxy('cf-connecting-ip', '192.0.2.50').redeemInvite({code, token: newSecret('device'), device: 'taken', publicKey})
      const prober = viaProxy('cf-connecting-ip', '192.0.2.51')
      const before = await snapshot()
      const sameName = await rejection(prober.redeemInvite({code, token: newSecret('device'), device: 'taken', publicKey: fakePublicKey()}))
      expect(sameName).to.be.instanceOf(ConflictError)
      expect(sameName.message).to.equal('a device named "taken" already exists in project "alpha": join with another --name')
      const sameKey = await rejection(prober.redeemInvite({code, token: newSecret('device'), device: 'other', publicKey}))
      expect(sameKey.message).to.equal('this public key is already registered in project "alpha" (a cloned machine?): make a new key')
      expect(await snapshot()).to.deep.equal(before)
      expect(await attempts(id)).to.deep.equal([
        {source: '192.0.2.50', ok: true}, {source: '192.0.2.51', ok: false}, {source: '192.0.2.51', ok: false},
      ])
      // Enumerating names stops at the per-source limit like guessing codes.
      for (let i = 0; i < 8; i++) await rejection(prober.redeemInvite({code, token: newSecret('device'), device: 'taken', publicKey: fakePublicKey()}))
      const limited = await rejection(prober.redeemInvite({code, token: newSecret('device'), device: 'taken', publicKey: fakePublicKey()}))
      expect(limited.message).to.equal('too many failed invite redemptions from 192.0.2.51: retry in 15 minutes')
    })

    it('answers refusals as rows, not errors, so that the transaction PostgREST commits keeps the attempt', async () => {
      const {code, id} = await invite('beta', 5)
      await device().redeemInvite({code, token: newSecret('device'), device: 'row-1', publicKey: fakePublicKey()})
      const [row] = await asRole(pool, 'anon', {headers: {}}).query<{error_code: string; error_message: string}>(
        'SELECT * FROM vidsync.redeem_invite($1, $2, $3, $4)', [code, newSecret('device'), 'row-1', fakePublicKey()])
      expect(row).to.include({error_code: 'VS409'})
      expect(row?.error_message).to.match(/already exists/)
      expect((await attempts(id)).filter((a) => !a.ok)).to.have.length(1)
    })
  })

  describe('15: a registration that loses a race for a name gets the conflict message', () => {
    it('answers the loser of two concurrent registrations of one name with a conflict, and leaks no address', async () => {
      const allocated = (await operator.poolStatus({project: 'beta'})).allocated
      const winner = await openTransaction(pool, 'service_role')
      try {
        await winner.query("SELECT * FROM vidsync.allocate_ip('beta', 'twin')")
        // The loser passes the existence check (the winner has not committed) and waits at the insert.
        const loser = operator.allocateIp({project: 'beta', device: 'twin'})
        await someoneWaitsForALock()
        await winner.query('COMMIT')
        const refused = await rejection(loser)
        expect(refused).to.be.instanceOf(ConflictError)
        expect(refused.message).to.equal('device "twin" already exists in project "beta": choose another name')
      } finally {
        winner.release()
      }
      expect((await operator.poolStatus({project: 'beta'})).allocated).to.equal(allocated + 1)
    })

    it('does the same for many concurrent registrations through the typed calls', async () => {
      const results = await Promise.allSettled(Array.from({length: 8}, () =>
        operator.registerDevice({project: 'alpha', device: 'crowd', publicKey: fakePublicKey(), publicKeySha256: randomBytes(32).toString('hex')})))
      expect(results.filter((r) => r.status === 'fulfilled')).to.have.length(1)
      for (const lost of results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')) {
        expect(lost.reason).to.be.instanceOf(ConflictError)
        expect((lost.reason as Error).message).to.equal('device "crowd" already exists in project "alpha": choose another name')
      }
      const [count] = await owner.query<{n: number}>("SELECT count(*)::int AS n FROM vidsync.devices WHERE name = 'crowd'")
      expect(count?.n).to.equal(1)
    })

    it('answers a concurrent registration of the same key with the cloned-machine message', async () => {
      const digest = randomBytes(32).toString('hex')
      const winner = await openTransaction(pool, 'service_role')
      try {
        await winner.query("SELECT * FROM vidsync.register_device('alpha', 'clone-a', 'k', $1)", [digest])
        const loser = operator.registerDevice({project: 'alpha', device: 'clone-b', publicKey: 'k', publicKeySha256: digest})
        await someoneWaitsForALock()
        await winner.query('COMMIT')
        const refused = await rejection(loser)
        expect(refused).to.be.instanceOf(ConflictError)
        expect(refused.message).to.match(/^this public key is already registered in project "alpha" \(a cloned machine\?\)/)
      } finally {
        winner.release()
      }
      expect(await owner.query("SELECT name FROM vidsync.devices WHERE name LIKE 'clone-%'")).to.deep.equal([{name: 'clone-a'}])
    })

    it('refuses the second of two concurrent redemptions of one name with different invites, without taking its use', async () => {
      const first = await invite('beta')
      const second = await invite('beta')
      const winner = await openTransaction(pool, 'anon')
      try {
        await winner.query('SELECT * FROM vidsync.redeem_invite($1, $2, $3, $4)', [first.code, newSecret('device'), 'same-name', fakePublicKey()])
        const loser = device().redeemInvite({code: second.code, token: newSecret('device'), device: 'same-name', publicKey: fakePublicKey()})
        await someoneWaitsForALock()
        await winner.query('COMMIT')
        const refused = await rejection(loser)
        expect(refused).to.be.instanceOf(ConflictError)
        expect(refused.message).to.match(/is joining project "beta" right now/)
      } finally {
        winner.release()
      }
      expect((await operator.listInvites({project: 'beta'})).find((i) => i.id === second.id)?.uses).to.equal(0)
      expect(await attempts(second.id)).to.deep.equal([{source: null, ok: false}])
    })
  })

  describe('19: search_path', () => {
    it('runs no look-alike of a built-in from a schema on the caller\'s search_path', async () => {
      const code = newSecret('invite')
      await owner.transaction(async (tx) => {
        await tx.query('CREATE SCHEMA lookalike')
        await tx.query("CREATE FUNCTION lookalike.convert_to(text, text) RETURNS bytea LANGUAGE sql AS $$ SELECT 'hijacked'::bytea $$")
        await tx.query("CREATE FUNCTION lookalike.upper(text) RETURNS text LANGUAGE sql AS $$ SELECT 'hijacked' $$")
        await tx.query('SET LOCAL search_path = lookalike, public')
        const [row] = await tx.query<{digest: string; hijacked: string}>(
          "SELECT vidsync.secret_sha256('vsi', $1) AS digest, encode(convert_to('x', 'UTF8'), 'escape') AS hijacked", [code])
        expect(row?.hijacked, 'the look-alike is what an unqualified call finds').to.equal('hijacked')
        expect(row?.digest).to.equal(sha256Hex(code))
        await tx.query('DROP SCHEMA lookalike CASCADE')
      })
    })
  })
})
