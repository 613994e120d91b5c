import {createHash} from 'node:crypto'
import {readdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {Readable} from 'node:stream'

import {expect} from 'chai'
import {execa} from 'execa'
import YAML from 'yaml'
import yazl from 'yazl'

import {readBundle} from '../src/lib/bundle/bundle.js'
import {cli, root} from './helpers/cli.js'
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
  this.timeout(900_000)
  let operator: string
  let device: string
  let out: string
  let caFingerprint: string
  let files: Map<string, Buffer>
  // Generous: the operator's commands open the embedded database, slow on a busy machine.
  const admin = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: operator}, {timeoutMs: 240_000})
  const onDevice = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: device}, {timeoutMs: 240_000})
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
    // `lighthouse add` warns that the name does not resolve here (a warning: it may resolve where
    // devices are). oclif prints no warnings under --json: this one runs as a person types it.
    const lighthouse = ['lighthouse', 'add', 'films', '--name', 'lh', '--endpoint', 'lighthouse.invalid:4242', '--generate-key', '--out', bundle('lh.zip')]
    const added = await cli(lighthouse, {VIDSYNC_HOME: operator}, {timeoutMs: 240_000})
    expect(added.exitCode, added.stderr).to.equal(0)
    expect(added.stderr).to.match(/lighthouse\.invalid does not resolve on this machine .*--no-resolve-check skips this check/s)
    const key = await onDevice('key', 'create')
    const registered = await admin('device', 'register', 'films', '--name', 'cutter', '--public-key', key.json.publicKeyPath, '--out', bundle('cutter.zip'))
    expect(registered.exitCode, registered.stdout).to.equal(0)
    files = await readBundle(bundle('cutter.zip'))
  })

  after(removeTempDirs)

  it('adds a lighthouse without the resolve check when told to', async () => {
    for (const args of [['project', 'create', 'spare', '--cidr', '10.97.0.0/24'], ['pool', 'populate', 'spare']]) expect((await admin(...args)).exitCode).to.equal(0)
    const unchecked = await cli(
      ['lighthouse', 'add', 'spare', '--name', 'lh', '--endpoint', 'lighthouse.invalid:4242', '--generate-key', '--no-resolve-check', '--out', bundle('spare-lh.zip')],
      {VIDSYNC_HOME: operator},
      {timeoutMs: 240_000},
    )
    expect(unchecked.exitCode, unchecked.stderr).to.equal(0)
    expect(unchecked.stderr).not.to.contain('resolve')
  })

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
    expect((await cli(['ca', 'init', '--name', 'vidsync', '--json'], {VIDSYNC_HOME: stranger}, {timeoutMs: 240_000})).exitCode).to.equal(0)
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

describe('hardening: homes, output paths, keys and the embedded lock', function () {
  this.timeout(600_000)
  after(removeTempDirs)
  /** The first command in a home creates the embedded database: slow on a busy machine. */
  const slow = {timeoutMs: 240_000}

  it('refuses a low-order X25519 public key (32 zero bytes) and registers nothing', async () => {
    const home = await tempDir()
    for (const args of [['ca', 'init'], ['project', 'create', 'films', '--cidr', '10.94.0.0/24'], ['pool', 'populate', 'films']]) {
      expect((await cli([...args, '--json'], {VIDSYNC_HOME: home}, slow)).exitCode).to.equal(0)
    }
    const zeroKey = join(home, 'zero.pub')
    await writeFile(zeroKey, `-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${Buffer.alloc(32).toString('base64')}\n-----END NEBULA X25519 PUBLIC KEY-----\n`)
    const out = join(home, 'zero.zip')
    const result = await cli(['device', 'register', 'films', '--name', 'zero', '--public-key', zeroKey, '--out', out, '--json'], {VIDSYNC_HOME: home}, slow)
    expect(result.exitCode).to.equal(2)
    expect(result.json.error.message).to.equal('not a usable Nebula public key: it is a low-order X25519 point (such as 32 zero bytes), which no key pair produces')
    const listed = await cli(['device', 'list', 'films', '--json'], {VIDSYNC_HOME: home}, slow)
    expect(JSON.stringify(listed.json)).not.to.contain('"zero"')
    expect(await readdir(home)).not.to.include('zero.zip')
  })

  it('makes a loose existing home and its db/ 0700 before the embedded database writes there', async () => {
    const home = join(await tempDir(), 'home')
    await execa('mkdir', ['-m', '0755', home])
    const result = await cli(['project', 'list', '--json'], {VIDSYNC_HOME: home}, slow)
    expect(result.exitCode, result.stdout).to.equal(0)
    expect((await stat(home)).mode & 0o777).to.equal(0o700)
    expect((await stat(join(home, 'db'))).mode & 0o777).to.equal(0o700)
  })

  it('refuses a home or --out under a regular file, and a home in /proc, in one line without hanging', async () => {
    const dir = await tempDir()
    const file = join(dir, 'plain-file')
    await writeFile(file, 'x')
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['key', 'create', '--out', join(file, 'keys')], {VIDSYNC_HOME: dir}, /^cannot write .*plain-file\/keys: a parent of it is not a directory$/],
      [['key', 'create', '--out', file], {VIDSYNC_HOME: dir}, /^cannot use .*plain-file as a directory: it is a file$/],
      [['project', 'list'], {VIDSYNC_HOME: join(file, 'home')}, /^cannot write .*plain-file\/home: a parent of it is not a directory$/],
      [['project', 'list'], {VIDSYNC_HOME: '/proc/vidsync-test'}, /^cannot create \/proc\/vidsync-test: the file system does not allow it$/],
    ]
    for (const [args, env, message] of cases) {
      const result = await cli([...args, '--json'], env, slow)
      expect(result.exitCode, args.join(' ')).to.equal(2)
      expect(result.json.error.message, args.join(' ')).to.match(message)
    }
    expect(await readFile(file, 'utf8')).to.equal('x')
    expect((await readdir(dir)).sort()).to.deep.equal(['plain-file'])
  })

  it('takes over an empty or dead lock or one whose PID was reused, and says which pid it waits for', async () => {
    const home = await tempDir()
    expect((await cli(['project', 'list', '--json'], {VIDSYNC_HOME: home}, slow)).exitCode).to.equal(0)
    const lock = join(home, 'db.lock')
    // A crash between creating and writing the lock (older vidsync) left it empty.
    await writeFile(lock, '')
    const old = new Date(Date.now() - 60_000)
    await execa('touch', ['-d', old.toISOString(), lock])
    expect((await cli(['project', 'list', '--json'], {VIDSYNC_HOME: home}, slow)).exitCode).to.equal(0)
    // A holder that died.
    const dead = execa('true')
    await dead
    await writeFile(lock, String(dead.pid))
    expect((await cli(['project', 'list', '--json'], {VIDSYNC_HOME: home}, slow)).exitCode).to.equal(0)
    // A crashed holder whose PID a later process reuses: the start time tells them apart.
    const reused = execa('sleep', ['600'])
    const reusedEnded = reused.catch(() => undefined) // killed below: its rejection is expected
    try {
      await writeFile(lock, `${reused.pid}\nan earlier start`)
      expect((await cli(['project', 'list', '--json'], {VIDSYNC_HOME: home}, {...slow, timeoutMs: 25_000})).exitCode).to.equal(0)
    } finally {
      reused.kill()
      await reusedEnded
    }
    // A live holder: the command says which pid it waits for; once the holder is gone, it runs.
    const holder = execa('sleep', ['600'])
    const holderEnded = holder.catch(() => undefined) // killed below: its rejection is expected
    try {
      await writeFile(lock, String(holder.pid))
      const waiting = execa('node', [`${root}bin/run.js`, 'project', 'list'], {env: {VIDSYNC_HOME: home, VIDSYNC_DATABASE_URL: ''}, reject: false, timeout: 240_000})
      let stderr = ''
      await new Promise<void>((resolve) => {
        waiting.stderr?.on('data', (chunk: Buffer) => {
          stderr += chunk.toString()
          if (stderr.includes('waiting for pid')) resolve()
        })
        void waiting.then(() => resolve())
      })
      expect(stderr).to.contain(`waiting for pid ${holder.pid}, which has the embedded database open`)
      holder.kill()
      const done = await waiting
      expect(done.exitCode, done.stderr).to.equal(0)
    } finally {
      holder.kill()
      await holderEnded
    }
    await execa('rm', ['-f', lock])
  })
})

describe('hardening: out-of-range numbers, invites and URLs', function () {
  this.timeout(600_000)
  let home: string
  const slow = {timeoutMs: 240_000}
  const run = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: home}, slow)

  before(async () => {
    home = await tempDir()
    for (const args of [['project', 'create', 'films', '--cidr', '10.93.0.0/24'], ['pool', 'populate', 'films']]) expect((await run(...args)).exitCode).to.equal(0)
  })

  after(removeTempDirs)

  it('refuses out-of-range numbers with exit 2, leaving nothing behind (not even an empty ca/)', async () => {
    const before = await snapshot(home)
    const cases: [string[], RegExp][] = [
      [['project', 'create', 'big', '--cidr', '10.92.0.0/24', '--quarantine', '99999999999'], /^invalid quarantine "99999999999": at most 50 years/],
      [['pool', 'reclaim', 'films', '--stale', '99999999999', '--dry-run'], /^invalid stale threshold "99999999999": at most 50 years/],
      [['invite', 'create', 'films', '--expires', '99999999999'], /^invalid expiry "99999999999": at most 50 years/],
      [['ca', 'init', '--duration', '99999999999d'], /^invalid duration "99999999999d": at most 50 years/],
      [['invite', 'revoke', 'films', '99999999999'], /^invalid invite ID "99999999999"/],
      [['invite', 'revoke', 'films', 'abc'], /^invalid invite ID "abc"/],
    ]
    for (const [args, message] of cases) {
      const result = await run(...args)
      expect(result.exitCode, args.join(' ')).to.equal(2)
      expect(result.json.error.message, args.join(' ')).to.match(message)
    }
    expect(await readdir(home)).not.to.include('ca')
    const after = await snapshot(home)
    for (const path of Object.keys(before).filter((path) => !path.includes(`${home}/db/`))) expect(after[path], path).to.equal(before[path])
  })

  it('refuses an invite on the embedded database, saying which backends have invites', async () => {
    const result = await run('invite', 'create', 'films')
    expect(result.exitCode).to.equal(2)
    expect(result.json.error.message).to.equal('invites need a control plane that devices can reach, and the embedded database is on this machine only')
    expect(result.json.error.hint).to.contain('--database-url').and.to.contain('--supabase-url')
  })

  it('refuses --syncthing-url that is not a URL, and a truncated invite code, with exit 2', async () => {
    const url = await run('sync', 'list', '--syncthing-url', 'not a url')
    expect(url.exitCode).to.equal(2)
    expect(url.json.error.message).to.equal('invalid --syncthing-url "not a url": expected an address such as http://127.0.0.1:8384')
    const code = await run('join', 'vsi_short')
    expect(code.exitCode).to.equal(2)
    expect(code.json.error.message).to.match(/^malformed invite code/)
  })

  it('cleans temp dirs that a killed process left in ca/, and names no temp path in errors', async () => {
    expect((await run('ca', 'init')).exitCode).to.equal(0)
    const dead = execa('true')
    await dead
    const left = join(home, 'ca', `.vidsync-tmp-${dead.pid}-abcdef`)
    await execa('mkdir', ['-p', left])
    await writeFile(join(left, 'node.key'), 'a private key')
    const key = await cli(['key', 'create', '--json'], {VIDSYNC_HOME: home})
    const registered = await run('device', 'register', 'films', '--name', 'cutter', '--public-key', key.json.publicKeyPath, '--out', join(home, 'cutter.zip'))
    expect(registered.exitCode, registered.stdout).to.equal(0)
    expect((await readdir(join(home, 'ca'))).filter((name) => name.startsWith('.vidsync-tmp-'))).to.deep.equal([])
    // A certificate nebula-cert cannot read: the message names the bundle, not the deleted stage dir.
    const files = await readBundle(join(home, 'cutter.zip'))
    await zip(join(home, 'garbled.zip'), [...[...files].filter(([name]) => name !== 'node.crt'), ['node.crt', 'garbage']])
    const garbled = await run('join', join(home, 'garbled.zip'))
    expect(garbled.exitCode).to.equal(2)
    expect(garbled.json.error.message).to.match(new RegExp(`^node\\.crt of ${join(home, 'garbled.zip')} is not a readable Nebula certificate`))
    expect(garbled.json.error.message).not.to.contain('.vidsync-tmp-')
  })
  it('takes secrets from standard input or files instead of argv', async () => {
    const code = `vsi_${'a'.repeat(43)}`
    const fromStdin = await cli(['join', '-', '--json'], {VIDSYNC_HOME: home}, {...slow, input: `${code}\n`})
    expect(fromStdin.exitCode).to.equal(2)
    expect(fromStdin.json.error.message).to.match(/^joining with an invite code needs the control plane/)
    const urlFile = join(home, 'database-url')
    await writeFile(urlFile, 'postgres://vidsync:hunter2@127.0.0.1:1/vidsync\n', {mode: 0o600})
    const database = await cli(['project', 'list', '--json'], {VIDSYNC_HOME: home, VIDSYNC_DATABASE_URL_FILE: urlFile}, slow)
    expect(database.exitCode, database.stdout).to.equal(6)
    expect(database.stdout).not.to.contain('hunter2')
    const keyFile = await run('sync', 'list', '--syncthing-url', 'http://127.0.0.1:1', '--api-key-file', join(home, 'no-such-key'))
    expect(keyFile.exitCode).to.equal(3)
    expect(keyFile.json.error.message).to.equal(`API key file ${join(home, 'no-such-key')} does not exist`)
  })
})
