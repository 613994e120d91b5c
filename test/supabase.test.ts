import {existsSync} from 'node:fs'
import {readdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'
import {execa} from 'execa'
import pg from 'pg'
import YAML from 'yaml'

import {IncompatibleSchemaError, InvalidInputError, NotFoundError, PermissionError, UnavailableError, ConflictError, type VidsyncError} from '../src/lib/errors.js'
import {newSecret, sha256Hex} from '../src/lib/invites/secrets.js'
import {readDeviceToken} from '../src/lib/join/invite.js'
import {ControlPlane} from '../src/lib/store/control-plane.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {migrateBackend, openStore} from '../src/lib/store/open.js'
import {PostgresClient} from '../src/lib/store/sql-client.js'
import {SupabaseRpc} from '../src/lib/store/supabase.js'
import {rotateDeviceKey} from '../src/lib/up/key-change.js'
import {refreshFromControlPlane} from '../src/lib/up/refresh.js'
import {resolveTools} from '../src/lib/exec.js'
import {cli, type CliResult, root} from './helpers/cli.js'
import {adminUrl, createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'
import {signJwt, startPostgrestStandIn, type StandIn, standInKeys} from './helpers/postgrest.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

async function rejection(promise: Promise<unknown>): Promise<VidsyncError> {
  try {
    await promise
  } catch (error) {
    return error as VidsyncError
  }
  throw new Error('expected the call to fail')
}

const gatewayAddress = '198.51.100.23'

const publicKey = `-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${Buffer.alloc(32, 7).toString('base64')}\n-----END NEBULA X25519 PUBLIC KEY-----\n`

describe('Supabase transport: supabase-js against the PostgREST stand-in on real Postgres', function () {
  this.timeout(120_000)
  let database: ThrowawayDatabase
  let standIn: StandIn
  const api = (key: string, url = standIn.url) => new ControlPlane(new SupabaseRpc({url, key}))

  before(async () => {
    database = await createThrowawayDatabase('supabase')
    const sql = new PostgresClient(database.url)
    await migrate(sql, await loadMigrations())
    // The stand-in sets x-real-ip to the client's address, as the deployment's proxy would (see 006).
    await sql.query("SELECT vidsync.set_trusted_proxy_header('x-real-ip')")
    await sql.close()
    // A client address the gateway reports that differs from the stand-in's own connection (127.0.0.1).
    standIn = await startPostgrestStandIn({databaseUrl: database.url, clientAddress: gatewayAddress})
  })

  after(async () => {
    await standIn?.close()
    await database?.drop()
  })

  it('runs operator calls with the service-role key and converts the JSON answers', async () => {
    const operator = api(standInKeys.service_role)
    const created = await operator.createProject({name: 'films', cidr: '10.70.0.0/24', quarantineSeconds: 3600})
    expect(created).to.deep.include({name: 'films', cidr: '10.70.0.0/24', quarantineSeconds: 3600})
    expect(created.createdAt).to.match(/^\d{4}-\d\d-\d\dT.*Z$/)
    expect(await operator.populatePool({project: 'films', cidr: '10.70.0.0/28'})).to.deep.equal({project: 'films', cidr: '10.70.0.0/28', added: 15, total: 15})
    const invite = await operator.createInvite({project: 'films', codeSha256: sha256Hex(newSecret('invite')), maxUses: 3, groups: ['crew']})
    expect(invite).to.include({project: 'films', maxUses: 3, uses: 0, state: 'active', pending: 0})
    expect(invite.groups).to.deep.equal(['crew'])
    // vidsync sent the service-role key as the JWT (its role claim chose the database role), by POST, with no Prefer.
    expect(standIn.calls.map(({fn, method, role, prefer}) => ({fn, method, role, prefer}))).to.deep.equal(
      ['create_project', 'populate_pool', 'create_invite'].map((fn) => ({fn, method: 'POST', role: 'service_role', prefer: null})),
    )
  })

  it('maps control-plane errors to vidsync errors', async () => {
    const operator = api(standInKeys.service_role)
    const unknown = await rejection(operator.poolStatus({project: 'ghost'}))
    expect(unknown).to.be.instanceOf(NotFoundError)
    expect(unknown.message).to.contain('unknown project "ghost"')
    expect(await rejection(operator.createProject({name: 'films', cidr: '10.71.0.0/24'}))).to.be.instanceOf(ConflictError)
    expect(await rejection(operator.createProject({name: 'Bad!', cidr: '10.71.0.0/24'}))).to.be.instanceOf(InvalidInputError)
  })

  it('lets the anon key reach the device functions only, and redeems with the source the gateway reports', async () => {
    const device = api(standInKeys.anon)
    const operator = api(standInKeys.service_role)
    const denied = await rejection(device.listProjects())
    expect(denied).to.be.instanceOf(PermissionError)
    expect(denied.message).to.match(/may not call vidsync.list_projects: operator commands need the service-role key/)
    // The database refused the anon role (PostgREST answers an anonymous 42501 with 401): vidsync reads
    // the SQLSTATE, not the status, so this is not mistaken for a refused key.
    expect(standIn.calls.at(-1)).to.include({fn: 'list_projects', role: 'anon', status: 401})
    expect(denied.message).not.to.match(/refused the key/)

    const code = newSecret('invite')
    await operator.createInvite({project: 'films', codeSha256: sha256Hex(code)})
    const token = newSecret('device')
    expect(await device.redeemInvite({code, token, device: 'cam', publicKey})).to.deep.equal({project: 'films', device: 'cam', status: 'pending'})
    // The address the gateway reports, not the API's own connection to Postgres (127.0.0.1).
    expect((await operator.listJoinRequests({project: 'films'}))[0]).to.include({device: 'cam', source: gatewayAddress})
    expect(await device.deviceBundle({token})).to.deep.equal({project: 'films', device: 'cam', status: 'pending', bundle: null})
    const used = await rejection(device.redeemInvite({code, token: newSecret('device'), device: 'cam2', publicKey}))
    expect(used).to.be.instanceOf(ConflictError)
    expect(used.message).to.match(/used up/)
    expect(await device.schemaVersion()).to.equal((await loadMigrations()).at(-1)?.version)
  })

  it('reports a refused key, an unexposed schema, a missing function and an unreachable URL without the key', async () => {
    const wrongKey = 'sb_secret_wrongwrongwrong'
    const refused = await rejection(api(wrongKey).listProjects())
    expect(refused).to.be.instanceOf(PermissionError)
    expect(refused.message).to.match(/refused the key in VIDSYNC_SUPABASE_KEY \(HTTP 401\)/)

    const hidden = await startPostgrestStandIn({databaseUrl: database.url, exposedSchemas: ['public']})
    try {
      const unexposed = await rejection(api(standInKeys.anon, hidden.url).schemaVersion())
      expect(unexposed).to.be.instanceOf(IncompatibleSchemaError)
      expect(unexposed.message).to.match(/does not expose the vidsync schema/)
    } finally {
      await hidden.close()
    }

    const missing = await rejection(new SupabaseRpc({url: standIn.url, key: standInKeys.service_role}).call('no_such_function'))
    expect(missing).to.be.instanceOf(IncompatibleSchemaError)
    expect(missing.message).to.match(/vidsync db migrate --database-url/)

    const unreachable = await rejection(api(standInKeys.service_role, 'http://127.0.0.1:9').listProjects())
    expect(unreachable).to.be.instanceOf(UnavailableError)
    expect(unreachable.message).to.match(/cannot reach Supabase at http:\/\/127.0.0.1:9/)
    for (const error of [refused, missing, unreachable]) {
      expect(error.message).not.to.contain(wrongKey)
      expect(error.message).not.to.contain(standInKeys.service_role)
    }
  })

  it('opens the Supabase backend after checking the schema version; migrations need the direct connection', async () => {
    const home = await tempDir()
    const store = await openStore({home, supabase: {url: standIn.url, key: standInKeys.anon}})
    expect(store.backend).to.equal('supabase')
    await store.close()
    expect(await rejection(openStore({home, supabase: {url: standIn.url}}))).to.be.instanceOf(InvalidInputError)
    const migrating = await rejection(migrateBackend({home, supabase: {url: standIn.url, key: standInKeys.service_role}}))
    expect(migrating.message).to.match(/direct connection string/)
    expect(migrating.hint).to.equal('pass it as --database-url')
    // A database URL wins: that is how `db migrate` reaches Supabase.
    expect((await migrateBackend({home, databaseUrl: database.url, supabase: {url: standIn.url}})).backend).to.equal('postgres')
  })
})

describe('the PostgREST stand-in follows PostgREST where vidsync relies on it', function () {
  this.timeout(120_000)
  let database: ThrowawayDatabase
  let standIn: StandIn

  before(async () => {
    database = await createThrowawayDatabase('standin')
    const sql = new PostgresClient(database.url)
    await migrate(sql, await loadMigrations())
    // The header the stand-in's gateway sets and Supabase's docs tell operators to trust (see 006).
    await sql.query("SELECT vidsync.set_trusted_proxy_header('cf-connecting-ip')")
    await sql.close()
    standIn = await startPostgrestStandIn({databaseUrl: database.url})
  })

  after(async () => {
    await standIn?.close()
    await database?.drop()
  })

  const rpc = async (fn: string, options: {method?: string; body?: unknown; query?: string; jwt?: string | null; headers?: Record<string, string>} = {}) => {
    const jwt = options.jwt === undefined ? standInKeys.anon : options.jwt
    const response = await fetch(`${standIn.url}/rest/v1/rpc/${fn}${options.query ?? ''}`, {
      method: options.method ?? 'POST',
      headers: {apikey: standInKeys.anon, 'content-type': 'application/json', ...(jwt ? {authorization: `Bearer ${jwt}`} : {}), ...options.headers},
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    })
    return {status: response.status, body: (await response.json()) as {code?: string; message?: string} & Record<string, unknown>}
  }

  it('takes the role from a verified HS256 JWT: none is anon, a forged or expired one is 401 PGRST301', async () => {
    expect((await rpc('schema_version', {jwt: null})).status).to.equal(200)
    expect(standIn.calls.at(-1)?.role).to.equal('anon')
    const forged = signJwt({role: 'service_role'}, 'another-secret-of-at-least-32-characters')
    expect(await rpc('list_projects', {jwt: forged})).to.deep.include({status: 401, body: {code: 'PGRST301', message: 'JWSError JWSInvalidSignature', details: null, hint: null}})
    const expired = signJwt({role: 'service_role', exp: Math.floor(Date.now() / 1000) - 60})
    expect((await rpc('list_projects', {jwt: expired})).body.code).to.equal('PGRST301')
    expect((await rpc('list_projects', {jwt: signJwt({role: 'service_role'})})).status).to.equal(200)
  })

  it('logs in as a NOINHERIT authenticator and switches role per request; 42501 is 401 for anon, 403 when authenticated', async () => {
    const sql = new PostgresClient(adminUrl)
    try {
      const [role] = await sql.query<{login: boolean; inherit: boolean; members: string[]}>(
        `SELECT r.rolcanlogin AS login, r.rolinherit AS inherit,
                ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid ORDER BY 1) AS members
           FROM pg_roles r WHERE r.rolname = 'authenticator'`,
      )
      expect(role).to.deep.include({login: true, inherit: false})
      expect(role?.members).to.include.members(['anon', 'authenticated', 'service_role'])
    } finally {
      await sql.close()
    }
    const sessions = new pg.Client({connectionString: database.url})
    await sessions.connect()
    try {
      await rpc('schema_version')
      const {rows} = await sessions.query<{usename: string}>(
        'SELECT DISTINCT usename::text FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()',
      )
      expect(rows.map((row) => row.usename)).to.deep.equal(['authenticator'])
    } finally {
      await sessions.end()
    }
    expect(await rpc('list_projects')).to.deep.include({status: 401})
    expect((await rpc('list_projects', {jwt: signJwt({role: 'authenticated'})})).status).to.equal(403)
  })

  it('calls stable functions by GET in a read-only transaction; a volatile one cannot write there; other verbs are 405', async () => {
    const got = await rpc('schema_version', {method: 'GET'})
    expect(got.status).to.equal(200)
    const operator = new ControlPlane(new SupabaseRpc({url: standIn.url, key: standInKeys.service_role}))
    await operator.createProject({name: 'reads', cidr: '10.73.0.0/24'})
    await operator.populatePool({project: 'reads'})
    const code = newSecret('invite')
    await operator.createInvite({project: 'reads', codeSha256: sha256Hex(code)})
    const query = `?p_code=${code}&p_token=${newSecret('device')}&p_device=getter&p_public_key=${encodeURIComponent(publicKey)}`
    const writing = await rpc('redeem_invite', {method: 'GET', query})
    expect(writing).to.deep.include({status: 405})
    expect(writing.body.code).to.equal('25006')
    expect((await rpc('schema_version', {method: 'DELETE'})).body.code).to.equal('PGRST101')
  })

  it('ignores Prefer leniently, refuses it under handling=strict, and records it', async () => {
    expect((await rpc('schema_version', {headers: {prefer: 'count=exact'}})).status).to.equal(200)
    expect(standIn.calls.at(-1)?.prefer).to.equal('count=exact')
    const strict = await rpc('schema_version', {headers: {prefer: 'handling=strict, count=exact'}})
    expect(strict).to.deep.include({status: 400})
    expect(strict.body).to.include({code: 'PGRST122', details: 'Invalid preferences: count=exact'})
  })

  it("drops a client's own forwarding headers: the source is what the gateway saw", async () => {
    const operator = new ControlPlane(new SupabaseRpc({url: standIn.url, key: standInKeys.service_role}))
    await operator.createProject({name: 'forward', cidr: '10.72.0.0/24'})
    await operator.populatePool({project: 'forward'})
    const code = newSecret('invite')
    await operator.createInvite({project: 'forward', codeSha256: sha256Hex(code)})
    const spoofed = {'cf-connecting-ip': '203.0.113.9', 'x-real-ip': '203.0.113.9', 'x-forwarded-for': '203.0.113.9'}
    const body = {p_code: code, p_token: newSecret('device'), p_device: 'spoofer', p_public_key: publicKey}
    expect((await rpc('redeem_invite', {body, headers: spoofed})).status).to.equal(200)
    expect((await operator.listJoinRequests({project: 'forward'}))[0]).to.include({device: 'spoofer', source: '127.0.0.1'})
  })
})

describe('invite flow through the built CLI over the stand-in', function () {
  this.timeout(240_000)
  let database: ThrowawayDatabase
  let standIn: StandIn
  let operatorHome: string
  const outputs: CliResult[] = []
  const deviceHomes: Record<string, string> = {}

  const operator = async (...args: string[]) => {
    const result = await cli([...args, '--json'], {VIDSYNC_HOME: operatorHome, VIDSYNC_SUPABASE_URL: standIn.url, VIDSYNC_SUPABASE_KEY: standInKeys.service_role})
    outputs.push(result)
    return result
  }
  const deviceEnv = (name: string) => ({
    VIDSYNC_DATABASE_URL: '',
    VIDSYNC_HOME: deviceHomes[name] ?? '',
    VIDSYNC_SUPABASE_URL: standIn.url,
    VIDSYNC_SUPABASE_KEY: standInKeys.anon,
  })
  const device = async (name: string, ...args: string[]) => {
    const result = await cli([...args, '--json'], deviceEnv(name), {timeoutMs: 120_000})
    outputs.push(result)
    return result
  }

  before(async () => {
    database = await createThrowawayDatabase('supaflow')
    standIn = await startPostgrestStandIn({databaseUrl: database.url})
    operatorHome = await tempDir()
    for (const name of ['laptop', 'desktop', 'phone']) deviceHomes[name] = await tempDir()
  })

  after(async () => {
    await standIn?.close()
    await database?.drop()
    await removeTempDirs()
  })

  it('migrates through the direct connection only', async () => {
    const viaApi = await operator('db', 'migrate')
    expect(viaApi.exitCode).to.equal(2)
    expect(viaApi.json.error.hint).to.contain('--database-url')
    const direct = await operator('db', 'migrate', '--database-url', database.url)
    expect(direct.exitCode).to.equal(0)
    expect(direct.json.backend).to.equal('postgres')
  })

  it('sets up a project over the API with the service-role key', async () => {
    expect((await operator('ca', 'init', '--name', 'studio-ca', '--duration', '30d')).exitCode).to.equal(0)
    expect((await operator('project', 'create', 'studio', '--cidr', '10.99.1.0/24')).exitCode).to.equal(0)
    expect((await operator('pool', 'populate', 'studio')).exitCode).to.equal(0)
    const lighthouse = await operator('lighthouse', 'add', 'studio', '--name', 'lh1', '--endpoint', '192.0.2.1:4242', '--generate-key', '--out', join(operatorHome, 'lh1.zip'))
    expect(lighthouse.exitCode, lighthouse.stdout).to.equal(0)
  })

  it('takes a registration back when signing fails, as a rollback would: no address, device or bundle is left', async () => {
    const failing = join(operatorHome, 'failing-nebula-cert')
    await writeFile(failing, '#!/bin/sh\nif [ "$1" = sign ]; then echo "Error: injected signing failure" >&2; exit 1; fi\nexec nebula-cert "$@"\n', {mode: 0o755})
    const pool = async () => (await operator('pool', 'status', 'studio')).json
    const before = await pool()
    const bundle = join(operatorHome, 'broken.zip')
    const env = {VIDSYNC_HOME: operatorHome, VIDSYNC_SUPABASE_URL: standIn.url, VIDSYNC_SUPABASE_KEY: standInKeys.service_role, VIDSYNC_NEBULA_CERT: failing}
    const result = await cli(['device', 'register', 'studio', '--name', 'broken', '--generate-key', '--out', bundle, '--json'], env)
    expect(result.exitCode).to.equal(1)
    expect(result.json.error.message).to.contain('injected signing failure')
    expect(await pool()).to.deep.equal(before) // the address is free again, not quarantined
    expect((await operator('device', 'list', 'studio')).json.devices.map((entry: {name: string}) => entry.name)).to.deep.equal(['lh1'])
    expect(existsSync(bundle)).to.equal(false)
  })

  let code: string
  let inviteId: number

  it('creates an invite whose code is printed once and never listed', async () => {
    const created = await operator('invite', 'create', 'studio', '--uses', '2', '--expires', '1h', '--groups', 'editors')
    expect(created.exitCode).to.equal(0)
    ;({code, id: inviteId} = created.json)
    expect(code).to.match(/^vsi_[A-Za-z0-9_-]{43}$/)
    const listed = await operator('invite', 'list', 'studio')
    expect(listed.json.invites).to.have.length(1)
    expect(listed.json.invites[0]).to.include({id: inviteId, state: 'active', uses: 0, maxUses: 2})
    expect(listed.stdout).not.to.contain(code)
  })

  it('joins with a code: key made locally, waits bounded, resumes after the unattended approval', async () => {
    const early = await device('laptop', 'join', code, '--name', 'laptop', '--wait', '1s')
    expect(early.exitCode).to.equal(6)
    expect(early.json.error.message).to.match(/laptop is still waiting for approval in studio after 1s: .*`vidsync join --resume`/)
    expect((await stat(join(deviceHomes.laptop ?? '', 'keys', 'node.key'))).mode & 0o777).to.equal(0o600)
    const [pendingFile] = await readdir(join(deviceHomes.laptop ?? '', 'joins'))
    expect((await stat(join(deviceHomes.laptop ?? '', 'joins', pendingFile ?? ''))).mode & 0o777).to.equal(0o600)

    // The second device waits while the operator's unattended approval runs, as in CI.
    const desktop = execa('node', [`${root}bin/run.js`, 'join', code, '--name', 'desktop', '--wait', '90s', '--json'], {
      env: deviceEnv('desktop'),
      reject: false,
      stdin: 'ignore',
      timeout: 120_000,
    })
    const approved = await operator('device', 'approve', 'studio', '--watch', '--count', '2', '--timeout', '60s', '--yes')
    expect(approved.exitCode, approved.stdout).to.equal(0)
    expect(approved.json.approved.map((a: {device: {name: string}}) => a.device.name).sort()).to.deep.equal(['desktop', 'laptop'])
    // The same device shape as `device show` (docs/json.md), not a bare name.
    for (const entry of approved.json.approved as {project: string; device: {name: string}}[]) {
      const shown = await operator('device', 'show', 'studio', entry.device.name)
      expect(entry.project).to.equal('studio')
      expect(entry.device).to.deep.equal(shown.json.device)
    }
    const joined = await desktop
    outputs.push({exitCode: joined.exitCode, stdout: String(joined.stdout), stderr: String(joined.stderr), json: undefined})
    expect(joined.exitCode, String(joined.stderr)).to.equal(0)
    const joinedJson = JSON.parse(String(joined.stdout))
    expect(joinedJson).to.include({project: 'studio', changed: true, operatorGeneratedKey: false})
    expect(joinedJson.device.name).to.equal('desktop')

    const resumed = await device('laptop', 'join', '--resume')
    expect(resumed.exitCode, resumed.stdout).to.equal(0)
    expect(resumed.json).to.include({project: 'studio', changed: true})
    expect(resumed.json.device.name).to.equal('laptop')
    const dir = resumed.json.projectDir as string
    expect((await readdir(dir)).sort()).to.deep.equal(['ca.crt', 'device.token', 'nebula.yml', 'node.crt', 'node.key', 'vidsync.json'])
    expect((await stat(join(dir, 'device.token'))).mode & 0o777).to.equal(0o600)
    expect(await readdir(join(deviceHomes.laptop ?? '', 'joins'))).to.deep.equal([])
  })

  it('stored bundles that hold neither a private key nor the CA key, and a used-up code refuses a third device', async () => {
    const sql = new PostgresClient(database.url)
    try {
      const bundles = await sql.query<{bundle: Record<string, string>}>('SELECT bundle FROM vidsync.join_requests WHERE bundle IS NOT NULL')
      expect(bundles).to.have.length(2)
      for (const {bundle} of bundles) {
        expect(Object.keys(bundle).sort()).to.deep.equal(['README.md', 'ca.crt', 'nebula.yml', 'node.crt', 'vidsync.json'])
        expect(JSON.stringify(bundle)).not.to.match(/PRIVATE KEY/)
        expect(JSON.parse(bundle['vidsync.json'] ?? '{}').groups).to.deep.equal(['editors'])
      }
    } finally {
      await sql.close()
    }
    const third = await device('phone', 'join', code, '--name', 'phone', '--wait', '5s')
    expect(third.exitCode).to.equal(4)
    expect(third.json.error.message).to.match(/used up \(2 of 2 uses\)/)
    expect(await readdir(join(deviceHomes.phone ?? '', 'joins'))).to.deep.equal([])
  })

  it('shows a revocation in the next refresh of the other device', async () => {
    const desktop = new ControlPlane(new SupabaseRpc({url: standIn.url, key: standInKeys.anon}))
    const token = await readDeviceToken(deviceHomes.desktop ?? '', 'studio')
    const before = await desktop.deviceRefresh({token})
    expect(before.peers.map((peer) => peer.name)).to.deep.equal(['laptop'])
    expect(before.lighthouses.map((lighthouse) => lighthouse.name)).to.deep.equal(['lh1'])
    const laptop = (await operator('device', 'show', 'studio', 'laptop')).json.device
    expect((await operator('device', 'revoke', 'studio', 'laptop', '--yes')).exitCode).to.equal(0)
    const after = await desktop.deviceRefresh({token})
    expect(after.blocklist).to.deep.equal([laptop.fingerprint])
    expect(after.peers).to.deep.equal([])

    // What the `up` loop does with it: the blocklist goes into nebula.yml, the peers into vidsync.json.
    const home = deviceHomes.desktop ?? ''
    const refreshed = await refreshFromControlPlane({home, project: 'studio', controlPlane: desktop})
    expect(refreshed).to.deep.equal({status: 'active', peersChanged: true, lighthousesChanged: false, blocklistChanged: true, casChanged: false, nebulaReloaded: false, revokedSyncthingIds: []})
    const config = YAML.parse(await readFile(join(home, 'projects', 'studio', 'nebula.yml'), 'utf8'), {version: '1.1'})
    expect(config.pki.blocklist).to.deep.equal([laptop.fingerprint])
    expect(JSON.parse(await readFile(join(home, 'projects', 'studio', 'vidsync.json'), 'utf8')).peers).to.deep.equal([])
    expect(await refreshFromControlPlane({home, project: 'studio', controlPlane: desktop})).to.deep.equal({
      status: 'active',
      peersChanged: false,
      lighthousesChanged: false,
      blocklistChanged: false,
      casChanged: false,
      nebulaReloaded: false,
      revokedSyncthingIds: [],
    })
    expect(await refreshFromControlPlane({home: deviceHomes.phone ?? '', project: 'studio', controlPlane: desktop})).to.equal(undefined)
  })

  it('puts a lighthouse added later into nebula.yml at the next refresh, relay included', async () => {
    const added = await operator('lighthouse', 'add', 'studio', '--name', 'lh2', '--endpoint', '192.0.2.2:4242', '--relay', '--generate-key', '--out', join(operatorHome, 'lh2.zip'))
    expect(added.exitCode, added.stdout).to.equal(0)
    const lh1 = (await operator('device', 'show', 'studio', 'lh1')).json.device
    const home = deviceHomes.desktop ?? ''
    const desktop = new ControlPlane(new SupabaseRpc({url: standIn.url, key: standInKeys.anon}))
    const refreshed = await refreshFromControlPlane({home, project: 'studio', controlPlane: desktop})
    expect(refreshed).to.include({lighthousesChanged: true, peersChanged: false, blocklistChanged: false})
    // nebula -test passed on the new config before it replaced the old one.
    const config = YAML.parse(await readFile(join(home, 'projects', 'studio', 'nebula.yml'), 'utf8'), {version: '1.1'})
    expect(config.static_host_map).to.deep.equal({[lh1.ip]: ['192.0.2.1:4242'], [added.json.device.ip]: ['192.0.2.2:4242']})
    expect(config.lighthouse.hosts).to.deep.equal([lh1.ip, added.json.device.ip])
    expect(config.relay.relays).to.deep.equal([added.json.device.ip])
    expect(config.pki.blocklist).to.have.length(1) // kept
    const manifest = JSON.parse(await readFile(join(home, 'projects', 'studio', 'vidsync.json'), 'utf8'))
    expect(manifest.lighthouses.map((lighthouse: {name: string}) => lighthouse.name)).to.deep.equal(['lh1', 'lh2'])
    expect((await refreshFromControlPlane({home, project: 'studio', controlPlane: desktop}))?.lighthousesChanged).to.equal(false)

    // A lighthouse that nebula refuses never holds back a revocation, and is tried again next pass.
    expect((await operator('lighthouse', 'add', 'studio', '--name', 'lh3', '--endpoint', '192.0.2.3:4242', '--generate-key', '--out', join(operatorHome, 'lh3.zip'))).exitCode).to.equal(0)
    expect((await operator('device', 'register', 'studio', '--name', 'spare', '--generate-key', '--out', join(operatorHome, 'spare.zip'))).exitCode).to.equal(0)
    const spare = (await operator('device', 'show', 'studio', 'spare')).json.device
    expect((await operator('device', 'revoke', 'studio', 'spare', '--yes')).exitCode).to.equal(0)
    const refusing = join(operatorHome, 'nebula-refusing-lh3')
    await writeFile(
      refusing,
      `#!/bin/sh\nif [ "$1" = -test ] && grep -q 192.0.2.3:4242 "$3"; then echo 'level=error msg="injected: lh3 refused"' >&2; exit 1; fi\nexec nebula "$@"\n`,
      {mode: 0o755},
    )
    const refused = await refreshFromControlPlane({home, project: 'studio', controlPlane: desktop, tools: resolveTools({nebula: refusing})})
    expect(refused).to.include({lighthousesChanged: false, blocklistChanged: true})
    expect(refused?.lighthousesRefused).to.match(/^nebula rejects .*injected: lh3 refused$/)
    const kept = YAML.parse(await readFile(join(home, 'projects', 'studio', 'nebula.yml'), 'utf8'), {version: '1.1'})
    expect(kept.pki.blocklist).to.include(spare.fingerprint)
    expect(Object.values(kept.static_host_map)).not.to.deep.include(['192.0.2.3:4242'])
    const retried = await refreshFromControlPlane({home, project: 'studio', controlPlane: desktop})
    expect(retried).to.include({lighthousesChanged: true, blocklistChanged: false})
    const now = YAML.parse(await readFile(join(home, 'projects', 'studio', 'nebula.yml'), 'utf8'), {version: '1.1'})
    expect(Object.values(now.static_host_map)).to.deep.include(['192.0.2.3:4242'])
  })

  it('a new key through the anon key: key rotate asks, the operator approves, the signer signs, the device installs it', async () => {
    const home = deviceHomes.desktop ?? ''
    const asked = await device('desktop', 'key', 'rotate', 'studio')
    expect(asked.exitCode, asked.stdout).to.equal(0)
    expect(asked.json).to.include({device: 'desktop', requested: true, installed: false, keyChange: 'pending'})
    // The control plane's clock came with the answer: this machine's agrees with it.
    expect(Math.abs(asked.json.clockOffsetSeconds)).to.be.below(5)
    expect((await operator('signer', 'studio', '--once')).json.refused.map((r: {device: string}) => r.device)).to.deep.equal(['desktop'])
    const approved = await operator('device', 'approve', 'studio', '--key-change', 'desktop')
    expect(approved.json.keyChange.publicKeySha256).to.equal(asked.json.publicKeySha256)
    const signed = await operator('signer', 'studio', '--once')
    expect(signed.json.signed).to.have.length(1)
    expect(signed.json.signed[0]).to.include({device: 'desktop', newKey: true})
    const desktop = new ControlPlane(new SupabaseRpc({url: standIn.url, key: standInKeys.anon}))
    expect(await rotateDeviceKey({home, project: 'studio', controlPlane: desktop})).to.include({installed: true, fingerprint: signed.json.signed[0].fingerprint})
    for (const fn of ['device_request_renewal', 'device_certificate']) expect(standIn.calls.filter((call) => call.fn === fn).map((call) => call.role)).to.include('anon')
  })

  it('revokes the invite, and reclaims stale devices only with --yes in scripts', async () => {
    const revoked = await operator('invite', 'revoke', 'studio', String(inviteId), '--yes')
    expect(revoked.exitCode).to.equal(0)
    expect((await operator('invite', 'list', 'studio')).json.invites[0].state).to.equal('revoked')

    const sql = new PostgresClient(database.url)
    await sql.query("UPDATE vidsync.devices SET last_seen_at = now() - interval '40 days' WHERE name = 'desktop'")
    await sql.close()
    const unconfirmed = await operator('pool', 'reclaim', 'studio', '--stale', '30d')
    expect(unconfirmed.exitCode).to.equal(2)
    expect(unconfirmed.json.error.hint).to.contain('pass --yes')
    const dryRun = await operator('pool', 'reclaim', 'studio', '--stale', '30d', '--dry-run')
    expect(dryRun.json.devices.map((d: {device: string}) => d.device)).to.deep.equal(['desktop'])
    const reclaimed = await operator('pool', 'reclaim', 'studio', '--stale', '30d', '--yes')
    expect(reclaimed.json).to.deep.include({dryRun: false})
    expect(reclaimed.json.devices.map((d: {device: string}) => d.device)).to.deep.equal(['desktop'])
    expect((await operator('device', 'list', 'studio')).json.devices.map((d: {name: string}) => d.name)).not.to.include('desktop')
  })

  it('used the service-role key for the operator and the anon key for devices, and never printed either', () => {
    const roles = new Set(standIn.calls.map((call) => call.role))
    expect([...roles].sort()).to.deep.equal(['anon', 'service_role'])
    for (const call of standIn.calls.filter((c) => ['redeem_invite', 'device_bundle'].includes(c.fn))) expect(call.role).to.equal('anon')
    for (const call of standIn.calls.filter((c) => ['create_invite', 'approve_join_request'].includes(c.fn))) expect(call.role).to.equal('service_role')
    for (const output of outputs) {
      for (const key of Object.values(standInKeys)) {
        expect(output.stdout).not.to.contain(key)
        expect(output.stderr).not.to.contain(key)
      }
    }
  })

  it('rotates the CA in one call: a failure halfway leaves no CA row and the CA files as they were', async () => {
    const sql = new PostgresClient(database.url)
    try {
      expect((await operator('project', 'create', 'zeta', '--cidr', '10.99.2.0/24')).exitCode).to.equal(0)
      // Injected failure, labelled: the second project's row fails inside rotate_project_cas, after studio's went in.
      const [zeta] = await sql.query<{id: string}>("SELECT id::text FROM vidsync.projects WHERE name = 'zeta'")
      await sql.query(`CREATE FUNCTION public.test_fail_zeta() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.project_id = ${Number(zeta?.id)} THEN RAISE EXCEPTION 'injected failure for zeta'; END IF; RETURN NEW; END $$`)
      await sql.query('CREATE TRIGGER test_fail_zeta BEFORE INSERT ON vidsync.project_cas FOR EACH ROW EXECUTE FUNCTION public.test_fail_zeta()')
      const caDir = join(operatorHome, 'ca')
      const before = await readFile(join(caDir, 'ca.crt'))
      const failed = await operator('ca', 'rotate')
      expect(failed.exitCode).to.equal(1)
      expect(failed.json.error.message).to.contain('injected failure for zeta')
      expect(standIn.calls.filter((call) => call.fn === 'rotate_project_cas').map((call) => call.status)).to.deep.equal([400])
      expect(await sql.query('SELECT count(*)::int AS n FROM vidsync.project_cas')).to.deep.equal([{n: 0}])
      expect(await readFile(join(caDir, 'ca.crt'))).to.deep.equal(before)
      expect(await readdir(join(caDir, 'previous'))).to.deep.equal([])

      await sql.query('DROP TRIGGER test_fail_zeta ON vidsync.project_cas')
      await sql.query('DROP FUNCTION public.test_fail_zeta()')
      const rotated = await operator('ca', 'rotate')
      expect(rotated.exitCode, rotated.stdout).to.equal(0)
      expect(rotated.json.projects).to.deep.equal(['studio', 'zeta'])
      expect(await sql.query("SELECT p.name, count(*)::int AS n FROM vidsync.project_cas c JOIN vidsync.projects p ON p.id = c.project_id GROUP BY p.name ORDER BY p.name")).to.deep.equal([
        {name: 'studio', n: 2},
        {name: 'zeta', n: 2},
      ])
    } finally {
      await sql.close()
    }
  })
})
