import {randomBytes} from 'node:crypto'

import {expect} from 'chai'
import pg from 'pg'

import {ConflictError, InvalidInputError, NotFoundError, UnavailableError, type VidsyncError} from '../src/lib/errors.js'
import {newSecret, sha256Hex} from '../src/lib/invites/secrets.js'
import {ControlPlane, SqlRpc} from '../src/lib/store/control-plane.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {EmbeddedClient, PostgresClient, type SqlClient} from '../src/lib/store/sql-client.js'
import {createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'
import {type ApiRole, asRole as asRoleWith} from './helpers/roles.js'


const tables = ['audit_log', 'certificates', 'devices', 'folder_access', 'folder_sizes', 'folders', 'invites', 'ip_pool', 'join_requests', 'project_cas', 'project_changes', 'project_deltas', 'project_versions', 'projects', 'redeem_attempts', 'renewal_requests', 'schema_migrations', 'settings']
const deviceFunctions = ['device_bundle', 'device_certificate', 'device_create_folder', 'device_folder_report', 'device_folders', 'device_refresh', 'device_request_renewal', 'device_revoked_peers', 'device_sync', 'device_trusted_cas', 'redeem_invite', 'schema_version']
const operatorFunctions = [
  'allocate_ip', 'approve_join_request', 'audit', 'change_retention', 'check_groups', 'check_name', 'create_invite', 'create_project', 'device_changed', 'device_conflict',
  'device_heartbeat', 'discard_registration', 'expire_blocklist', 'folder_changed', 'heartbeat_seconds', 'join_request_by_token',
  'list_devices', 'list_invites', 'list_join_requests', 'list_projects', 'live_device', 'parse_cidr', 'pool_list', 'pool_status', 'populate_pool',
  'project_cert_version', 'project_channel', 'project_created', 'project_id', 'project_network', 'project_peers', 'public_key_sha256', 'record_change', 'reclaim_stale', 'record_cert_version', 'record_certificate', 'register_device',
  'release_device', 'release_ip', 'request_source', 'revoke_device', 'revoke_invite', 'secret_sha256', 'set_trusted_proxy_header',
  // 008: certificate lifecycle
  'active_device_by_token', 'complete_renewal', 'project_cert_lifetime', 'set_cert_lifetime', 'signer_pending',
  // 009: project folders
  'check_folder_mode', 'create_folder', 'device_folders_for', 'folder_mode', 'folder_row', 'folder_summary', 'folders_of_device', 'list_folders',
  'new_folder', 'remove_folder', 'set_folder_access',
  // 010: Supabase Realtime
  'broadcast_version', 'new_realtime_topic',
  // 011: CA rotation
  'add_project_ca', 'project_device_certificates', 'project_trusted_cas', 'retire_project_ca',
  // 012: Realtime topic rotation, shared deltas
  'project_delta', 'rotate_topic',
  // 013: revocation acknowledgements (device_sync_state is 010's device_sync, which device_sync calls)
  'device_revoking', 'device_sync_state', 'revocation_acks',
  // 014: folder sizes and project bandwidth limits
  'folder_settings', 'project_folder_settings', 'set_project_sync_limits',
  // 015: new keys on renewal, CA rotation in one call
  'approve_key_change', 'key_change_state', 'rotate_project_cas',
]

const fakePublicKey = () =>
  `-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${randomBytes(32).toString('base64')}\n-----END NEBULA X25519 PUBLIC KEY-----\n`

async function rejection(promise: Promise<unknown>): Promise<VidsyncError & {code?: string}> {
  try {
    await promise
  } catch (error) {
    return error as VidsyncError
  }
  throw new Error('expected the call to fail')
}

/** A request through the API as `role`, from `source` as the trusted proxy header reports it. */
const asRole = (pool: pg.Pool, role: ApiRole, options: {source?: string; rollback?: boolean} = {}): SqlClient =>
  asRoleWith(pool, role, {headers: {'x-real-ip': options.source ?? '192.0.2.10'}, rollback: options.rollback})

describe('Supabase security model on Postgres with the Supabase roles', function () {
  this.timeout(120_000)
  let database: ThrowawayDatabase
  let pool: pg.Pool
  let owner: PostgresClient
  let operator: ControlPlane
  const device = (source?: string) => new ControlPlane(new SqlRpc(asRole(pool, 'anon', {source})))

  async function invite(project: string, options: {maxUses?: number; groups?: string[]} = {}) {
    const code = newSecret('invite')
    const created = await operator.createInvite({project, codeSha256: sha256Hex(code), maxUses: options.maxUses, groups: options.groups})
    return {code, id: created.id}
  }

  /** Approves with a made-up certificate: the SQL does not read it, signing is tested end to end elsewhere. */
  async function approve(requestId: number) {
    const candidate = await operator.approveJoinRequest({requestId})
    const fingerprint = randomBytes(32).toString('hex')
    const bundle = {'ca.crt': 'ca', 'node.crt': 'cert', 'nebula.yml': 'pki: {}', 'vidsync.json': '{}'}
    const signed = {ip: candidate.ip, fingerprint, notAfter: new Date(Date.now() + 86_400_000).toISOString(), certPem: 'cert', bundle}
    return {...(await operator.approveJoinRequest({requestId, signed})), fingerprint}
  }

  /** A device that redeemed an invite of `project` and was approved. */
  async function joinedDevice(project: string, name: string) {
    const {code} = await invite(project)
    const token = newSecret('device')
    await device().redeemInvite({code, token, device: name, publicKey: fakePublicKey()})
    const [request] = (await operator.listJoinRequests({project})).filter((r) => r.device === name)
    const approved = await approve(request?.id ?? 0)
    return {token, ...approved}
  }

  before(async () => {
    database = await createThrowawayDatabase('supasec')
    owner = new PostgresClient(database.url)
    await migrate(owner, await loadMigrations())
    // asRole's x-real-ip stands for the address the deployment's proxy reports (see 006).
    await owner.query("SELECT vidsync.set_trusted_proxy_header('x-real-ip')")
    pool = new pg.Pool({connectionString: database.url, max: 25})
    // pool.end() resolves while connections still close; dropping the database may then end them with an error.
    pool.on('error', () => {})
    operator = new ControlPlane(new SqlRpc(asRole(pool, 'service_role')))
    await operator.createProject({name: 'alpha', cidr: '10.98.1.0/24'})
    await operator.createProject({name: 'beta', cidr: '10.98.2.0/24'})
    await operator.populatePool({project: 'alpha'})
    await operator.populatePool({project: 'beta'})
  })

  after(async () => {
    await pool?.end()
    await owner?.close()
    await database?.drop()
  })

  describe('grants and row-level security', () => {
    it('has Supabase roles, row-level security on every table, no table privileges for anon or authenticated', async () => {
      const roles = await owner.query<{rolname: string}>("SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role') ORDER BY 1")
      expect(roles.map((r) => r.rolname)).to.deep.equal(['anon', 'authenticated', 'service_role'])
      const rows = await owner.query<{name: string; rls: boolean; anon: boolean; authenticated: boolean; service: boolean}>(`
        SELECT c.relname AS name, c.relrowsecurity AS rls,
               has_table_privilege('anon', c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER') AS anon,
               has_table_privilege('authenticated', c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER') AS authenticated,
               has_table_privilege('service_role', c.oid, 'SELECT,INSERT,UPDATE,DELETE') AS service
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'vidsync' AND c.relkind IN ('r', 'p') ORDER BY 1`)
      expect(rows.map((r) => r.name)).to.deep.equal(tables)
      for (const row of rows) expect(row, row.name).to.include({rls: true, anon: false, authenticated: false, service: true})
      const sequences = await owner.query<{n: number}>(`
        SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
         WHERE ns.nspname = 'vidsync' AND c.relkind = 'S' AND (has_sequence_privilege('anon', c.oid, 'USAGE') OR has_sequence_privilege('authenticated', c.oid, 'USAGE'))`)
      expect(sequences[0]?.n).to.equal(0)
    })

    it('lets anon execute only the device functions, each SECURITY DEFINER with an empty search_path', async () => {
      const rows = await owner.query<{name: string; anon: boolean; authenticated: boolean; service: boolean; definer: boolean; config: string[] | null}>(`
        SELECT p.proname AS name, has_function_privilege('anon', p.oid, 'EXECUTE') AS anon,
               has_function_privilege('authenticated', p.oid, 'EXECUTE') AS authenticated,
               has_function_privilege('service_role', p.oid, 'EXECUTE') AS service, p.prosecdef AS definer, p.proconfig AS config
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'vidsync' ORDER BY 1`)
      expect(rows.map((r) => r.name)).to.have.members([...deviceFunctions, ...operatorFunctions])
      expect(rows.filter((r) => r.anon).map((r) => r.name)).to.deep.equal(deviceFunctions)
      expect(rows.filter((r) => r.authenticated)).to.deep.equal([])
      expect(rows.filter((r) => !r.service)).to.deep.equal([])
      expect(rows.filter((r) => r.definer).map((r) => r.name)).to.deep.equal(deviceFunctions)
      for (const row of rows.filter((r) => r.definer)) expect(row.config, row.name).to.deep.equal(['search_path=""'])
      const schema = await owner.query<{anon: boolean; authenticated: boolean}>(
        "SELECT has_schema_privilege('anon', 'vidsync', 'USAGE') AS anon, has_schema_privilege('authenticated', 'vidsync', 'USAGE') AS authenticated",
      )
      expect(schema[0]).to.deep.equal({anon: true, authenticated: false})
    })

    for (const table of tables) {
      it(`${table}: anon and authenticated are denied, service_role may read and write`, async () => {
        for (const role of ['anon', 'authenticated'] as const) {
          const reading = await rejection(asRole(pool, role).query(`SELECT * FROM vidsync.${table} LIMIT 1`))
          expect(reading.code, `${role} reads ${table}`).to.equal('42501')
          const deleting = await rejection(asRole(pool, role, {rollback: true}).query(`DELETE FROM vidsync.${table}`))
          expect(deleting.code, `${role} deletes ${table}`).to.equal('42501')
        }
        await asRole(pool, 'service_role').query(`SELECT * FROM vidsync.${table} LIMIT 1`)
        await asRole(pool, 'service_role', {rollback: true}).query(`DELETE FROM vidsync.${table}`)
      })
    }

    it('row-level security hides every row from anon even where a table was granted by mistake', async () => {
      // Rows must exist for their hiding to mean anything.
      await invite('alpha')
      const [present] = await owner.query<{projects: number; invites: number}>(
        'SELECT (SELECT count(*)::int FROM vidsync.projects) AS projects, (SELECT count(*)::int FROM vidsync.invites) AS invites',
      )
      expect(present?.projects).to.be.above(0)
      expect(present?.invites).to.be.above(0)
      const client = await pool.connect()
      try {
        await client.query('BEGIN')
        await client.query('GRANT SELECT ON vidsync.projects, vidsync.invites TO anon')
        await client.query("SELECT set_config('role', 'anon', true)")
        expect((await client.query('SELECT * FROM vidsync.projects')).rows).to.deep.equal([])
        expect((await client.query('SELECT * FROM vidsync.invites')).rows).to.deep.equal([])
      } finally {
        await client.query('ROLLBACK')
        client.release()
      }
    })

    /** Calls `fn` with NULL for every argument, as `role`, always rolled back: only the privilege check matters. */
    async function probe(role: ApiRole, fn: string): Promise<string | undefined> {
      const [info] = await owner.query<{n: number}>("SELECT pronargs AS n FROM pg_proc WHERE proname = $1 AND pronamespace = 'vidsync'::regnamespace", [fn])
      const nulls = Array.from({length: info?.n ?? 0}, () => 'NULL').join(', ')
      try {
        await asRole(pool, role, {rollback: true}).query(`SELECT vidsync.${fn}(${nulls})`)
        return undefined
      } catch (error) {
        return (error as {code?: string}).code
      }
    }

    for (const fn of operatorFunctions) {
      it(`${fn}: denied to anon and authenticated, executable by service_role`, async () => {
        expect(await probe('anon', fn)).to.equal('42501')
        expect(await probe('authenticated', fn)).to.equal('42501')
        expect(await probe('service_role', fn)).not.to.equal('42501')
      })
    }

    for (const fn of deviceFunctions) {
      it(`${fn}: executable by anon and service_role, denied to authenticated`, async () => {
        expect(await probe('anon', fn)).not.to.equal('42501')
        expect(await probe('service_role', fn)).not.to.equal('42501')
        expect(await probe('authenticated', fn)).to.equal('42501')
      })
    }

    it('records in the audit log which API role acted', async () => {
      const {id} = await invite('alpha')
      const [row] = await owner.query<{actor: string}>("SELECT actor FROM vidsync.audit_log WHERE action = 'invite.create' AND detail->>'invite' = $1", [String(id)])
      expect(row?.actor).to.equal('service_role')
    })
  })

  describe('invites', () => {
    it('redeems an invite into a pending device that holds no address and sees only its own status', async () => {
      const {code} = await invite('alpha', {groups: ['editors']})
      const token = newSecret('device')
      const allocated = (await operator.poolStatus({project: 'alpha'})).allocated
      const redeemed = await device().redeemInvite({code, token, device: 'cam-1', publicKey: fakePublicKey()})
      expect(redeemed).to.deep.equal({project: 'alpha', device: 'cam-1', status: 'pending'})
      expect((await operator.poolStatus({project: 'alpha'})).allocated).to.equal(allocated)
      expect(await device().deviceBundle({token})).to.deep.equal({project: 'alpha', device: 'cam-1', status: 'pending', bundle: null})
      expect((await rejection(device().deviceRefresh({token}))).message).to.match(/pending: wait for the operator/)
      const [request] = (await operator.listJoinRequests({project: 'alpha'})).filter((r) => r.device === 'cam-1')
      expect(request).to.include({project: 'alpha', source: '192.0.2.10'})
      expect(request?.groups).to.deep.equal(['editors'])
    })

    it('answers a retry with the same token without taking a second use', async () => {
      const {code, id} = await invite('alpha', {maxUses: 2})
      const token = newSecret('device')
      const publicKey = fakePublicKey()
      await device().redeemInvite({code, token, device: 'retry-1', publicKey})
      expect(await device().redeemInvite({code, token, device: 'retry-1', publicKey})).to.include({status: 'pending'})
      expect((await operator.listInvites({project: 'alpha'})).find((i) => i.id === id)).to.include({uses: 1, pending: 1})
    })

    it('refuses unknown, malformed, expired, revoked and used-up codes', async () => {
      const redeem = (code: string, name: string) =>
        rejection(device('198.51.100.1').redeemInvite({code, token: newSecret('device'), device: name, publicKey: fakePublicKey()}))
      const unknown = await redeem(newSecret('invite'), 'x1')
      expect(unknown).to.be.instanceOf(NotFoundError)
      expect(unknown.message).to.match(/unknown invite code/)
      const malformed = await redeem('vsi_short', 'x2')
      expect(malformed).to.be.instanceOf(InvalidInputError)
      expect(malformed.message).not.to.contain('vsi_short')

      const expired = await invite('alpha')
      await owner.query("UPDATE vidsync.invites SET expires_at = now() - interval '1 second' WHERE id = $1", [expired.id])
      expect((await redeem(expired.code, 'x3')).message).to.match(/expired at/)

      const revoked = await invite('alpha', {maxUses: 3})
      const waitingToken = newSecret('device')
      await device().redeemInvite({code: revoked.code, token: waitingToken, device: 'waiting-1', publicKey: fakePublicKey()})
      expect(await operator.revokeInvite({project: 'alpha', id: revoked.id})).to.include({rejected: 1})
      const revokedError = await redeem(revoked.code, 'x4')
      expect(revokedError).to.be.instanceOf(ConflictError)
      expect(revokedError.message).to.match(/revoked/)
      expect((await device().deviceBundle({token: waitingToken})).status).to.equal('rejected')
      expect(await rejection(operator.revokeInvite({project: 'alpha', id: revoked.id}))).to.be.instanceOf(ConflictError)
      expect(await rejection(operator.revokeInvite({project: 'beta', id: revoked.id}))).to.be.instanceOf(NotFoundError)

      const used = await invite('alpha')
      await device().redeemInvite({code: used.code, token: newSecret('device'), device: 'used-1', publicKey: fakePublicKey()})
      expect((await redeem(used.code, 'x5')).message).to.match(/used up \(1 of 1 uses\)/)
      expect((await operator.listInvites({project: 'alpha'})).find((i) => i.id === used.id)?.state).to.equal('used')
    })

    it('refuses a name or key already taken in the project without taking a use', async () => {
      const {code, id} = await invite('alpha', {maxUses: 5})
      const publicKey = fakePublicKey()
      await device().redeemInvite({code, token: newSecret('device'), device: 'dup-1', publicKey})
      const sameName = await rejection(device().redeemInvite({code, token: newSecret('device'), device: 'dup-1', publicKey: fakePublicKey()}))
      expect(sameName.message).to.match(/already exists in project "alpha"/)
      const sameKey = await rejection(device().redeemInvite({code, token: newSecret('device'), device: 'dup-2', publicKey}))
      expect(sameKey.message).to.match(/cloned machine/)
      const badKey = await rejection(device().redeemInvite({code, token: newSecret('device'), device: 'dup-3', publicKey: 'nope'}))
      expect(badKey).to.be.instanceOf(InvalidInputError)
      expect((await operator.listInvites({project: 'alpha'})).find((i) => i.id === id)?.uses).to.equal(1)
    })

    it('lets exactly one of many concurrent redemptions take a single-use invite', async () => {
      const {code, id} = await invite('beta')
      const attempts = await Promise.allSettled(
        Array.from({length: 20}, (_, i) =>
          device(`203.0.113.${i + 1}`).redeemInvite({code, token: newSecret('device'), device: `race-${i}`, publicKey: fakePublicKey()}),
        ),
      )
      const won = attempts.filter((a) => a.status === 'fulfilled')
      expect(won).to.have.length(1)
      for (const lost of attempts.filter((a) => a.status === 'rejected')) expect((lost.reason as Error).message).to.match(/used up/)
      const [row] = await owner.query<{uses: number; requests: number}>(
        'SELECT i.uses, (SELECT count(*)::int FROM vidsync.join_requests r WHERE r.invite_id = i.id) AS requests FROM vidsync.invites i WHERE i.id = $1',
        [id],
      )
      expect(row).to.deep.equal({uses: 1, requests: 1})
    })

    it('rate-limits failed redemptions per source, and redemptions per invite', async () => {
      const source = '198.51.100.77'
      for (let i = 0; i < 10; i++) {
        const refused = await rejection(device(source).redeemInvite({code: newSecret('invite'), token: newSecret('device'), device: `rl-${i}`, publicKey: fakePublicKey()}))
        expect(refused).to.be.instanceOf(NotFoundError)
      }
      const good = await invite('alpha', {maxUses: 100})
      const limited = await rejection(device(source).redeemInvite({code: good.code, token: newSecret('device'), device: 'rl-ok', publicKey: fakePublicKey()}))
      expect(limited).to.be.instanceOf(UnavailableError)
      expect(limited.message).to.match(/too many failed invite redemptions from 198\.51\.100\.77/)
      // Another source is not affected.
      await device('198.51.100.78').redeemInvite({code: good.code, token: newSecret('device'), device: 'rl-other', publicKey: fakePublicKey()})

      for (let i = 0; i < 19; i++) {
        await device(`198.51.101.${i + 1}`).redeemInvite({code: good.code, token: newSecret('device'), device: `burst-${i}`, publicKey: fakePublicKey()})
      }
      const burst = await rejection(device('198.51.102.1').redeemInvite({code: good.code, token: newSecret('device'), device: 'burst-x', publicKey: fakePublicKey()}))
      expect(burst.message).to.match(/too many redemptions of this invite/)
      await owner.query('DELETE FROM vidsync.redeem_attempts')
    })

    it('stores codes and tokens only as sha256', async () => {
      const {code} = await invite('alpha')
      const token = newSecret('device')
      await device().redeemInvite({code, token, device: 'hashed-1', publicKey: fakePublicKey()})
      for (const table of tables) {
        const [row] = await owner.query<{hits: number}>(
          `SELECT count(*)::int AS hits FROM vidsync.${table} t WHERE t::text LIKE '%' || $1 || '%' OR t::text LIKE '%' || $2 || '%'`,
          [code.slice(4), token.slice(4)],
        )
        expect(row?.hits, table).to.equal(0)
      }
      const [stored] = await owner.query<{n: number}>(
        'SELECT count(*)::int AS n FROM vidsync.invites i JOIN vidsync.join_requests r ON r.invite_id = i.id WHERE i.code_sha256 = $1 AND r.token_sha256 = $2',
        [sha256Hex(code), sha256Hex(token)],
      )
      expect(stored?.n).to.equal(1)
    })
  })

  describe('approval, device tokens and refresh', () => {
    it('approves in two calls: the first only answers a candidate address and allocates nothing', async () => {
      const {code} = await invite('alpha')
      const token = newSecret('device')
      await device().redeemInvite({code, token, device: 'two-step', publicKey: fakePublicKey()})
      const [request] = (await operator.listJoinRequests({project: 'alpha'})).filter((r) => r.device === 'two-step')
      const before = (await operator.poolStatus({project: 'alpha'})).allocated
      const probe = await operator.approveJoinRequest({requestId: request?.id ?? 0})
      expect(probe).to.include({approved: false, project: 'alpha', device: 'two-step', prefixLength: 24})
      expect((await operator.poolStatus({project: 'alpha'})).allocated).to.equal(before)

      const bundle = {'ca.crt': 'ca', 'node.crt': 'cert', 'nebula.yml': 'x', 'vidsync.json': '{}'}
      const signed = {fingerprint: randomBytes(32).toString('hex'), notAfter: new Date(Date.now() + 86_400_000).toISOString(), certPem: 'cert', bundle}
      // Someone else took the candidate meanwhile: nothing is committed, the next candidate comes back.
      await operator.allocateIp({project: 'alpha', device: 'interloper'})
      const raced = await operator.approveJoinRequest({requestId: request?.id ?? 0, signed: {...signed, ip: probe.ip}})
      expect(raced.approved).to.equal(false)
      expect(raced.ip).not.to.equal(probe.ip)
      const withKey = await rejection(operator.approveJoinRequest({
        requestId: request?.id ?? 0,
        signed: {...signed, ip: raced.ip, bundle: {...bundle, 'node.key': '-----BEGIN NEBULA X25519 PRIVATE KEY-----'}},
      }))
      expect(withKey.message).to.match(/private key/)
      const done = await operator.approveJoinRequest({requestId: request?.id ?? 0, signed: {...signed, ip: raced.ip}})
      expect(done).to.include({approved: true, ip: raced.ip})
      expect((await operator.poolStatus({project: 'alpha'})).allocated).to.equal(before + 2)
      expect(await device().deviceBundle({token})).to.deep.include({status: 'active', bundle})
      expect(await rejection(operator.approveJoinRequest({requestId: request?.id ?? 0}))).to.be.instanceOf(ConflictError)
    })

    it('gives each device its own project only; a wrong token gets nothing', async () => {
      const a1 = await joinedDevice('alpha', 'peer-a1')
      const a2 = await joinedDevice('alpha', 'peer-a2')
      const b1 = await joinedDevice('beta', 'peer-b1')
      const refreshA = await device().deviceRefresh({token: a1.token})
      expect(refreshA).to.include({project: 'alpha', device: 'peer-a1', status: 'active', ip: a1.ip, cidr: '10.98.1.0/24'})
      expect(refreshA.peers.map((p) => p.name)).to.include('peer-a2').and.not.include('peer-b1')
      const refreshB = await device().deviceRefresh({token: b1.token})
      // One assertion per peer: a negated include.members passes when only one of them leaks.
      const peersOfB = refreshB.peers.map((p) => p.name)
      for (const leaked of ['peer-a1', 'peer-a2']) expect(peersOfB, leaked).not.to.include(leaked)
      expect((await device().deviceBundle({token: b1.token})).project).to.equal('beta')

      expect(await rejection(device().deviceRefresh({token: newSecret('device')}))).to.be.instanceOf(NotFoundError)
      expect(await rejection(device().deviceBundle({token: newSecret('device')}))).to.be.instanceOf(NotFoundError)
      expect(await rejection(device().deviceBundle({token: 'vsd_not-a-token'}))).to.be.instanceOf(InvalidInputError)
      expect(a2.approved).to.equal(true)
    })

    it('records heartbeats and Syncthing IDs, and shows a revocation in the next refresh', async () => {
      const c1 = await joinedDevice('alpha', 'rev-c1')
      const c2 = await joinedDevice('alpha', 'rev-c2')
      const syncthingId = 'MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZDMM-FZWI3DP-BONSGYY-LTMRWAD'
      await device().deviceRefresh({token: c2.token, syncthingId})
      const [seen] = await owner.query<{last_seen_at: Date | null}>("SELECT last_seen_at FROM vidsync.devices WHERE name = 'rev-c2'")
      expect(seen?.last_seen_at).to.be.instanceOf(Date)
      expect((await device().deviceRefresh({token: c1.token})).peers).to.deep.include({name: 'rev-c2', ip: c2.ip, syncthingId})
      expect(await rejection(device().deviceRefresh({token: c1.token, syncthingId: 'bogus'}))).to.be.instanceOf(InvalidInputError)

      await operator.revokeDevice({project: 'alpha', device: 'rev-c2'})
      const after = await device().deviceRefresh({token: c1.token})
      expect(after.blocklist).to.include(c2.fingerprint)
      expect(after.peers.map((p) => p.name)).not.to.include('rev-c2')
      expect(await device().deviceRefresh({token: c2.token})).to.deep.equal({
        project: 'alpha', device: 'rev-c2', status: 'revoked', ip: null, cidr: null, lighthouses: [], blocklist: [], peers: [],
      })
      expect(await device().deviceBundle({token: c2.token})).to.include({status: 'revoked', bundle: null})
    })

    it('reclaims devices silent for longer than the threshold, never lighthouses or recent ones', async () => {
      const stale = await joinedDevice('beta', 'stale-1')
      const fresh = await joinedDevice('beta', 'fresh-1')
      await device().deviceRefresh({token: fresh.token})
      await owner.query("UPDATE vidsync.devices SET last_seen_at = now() - interval '40 days' WHERE name = 'stale-1'")
      await owner.query("UPDATE vidsync.devices SET created_at = now() - interval '40 days' WHERE name = 'fresh-1'")
      await operator.registerDevice({project: 'beta', device: 'lh-1', publicKey: fakePublicKey(), publicKeySha256: randomBytes(32).toString('hex'), lighthouse: {endpoint: '192.0.2.1:4242', relay: false}})
      await owner.query("UPDATE vidsync.devices SET created_at = now() - interval '40 days' WHERE name = 'lh-1'")

      const listed = await operator.reclaimStale({project: 'beta', staleSeconds: 30 * 86_400, dryRun: true})
      const listedNames = listed.map((d) => d.device)
      expect(listedNames).to.include('stale-1')
      for (const kept of ['fresh-1', 'lh-1']) expect(listedNames, kept).not.to.include(kept)
      expect((await operator.device({project: 'beta', device: 'stale-1'})).status).to.equal('active')
      const reclaimed = await operator.reclaimStale({project: 'beta', staleSeconds: 30 * 86_400})
      expect(reclaimed.map((d) => d.device)).to.deep.equal(listed.map((d) => d.device))
      expect((await operator.poolList({project: 'beta'})).find((a) => a.ip === stale.ip)?.state).to.equal('quarantined')
      expect((await device().deviceRefresh({token: fresh.token})).blocklist).to.include(stale.fingerprint)
      expect((await device().deviceRefresh({token: stale.token})).status).to.equal('released')
      expect(await rejection(operator.reclaimStale({project: 'beta', staleSeconds: 60}))).to.be.instanceOf(InvalidInputError)
    })
  })
})

describe('Supabase security model on PGlite', () => {
  let db: EmbeddedClient

  before(async () => {
    db = await EmbeddedClient.open()
    await migrate(db, await loadMigrations())
  })

  after(async () => db?.close())

  const as = <R>(role: ApiRole, text: string, params: unknown[] = []) =>
    db.transaction(async (tx) => {
      await tx.query("SELECT set_config('role', $1, true)", [role])
      return tx.query<R>(text, params)
    })

  it('applies the same grants: anon reaches the device functions and nothing else', async () => {
    const operator = new ControlPlane(new SqlRpc(db))
    await operator.createProject({name: 'lite', cidr: '10.97.0.0/24'})
    await operator.populatePool({project: 'lite'})
    const code = newSecret('invite')
    await operator.createInvite({project: 'lite', codeSha256: sha256Hex(code)})
    expect((await rejection(as('anon', 'SELECT * FROM vidsync.invites'))).code).to.equal('42501')
    expect((await rejection(as('anon', "SELECT * FROM vidsync.create_invite('lite', $1)", ['0'.repeat(64)]))).code).to.equal('42501')
    const [redeemed] = await as<{status: string; error_code: string | null}>('anon', 'SELECT * FROM vidsync.redeem_invite($1, $2, $3, $4)', [
      code, newSecret('device'), 'lite-1', fakePublicKey(),
    ])
    expect(redeemed).to.include({status: 'pending', error_code: null})
    const [request] = await operator.listJoinRequests({project: 'lite'})
    const candidate = await operator.approveJoinRequest({requestId: request?.id ?? 0})
    const bundle = {'ca.crt': 'ca', 'node.crt': 'cert', 'nebula.yml': 'x', 'vidsync.json': '{}'}
    const signed = {ip: candidate.ip, fingerprint: 'f'.repeat(64), notAfter: new Date(Date.now() + 86_400_000).toISOString(), certPem: 'cert', bundle}
    expect(await operator.approveJoinRequest({requestId: request?.id ?? 0, signed})).to.include({approved: true, ip: '10.97.0.1'})
    const latest = (await loadMigrations()).at(-1)?.version
    expect((await as<{version: number}>('anon', 'SELECT * FROM vidsync.schema_version()'))[0]?.version).to.equal(latest)
  })

  it("records a device's applied version through anon's device_sync and counts the revocation's acknowledgements", async () => {
    const operator = new ControlPlane(new SqlRpc(db))
    await operator.createProject({name: 'lite-acks', cidr: '10.97.1.0/24'})
    await operator.populatePool({project: 'lite-acks'})
    const tokens: string[] = []
    for (const name of ['keeper', 'gone']) {
      const code = newSecret('invite')
      const token = newSecret('device')
      tokens.push(token)
      await operator.createInvite({project: 'lite-acks', codeSha256: sha256Hex(code)})
      await as('anon', 'SELECT * FROM vidsync.redeem_invite($1, $2, $3, $4)', [code, token, name, fakePublicKey()])
      const request = (await operator.listJoinRequests({project: 'lite-acks'})).find((r) => r.device === name)
      const candidate = await operator.approveJoinRequest({requestId: request?.id ?? 0})
      const bundle = {'ca.crt': 'ca', 'node.crt': 'cert', 'nebula.yml': 'x', 'vidsync.json': '{}'}
      const signed = {ip: candidate.ip, fingerprint: randomBytes(32).toString('hex'), notAfter: new Date(Date.now() + 86_400_000).toISOString(), certPem: 'cert', bundle}
      await operator.approveJoinRequest({requestId: request?.id ?? 0, signed})
    }
    await operator.revokeDevice({project: 'lite-acks', device: 'gone'})
    expect(await operator.revocation({project: 'lite-acks', device: 'gone'})).to.deep.include({acknowledged: 0, pending: 1, pendingDevices: ['keeper']})
    const [synced] = await as<{version: string}>('anon', 'SELECT * FROM vidsync.device_sync(p_token => $1)', [tokens[0]])
    await as('anon', 'SELECT * FROM vidsync.device_sync(p_token => $1, p_known_version => $2, p_applied_version => $2)', [tokens[0], synced?.version])
    expect(await operator.revocation({project: 'lite-acks', device: 'gone'})).to.deep.include({acknowledged: 1, pending: 0, pendingDevices: []})
  })
})
