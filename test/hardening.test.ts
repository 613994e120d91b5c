import {createHash} from 'node:crypto'
import {readdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {Readable} from 'node:stream'

import {expect} from 'chai'
import {execa} from 'execa'
import YAML from 'yaml'
import yazl from 'yazl'

import {readBundle} from '../src/lib/bundle/bundle.js'
import {cli} from './helpers/cli.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

/** A zip made here, entries in order (a name may repeat). */
async function zip(path: string, entries: [string, string | Buffer | Readable][]): Promise<void> {
  const archive = new yazl.ZipFile()
  for (const [name, content] of entries) {
    if (content instanceof Readable) archive.addReadStream(content, name)
    else archive.addBuffer(Buffer.from(content), name)
  }
  archive.end()
  const chunks: Buffer[] = []
  for await (const chunk of archive.outputStream) chunks.push(chunk as Buffer)
  await writeFile(path, Buffer.concat(chunks))
}

/** Every file under `dir` with a hash of its content: "nothing changed on disk" is this staying equal. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const entries = await readdir(dir, {recursive: true, withFileTypes: true}).catch(() => [])
  const files: Record<string, string> = {}
  for (const entry of entries) {
    if (!entry.isFile()) continue
    const path = join(entry.parentPath, entry.name)
    const info = await stat(path)
    files[path] = `${(info.mode & 0o777).toString(8)} ${createHash('sha256').update(await readFile(path)).digest('hex')}`
  }
  return files
}

const nebulaCert = (...args: string[]) => execa('nebula-cert', args)

describe('hardening: a device trusts only its project CA, and a bundle is data', function () {
  this.timeout(180_000)
  let operator: string
  let device: string
  let out: string
  let caFingerprint: string
  let files: Map<string, Buffer>
  const admin = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: operator})
  const onDevice = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: device})
  const bundle = (name: string) => join(out, name)
  const fromBundle = (...names: string[]) => names.map((name): [string, Buffer] => [name, files.get(name) ?? Buffer.alloc(0)])

  /** A certificate for `name`/`ip` signed by the CA in `caHome` for a fresh key: [crt, key]. */
  async function signed(caHome: string, name: string, ip: string): Promise<[Buffer, Buffer]> {
    const dir = await tempDir()
    await nebulaCert('keygen', '-out-key', join(dir, 'k.key'), '-out-pub', join(dir, 'k.pub'))
    await nebulaCert('sign', '-ca-crt', join(caHome, 'ca', 'ca.crt'), '-ca-key', join(caHome, 'ca', 'ca.key'), '-name', name, '-ip', ip, '-in-pub', join(dir, 'k.pub'), '-out-crt', join(dir, 'k.crt'))
    return [await readFile(join(dir, 'k.crt')), await readFile(join(dir, 'k.key'))]
  }

  before(async () => {
    operator = await tempDir()
    device = await tempDir()
    out = await tempDir()
    for (const args of [['ca', 'init'], ['project', 'create', 'films', '--cidr', '10.96.0.0/24'], ['pool', 'populate', 'films']]) {
      expect((await admin(...args)).exitCode).to.equal(0)
    }
    caFingerprint = (await admin('ca', 'show')).json.fingerprint
    // A lighthouse named by a host name that resolves nowhere: join must not need DNS.
    expect((await admin('lighthouse', 'add', 'films', '--name', 'lh', '--endpoint', 'lighthouse.invalid:4242', '--generate-key', '--out', bundle('lh.zip'))).exitCode).to.equal(0)
    const key = await onDevice('key', 'create')
    const registered = await admin('device', 'register', 'films', '--name', 'cutter', '--public-key', key.json.publicKeyPath, '--out', bundle('cutter.zip'))
    expect(registered.exitCode, registered.stdout).to.equal(0)
    files = await readBundle(bundle('cutter.zip'))
  })

  after(removeTempDirs)

  it('refuses a first join that nobody confirmed, naming the fingerprint to pass; nothing is written', async () => {
    const result = await onDevice('join', bundle('cutter.zip'))
    expect(result.exitCode).to.equal(2)
    expect(result.json.error.message).to.equal(`${bundle('cutter.zip')} is the first bundle of films on this device: its CA "vidsync" must be confirmed`)
    expect(result.json.error.hint).to.contain(`--ca-fingerprint ${caFingerprint}`)
    expect(await readdir(device)).not.to.include('projects')
  })

  it('refuses a first join with the wrong --ca-fingerprint', async () => {
    const result = await onDevice('join', bundle('cutter.zip'), '--ca-fingerprint', 'ab'.repeat(32))
    expect(result.exitCode).to.equal(2)
    expect(result.json.error.message).to.match(/is not the CA with the fingerprint given: refused$/)
    const malformed = await onDevice('join', bundle('cutter.zip'), '--ca-fingerprint', 'not-hex')
    expect(malformed.exitCode).to.equal(2)
    expect(malformed.json.error.message).to.match(/^invalid CA fingerprint "not-hex"/)
    expect(await readdir(device)).not.to.include('projects')
  })

  it('joins with the confirmed fingerprint (in any usual spelling) without resolving the lighthouse name', async () => {
    const spelled = caFingerprint.toUpperCase().match(/../g)?.join(':') ?? ''
    const joined = await onDevice('join', bundle('cutter.zip'), '--ca-fingerprint', spelled)
    expect(joined.exitCode, joined.stdout).to.equal(0)
    expect(joined.json).to.include({project: 'films', caFingerprint, changed: true})
    const config = YAML.parse(await readFile(join(joined.json.projectDir, 'nebula.yml'), 'utf8'), {version: '1.1'})
    expect(config.static_host_map).to.deep.equal({'10.96.0.1': ['lighthouse.invalid:4242']})
  })

  it('refuses a bundle with its own CA, certificate and key for a joined project; nothing changes', async () => {
    const stranger = await tempDir()
    expect((await cli(['ca', 'init', '--name', 'vidsync', '--json'], {VIDSYNC_HOME: stranger})).exitCode).to.equal(0)
    const [crt, key] = await signed(stranger, 'cutter', '10.96.0.2/24')
    await zip(bundle('hostile-ca.zip'), [...fromBundle('vidsync.json', 'nebula.yml'), ['ca.crt', await readFile(join(stranger, 'ca', 'ca.crt'))], ['node.crt', crt], ['node.key', key]])
    const before = await snapshot(device)
    for (const extra of [[], ['--replace-key'], ['--ca-fingerprint', caFingerprint]]) {
      const result = await onDevice('join', bundle('hostile-ca.zip'), ...extra)
      expect(result.exitCode, extra.join(' ')).to.equal(4)
      expect(result.json.error.message, result.stdout).to.match(/comes with another CA .* than the one this device pinned for films .*: refused$/)
    }
    expect(await snapshot(device)).to.deep.equal(before)
  })

  it('renders its own nebula.yml: a bundle cannot add routes, inbound rules, sshd, stats or listen settings', async () => {
    const hostile = {
      pki: {ca: '/etc/passwd'},
      tun: {dev: 'eth0', unsafe_routes: [{route: '0.0.0.0/1', via: '10.96.0.1'}, {route: '128.0.0.0/1', via: '10.96.0.1'}]},
      firewall: {inbound: [{port: 'any', proto: 'any', host: 'any'}]},
      sshd: {enabled: true, listen: '0.0.0.0:2222'},
      stats: {type: 'prometheus', listen: '0.0.0.0:8080', path: '/metrics'},
      listen: {host: '0.0.0.0', port: 53},
    }
    const manifest = {...JSON.parse(files.get('vidsync.json')?.toString() ?? ''), issuedAt: new Date().toISOString()}
    await zip(bundle('hostile-yml.zip'), [...fromBundle('ca.crt', 'node.crt'), ['vidsync.json', JSON.stringify(manifest)], ['nebula.yml', YAML.stringify(hostile)]])
    const result = await onDevice('join', bundle('hostile-yml.zip'))
    expect(result.exitCode, result.stdout).to.equal(0)
    const text = await readFile(join(result.json.projectDir, 'nebula.yml'), 'utf8')
    const config = YAML.parse(text, {version: '1.1'})
    expect(config).not.to.have.any.keys('sshd', 'stats')
    expect(config.tun).not.to.have.property('unsafe_routes')
    expect(config.tun.dev).to.equal('vs-films')
    expect(config.listen.port).to.equal(0)
    expect(config.pki.ca).to.equal(join(result.json.projectDir, 'ca.crt'))
    expect(config.firewall.inbound).to.deep.equal([
      {port: 'any', proto: 'icmp', host: 'any'},
      {port: 22000, proto: 'tcp', cidr: '10.96.0.0/24'},
    ])
    expect(text).not.to.match(/2222|8080|0\.0\.0\.0\/1|eth0|passwd/)
  })

  it('never lets a bundled key replace the device key without --replace-key', async () => {
    const [crt, key] = await signed(operator, 'cutter', '10.96.0.2/24')
    const manifest = {...JSON.parse(files.get('vidsync.json')?.toString() ?? ''), issuedAt: new Date().toISOString()}
    await zip(bundle('new-key.zip'), [...fromBundle('ca.crt'), ['vidsync.json', JSON.stringify(manifest)], ['node.crt', crt], ['node.key', key]])
    const before = await snapshot(device)
    const refused = await onDevice('join', bundle('new-key.zip'))
    expect(refused.exitCode).to.equal(4)
    expect(refused.json.error.message).to.equal(`${bundle('new-key.zip')} carries a private key that would replace this device's key for films: refused`)
    expect(refused.json.error.hint).to.contain('--replace-key')
    expect(await snapshot(device)).to.deep.equal(before)
    const replaced = await onDevice('join', bundle('new-key.zip'), '--replace-key')
    expect(replaced.exitCode, replaced.stdout).to.equal(0)
    expect(await readFile(join(replaced.json.projectDir, 'node.key'))).to.deep.equal(key)
    // Back to the device's own key, for the tests below.
    expect((await onDevice('join', bundle('cutter.zip'), '--force')).exitCode).to.equal(0)
  })

  it('refuses an older bundle over a newer one unless --force', async () => {
    const renewed = await admin('device', 'renew', 'films', 'cutter', '--out', bundle('renewed.zip'))
    expect(renewed.exitCode, renewed.stdout).to.equal(0)
    expect((await onDevice('join', bundle('renewed.zip'))).exitCode).to.equal(0)
    const before = await snapshot(device)
    const older = await onDevice('join', bundle('cutter.zip'))
    expect(older.exitCode).to.equal(4)
    expect(older.json.error.message).to.match(/^\S+cutter\.zip is older than the bundle installed for films \(issued .*\): refused$/)
    expect(older.json.error.hint).to.contain('--force')
    expect(await snapshot(device)).to.deep.equal(before)
    expect((await onDevice('join', bundle('cutter.zip'), '--force')).exitCode).to.equal(0)
    expect((await onDevice('join', bundle('renewed.zip'))).exitCode).to.equal(0)
  })

  it('checks the manifest against the certificate and refuses control characters, numbers as names and duplicate entries', async () => {
    const manifest = JSON.parse(files.get('vidsync.json')?.toString() ?? '')
    const cases: [string, [string, string | Buffer][], RegExp][] = [
      ['other-ip.zip', [['vidsync.json', JSON.stringify({...manifest, ip: '10.96.0.77'})]], /vidsync\.json does not match its certificate/],
      ['numeric-name.zip', [['vidsync.json', JSON.stringify({...manifest, device: 12345})]], /invalid vidsync\.json \(device is not a valid name\)/],
      ['control.zip', [['vidsync.json', JSON.stringify({...manifest, device: 'cutter\u001b[2J'})]], /invalid vidsync\.json \(device is not a valid name\)/],
      ['outside.zip', [['vidsync.json', JSON.stringify({...manifest, peers: [{name: 'x', ip: '192.0.2.9', syncthingId: null}]})]], /peers\[0\]\.ip is not an address in 10\.96\.0\.0\/24/],
      ['duplicate.zip', [['vidsync.json', files.get('vidsync.json') ?? ''], ['vidsync.json', JSON.stringify({...manifest, ip: '10.96.0.77'})]], /holds vidsync\.json twice/],
    ]
    const before = await snapshot(device)
    for (const [name, entries, message] of cases) {
      await zip(bundle(name), [...fromBundle('ca.crt', 'node.crt'), ...entries])
      const result = await onDevice('join', bundle(name))
      expect(result.exitCode, name).to.equal(2)
      expect(result.json.error.message, name).to.match(message)
      expect([...result.json.error.message].some((char) => char.charCodeAt(0) < 0x20), 'control character in the message').to.equal(false)
    }
    expect(await snapshot(device)).to.deep.equal(before)
  })

  it('reads an older bundle nebula.yml only for its blocklist: empty, scalar, invalid and alias bombs are one line', async () => {
    // A manifest from before manifests carried the blocklist.
    const legacy = JSON.parse(files.get('vidsync.json')?.toString() ?? '')
    delete legacy.blocklist
    const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]', ...Array.from({length: 8}, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)}]`)].join('\n')
    const cases: [string, string, RegExp][] = [
      ['scalar.zip', 'just a string', /its nebula\.yml is not a mapping/],
      ['invalid.zip', 'pki: [unclosed', /its nebula\.yml is not valid YAML/],
      ['bomb.zip', `${bomb}\npki:\n  blocklist: *i\n`, /its nebula\.yml expands too many aliases/],
      ['bad-blocklist.zip', 'pki:\n  blocklist: [not-a-fingerprint]\n', /blocklist\[0\] is not a certificate fingerprint/],
    ]
    const before = await snapshot(device)
    for (const [name, yml, message] of cases) {
      await zip(bundle(name), [...fromBundle('ca.crt', 'node.crt'), ['vidsync.json', JSON.stringify(legacy)], ['nebula.yml', yml]])
      const result = await onDevice('join', bundle(name))
      expect(result.exitCode, name).to.equal(2)
      expect(result.json.error.message, name).to.match(message)
      expect(result.json.error.message, name).not.to.contain('\n')
    }
    expect(await snapshot(device)).to.deep.equal(before)
    // Empty: no blocklist. Joins (the same bundle as installed: nothing changes).
    await zip(bundle('empty.zip'), [...fromBundle('ca.crt', 'node.crt'), ['vidsync.json', JSON.stringify(legacy)], ['nebula.yml', '']])
    expect((await onDevice('join', bundle('empty.zip'), '--force')).exitCode).to.equal(0)
  })

  it('stops inflating a zip bomb at the entry limit', async () => {
    const size = 64 * 1024 * 1024
    let sent = 0
    const zeros = new Readable({
      read() {
        const chunk = Math.min(1024 * 1024, size - sent)
        sent += chunk
        this.push(chunk > 0 ? Buffer.alloc(chunk) : null)
      },
    })
    const path = bundle('zip-bomb.zip')
    await zip(path, [...fromBundle('ca.crt', 'node.crt', 'vidsync.json'), ['README.md', zeros]])
    // The central directory claims 100 bytes for README.md: only counting while inflating notices.
    const data = await readFile(path)
    const central = data.indexOf(Buffer.from('README.md'), data.lastIndexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]))) - 46
    expect(data.readUInt32LE(central)).to.equal(0x02014b50)
    data.writeUInt32LE(100, central + 24)
    await writeFile(path, data)
    expect(data.length).to.be.lessThan(size / 100)
    const before = await snapshot(device)
    const result = await onDevice('join', path)
    expect(result.exitCode).to.equal(2)
    expect(result.json.error.message).to.equal(`${path} is not a vidsync bundle: README.md inflates to more than 1048576 bytes`)
    expect(await snapshot(device)).to.deep.equal(before)
  })
})
