import {randomBytes} from 'node:crypto'
import {readdir, readFile, stat} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'
import {execa} from 'execa'

import {ConflictError, NotFoundError} from '../src/lib/errors.js'
import {readDeviceToken} from '../src/lib/join/invite.js'
import {signPendingRenewals, unapprovedKeyChange} from '../src/lib/devices/signer.js'
import {readCert} from '../src/lib/pki/cert.js'
import {publicKeyHexOfPrivateKey, validatePublicKey} from '../src/lib/pki/keys.js'
import {JoinedProject} from '../src/lib/project/joined-project.js'
import {ControlPlane, SqlRpc} from '../src/lib/store/control-plane.js'
import {PostgresClient} from '../src/lib/store/sql-client.js'
import {deviceIdFromDer} from '../src/lib/syncthing/device-id.js'
import {certificateCheck} from '../src/lib/up/expiry.js'
import {rotateDeviceKey} from '../src/lib/up/key-change.js'
import {SyncCursor} from '../src/lib/up/refresh.js'
import {renewFromControlPlane} from '../src/lib/up/renew.js'
import {reconcile} from '../src/lib/up/up.js'
import {cli, root} from './helpers/cli.js'
import {createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'
import {startTestSyncthing, stopTestSyncthings} from './helpers/syncthing.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

/**
 * Automatic renewal on real Postgres with real nebula-cert: per-project lifetimes, a device that
 * asks when a third of its certificate's life is left, `vidsync signer --once` signing it, the
 * device installing it; revocation beats a renewal in flight.
 */
describe('certificate lifecycle on Postgres: lifetimes, renewal requests, the signer', function () {
  this.timeout(240_000)
  let database: ThrowawayDatabase
  let sql: PostgresClient
  let controlPlane: ControlPlane
  let operator: string
  let device: string
  let peer: string
  const cutterSyncthingId = deviceIdFromDer(randomBytes(64))
  const admin = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: operator, VIDSYNC_DATABASE_URL: database.url})
  const projectDir = () => join(device, 'projects', 'films')
  const installed = () => readCert(join(projectDir(), 'node.crt'))

  before(async () => {
    database = await createThrowawayDatabase('certs')
    sql = new PostgresClient(database.url)
    controlPlane = new ControlPlane(new SqlRpc(sql))
    operator = await tempDir()
    device = await tempDir()
    for (const args of [['db', 'migrate'], ['ca', 'init']]) {
      const result = await admin(...args)
      expect(result.exitCode, result.stdout).to.equal(0)
    }
  })

  after(async () => {
    await stopTestSyncthings()
    await sql?.close()
    await database?.drop()
    await removeTempDirs()
  })

  /** Joins a device with an invite code, approved by the operator's unattended approval. */
  async function inviteJoin(home: string, name: string) {
    const invite = await admin('invite', 'create', 'films')
    const join = execa('node', [`${root}bin/run.js`, 'join', '-', '--name', name, '--wait', '90s', '--json'], {
      env: {VIDSYNC_HOME: home, VIDSYNC_DATABASE_URL: database.url},
      input: invite.json.code,
      reject: false,
      timeout: 120_000,
    })
    const approved = await admin('device', 'approve', 'films', '--watch', '--count', '1', '--timeout', '60s', '--yes')
    expect(approved.exitCode, approved.stdout).to.equal(0)
    const joined = await join
    expect(joined.exitCode, String(joined.stdout)).to.equal(0)
  }

  it('project create --cert-lifetime sets the lifetime of the devices it approves; project set changes it', async () => {
    const created = await admin('project', 'create', 'films', '--cidr', '10.94.0.0/24', '--cert-lifetime', '10m')
    expect(created.exitCode, created.stdout).to.equal(0)
    expect(created.json.certLifetime).to.deep.equal({deviceCertSeconds: 600, configured: true, signer: false})
    expect((await admin('pool', 'populate', 'films')).exitCode).to.equal(0)
    await inviteJoin(device, 'cutter')
    const cert = await installed()
    expect((Date.parse(cert.notAfter) - Date.parse(cert.notBefore)) / 1000).to.be.within(595, 600)

    const reset = await admin('project', 'set', 'films', '--cert-lifetime', 'default')
    expect(reset.json.certLifetime).to.deep.equal({deviceCertSeconds: 365 * 86_400, configured: false, signer: false})
    const bad = await admin('project', 'set', 'films', '--cert-lifetime', '10s')
    expect(bad.exitCode).to.equal(2)
    expect(bad.json.error.message).to.match(/between 1 minute and 50 years/)
    // The project's default bandwidth limits (migration 014): named directions change, the others stay.
    const limits = await admin('project', 'set', 'films', '--sync-up', '50mbit', '--sync-down', '200mbit')
    expect(limits.json).to.deep.equal({project: 'films', syncLimits: {upKiBps: 6104, downKiBps: 24_414}})
    expect((await admin('project', 'set', 'films', '--sync-up', 'none')).json.syncLimits).to.deep.equal({upKiBps: null, downKiBps: 24_414})
    const nothing = await admin('project', 'set', 'films')
    expect([nothing.exitCode, nothing.json.error.message]).to.deep.equal([2, 'nothing to set: pass --cert-lifetime, --sync-up or --sync-down'])
  })

  it('asks for renewal once a third of the life is left, the signer signs it, the device installs it', async () => {
    const before = await installed()
    const early = await renewFromControlPlane({home: device, project: 'films', controlPlane, now: new Date(Date.parse(before.notAfter) - 300_000)})
    expect(early).to.deep.include({due: false, requested: false, installed: false})
    const late = new Date(Date.parse(before.notAfter) - 150_000)
    const asked = await renewFromControlPlane({home: device, project: 'films', controlPlane, now: late})
    expect(asked).to.deep.include({due: true, requested: true, installed: false, fingerprint: before.fingerprint})
    await renewFromControlPlane({home: device, project: 'films', controlPlane, now: late}) // asking again opens no second request
    expect(await sql.query("SELECT status FROM vidsync.renewal_requests")).to.deep.equal([{status: 'pending'}])

    const signed = await admin('signer', 'films', '--once')
    expect(signed.exitCode, signed.stdout).to.equal(0)
    expect(signed.json.signed.map((s: {device: string}) => s.device)).to.deep.equal(['cutter'])
    expect(signed.json.refused).to.deep.equal([])
    // A signer serves the project now: the default lifetime is 30 days.
    expect((await admin('project', 'set', 'films', '--cert-lifetime', 'default')).json.certLifetime).to.deep.equal({deviceCertSeconds: 30 * 86_400, configured: false, signer: true})

    const done = await renewFromControlPlane({home: device, project: 'films', controlPlane, now: late})
    expect(done).to.deep.include({installed: true, nebulaReloaded: false, fingerprint: signed.json.signed[0].fingerprint})
    const after = await installed()
    expect(after.fingerprint).to.equal(signed.json.signed[0].fingerprint)
    expect(after.publicKey).to.equal(before.publicKey)
    expect((Date.parse(after.notAfter) - Date.parse(after.notBefore)) / 86_400_000).to.be.within(29.99, 30)
    const manifest = JSON.parse(await readFile(join(projectDir(), 'vidsync.json'), 'utf8'))
    expect(manifest).to.include({fingerprint: after.fingerprint, notAfter: after.notAfter})
    expect((await admin('signer', 'films', '--once')).json.signed).to.deep.equal([])
  })

  it('a new key: key rotate asks, the signer refuses it until the operator approves, then key and certificate go in together', async () => {
    const before = await installed()
    const oldKey = await readFile(join(projectDir(), 'node.key'), 'utf8')
    const onDevice = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: device, VIDSYNC_DATABASE_URL: database.url})
    const asked = await onDevice('key', 'rotate', 'films')
    expect(asked.exitCode, asked.stdout).to.equal(0)
    expect(asked.json).to.include({project: 'films', device: 'cutter', created: true, requested: true, installed: false, keyChange: 'pending', fingerprint: before.fingerprint})
    const nextPub = await readFile(join(projectDir(), 'node.next.pub'), 'utf8')
    expect(asked.json.publicKeySha256).to.equal(validatePublicKey(nextPub).fingerprint)
    expect((await stat(join(projectDir(), 'node.next.key'))).mode & 0o777).to.equal(0o600)
    expect(await readFile(join(projectDir(), 'node.key'), 'utf8')).to.equal(oldKey)
    expect(await rotateDeviceKey({home: device, project: 'films', controlPlane})).to.include({created: false, keyChange: 'pending', publicKeySha256: asked.json.publicKeySha256})

    // Unapproved: the signer refuses and says why; the control plane would not record it either.
    const refused = await admin('signer', 'films', '--once')
    expect(refused.json.signed).to.deep.equal([])
    expect(refused.json.refused.map((r: {device: string; message: string}) => [r.device, r.message])).to.deep.equal([['cutter', unapprovedKeyChange('films', 'cutter')]])
    const [pending] = await controlPlane.signerPending({project: 'films'})
    expect(pending).to.include({device: 'cutter', keyChange: 'pending', publicKey: nextPub})
    const forced = await controlPlane.completeRenewal({requestId: pending?.requestId ?? 0, fingerprint: 'e'.repeat(64), notAfter: before.notAfter, pem: 'x', publicKey: nextPub}).then(
      () => undefined,
      (failure: unknown) => failure,
    )
    expect(forced).to.be.instanceOf(ConflictError)
    expect((forced as Error).message).to.equal('device "cutter" asked for a certificate for a new key, which the operator has not approved: not recorded')
    expect(await sql.query("SELECT status FROM vidsync.renewal_requests WHERE id = $1", [pending?.requestId])).to.deep.equal([{status: 'pending'}])
    expect((await renewFromControlPlane({home: device, project: 'films', controlPlane}))).to.include({installed: false, keyChange: 'pending'})
    expect((await certificateCheck({home: device, project: await JoinedProject.find({home: device, project: 'films'})})).renewalWarnings).to.deep.equal([
      `a certificate for a new key of cutter was requested at ${asked.json.requestedAt} and waits for the operator's approval: \`vidsync device approve films --key-change cutter\` on the operator's machine; the current key and certificate stay in use`,
    ])

    const wrongKey = await controlPlane.approveKeyChange({project: 'films', device: 'cutter', publicKeySha256: 'a'.repeat(64)}).catch((error: unknown) => error)
    expect(wrongKey).to.be.instanceOf(ConflictError)
    expect((wrongKey as Error).message).to.equal(`the new key of device "cutter" has sha256 ${asked.json.publicKeySha256}, not ${'a'.repeat(64)}: not approved`)
    const approved = await admin('device', 'approve', 'films', '--key-change', 'cutter', '--key-sha256', asked.json.publicKeySha256)
    expect(approved.exitCode, approved.stdout).to.equal(0)
    expect(approved.json.keyChange).to.include({device: 'cutter', publicKeySha256: asked.json.publicKeySha256})
    expect(await controlPlane.approveKeyChange({project: 'films', device: 'cutter'}).catch((error: unknown) => error)).to.include({device: 'cutter'}) // again: no change
    expect(await controlPlane.approveKeyChange({project: 'films', device: 'grader'}).catch((error: unknown) => error)).to.be.instanceOf(NotFoundError)
    const signed = await signPendingRenewals({home: operator, controlPlane, project: 'films'})
    expect(signed.signed.map((s) => [s.device, s.newKey])).to.deep.equal([['cutter', true]])

    const done = await rotateDeviceKey({home: device, project: 'films', controlPlane})
    expect(done).to.include({installed: true, fingerprint: signed.signed[0]?.fingerprint, requestedAt: null})
    const after = await installed()
    expect(after.publicKey).to.equal(validatePublicKey(nextPub).hex).and.not.equal(before.publicKey)
    expect(publicKeyHexOfPrivateKey(await readFile(join(projectDir(), 'node.key')))).to.equal(after.publicKey)
    expect((await stat(join(projectDir(), 'node.key'))).mode & 0o777).to.equal(0o600)
    expect((await readdir(projectDir())).filter((name) => name.startsWith('node.next'))).to.deep.equal([])
    expect(await sql.query("SELECT public_key FROM vidsync.devices WHERE name = 'cutter'")).to.deep.equal([{public_key: nextPub}])
  })

  it('decides renewal by the control plane\'s clock, says when its own is off, and when no signer answers', async () => {
    const cert = await installed()
    const project = () => JoinedProject.find({home: device, project: 'films'})
    // This device's clock 10 days ahead: by it, a third of the 30 days would be left; by the control plane's, not.
    const ahead = await renewFromControlPlane({home: device, project: 'films', controlPlane, clock: () => new Date(Date.now() + 10 * 86_400_000)})
    expect(ahead).to.include({due: false, requested: false})
    expect(ahead?.clockOffsetSeconds).to.be.within(-864_010, -863_990)
    expect((await certificateCheck({home: device, project: await project()})).renewalWarnings).to.deep.equal([
      "this device's clock is 10d ahead of the control plane's: certificates look closer to expiry here than they are, and peers with correct clocks refuse this device's certificates early; fix the clock (NTP)",
    ])
    const behind = await renewFromControlPlane({home: device, project: 'films', controlPlane, clock: () => new Date(Date.now() - 600_000)})
    expect(behind?.clockOffsetSeconds).to.be.within(595, 605)
    expect((await certificateCheck({home: device, project: await project()})).renewalWarnings[0]).to.match(/^this device's clock is 10m behind the control plane's: nebula refuses a certificate before it is valid/)

    // The signer is down: the device asked, keeps its certificate, and says so once no signer answered for 5 minutes.
    const asked = await renewFromControlPlane({home: device, project: 'films', controlPlane, now: new Date(Date.parse(cert.notAfter) - 86_400_000)})
    expect(asked).to.include({requested: true, installed: false, keyChange: 'none'})
    const check = async (minutes: number) => certificateCheck({home: device, project: await project(), now: new Date(Date.now() + minutes * 60_000)})
    expect((await check(1)).renewalWarnings).to.deep.equal([])
    expect((await check(6)).renewalWarnings).to.deep.equal([
      `renewal requested at ${asked?.requestedAt}, no signer has answered; the certificate expires at ${cert.notAfter}; run \`vidsync signer films\` on the operator's machine`,
    ])
  })

  it('revocation wins over a renewal in flight, and a revoked device can no longer ask', async () => {
    const cert = await installed()
    const token = await readDeviceToken(device, 'films')
    // cutter publishes its Syncthing ID while active; grader is the peer that must drop it later.
    await controlPlane.deviceRefresh({token, syncthingId: cutterSyncthingId})
    peer = await tempDir()
    await inviteJoin(peer, 'grader')
    await renewFromControlPlane({home: device, project: 'films', controlPlane, now: new Date(Date.parse(cert.notAfter) - 86_400_000)})
    const [pending] = await controlPlane.signerPending({project: 'films'})
    expect(pending?.device).to.equal('cutter')
    const revoked = await admin('device', 'revoke', 'films', 'cutter', '--yes')
    expect(revoked.exitCode, revoked.stdout).to.equal(0)
    // The signer had listed it before the revocation: recording its certificate is refused.
    const error = await controlPlane.completeRenewal({requestId: pending?.requestId ?? 0, fingerprint: 'f'.repeat(64), notAfter: cert.notAfter, pem: 'x'}).then(
      () => undefined,
      (failure: unknown) => failure,
    )
    expect(error).to.be.instanceOf(ConflictError)
    expect((error as Error).message).to.equal('device "cutter" was revoked or released meanwhile: its renewal is refused')
    expect(await sql.query('SELECT status, reason FROM vidsync.renewal_requests WHERE id = $1', [pending?.requestId])).to.deep.equal([{status: 'refused', reason: 'device revoked'}])
    expect(await sql.query("SELECT count(*)::int AS n FROM vidsync.certificates WHERE fingerprint = $1", ['f'.repeat(64)])).to.deep.equal([{n: 0}])
    expect((await admin('signer', 'films', '--once')).json).to.deep.include({signed: [], refused: []})
    // Nor can a new key of a revoked device be approved.
    expect(await controlPlane.approveKeyChange({project: 'films', device: 'cutter'}).catch((failure: unknown) => failure)).to.be.instanceOf(NotFoundError)
    const refusedAsk = await controlPlane.deviceRequestRenewal({token}).then(
      () => undefined,
      (failure: unknown) => failure,
    )
    expect(refusedAsk).to.be.instanceOf(ConflictError)
    expect((refusedAsk as Error).message).to.match(/^this device is revoked: it gets no new certificate/)
  })

  it("removes the revoked device from a peer's real Syncthing (device and folder shares) in one reconcile pass", async () => {
    const syncthing = await startTestSyncthing()
    const {client} = syncthing
    const other = deviceIdFromDer(randomBytes(64))
    await client.putDevice({deviceID: cutterSyncthingId, name: 'cutter', addresses: ['tcp://10.94.0.2:22000']})
    await client.putDevice({deviceID: other, name: 'elsewhere', addresses: ['dynamic']})
    const {myID} = await client.status()
    await client.putFolder({id: 'films-footage', label: 'footage', path: await tempDir(), devices: [{deviceID: myID}, {deviceID: cutterSyncthingId}, {deviceID: other}]})
    const cursor = new SyncCursor()
    const pass = await reconcile({client, home: peer, project: 'films', controlPlane, cursor})
    expect(pass.refresh?.revokedSyncthingIds).to.deep.equal([cutterSyncthingId])
    expect(pass.removed).to.deep.equal([cutterSyncthingId])
    expect((await client.devices()).map((d) => d.deviceID).sort()).to.deep.equal([myID, other].sort())
    expect((await client.folder('films-footage'))?.devices.map((d) => d.deviceID).sort()).to.deep.equal([myID, other].sort())
    // Applied, not yet reported: the next pass refreshes at once to acknowledge the revocation (migration 013).
    expect((await controlPlane.revocation({project: 'films', device: 'cutter'}))?.pendingDevices).to.deep.equal(['grader'])
    expect([cursor.unreported, cursor.due]).to.deep.equal([cursor.version, true])
    expect((await reconcile({client, home: peer, project: 'films', controlPlane, cursor})).removed).to.deep.equal([])
    expect(await controlPlane.revocation({project: 'films', device: 'cutter'})).to.deep.include({acknowledged: 1, pending: 0, pendingDevices: []})
    expect(cursor.due).to.equal(false)
  })
})
