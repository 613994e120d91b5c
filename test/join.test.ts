import {chmod, readdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'
import YAML from 'yaml'
import yazl from 'yazl'

import {readBundle} from '../src/lib/bundle/bundle.js'
import {joinBundle} from '../src/lib/join/join.js'
import {cli} from './helpers/cli.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

async function zip(path: string, files: Record<string, string | Buffer>): Promise<void> {
  const archive = new yazl.ZipFile()
  for (const [name, content] of Object.entries(files)) archive.addBuffer(Buffer.from(content), name)
  archive.end()
  const chunks: Buffer[] = []
  for await (const chunk of archive.outputStream) chunks.push(chunk as Buffer)
  await writeFile(path, Buffer.concat(chunks))
}

describe('join BUNDLE.zip', function () {
  this.timeout(120_000)
  let operator: string
  let device: string
  let out: string
  /** The operator's CA fingerprint, which the device confirms at its first join. */
  let caFingerprint: string
  const admin = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: operator})
  const onDevice = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: device})

  before(async () => {
    operator = await tempDir()
    device = await tempDir()
    out = await tempDir()
    for (const args of [['ca', 'init'], ['project', 'create', 'films', '--cidr', '10.97.0.0/24'], ['pool', 'populate', 'films']]) {
      expect((await admin(...args)).exitCode).to.equal(0)
    }
    await admin('lighthouse', 'add', 'films', '--name', 'lh', '--endpoint', '192.0.2.1:4242', '--generate-key', '--out', join(out, 'lh.zip'))
    caFingerprint = (await admin('ca', 'show')).json.fingerprint
    const key = await onDevice('key', 'create')
    expect(key.exitCode).to.equal(0)
    const registered = await admin('device', 'register', 'films', '--name', 'cutter', '--public-key', key.json.publicKeyPath, '--out', join(out, 'cutter.zip'))
    expect(registered.exitCode).to.equal(0)
  })

  after(removeTempDirs)

  it('installs a verified bundle with absolute paths, its own tun device and private modes; a re-run changes nothing', async () => {
    const joined = await onDevice('join', join(out, 'cutter.zip'), '--ca-fingerprint', caFingerprint)
    expect(joined.exitCode, joined.stdout).to.equal(0)
    expect(joined.json).to.include({project: 'films', changed: true, operatorGeneratedKey: false, caFingerprint})
    expect(joined.json.device).to.include({name: 'cutter', ip: '10.97.0.2'})
    const dir = joined.json.projectDir as string
    expect((await readdir(dir)).sort()).to.deep.equal(['ca.crt', 'nebula.yml', 'node.crt', 'node.key', 'vidsync.json'])
    expect((await stat(join(dir, 'node.key'))).mode & 0o777).to.equal(0o600)
    expect((await stat(dir)).mode & 0o777).to.equal(0o700)
    const config = YAML.parse(await readFile(join(dir, 'nebula.yml'), 'utf8'), {version: '1.1'})
    expect(config.pki).to.include({ca: join(dir, 'ca.crt'), cert: join(dir, 'node.crt'), key: join(dir, 'node.key')})
    expect(config.tun.dev).to.equal('vs-films')
    expect((await onDevice('join', join(out, 'cutter.zip'))).json.changed).to.equal(false)
  })

  it('refuses a bundle issued for another key', async () => {
    const other = await tempDir()
    await cli(['key', 'create', '--json'], {VIDSYNC_HOME: other})
    const result = await cli(['join', join(out, 'cutter.zip'), '--json'], {VIDSYNC_HOME: other})
    expect(result.exitCode).to.equal(2)
    expect(result.json.error.message).to.match(/issued for another key than this device's/)
    expect(await readdir(other)).not.to.include('projects')
  })

  it('says how to make a key when the device has none', async () => {
    const result = await cli(['join', join(out, 'cutter.zip'), '--json'], {VIDSYNC_HOME: await tempDir()})
    expect(result.exitCode).to.equal(3)
    expect(result.json.error.message).to.match(/no device key at .*run `vidsync key create`/)
  })

  it('refuses a key readable by others', async () => {
    const keyPath = join(device, 'keys', 'node.key')
    await chmod(keyPath, 0o644)
    try {
      const result = await onDevice('join', join(out, 'cutter.zip'))
      expect(result.exitCode).to.equal(9)
      expect(result.json.error.message).to.contain(`chmod 600 ${keyPath}`)
    } finally {
      await chmod(keyPath, 0o600)
    }
  })

  it('refuses a corrupt zip, a foreign zip and a missing file, each in one line', async () => {
    await writeFile(join(out, 'corrupt.zip'), 'this is not a zip')
    await zip(join(out, 'foreign.zip'), {'photo.jpg': 'jpeg bytes'})
    const cases: [string, number, RegExp][] = [
      [join(out, 'corrupt.zip'), 2, /is not a readable zip file/],
      [join(out, 'foreign.zip'), 2, /is not a vidsync bundle: it lacks ca.crt, node.crt, vidsync.json/],
      [join(out, 'absent.zip'), 3, /no bundle at/],
    ]
    for (const [path, exitCode, message] of cases) {
      const result = await onDevice('join', path)
      expect(result.exitCode, path).to.equal(exitCode)
      expect(result.json.error.message).to.match(message)
    }
  })

  it('refuses a bundle with another CA than the one pinned at the first join', async () => {
    const files = await readBundle(join(out, 'cutter.zip'))
    const strangerHome = await tempDir()
    await cli(['ca', 'init', '--name', 'stranger'], {VIDSYNC_HOME: strangerHome})
    const strangerCa = await readFile(join(strangerHome, 'ca', 'ca.crt'))
    await zip(join(out, 'swapped.zip'), {...Object.fromEntries(files), 'ca.crt': strangerCa})
    const result = await onDevice('join', join(out, 'swapped.zip'))
    expect(result.exitCode).to.equal(4)
    expect(result.json.error.message).to.match(/comes with another CA .* than the one this device pinned for films/)
  })

  it('refuses an expired certificate, and warns when this clock is behind the certificate', async () => {
    const key = await onDevice('key', 'create', '--name', 'short')
    const short = join(out, 'short.zip')
    expect((await admin('device', 'register', 'films', '--name', 'short', '--public-key', key.json.publicKeyPath, '--duration', '2s', '--out', short)).exitCode).to.equal(0)
    await sleep(2500)
    const result = await onDevice('join', short, '--key', key.json.privateKeyPath)
    expect(result.exitCode).to.equal(2)
    expect(result.json.error.message).to.match(/expired at .*`vidsync device renew`/)

    // A clock an hour behind sees cutter's certificate as not yet valid: installed, with a warning naming notBefore.
    const bundlePath = join(out, 'cutter.zip')
    const keyPath = join(device, 'keys', 'node.key')
    const hourAgo = new Date(Date.now() - 3_600_000)
    const behind = await joinBundle({home: await tempDir(), bundlePath, keyPath, caFingerprint, now: hourAgo})
    const [warning, ...others] = behind.warnings
    expect(others).to.deep.equal([])
    expect(warning).to.match(/^this machine's clock is behind: the certificate is valid from (\S+); fix the clock or nebula will refuse it$/)
    const validFrom = Date.parse(/valid from (\S+);/.exec(warning ?? '')?.[1] ?? '')
    expect(validFrom).to.be.within(hourAgo.getTime() + 5 * 60_000, Date.now())
    // Within the tolerance (a minute behind) there is nothing to warn about.
    expect((await joinBundle({home: await tempDir(), bundlePath, keyPath, caFingerprint, now: new Date(Date.now() - 60_000)})).warnings).to.deep.equal([])
  })
})
