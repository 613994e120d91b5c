import {mkdir, readdir} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'

import {caExpiryWarning} from '../src/lib/pki/ca.js'
import {expiresWithin, expiryOf} from '../src/lib/pki/expiry.js'
import {cli} from './helpers/cli.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

describe('certificate lifecycle: warnings before expiry', function () {
  this.timeout(180_000)
  let operator: string
  let device: string
  let out: string
  let caFingerprint: string
  const admin = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: operator})
  const onDevice = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: device})

  before(async () => {
    operator = await tempDir()
    device = await tempDir()
    out = await tempDir()
    // A CA of 60 days: inside its 90-day warning window from the start.
    for (const args of [['ca', 'init', '--duration', '60d'], ['project', 'create', 'films', '--cidr', '10.96.0.0/24'], ['pool', 'populate', 'films']]) {
      const result = await admin(...args)
      expect(result.exitCode, result.stdout).to.equal(0)
    }
    caFingerprint = (await admin('ca', 'show')).json.fingerprint
    expect((await onDevice('key', 'create')).exitCode).to.equal(0)
    const other = await tempDir()
    const otherKey = await cli(['key', 'create', '--json'], {VIDSYNC_HOME: other})
    const registered = await admin('device', 'register', 'films', '--name', 'cutter', '--public-key', join(device, 'keys', 'node.pub'), '--duration', '3d', '--out', join(out, 'cutter.zip'))
    expect(registered.exitCode, registered.stdout).to.equal(0)
    const long = await admin('device', 'register', 'films', '--name', 'grader', '--public-key', otherKey.json.publicKeyPath, '--duration', '40d', '--out', join(out, 'grader.zip'))
    expect(long.exitCode, long.stdout).to.equal(0)
  })

  after(removeTempDirs)

  it('expiryOf and expiresWithin draw the line at the window', () => {
    const now = new Date('2027-01-01T00:00:00Z')
    expect(expiryOf('2027-01-08T00:00:00Z', 7 * 86_400, now)).to.deep.include({expiring: true, expired: false, secondsLeft: 7 * 86_400})
    expect(expiryOf('2027-01-08T00:00:01Z', 7 * 86_400, now).expiring).to.equal(false)
    expect(expiryOf('2026-12-31T00:00:00Z', 7 * 86_400, now)).to.deep.include({expiring: true, expired: true})
    expect(expiresWithin(null, 86_400, now)).to.equal(false)
    expect(expiresWithin('2027-01-02T00:00:00Z', 86_400, now)).to.equal(true)
    expect(caExpiryWarning({name: 'ca', notAfter: '2027-04-02T00:00:00Z'}, now)).to.equal(null)
    expect(caExpiryWarning({name: 'ca', notAfter: '2027-03-31T00:00:00Z'}, now)).to.match(/^the CA "ca" expires in 89 days/)
  })

  it('ca show warns from 90 days before the CA expires', async () => {
    const shown = await admin('ca', 'show')
    expect(shown.exitCode).to.equal(0)
    expect(shown.json.warning).to.match(/^the CA "vidsync" expires in 59 days \(.*\): every certificate it signed stops working then/)
    const human = await cli(['ca', 'show'], {VIDSYNC_HOME: operator})
    expect(human.stderr).to.match(/Warning: the CA "vidsync" expires in 59 days/)
    const fresh = await tempDir()
    await cli(['ca', 'init', '--duration', '100d', '--json'], {VIDSYNC_HOME: fresh})
    expect((await cli(['ca', 'show', '--json'], {VIDSYNC_HOME: fresh})).json.warning).to.equal(null)
  })

  it('device list --expiring lists only the devices whose certificate ends within the duration', async () => {
    const soon = await admin('device', 'list', 'films', '--expiring', '7d')
    expect(soon.exitCode).to.equal(0)
    expect(soon.json.devices.map((d: {name: string}) => d.name)).to.deep.equal(['cutter'])
    const month = await admin('device', 'list', 'films', '--expiring', '45d')
    expect(month.json.devices.map((d: {name: string}) => d.name)).to.deep.equal(['cutter', 'grader'])
    expect((await admin('device', 'list', 'films')).json.devices).to.have.length(2)
    const bad = await admin('device', 'list', 'films', '--expiring', 'soon')
    expect(bad.exitCode).to.equal(2)
    expect(bad.json.error.message).to.match(/^invalid expiring "soon"/)
  })

  it('device renew --expiring-within renews in bulk into --out-dir, all or nothing', async () => {
    const dir = join(out, 'renewed')
    const fingerprints = async () => Object.fromEntries((await admin('device', 'list', 'films')).json.devices.map((d: {name: string; fingerprint: string}) => [d.name, d.fingerprint]))
    const before = await fingerprints()
    // A bundle already where grader's would go: refused before anything is signed, no other bundle appears.
    await mkdir(dir)
    expect((await admin('device', 'renew', 'films', 'grader', '--duration', '40d', '--out', join(dir, 'films-grader.zip'))).exitCode).to.equal(0)
    const afterSingle = await fingerprints()
    const refused = await admin('device', 'renew', 'films', '--expiring-within', '45d', '--out-dir', dir)
    expect(refused.exitCode).to.equal(4)
    expect(refused.json.error.message).to.match(/films-grader\.zip already exists/)
    expect(await fingerprints()).to.deep.equal(afterSingle)
    expect(afterSingle.cutter).to.equal(before.cutter)
    expect((await readdir(dir)).filter((name) => !name.startsWith('.'))).to.deep.equal(['films-grader.zip'])
    const bulk = await admin('device', 'renew', 'films', '--expiring-within', '7d', '--duration', '5d', '--out-dir', dir)
    expect(bulk.exitCode, bulk.stdout).to.equal(0)
    expect(bulk.json).to.include({project: 'films', expiringWithinSeconds: 7 * 86_400, outDir: dir})
    expect(bulk.json.renewed).to.have.length(1)
    expect(bulk.json.renewed[0]).to.include({bundle: join(dir, 'films-cutter.zip'), cappedAtCaExpiry: false})
    expect(bulk.json.renewed[0].device).to.include({name: 'cutter'})
    expect((await fingerprints()).cutter).to.equal(bulk.json.renewed[0].device.fingerprint).and.not.equal(before.cutter)
    expect((await readdir(dir)).sort()).to.deep.equal(['films-cutter.zip', 'films-grader.zip'])
    const both = await admin('device', 'renew', 'films', 'cutter', '--expiring-within', '7d', '--out-dir', dir)
    expect(both.exitCode).to.equal(2)
    const neither = await admin('device', 'renew', 'films')
    expect(neither.exitCode).to.equal(2)
    expect(neither.json.error.message).to.match(/name one device, or renew in bulk with --expiring-within and --out-dir/)
  })

  it('status and doctor on the device warn 7 days before its certificate expires and say what to do', async () => {
    const joined = await onDevice('join', join(out, 'cutter.zip'), '--ca-fingerprint', caFingerprint)
    expect(joined.exitCode, joined.stdout).to.equal(0)
    const status = await onDevice('status')
    expect(status.json.certificates.certificate).to.include({expiring: true, expired: false})
    expect(status.json.certificates.backend).to.equal('bundle')
    const [deviceWarning, caWarning] = status.json.certificates.warnings as string[]
    expect(deviceWarning).to.match(/^the certificate of cutter in films expires in 2 days \(.*\): ask the operator to run `vidsync device renew films cutter` and install the new bundle here with `vidsync join <bundle>`/)
    expect(caWarning).to.match(/^the CA "vidsync" of films expires in 59 days/)
    const human = await cli(['status'], {VIDSYNC_HOME: device})
    expect(human.stdout).to.match(/warning +the certificate of cutter in films expires in 2 days/)
    const doctor = await onDevice('doctor')
    const check = (name: string) => (doctor.json.checks as {name: string; ok: boolean; warning?: string}[]).find((c) => c.name === name)
    expect(check('certificate valid')).to.deep.include({ok: true, warning: deviceWarning})
    expect(check('CA valid')?.warning).to.equal(caWarning)
    const doctorHuman = await cli(['doctor'], {VIDSYNC_HOME: device})
    expect(doctorHuman.stdout).to.match(/^WARN {2}certificate valid: the certificate of cutter/m)
  })

  it('up refuses an expired certificate before starting anything, naming the renew command', async () => {
    const home = await tempDir()
    await cli(['key', 'create', '--json'], {VIDSYNC_HOME: home})
    // Long enough to join on a busy machine, short enough to wait out.
    const registered = await admin('device', 'register', 'films', '--name', 'brief', '--public-key', join(home, 'keys', 'node.pub'), '--duration', '20s', '--out', join(out, 'brief.zip'))
    expect(registered.exitCode, registered.stdout).to.equal(0)
    const joined = await cli(['join', join(out, 'brief.zip'), '--ca-fingerprint', caFingerprint, '--json'], {VIDSYNC_HOME: home})
    expect(joined.exitCode, joined.stdout).to.equal(0)
    await sleep(Math.max(0, Date.parse(joined.json.device.notAfter) - Date.now()) + 1500)
    const up = await cli(['up', '--json'], {VIDSYNC_HOME: home})
    expect(up.exitCode).to.equal(2)
    expect(up.json.error.message).to.match(/^the certificate of brief in films expired at .*: ask the operator to run `vidsync device renew films brief`/)
    const doctor = await cli(['doctor', '--json'], {VIDSYNC_HOME: home})
    expect(doctor.json.checks.find((c: {name: string}) => c.name === 'certificate valid')).to.deep.include({ok: false})
  })
})
