/**
 * Project folders in the control plane (migration 009, issue 13) on real Postgres with Supabase's
 * roles: the operator's functions, access resolution, and the device-facing functions by token.
 */
import {randomBytes} from 'node:crypto'

import {expect} from 'chai'
import pg from 'pg'

import {ConflictError, InvalidInputError, NotFoundError} from '../src/lib/errors.js'
import {bundleFolders, createFolder, deviceCreateFolder, deviceFolderReport, deviceFolders, foldersForDevice, listProjectFolders, removeProjectFolder, setFolderAccess, setProjectSyncLimits} from '../src/lib/folders/store.js'
import {newSecret, sha256Hex} from '../src/lib/invites/secrets.js'
import {ControlPlane, SqlRpc} from '../src/lib/store/control-plane.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {PostgresClient} from '../src/lib/store/sql-client.js'
import {createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'
import {expectRejects} from './helpers/rejects.js'
import {asRole} from './helpers/roles.js'

const fakePublicKey = () => `-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${randomBytes(32).toString('base64')}\n-----END NEBULA X25519 PUBLIC KEY-----\n`

/** The error `promise` rejects with (any Error). */
const rejection = (promise: Promise<unknown>) => expectRejects(promise, Error)

describe('project folders in the control plane (migration 009) on Postgres', function () {
  this.timeout(120_000)
  let database: ThrowawayDatabase
  let pool: pg.Pool
  let owner: PostgresClient
  let operator: ControlPlane
  let anon: ControlPlane
  let token: string

  const register = (device: string, groups: string[] = []) =>
    operator.registerDevice({project: 'alpha', device, publicKey: fakePublicKey(), publicKeySha256: randomBytes(32).toString('hex'), groups})
  const modes = async (device: string) =>
    Object.fromEntries((await foldersForDevice(operator, {project: 'alpha', device})).map((folder) => [folder.name, folder.mode]))
  const rowCounts = async () => (await owner.query<{t: string}>(`SELECT json_build_object('folders', (SELECT json_agg(f ORDER BY f.id) FROM vidsync.folders f),
      'access', (SELECT json_agg(a ORDER BY a.folder, a.kind, a.subject) FROM vidsync.folder_access a))::text AS t`))[0]?.t

  before(async () => {
    database = await createThrowawayDatabase('folders')
    owner = new PostgresClient(database.url)
    await migrate(owner, await loadMigrations())
    pool = new pg.Pool({connectionString: database.url, max: 5})
    pool.on('error', () => {})
    operator = new ControlPlane(new SqlRpc(asRole(pool, 'service_role')))
    anon = new ControlPlane(new SqlRpc(asRole(pool, 'anon')))
    await operator.createProject({name: 'alpha', cidr: '10.95.1.0/24'})
    await operator.populatePool({project: 'alpha'})
    await register('edit1', ['editors'])
    await register('view1', ['viewers'])
    await register('both', ['editors', 'viewers'])
    // A device joined with an invite: it calls the device functions with its token.
    const code = newSecret('invite')
    await operator.createInvite({project: 'alpha', codeSha256: sha256Hex(code), maxUses: 1})
    token = newSecret('device')
    await anon.redeemInvite({code, token, device: 'laptop', publicKey: fakePublicKey()})
    const request = (await operator.listJoinRequests({project: 'alpha'})).find((r) => r.device === 'laptop')
    const candidate = await operator.approveJoinRequest({requestId: request?.id ?? 0})
    const bundle = {'ca.crt': 'ca', 'node.crt': 'cert', 'nebula.yml': 'pki: {}', 'vidsync.json': '{}'}
    const notAfter = new Date(Date.now() + 86_400_000).toISOString()
    await operator.approveJoinRequest({requestId: request?.id ?? 0, signed: {ip: candidate.ip, fingerprint: randomBytes(32).toString('hex'), notAfter, certPem: 'cert', bundle}})
  })

  after(async () => {
    await pool?.end()
    await owner?.close()
    await database?.drop()
  })

  it('creates a folder with a stable 12-hex ID, lists and removes it; a second one of the same name is a conflict', async () => {
    const created = await createFolder(operator, {project: 'alpha', name: 'footage'})
    expect(created).to.include({project: 'alpha', name: 'footage', autoAccept: false, defaultMode: 'send-receive', createdBy: null})
    expect(created.id).to.match(/^[0-9a-f]{12}$/)
    expect(await rejection(createFolder(operator, {project: 'alpha', name: 'footage'}))).to.be.instanceOf(ConflictError)
    const renders = await createFolder(operator, {project: 'alpha', name: 'renders', autoAccept: true})
    expect(renders.id).to.not.equal(created.id)
    expect((await listProjectFolders(operator, {project: 'alpha'})).map((f) => [f.name, f.id])).to.deep.equal([['footage', created.id], ['renders', renders.id]])
    expect(await removeProjectFolder(operator, {project: 'alpha', name: 'renders'})).to.deep.equal({project: 'alpha', id: renders.id, name: 'renders'})
    expect(await rejection(removeProjectFolder(operator, {project: 'alpha', name: 'renders'}))).to.be.instanceOf(NotFoundError)
  })

  it('refuses bad folder names in one line, in the client and in SQL, writing nothing', async () => {
    const before = await rowCounts()
    for (const name of ['Footage', 'fööt', 'a/b', '../x', 'x'.repeat(64), '', '-x', 'with space']) {
      const refused = await rejection(createFolder(operator, {project: 'alpha', name}))
      expect(refused, name).to.be.instanceOf(InvalidInputError)
      expect(refused.message.split('\n')).to.have.length(1)
      // The SQL refuses it as well, for clients that skip the check.
      const direct = await rejection(operator.rpc.call('create_folder', {p_project: 'alpha', p_name: name}))
      expect(direct, name).to.be.instanceOf(InvalidInputError)
    }
    expect(await rejection(createFolder(operator, {project: 'nope', name: 'x'}))).to.be.instanceOf(NotFoundError)
    expect(await rowCounts()).to.equal(before)
  })

  it('resolves access: device rule, then groups, then the default; none hides nothing but is reported', async () => {
    await createFolder(operator, {project: 'alpha', name: 'masters'})
    expect(await modes('view1')).to.deep.include({masters: 'send-receive'})
    await setFolderAccess(operator, {project: 'alpha', name: 'masters', target: {group: 'viewers'}, mode: 'receive-only'})
    expect(await modes('view1')).to.deep.include({masters: 'receive-only'})
    expect(await modes('edit1')).to.deep.include({masters: 'send-receive'})
    await setFolderAccess(operator, {project: 'alpha', name: 'masters', target: {default: true}, mode: 'none'})
    expect(await modes('edit1')).to.deep.include({masters: 'none'})
    await setFolderAccess(operator, {project: 'alpha', name: 'masters', target: {device: 'edit1'}, mode: 'send-only'})
    expect(await modes('edit1')).to.deep.include({masters: 'send-only'})
    const [masters] = (await foldersForDevice(operator, {project: 'alpha', device: 'edit1'})).filter((f) => f.name === 'masters')
    expect(masters?.devices).to.deep.include({name: 'view1', mode: 'receive-only'})
    expect(masters?.devices).to.deep.include({name: 'laptop', mode: 'none'})
  })

  it('refuses conflicting group rules in one line naming the device, and changes nothing', async () => {
    await createFolder(operator, {project: 'alpha', name: 'grading'})
    await setFolderAccess(operator, {project: 'alpha', name: 'grading', target: {group: 'editors'}, mode: 'send-receive'})
    const before = await rowCounts()
    const refused = await rejection(setFolderAccess(operator, {project: 'alpha', name: 'grading', target: {group: 'viewers'}, mode: 'receive-only'}))
    expect(refused).to.be.instanceOf(ConflictError)
    expect(refused.message).to.equal('conflicting access to folder "grading": device "both" is in groups editors (send-receive), viewers (receive-only); give it its own rule with --device both')
    expect(await rowCounts()).to.equal(before)
    // With its own rule the group rules no longer conflict.
    await setFolderAccess(operator, {project: 'alpha', name: 'grading', target: {device: 'both'}, mode: 'receive-only'})
    const folder = await setFolderAccess(operator, {project: 'alpha', name: 'grading', target: {group: 'viewers'}, mode: 'receive-only'})
    expect(folder.access).to.deep.equal([
      {kind: 'device', subject: 'both', mode: 'receive-only'},
      {kind: 'group', subject: 'editors', mode: 'send-receive'},
      {kind: 'group', subject: 'viewers', mode: 'receive-only'},
    ])
    expect(await rejection(setFolderAccess(operator, {project: 'alpha', name: 'grading', target: {device: 'ghost'}, mode: 'none'}))).to.be.instanceOf(NotFoundError)
    expect(await rejection(operator.rpc.call('set_folder_access', {p_project: 'alpha', p_name: 'grading', p_kind: 'group', p_subject: 'x', p_mode: 'read'}))).to.be.instanceOf(InvalidInputError)
  })

  it('lets a device list and create folders by its token only; anon cannot call the operator functions', async () => {
    const folders = await deviceFolders(anon, {token})
    expect(folders.map((f) => f.name)).to.include('footage')
    const created = await deviceCreateFolder(anon, {token, name: 'dailies'})
    expect(created).to.include({name: 'dailies', mode: 'send-receive'})
    expect((await deviceCreateFolder(anon, {token, name: 'dailies'})).id).to.equal(created.id)
    expect((await listProjectFolders(operator, {project: 'alpha'})).find((f) => f.name === 'dailies')?.createdBy).to.equal('laptop')
    expect(await rejection(deviceFolders(anon, {token: newSecret('device')}))).to.be.instanceOf(NotFoundError)
    const denied = (await rejection(listProjectFolders(anon, {project: 'alpha'}))) as Error & {code?: string}
    expect(denied.code).to.equal('42501')
    expect(((await rejection(createFolder(anon, {project: 'alpha', name: 'evil'}))) as Error & {code?: string}).code).to.equal('42501')
  })

  it('stores the sizes devices report and the project default limits (migration 014); bad reports and anon operators are refused', async () => {
    const footage = (await listProjectFolders(operator, {project: 'alpha'})).find((f) => f.name === 'footage')
    expect(footage).to.not.equal(undefined)
    const id = footage?.id ?? ''
    // A folder the project no longer has is skipped; the answer carries the latest size of each folder.
    const reported = await deviceFolderReport(anon, {token, sizes: {[id]: 123_456_789_012, ffffffffffff: 5}})
    expect(reported).to.deep.equal({syncLimits: {upKiBps: null, downKiBps: null}, sizes: {[id]: 123_456_789_012}})
    for (const sizes of [{[id]: -1}, {[id]: 1.5}, {[id]: '12'}] as unknown as Record<string, number>[]) {
      const refused = await rejection(deviceFolderReport(anon, {token, sizes}))
      expect(refused).to.be.instanceOf(InvalidInputError)
      expect(refused.message).to.match(/^invalid size of folder/)
    }
    expect(await rejection(operator.rpc.call('device_folder_report', {p_token: token, p_sizes: '[1]'}))).to.be.instanceOf(InvalidInputError)
    expect(await rejection(deviceFolderReport(anon, {token: newSecret('device'), sizes: {}}))).to.be.instanceOf(NotFoundError)

    const before = (await anon.deviceSync({token})).version
    const limits = await setProjectSyncLimits(operator, {project: 'alpha', upKiBps: 6104, downKiBps: null})
    // A new version, so that devices woken by it read the new limits at once.
    expect((await anon.deviceSync({token, knownVersion: before})).version).to.be.greaterThan(Number(before))
    expect(limits.syncLimits).to.deep.equal({upKiBps: 6104, downKiBps: null})
    expect(await rejection(setProjectSyncLimits(operator, {project: 'alpha', upKiBps: 0, downKiBps: null}))).to.be.instanceOf(InvalidInputError)
    expect(((await rejection(setProjectSyncLimits(anon, {project: 'alpha', upKiBps: 1, downKiBps: 1}))) as Error & {code?: string}).code).to.equal('42501')
    // Devices read them with their report; bundles (embedded backend) carry them with the sizes.
    expect((await deviceFolderReport(anon, {token, sizes: {}})).syncLimits).to.deep.equal({upKiBps: 6104, downKiBps: null})
    const bundle = await bundleFolders(operator, {project: 'alpha', device: 'edit1'})
    expect(bundle.syncLimits).to.deep.equal({upKiBps: 6104, downKiBps: null})
    expect(bundle.folders.find((f) => f.name === 'footage')?.sizeBytes).to.equal(123_456_789_012)
    expect(bundle.folders.find((f) => f.name === 'dailies')?.sizeBytes).to.equal(undefined)
  })
})
