import {chmod, readdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'
import YAML from 'yaml'

import {readBundle} from '../src/lib/bundle/bundle.js'
import {testNebulaConfig} from '../src/lib/nebula/config.js'
import {readCert, verifyCert} from '../src/lib/pki/cert.js'
import {cli} from './helpers/cli.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

/** Extracts a bundle next to `key` with absolute paths, as a device would, and checks it with nebula. */
async function checkBundle(bundlePath: string, keyPem?: string) {
  const files = await readBundle(bundlePath)
  const dir = await tempDir()
  for (const [name, content] of files) await writeFile(join(dir, name), content, {mode: 0o600})
  if (keyPem) await writeFile(join(dir, 'node.key'), keyPem, {mode: 0o600})
  await verifyCert({caCertPath: join(dir, 'ca.crt'), certPath: join(dir, 'node.crt')})
  const config = YAML.parse(files.get('nebula.yml')?.toString() ?? '', {version: '1.1'})
  config.pki = {...config.pki, ca: join(dir, 'ca.crt'), cert: join(dir, 'node.crt'), key: join(dir, 'node.key')}
  await writeFile(join(dir, 'nebula.yml'), YAML.stringify(config, {version: '1.1'}))
  await testNebulaConfig({configPath: join(dir, 'nebula.yml')})
  return {files, config, cert: await readCert(join(dir, 'node.crt')), manifest: JSON.parse(files.get('vidsync.json')?.toString() ?? '{}')}
}

describe('operator PKI: CA, lighthouses, device registration, bundles', function () {
  this.timeout(120_000)
  let home: string
  let out: string
  let env: Record<string, string>
  const run = (...args: string[]) => cli([...args, '--json'], env)
  const allocated = async () => (await run('pool', 'status', 'studio')).json.allocated as number

  before(async () => {
    home = await tempDir()
    out = await tempDir()
    env = {VIDSYNC_HOME: home}
    expect((await run('ca', 'init', '--name', 'studio-ca', '--duration', '30d')).exitCode).to.equal(0)
    expect((await run('project', 'create', 'studio', '--cidr', '10.99.1.0/24')).exitCode).to.equal(0)
    expect((await run('pool', 'populate', 'studio')).exitCode).to.equal(0)
    for (const name of ['laptop', 'desktop', 'phone', 'tablet']) {
      expect((await run('key', 'create', '--out', join(out, 'keys'), '--name', name)).exitCode).to.equal(0)
    }
  })

  after(removeTempDirs)

  it('adds a relay lighthouse whose bundle nebula accepts and which carries its generated key', async () => {
    const bundle = join(out, 'lh1.zip')
    const added = await run('lighthouse', 'add', 'studio', '--name', 'lh1', '--endpoint', '192.0.2.1:4242', '--generate-key', '--relay', '--out', bundle)
    expect(added.exitCode).to.equal(0)
    expect(added.json).to.deep.include({operatorGeneratedKey: true, bundle})
    expect(added.json.device).to.include({name: 'lh1', ip: '10.99.1.1', lighthouse: true, endpoint: '192.0.2.1:4242', relay: true})
    expect((await stat(bundle)).mode & 0o777).to.equal(0o600)
    const {files, config, manifest} = await checkBundle(bundle)
    expect(files.has('node.key')).to.equal(true)
    expect(config.lighthouse.am_lighthouse).to.equal(true)
    expect(config.listen.port).to.equal(4242)
    expect(config.relay.am_relay).to.equal(true)
    expect(manifest.operatorGeneratedKey).to.equal(true)
    expect(files.get('README.md')?.toString()).to.contain('PRIVATE KEY')
  })

  it('registers a device: certificate verified against the CA, config accepted by nebula -test, no private key inside', async () => {
    const bundle = join(out, 'laptop.zip')
    const registered = await run(
      'device', 'register', 'studio', '--name', 'laptop', '--public-key', join(out, 'keys', 'laptop.pub'),
      '--groups', 'staff,editors', '--out', bundle,
    )
    expect(registered.exitCode).to.equal(0)
    expect(registered.json.device).to.include({name: 'laptop', ip: '10.99.1.2', status: 'active', lighthouse: false})
    expect(registered.json.operatorGeneratedKey).to.equal(false)
    expect((await stat(bundle)).mode & 0o777).to.equal(0o644)
    const {files, config, cert, manifest} = await checkBundle(bundle, await readFile(join(out, 'keys', 'laptop.key'), 'utf8'))
    expect([...files.keys()].sort()).to.deep.equal(['README.md', 'ca.crt', 'nebula.yml', 'node.crt', 'vidsync.json'])
    for (const content of files.values()) expect(content.toString()).not.to.contain('PRIVATE KEY-----')
    expect(cert).to.include({name: 'laptop', fingerprint: registered.json.device.fingerprint})
    expect(cert.ips).to.deep.equal(['10.99.1.2/24'])
    expect(cert.groups).to.deep.equal(['staff', 'editors'])
    expect(config.static_host_map).to.deep.equal({'10.99.1.1': ['192.0.2.1:4242']})
    expect(config.lighthouse).to.include({am_lighthouse: false})
    expect(config.lighthouse.hosts).to.deep.equal(['10.99.1.1'])
    expect(config.relay.relays).to.deep.equal(['10.99.1.1'])
    expect(config.punchy).to.deep.equal({punch: true, respond: true})
    expect(config.pki.disconnect_invalid).to.equal(true)
    expect(config.firewall.inbound).to.deep.include({port: 22000, proto: 'tcp', cidr: '10.99.1.0/24'})
    expect(manifest).to.include({project: 'studio', device: 'laptop', ip: '10.99.1.2', cidr: '10.99.1.0/24'})
    expect(manifest.lighthouses).to.deep.equal([{name: 'lh1', ip: '10.99.1.1', endpoint: '192.0.2.1:4242', relay: true}])
  })

  it('reads the public key from stdin and lists earlier devices as peers with their Syncthing IDs', async () => {
    const syncthingId = 'MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZDMM-FZWI3DP-BONSGYY-LTMRWAD'
    const bundle = join(out, 'desktop.zip')
    const registered = await cli(
      ['device', 'register', 'studio', '--name', 'desktop', '--public-key', '-', '--syncthing-id', syncthingId, '--out', bundle, '--json'],
      env,
      {input: await readFile(join(out, 'keys', 'desktop.pub'), 'utf8')},
    )
    expect(registered.exitCode).to.equal(0)
    expect(registered.json.device.syncthingId).to.equal(syncthingId)
    const phone = join(out, 'phone.zip')
    expect((await run('device', 'register', 'studio', '--name', 'phone', '--public-key', join(out, 'keys', 'phone.pub'), '--out', phone)).exitCode).to.equal(0)
    const {manifest} = await checkBundle(phone, await readFile(join(out, 'keys', 'phone.key'), 'utf8'))
    expect(manifest.peers).to.deep.equal([
      {name: 'laptop', ip: '10.99.1.2', syncthingId: null},
      {name: 'desktop', ip: '10.99.1.3', syncthingId},
    ])
  })

  const refusals: [string, () => string[], number, RegExp][] = [
    ['a file that is not a public key', () => ['--name', 'x1', '--public-key', join(out, 'lh1.zip')], 2, /not a Nebula public key/],
    ['a private key', () => ['--name', 'x2', '--public-key', join(out, 'keys', 'tablet.key')], 2, /this is a private key/],
    ['a key already registered (cloned machine)', () => ['--name', 'x3', '--public-key', join(out, 'keys', 'laptop.pub')], 4, /already registered as device "laptop".*cloned/],
    ['a duplicate device name', () => ['--name', 'laptop', '--public-key', join(out, 'keys', 'tablet.pub')], 4, /device "laptop" already exists/],
    ['a certificate outliving the CA', () => ['--name', 'x4', '--public-key', join(out, 'keys', 'tablet.pub'), '--duration', '60d'], 2, /CA expires at .* must not outlive it: use --duration/],
    ['an invalid group', () => ['--name', 'x5', '--public-key', join(out, 'keys', 'tablet.pub'), '--groups', 'Bad Group'], 2, /invalid group/],
    ['a missing key file', () => ['--name', 'x6', '--public-key', join(out, 'nope.pub')], 3, /does not exist/],
    ['an --out in a missing directory', () => ['--name', 'x7', '--public-key', join(out, 'keys', 'tablet.pub'), '--out', join(out, 'no', 'x.zip')], 2, /does not exist/],
    ['an existing --out', () => ['--name', 'x8', '--public-key', join(out, 'keys', 'tablet.pub'), '--out', join(out, 'laptop.zip')], 4, /already exists: choose another --out/],
    ['an unknown project', () => ['--name', 'x9', '--public-key', join(out, 'keys', 'tablet.pub')], 3, /unknown project/],
  ]
  for (const [what, args, exitCode, message] of refusals) {
    it(`refuses ${what} and allocates nothing`, async () => {
      const before = await allocated()
      const project = what === 'an unknown project' ? 'ghost' : 'studio'
      const result = await run('device', 'register', project, ...args())
      expect(result.exitCode, result.stdout).to.equal(exitCode)
      expect(result.json.error.message).to.match(message)
      expect(await allocated()).to.equal(before)
    })
  }

  it('refuses lighthouse endpoints without a port or with a bad host', async () => {
    for (const endpoint of ['192.0.2.9', 'bad_host!:4242', '192.0.2.9:99999', 'host:']) {
      const result = await run('lighthouse', 'add', 'studio', '--name', 'lh9', '--endpoint', endpoint, '--generate-key', '--out', join(out, 'lh9.zip'))
      expect(result.exitCode, endpoint).to.equal(2)
      expect(result.json.error.message).to.match(/invalid (endpoint|port|host)/)
    }
  })

  it('leaves no trace when signing fails: no address, no device, no bundle, no temp files', async () => {
    const fake = join(out, 'failing-nebula-cert')
    await writeFile(fake, '#!/bin/sh\nif [ "$1" = sign ]; then echo "Error: injected signing failure" >&2; exit 1; fi\nexec nebula-cert "$@"\n', {mode: 0o755})
    const before = await allocated()
    const bundle = join(out, 'tablet.zip')
    const result = await cli(
      ['device', 'register', 'studio', '--name', 'tablet', '--public-key', join(out, 'keys', 'tablet.pub'), '--out', bundle, '--json'],
      {...env, VIDSYNC_NEBULA_CERT: fake},
    )
    expect(result.exitCode).to.equal(1)
    expect(result.json.error.message).to.contain('injected signing failure')
    expect(await allocated()).to.equal(before)
    expect((await run('device', 'list', 'studio')).json.devices.map((d: {name: string}) => d.name)).not.to.include('tablet')
    expect(await readdir(out)).not.to.include('tablet.zip')
    expect((await readdir(join(home, 'ca'))).sort()).to.deep.equal(['ca.crt', 'ca.key'])
  })

  it('says how to install nebula-cert when it is missing', async () => {
    const result = await cli(
      ['device', 'register', 'studio', '--name', 'tablet', '--public-key', join(out, 'keys', 'tablet.pub'), '--json'],
      {...env, VIDSYNC_NEBULA_CERT: '/nonexistent/nebula-cert'},
    )
    expect(result.exitCode).to.equal(8)
    expect(result.json.error.message).to.match(/nebula-cert not found.*apt-get install nebula/)
  })

  it('refuses a CA key readable by others, and an existing CA', async () => {
    const keyPath = join(home, 'ca', 'ca.key')
    await chmod(keyPath, 0o644)
    try {
      const result = await run('device', 'register', 'studio', '--name', 'tablet', '--public-key', join(out, 'keys', 'tablet.pub'))
      expect(result.exitCode).to.equal(9)
      expect(result.json.error.message).to.contain(`chmod 600 ${keyPath}`)
    } finally {
      await chmod(keyPath, 0o600)
    }
    const again = await run('ca', 'init')
    expect(again.exitCode).to.equal(4)
    expect((await stat(keyPath)).mode & 0o777).to.equal(0o600)
  })

  it('revokes: fingerprint blocklisted in the next bundle, address quarantined, needs --yes in scripts', async () => {
    const unconfirmed = await run('device', 'revoke', 'studio', 'laptop')
    expect(unconfirmed.exitCode).to.equal(2)
    expect(unconfirmed.json.error.hint).to.contain('pass --yes')
    const laptop = (await run('device', 'show', 'studio', 'laptop')).json.device
    const revoked = await run('device', 'revoke', 'studio', 'laptop', '--yes')
    expect(revoked.exitCode).to.equal(0)
    expect(revoked.json.fingerprints).to.deep.equal([laptop.fingerprint])
    const status = (await run('pool', 'status', 'studio')).json
    expect(status.quarantined).to.equal(1)

    const bundle = join(out, 'tablet.zip')
    expect((await run('device', 'register', 'studio', '--name', 'tablet', '--public-key', join(out, 'keys', 'tablet.pub'), '--out', bundle)).exitCode).to.equal(0)
    const {config, manifest} = await checkBundle(bundle, await readFile(join(out, 'keys', 'tablet.key'), 'utf8'))
    expect(config.pki.blocklist).to.deep.equal([laptop.fingerprint])
    expect(manifest.peers.map((peer: {name: string}) => peer.name)).not.to.include('laptop')
    expect((await run('device', 'revoke', 'studio', 'laptop', '--yes')).exitCode).to.equal(4)
  })

  it('renews with the same key and address, capped at the CA expiry and saying so', async () => {
    const before = (await run('device', 'show', 'studio', 'desktop')).json.device
    const capped = await run('device', 'renew', 'studio', 'desktop', '--duration', '365d', '--out', join(out, 'desktop-renewed.zip'))
    expect(capped.exitCode).to.equal(0)
    expect(capped.json.cappedAtCaExpiry).to.equal(true)
    expect(Date.parse(capped.json.device.notAfter)).to.be.at.most(Date.parse(capped.json.caNotAfter))
    const {cert} = await checkBundle(join(out, 'desktop-renewed.zip'), await readFile(join(out, 'keys', 'desktop.key'), 'utf8'))
    expect(cert.fingerprint).to.not.equal(before.fingerprint)
    expect(cert.ips).to.deep.equal([`${before.ip}/24`])
    expect(cert.publicKey).to.equal((await readCert(join(await bundleDir(join(out, 'desktop.zip')), 'node.crt'))).publicKey)

    const short = await run('device', 'renew', 'studio', 'desktop', '--duration', '1h', '--out', join(out, 'desktop-1h.zip'))
    expect(short.json.cappedAtCaExpiry).to.equal(false)
    expect(Date.parse(short.json.device.notAfter) - Date.now()).to.be.within(3_500_000, 3_700_000)
  })

  it('releases a revoked device so its name can be registered again, keeping the blocklist', async () => {
    const shown = (await run('device', 'show', 'studio', 'laptop')).json
    const revokedLaptop = shown.device
    expect(revokedLaptop.status).to.equal('revoked')
    // Devices joined from bundle files have no token to acknowledge with: every active one is pending.
    expect(shown.revocation).to.include({revokedAt: revokedLaptop.revokedAt, acknowledged: 0})
    expect(shown.revocation.pendingDevices).to.include('desktop').and.not.include('laptop')
    expect((await run('device', 'show', 'studio', 'desktop')).json.revocation).to.equal(null)
    expect((await run('device', 'release', 'studio', 'laptop', '--yes')).exitCode).to.equal(0)
    const list = (await run('device', 'list', 'studio')).json.devices.map((d: {name: string}) => d.name)
    expect(list).not.to.include('laptop')
    const again = join(out, 'laptop-again.zip')
    await run('key', 'create', '--out', join(out, 'keys'), '--name', 'laptop2')
    expect((await run('device', 'register', 'studio', '--name', 'laptop', '--public-key', join(out, 'keys', 'laptop2.pub'), '--out', again)).exitCode).to.equal(0)
    const {config, cert} = await checkBundle(again, await readFile(join(out, 'keys', 'laptop2.key'), 'utf8'))
    // The old laptop's certificate stays blocked; the new one under the same name is not.
    expect(config.pki.blocklist).to.deep.equal([revokedLaptop.fingerprint])
    expect(cert.fingerprint).not.to.equal(revokedLaptop.fingerprint)
  })
})

async function bundleDir(bundlePath: string): Promise<string> {
  const dir = await tempDir()
  for (const [name, content] of await readBundle(bundlePath)) await writeFile(join(dir, name), content)
  return dir
}

describe('an expired CA', function () {
  this.timeout(60_000)
  after(removeTempDirs)

  it('is refused with a clear error', async () => {
    const home = await tempDir()
    const env = {VIDSYNC_HOME: home}
    expect((await cli(['ca', 'init', '--duration', '2s', '--json'], env)).exitCode).to.equal(0)
    await cli(['project', 'create', 'p', '--cidr', '10.98.0.0/24'], env)
    await cli(['pool', 'populate', 'p'], env)
    await sleep(2500)
    const result = await cli(['device', 'register', 'p', '--name', 'd', '--generate-key', '--out', join(home, 'd.zip'), '--json'], env)
    expect(result.exitCode).to.equal(2)
    expect(result.json.error.message).to.match(/CA .*expired/i)
    expect((await cli(['pool', 'status', 'p', '--json'], env)).json.allocated).to.equal(0)
  })
})
