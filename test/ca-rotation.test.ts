import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'
import {execa} from 'execa'

import {readBundle} from '../src/lib/bundle/bundle.js'
import {parseManifest} from '../src/lib/bundle/manifest.js'
import {registerDevice, renewDevice} from '../src/lib/devices/issue.js'
import {signPendingRenewals} from '../src/lib/devices/signer.js'
import {InvalidInputError} from '../src/lib/errors.js'
import {joinWithInvite} from '../src/lib/join/invite.js'
import {installBundle, joinBundle} from '../src/lib/join/join.js'
import {approveJoinRequests} from '../src/lib/invites/approve.js'
import {createInvite} from '../src/lib/invites/invites.js'
import {testNebulaConfig} from '../src/lib/nebula/config.js'
import {initCa} from '../src/lib/pki/ca.js'
import {readCert} from '../src/lib/pki/cert.js'
import {pollUntil} from '../src/lib/poll.js'
import {endorsementValid} from '../src/lib/pki/endorse.js'
import {retireOldCas, rotateCa} from '../src/lib/pki/rotation.js'
import {createKeyPair} from '../src/lib/pki/keys.js'
import {ControlPlane, SqlRpc} from '../src/lib/store/control-plane.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {embeddedTemplatePath} from '../src/lib/store/embedded-template.js'
import {EmbeddedClient, PostgresClient} from '../src/lib/store/sql-client.js'
import {refreshFromControlPlane} from '../src/lib/up/refresh.js'
import {renewFromControlPlane} from '../src/lib/up/renew.js'
import {cli} from './helpers/cli.js'
import {createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

/** The fingerprints of the CAs in a ca.crt, through nebula-cert. */
async function caFingerprints(path: string): Promise<string[]> {
  const {stdout} = await execa('nebula-cert', ['print', '-json', '-path', path])
  return stdout.trim().split('\n').map((line) => (JSON.parse(line) as {fingerprint: string}).fingerprint)
}

/**
 * CA rotation on Postgres with real nebula-cert and nebula: `ca rotate` endorses the next CA with
 * the pinned one, bundles and the `up` refresh carry both, devices accept the new CA only with a
 * valid endorsement, renewals move them to it, `ca retire-old` waits for them (or --force).
 */
describe('CA rotation on Postgres', function () {
  this.timeout(240_000)
  let database: ThrowawayDatabase
  let sql: PostgresClient
  let controlPlane: ControlPlane
  let operator: string
  let invited: string
  let filed: string
  let oldCa: {fingerprint: string; publicKey: string}
  let newCa: string
  const admin = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: operator, VIDSYNC_DATABASE_URL: database.url})
  const caPath = (home: string) => join(home, 'projects', 'films', 'ca.crt')
  const certPath = (home: string) => join(home, 'projects', 'films', 'node.crt')

  before(async () => {
    database = await createThrowawayDatabase('carot')
    sql = new PostgresClient(database.url)
    controlPlane = new ControlPlane(new SqlRpc(sql))
    ;[operator, invited, filed] = await Promise.all([tempDir(), tempDir(), tempDir()])
    await migrate(sql, await loadMigrations())
    const ca = await initCa({home: operator, name: 'films-ca'})
    oldCa = {fingerprint: ca.fingerprint, publicKey: (await readCert(ca.certPath)).publicKey}
    await controlPlane.createProject({name: 'films', cidr: '10.93.0.0/24'})
    await controlPlane.populatePool({project: 'films'})
    // A device joined from a bundle file, pinning the first CA.
    await createKeyPair({outDir: join(filed, 'keys')})
    const bundle = join(filed, 'first.zip')
    await registerDevice({home: operator, controlPlane, project: 'films', name: 'edit', publicKeyPem: await readFile(join(filed, 'keys', 'node.pub')), outPath: bundle})
    await joinBundle({home: filed, bundlePath: bundle, caFingerprint: oldCa.fingerprint})
    // A device joined with an invite (it refreshes from the control plane), approved once it asks.
    const {code} = await createInvite({controlPlane, project: 'films'})
    const joining = joinWithInvite({home: invited, controlPlane, code, name: 'cutter', waitMs: 60_000, pollIntervalMs: 100})
    const asked = async () => {
      const requests = await controlPlane.listJoinRequests({project: 'films'})
      return requests.length > 0 && requests
    }
    const requests = await pollUntil(asked, {timeoutMs: 30_000, intervalMs: 50, what: "cutter's join request"})
    expect((await approveJoinRequests({home: operator, controlPlane, requests})).approved).to.have.length(1)
    await joining
  })

  after(async () => {
    await sql?.close()
    await database?.drop()
    await removeTempDirs()
  })

  it('ca rotate makes the next CA, endorsed by the current one, and every project lists both', async () => {
    const rotated = await admin('ca', 'rotate')
    expect(rotated.exitCode, rotated.stderr).to.equal(0)
    newCa = rotated.json.ca.fingerprint
    expect(rotated.json.previous.fingerprint).to.equal(oldCa.fingerprint)
    expect(rotated.json.projects).to.deep.equal(['films'])
    expect(endorsementValid(rotated.json.endorsement, oldCa.publicKey)).to.equal(true)
    expect(await caFingerprints(join(operator, 'ca', 'ca.crt'))).to.deep.equal([newCa])
    expect(await caFingerprints(join(operator, 'ca', 'previous', `${oldCa.fingerprint}.crt`))).to.deep.equal([oldCa.fingerprint])
    expect((await controlPlane.projectTrustedCas({project: 'films'})).map((ca) => ca.fingerprint)).to.deep.equal([oldCa.fingerprint, newCa])
    // ca show lists the CA it replaced, in the same shape, still trusted.
    const shown = await admin('ca', 'show')
    expect(shown.json).to.include({fingerprint: newCa, state: 'current', warning: null})
    expect(shown.json.previous).to.have.length(1)
    expect(shown.json.previous[0]).to.include({fingerprint: oldCa.fingerprint, name: 'films-ca', state: 'trusted', warning: null})
    expect(Object.keys(shown.json.previous[0]).sort()).to.deep.equal(Object.keys(shown.json).filter((key) => key !== 'previous').sort())
    const refused = await admin('ca', 'retire-old')
    expect(refused.exitCode).to.equal(4)
    expect(refused.json.error.message).to.contain('films/cutter, films/edit')
    expect((await controlPlane.projectTrustedCas({project: 'films'})).map((ca) => ca.fingerprint)).to.deep.equal([oldCa.fingerprint, newCa])
  })

  it('the up refresh adds the endorsed CA; the device asks for renewal at once, the signer signs with the new CA and nebula -test accepts both CAs', async () => {
    const refreshed = await refreshFromControlPlane({home: invited, project: 'films', controlPlane})
    expect(refreshed?.casChanged).to.equal(true)
    expect(await caFingerprints(caPath(invited))).to.deep.equal([oldCa.fingerprint, newCa])
    expect((await readCert(certPath(invited))).issuer).to.equal(oldCa.fingerprint)
    // Longer than the first certificate, so the device takes the renewed one as newer.
    await controlPlane.setCertLifetime({project: 'films', seconds: 540 * 86_400})
    // Long before a third of its life is left: its certificate is from an older CA than the newest one it trusts.
    expect(await renewFromControlPlane({home: invited, project: 'films', controlPlane})).to.deep.include({due: true, oldCa: true, requested: true})
    expect((await signPendingRenewals({home: operator, controlPlane, project: 'films'})).signed).to.have.length(1)
    expect((await renewFromControlPlane({home: invited, project: 'films', controlPlane}))?.installed).to.equal(true)
    expect((await readCert(certPath(invited))).issuer).to.equal(newCa)
    // From the newest CA now: nothing more to ask until a third of its life is left.
    expect(await renewFromControlPlane({home: invited, project: 'films', controlPlane})).to.deep.include({due: false, oldCa: false, requested: false})
    await testNebulaConfig({configPath: join(invited, 'projects', 'films', 'nebula.yml')})
  })

  it('a bundle adds the new CA only with a valid endorsement by the pinned CA (exit 2, nothing changed otherwise)', async () => {
    const bundle = join(filed, 'renewed.zip')
    await renewDevice({home: operator, controlPlane, project: 'films', name: 'edit', outPath: bundle})
    const files = await readBundle(bundle)
    const manifest = parseManifest(files.get('vidsync.json'), bundle)
    expect(manifest.caEndorsements).to.have.length(1)
    const [endorsement] = manifest.caEndorsements ?? []
    expect(endorsement && endorsementValid(endorsement, oldCa.publicKey)).to.equal(true)
    const before = await readFile(caPath(filed))
    const forged = {...manifest, caEndorsements: [{...endorsement!, signature: Buffer.alloc(64, 7).toString('base64')}]}
    for (const caEndorsements of [[], forged.caEndorsements]) {
      const tampered = new Map(files).set('vidsync.json', Buffer.from(JSON.stringify({...manifest, caEndorsements})))
      const error = await installBundle({home: filed, files: tampered, origin: 'tampered'}).then(() => undefined, (failure: unknown) => failure)
      expect(error).to.be.instanceOf(InvalidInputError)
      expect((error as InvalidInputError).exitCode).to.equal(2)
      expect((error as Error).message).to.contain('without a valid endorsement')
      expect(await readFile(caPath(filed))).to.deep.equal(before)
    }
    // A first join during the rotation confirms the newest CA, or pins the one named and the CAs it endorsed.
    const keyPath = join(filed, 'keys', 'node.key')
    const unconfirmed = await installBundle({home: await tempDir(), files, origin: bundle, keyPath}).then(() => undefined, (failure: unknown) => failure as InvalidInputError)
    expect(unconfirmed?.hint).to.contain(`--ca-fingerprint ${newCa}`)
    for (const [pin, pinned] of [[newCa, [newCa]], [oldCa.fingerprint, [oldCa.fingerprint, newCa]]] as const) {
      const home = await tempDir()
      await installBundle({home, files, origin: bundle, keyPath, caFingerprint: pin})
      expect(await caFingerprints(caPath(home))).to.deep.equal(pinned)
    }
    const installed = await installBundle({home: filed, files, origin: bundle})
    expect(installed).to.include({changed: true, caFingerprint: newCa})
    expect(await caFingerprints(caPath(filed))).to.deep.equal([oldCa.fingerprint, newCa])
  })

  it('ca retire-old, once no active device holds an old-CA certificate, makes refreshes and bundles drop the old CA', async () => {
    expect(await retireOldCas({home: operator, controlPlane})).to.deep.equal([{project: 'films', retired: [oldCa.fingerprint], holders: []}])
    expect((await admin('ca', 'show')).json.previous.map((ca: {fingerprint: string; state: string}) => [ca.fingerprint, ca.state])).to.deep.equal([[oldCa.fingerprint, 'retired']])
    expect((await refreshFromControlPlane({home: invited, project: 'films', controlPlane}))?.casChanged).to.equal(true)
    expect(await caFingerprints(caPath(invited))).to.deep.equal([newCa])
    const bundle = join(filed, 'after.zip')
    await renewDevice({home: operator, controlPlane, project: 'films', name: 'edit', outPath: bundle})
    await joinBundle({home: filed, bundlePath: bundle})
    expect(await caFingerprints(caPath(filed))).to.deep.equal([newCa])
  })

  it('a second rotation chains on the first; retire-old --force retires while devices still hold the older CA, listing them', async () => {
    const third = (await rotateCa({home: operator, controlPlane, name: 'films-ca-3'})).ca.fingerprint
    expect((await refreshFromControlPlane({home: invited, project: 'films', controlPlane}))?.casChanged).to.equal(true)
    expect(await caFingerprints(caPath(invited))).to.deep.equal([newCa, third])
    const forced = await admin('ca', 'retire-old', '--force')
    expect(forced.exitCode, forced.stderr).to.equal(0)
    expect(forced.json.projects[0].holders.map((holder: {device: string}) => holder.device)).to.deep.equal(['cutter', 'edit'])
    expect((await controlPlane.projectTrustedCas({project: 'films'})).map((ca) => ca.fingerprint)).to.deep.equal([third])
    expect((await refreshFromControlPlane({home: invited, project: 'films', controlPlane}))?.casChanged).to.equal(true)
    expect(await caFingerprints(caPath(invited))).to.deep.equal([third])
    const shown = await cli(['ca', 'show'], {VIDSYNC_HOME: operator, VIDSYNC_DATABASE_URL: database.url})
    expect(shown.stdout).to.contain(`previous     ${newCa} "films-ca" retired`)
    expect(shown.stdout).to.contain(`previous     ${oldCa.fingerprint} "films-ca" retired`)
  })

  it('the up refresh refuses a CA the control plane lists with a forged endorsement, and keeps its CAs', async () => {
    const [third] = await caFingerprints(caPath(invited))
    const rogue = await initCa({home: await tempDir(), name: 'rogue'})
    const pem = await readFile(rogue.certPath, 'utf8')
    await controlPlane.addProjectCa({project: 'films', fingerprint: rogue.fingerprint, pem, endorsement: {ca: rogue.fingerprint, endorser: third!, signature: Buffer.alloc(64, 1).toString('base64')}})
    const before = await readFile(caPath(invited))
    const refreshed = await refreshFromControlPlane({home: invited, project: 'films', controlPlane})
    expect(refreshed).to.include({casChanged: false, nebulaReloaded: false})
    expect(refreshed?.casRefused).to.contain(`adds the CA ${rogue.fingerprint}`)
    expect(await readFile(caPath(invited))).to.deep.equal(before)
  })
})

/** The same contract on PGlite: `ca rotate`'s one call takes effect for every project or for none. */
describe('CA rotation on PGlite: rotate_project_cas is all or nothing', function () {
  this.timeout(60_000)

  it('a failure at the second project leaves the first without the new CA; the retry lists both CAs everywhere', async () => {
    const sql = await EmbeddedClient.open(await tempDir(), embeddedTemplatePath)
    try {
      const controlPlane = new ControlPlane(new SqlRpc(sql))
      await controlPlane.createProject({name: 'alpha', cidr: '10.92.1.0/24'})
      await controlPlane.createProject({name: 'beta', cidr: '10.92.2.0/24'})
      const [oldCa, newCa] = await Promise.all([initCa({home: await tempDir(), name: 'one'}), initCa({home: await tempDir(), name: 'two'})])
      const rotation = {
        old: {fingerprint: oldCa.fingerprint, pem: await readFile(oldCa.certPath, 'utf8')},
        fingerprint: newCa.fingerprint,
        pem: await readFile(newCa.certPath, 'utf8'),
        endorsement: {ca: newCa.fingerprint, endorser: oldCa.fingerprint, signature: Buffer.alloc(64, 2).toString('base64')},
      }
      // Injected failure, labelled: beta's rows fail after alpha's went in.
      await sql.query(`CREATE FUNCTION public.test_fail_beta() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.project_id = (SELECT id FROM vidsync.projects WHERE name = 'beta') THEN RAISE EXCEPTION 'injected failure for beta'; END IF; RETURN NEW; END $$`)
      await sql.query('CREATE TRIGGER test_fail_beta BEFORE INSERT ON vidsync.project_cas FOR EACH ROW EXECUTE FUNCTION public.test_fail_beta()')
      const failure = await controlPlane.rotateProjectCas(rotation).then(() => undefined, (error: unknown) => error as Error)
      expect(failure?.message).to.contain('injected failure for beta')
      expect(await controlPlane.projectTrustedCas({project: 'alpha'})).to.deep.equal([])
      await sql.query('DROP TRIGGER test_fail_beta ON vidsync.project_cas')
      expect(await controlPlane.rotateProjectCas(rotation)).to.deep.equal(['alpha', 'beta'])
      for (const project of ['alpha', 'beta']) {
        expect((await controlPlane.projectTrustedCas({project})).map((ca) => ca.fingerprint)).to.deep.equal([oldCa.fingerprint, newCa.fingerprint])
      }
    } finally {
      await sql.close()
    }
  })
})
