import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'
import YAML from 'yaml'

import {InvalidInputError, MissingDependencyError} from '../src/lib/errors.js'
import {resolveTools} from '../src/lib/exec.js'
import {type NebulaConfigOptions, renderNebulaConfig, testNebulaConfig} from '../src/lib/nebula/config.js'
import {caPaths, initCa} from '../src/lib/pki/ca.js'
import {signDevice} from '../src/lib/pki/sign.js'

const lighthouses = [
  {overlayIp: '10.99.1.1', endpoints: ['192.0.2.1:4242']},
  {overlayIp: '10.99.1.2', endpoints: ['192.0.2.2:4242', '192.0.2.3:4343']},
]

describe('nebula config', () => {
  let root: string
  let home: string
  let revoked: string

  /** Writes a real certificate and key for `ip` and the config next to them; returns the config path. */
  async function nodeWithConfig(ip: string, options: Omit<NebulaConfigOptions, 'caPath' | 'certPath' | 'keyPath'>): Promise<string> {
    const dir = await mkdtemp(join(root, 'node-'))
    const signed = await signDevice({home, name: `node-${ip}`, ip, prefixLength: 24, groups: ['studio'], generateKey: true})
    await writeFile(join(dir, 'node.crt'), signed.certPem)
    await writeFile(join(dir, 'node.key'), signed.privateKeyPem ?? '', {mode: 0o600})
    const configPath = join(dir, 'nebula.yml')
    const paths = {caPath: caPaths(home).certPath, certPath: join(dir, 'node.crt'), keyPath: join(dir, 'node.key')}
    await writeFile(configPath, renderNebulaConfig({...paths, ...options}))
    return configPath
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'vidsync-nebula-config-'))
    home = join(root, 'home')
    await initCa({home, name: 'ca', durationSeconds: 7 * 86_400})
    revoked = (await signDevice({home, name: 'revoked', ip: '10.99.1.9', prefixLength: 24, generateKey: true})).fingerprint
  })

  after(async () => {
    await rm(root, {recursive: true, force: true})
  })

  it('renders a device config that nebula -test accepts', async () => {
    const options = {
      lighthouses,
      cidr: '10.99.1.0/24',
      blocklist: [revoked],
      relays: {useRelays: true, amRelay: false, relayIps: ['10.99.1.1']},
      tunDev: 'vidsync1',
    }
    const configPath = await nodeWithConfig('10.99.1.5', options)
    await testNebulaConfig({configPath})
    const config = YAML.parse(renderNebulaConfig(options), {version: '1.1'})
    expect(config.pki).to.deep.equal({ca: 'ca.crt', cert: 'node.crt', key: 'node.key', blocklist: [revoked], disconnect_invalid: true})
    expect(config.static_host_map).to.deep.equal({'10.99.1.1': ['192.0.2.1:4242'], '10.99.1.2': ['192.0.2.2:4242', '192.0.2.3:4343']})
    expect(config.lighthouse).to.deep.equal({am_lighthouse: false, interval: 60, hosts: ['10.99.1.1', '10.99.1.2']})
    expect(config.listen).to.deep.equal({host: '0.0.0.0', port: 4242, read_buffer: 10_485_760, write_buffer: 10_485_760})
    expect(config.punchy).to.deep.equal({punch: true, respond: true})
    expect(config.relay).to.deep.equal({relays: ['10.99.1.1'], am_relay: false, use_relays: true})
    expect(config.tun).to.deep.equal({disabled: false, dev: 'vidsync1', mtu: 1440, tx_queue: 1000})
    expect(config.routines).to.equal(2)
    expect(config.firewall.outbound).to.deep.equal([{port: 'any', proto: 'any', host: 'any'}])
    expect(config.firewall.inbound).to.deep.equal([
      {port: 'any', proto: 'icmp', host: 'any'},
      {port: 22000, proto: 'tcp', cidr: '10.99.1.0/24'},
    ])
  })

  it('renders a lighthouse and relay config that nebula -test accepts', async () => {
    const options = {
      lighthouses,
      amLighthouse: true,
      listenPort: 4343,
      cidr: '10.99.1.0/24',
      blocklist: [revoked, '1'.repeat(64)],
      relays: {useRelays: false, amRelay: true, relayIps: ['10.99.1.2']},
    }
    const configPath = await nodeWithConfig('10.99.1.1', options)
    await testNebulaConfig({configPath})
    const config = YAML.parse(renderNebulaConfig(options), {version: '1.1'})
    expect(config.lighthouse.hosts).to.deep.equal([])
    expect(config.listen.port).to.equal(4343)
    expect(config.relay).to.deep.equal({relays: [], am_relay: true, use_relays: false})
    // go-yaml v2 reads YAML 1.1, where an all-digit fingerprint would otherwise be a number.
    expect(config.pki.blocklist).to.deep.equal([revoked, '1'.repeat(64)])
    expect(config.tun).not.to.have.property('dev')
  })

  it('opens the Syncthing port to certificate groups when asked', async () => {
    const options = {lighthouses, cidr: '10.99.1.0/24', syncGroups: ['studio', 'render']}
    await testNebulaConfig({configPath: await nodeWithConfig('10.99.1.6', options)})
    const config = YAML.parse(renderNebulaConfig(options), {version: '1.1'})
    expect(config.firewall.inbound.slice(1)).to.deep.equal([
      {port: 22000, proto: 'tcp', group: 'studio'},
      {port: 22000, proto: 'tcp', group: 'render'},
    ])
  })

  it("reports nebula's reason when it rejects a config", async () => {
    const configPath = await nodeWithConfig('10.99.1.7', {lighthouses: [{overlayIp: '10.98.0.1', endpoints: ['192.0.2.1:4242']}], cidr: '10.99.1.0/24'})
    try {
      await testNebulaConfig({configPath})
      expect.fail('nebula accepted a lighthouse outside the network')
    } catch (error) {
      expect(error).to.be.instanceOf(InvalidInputError)
      const message = (error as Error).message
      expect(message.startsWith(`nebula rejects ${configPath}: static_host_map key is not in our subnet, invalid (`)).to.equal(true)
      expect(message).to.include('vpnIp=10.98.0.1')
    }
  })

  it('reports a missing nebula binary', async () => {
    const tools = resolveTools({nebula: join(root, 'absent')})
    const error = await testNebulaConfig({configPath: join(root, 'nebula.yml'), tools}).catch((caught: unknown) => caught)
    expect(error).to.be.instanceOf(MissingDependencyError)
    expect((error as Error).message).to.include('apt-get install nebula')
  })

  it('refuses malformed blocklist entries and endpoints', () => {
    expect(() => renderNebulaConfig({lighthouses, cidr: '10.99.1.0/24', blocklist: ['not-a-fingerprint']})).to.throw(
      InvalidInputError,
      /invalid certificate fingerprint/,
    )
    expect(() => renderNebulaConfig({lighthouses: [{overlayIp: '10.99.1.1', endpoints: ['192.0.2.1']}], cidr: '10.99.1.0/24'})).to.throw(
      InvalidInputError,
      /expected HOST:PORT/,
    )
  })
})
