import {readdir, readFile, utimes, writeFile} from 'node:fs/promises'
import {createServer, type Server} from 'node:http'
import {join} from 'node:path'

import {expect} from 'chai'
import {execa} from 'execa'

import {ConflictError, MissingDependencyError, NotFoundError, UnavailableError} from '../src/lib/errors.js'
import {resolveTools} from '../src/lib/exec.js'
import {installBundle} from '../src/lib/join/join.js'
import {failureReason, handshakePaths, handshakePeers, handshakeTunnels, parseLogLine} from '../src/lib/nebula/log.js'
import {preflight} from '../src/lib/nebula/process.js'
import {parsePrintedCerts, pemCertVersions, readCert, requireCertSupport} from '../src/lib/pki/cert.js'
import {initCa} from '../src/lib/pki/ca.js'
import {ControlPlane, SqlRpc} from '../src/lib/store/control-plane.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {EmbeddedClient, PostgresClient, type SqlClient} from '../src/lib/store/sql-client.js'
import {SyncthingClient, SyncthingMigratingError} from '../src/lib/syncthing/client.js'
import {deviceIdFromCertPem} from '../src/lib/syncthing/device-id.js'
import {syncthingDeviceId} from '../src/lib/syncthing/managed.js'
import {lookup, minimumNebulaFor, nebulaTable, syncthingTable} from '../src/lib/versions/capabilities.js'
import {nebulaCapabilities, parseVersionLine, syncthingCapabilities, toolVersion} from '../src/lib/versions/detect.js'
import {createThrowawayDatabase} from './helpers/postgres.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'
import {expectRejects} from './helpers/rejects.js'

const fixtures = new URL('fixtures/upstream/', import.meta.url).pathname
const fake = (release: string, tool: string) => join(fixtures, release, tool)


describe('versions: tables, detection and tolerant parsers', function () {
  this.timeout(60_000)

  after(removeTempDirs)

  describe('version lines', () => {
    it('reads nebula, nebula-cert and Syncthing version lines of every line', () => {
      expect(parseVersionLine('nebula', 'Version: 1.6.1\n')?.version).to.equal('1.6.1')
      expect(parseVersionLine('nebula-cert', 'Version: 1.10.3\n')?.version).to.equal('1.10.3')
      // Debian's build adds "-ds1"; upstream's 2.x adds the codename and build line.
      const debian = 'syncthing v1.19.2-ds1 "Fermium Flea" (go1.19.8 linux-amd64) debian@debian 2023-04-09 10:47:16 UTC\n'
      expect(parseVersionLine('syncthing', debian)).to.deep.equal({version: '1.19.2', raw: debian.trim()})
      const two = 'syncthing v2.1.3 "Hafnium Hornet" (go1.25.0 linux-amd64) builder@github.syncthing.net 2026-08-03 21:36:05 UTC'
      expect(parseVersionLine('syncthing', two)?.version).to.equal('2.1.3')
      expect(parseVersionLine('nebula', 'Version: \n')).to.equal(undefined)
    })

    it('has one row per release line, chosen by version', () => {
      expect(lookup(nebulaTable, '1.6.1')).to.include({printJson: 'object-per-line', networksFlag: '-ip', log: 'logrus', handshakePeerField: 'vpnIp'})
      expect(lookup(nebulaTable, '1.6.1')?.certVersions).to.deep.equal([1])
      expect(lookup(nebulaTable, '1.9.7')?.certVersions).to.deep.equal([1])
      expect(lookup(nebulaTable, '1.10.0')).to.include({printJson: 'array', networksFlag: '-networks', certVersionFlag: true, handshakePeerField: 'vpnAddrs', log: 'logrus'})
      expect(lookup(nebulaTable, '1.11.1')).to.include({log: 'slog'})
      expect(lookup(nebulaTable, '1.5.3')).to.equal(undefined)
      expect(minimumNebulaFor(1)).to.equal('1.6.0')
      expect(minimumNebulaFor(2)).to.equal('1.10.0')
      expect(lookup(syncthingTable, '1.19.2')).to.deep.include({generateArgs: ['--skip-port-probing'], generateEnv: {STNODEFAULTFOLDER: '1'}, serveArgs: ['--logflags=3']})
      expect(lookup(syncthingTable, '2.0.2')).to.deep.include({versionArgs: ['version'], generateArgs: [], generateEnv: {STNOPORTPROBING: '1'}, migrationApi: false})
      expect(lookup(syncthingTable, '2.0.3')).to.deep.include({versionArgs: ['--version'], migrationApi: true})
    })
  })

  describe('detection', () => {
    const releases = [
      {dir: 'nebula-v1.9.7', version: '1.9.7', printJson: 'object-per-line'},
      {dir: 'nebula-v1.10.3', version: '1.10.3', printJson: 'array'},
      {dir: 'nebula-v1.11.0', version: '1.11.0', printJson: 'array'},
    ]
    for (const release of releases) {
      it(`finds ${release.dir} and its capabilities`, async () => {
        const tools = resolveTools({nebulaCert: fake(release.dir, 'nebula-cert'), nebula: fake(release.dir, 'nebula')})
        for (const tool of ['nebula', 'nebula-cert'] as const) {
          const found = await nebulaCapabilities(tool, tools)
          expect(found).to.include({version: release.version, tested: true, path: fake(release.dir, tool)})
          expect(found.capabilities.printJson).to.equal(release.printJson)
        }
      })
    }

    it("finds the real nebula 1.6.1 and Syncthing 1.19.2 of this machine", async () => {
      expect((await nebulaCapabilities('nebula')).version).to.equal('1.6.1')
      expect((await syncthingCapabilities()).version).to.equal('1.19.2')
    })

    for (const [dir, version] of [
      ['syncthing-v1.27.12', '1.27.12'],
      ['syncthing-v2.0.2', '2.0.2'], // no --version flag before 2.0.3: the `version` subcommand answers
      ['syncthing-v2.1.3', '2.1.3'],
    ]) {
      it(`finds ${dir}`, async () => {
        const found = await syncthingCapabilities(resolveTools({syncthing: fake(dir ?? '', 'syncthing')}))
        expect(found.version).to.equal(version)
      })
    }

    it('asks each binary once per run, again when it changes on disk', async () => {
      const dir = await tempDir()
      const counter = join(dir, 'count')
      const script = join(dir, 'nebula')
      await writeFile(counter, '')
      await writeFile(script, `#!/bin/sh\necho x >> ${counter}\necho "Version: 1.10.1"\n`, {mode: 0o755})
      const tools = resolveTools({nebula: script})
      await Promise.all([toolVersion('nebula', tools), toolVersion('nebula', tools), nebulaCapabilities('nebula', tools)])
      expect((await readFile(counter, 'utf8')).split('\n').filter(Boolean)).to.have.length(1)
      await utimes(script, new Date(), new Date(Date.now() + 5000))
      expect((await toolVersion('nebula', tools)).version).to.equal('1.10.1')
      expect((await readFile(counter, 'utf8')).split('\n').filter(Boolean)).to.have.length(2)
    })

    it('refuses a nebula older than supported with exit 8, and uses a newer one with the newest row, untested', async () => {
      const dir = await tempDir()
      const old = join(dir, 'old')
      const newer = join(dir, 'newer')
      await writeFile(old, '#!/bin/sh\necho "Version: 1.5.2"\n', {mode: 0o755})
      await writeFile(newer, '#!/bin/sh\necho "Version: 1.12.0"\n', {mode: 0o755})
      const error = await expectRejects(nebulaCapabilities('nebula', resolveTools({nebula: old})), MissingDependencyError)
      expect(error.message).to.match(/nebula 1\.5\.2 .* is too old: vidsync supports nebula 1\.6 to 1\.11/)
      expect(error.exitCode).to.equal(8)
      const found = await nebulaCapabilities('nebula', resolveTools({nebula: newer}))
      expect(found).to.include({version: '1.12.0', tested: false})
      expect(found.capabilities.log).to.equal('slog')
    })
  })

  describe('nebula-cert print -json', () => {
    // Recorded with this machine's nebula-cert 1.6.1: one object per line.
    const v16 =
      '{"details":{"groups":["a","b"],"ips":["10.1.0.2/24"],"isCa":false,"issuer":"fa2f","name":"d","notAfter":"2026-11-27T11:55:07Z","notBefore":"2026-11-27T01:55:08Z","publicKey":"d1b7","subnets":[]},"fingerprint":"e0ab","signature":"1438"}\n'
    // print_test.go at v1.10.0: one array, `networks`, `version` (three copies of one certificate there).
    const v110 =
      '[{"details":{"curve":"CURVE25519","groups":["hi"],"isCa":false,"issuer":"abcd","name":"test","networks":["10.0.0.123/8"],"notAfter":"0001-01-01T00:00:00Z","notBefore":"0001-01-01T00:00:00Z","publicKey":"1234","unsafeNetworks":[]},"fingerprint":"ff00","signature":"ee11","version":1},' +
      '{"details":{"curve":"CURVE25519","groups":["hi"],"isCa":false,"issuer":"abcd","name":"test","networks":["10.0.0.123/8"],"notAfter":"0001-01-01T00:00:00Z","notBefore":"0001-01-01T00:00:00Z","publicKey":"1234","unsafeNetworks":[]},"fingerprint":"ff00","signature":"ee11","version":1}]\n'
    // cert_v2.go marshalJSON at v1.10.0: publicKey and curve beside details; nil slices print null.
    const v2 =
      '[{"curve":"CURVE25519","details":{"groups":null,"isCa":true,"issuer":"","name":"ca2","networks":["10.99.0.0/16","fd00::/64"],"notAfter":"2027-01-01T00:00:00Z","notBefore":"2026-01-01T00:00:00Z","unsafeNetworks":null},"fingerprint":"aa11","publicKey":"bb22","signature":"cc33","version":2}]\n'

    it('reads 1.6 to 1.9 objects per line', () => {
      expect(parsePrintedCerts(v16)).to.deep.equal([
        {version: 1, name: 'd', fingerprint: 'e0ab', notBefore: '2026-11-27T01:55:08.000Z', notAfter: '2026-11-27T11:55:07.000Z', isCa: false, issuer: 'fa2f', groups: ['a', 'b'], ips: ['10.1.0.2/24'], publicKey: 'd1b7'},
      ])
    })

    it('reads the 1.10+ array with networks', () => {
      const certs = parsePrintedCerts(v110)
      expect(certs).to.have.length(2)
      expect(certs[0]).to.include({version: 1, name: 'test', publicKey: '1234', fingerprint: 'ff00'})
      expect(certs[0]?.ips).to.deep.equal(['10.0.0.123/8'])
    })

    it('reads a v2 certificate: public key at the top level, null lists', () => {
      expect(parsePrintedCerts(v2)[0]).to.deep.include({version: 2, name: 'ca2', isCa: true, publicKey: 'bb22', groups: [], ips: ['10.99.0.0/16', 'fd00::/64']})
    })

    it('refuses output that is not certificate JSON in one line', () => {
      expect(() => parsePrintedCerts('Error: oops')).to.throw(/not certificate JSON: Error: oops/)
      expect(() => parsePrintedCerts('[{"details":{}}]')).to.throw(/without a name/)
    })

    it('tells v1 from v2 PEM by the banner (cert/pem.go)', () => {
      const pem = (label: string) => `-----BEGIN ${label}-----\nAAAA\n-----END ${label}-----\n`
      expect(pemCertVersions(pem('NEBULA CERTIFICATE') + pem('NEBULA CERTIFICATE V2'))).to.deep.equal([1, 2])
      expect(pemCertVersions('')).to.deep.equal([])
    })
  })

  describe('certificates with each nebula-cert', () => {
    for (const release of ['nebula-v1.9.7', 'nebula-v1.10.3', 'nebula-v1.11.0']) {
      it(`${release}: ca init makes a v1 CA (saying so where 1.10+ would default to v2) that readCert reads`, async () => {
        const home = await tempDir()
        const tools = resolveTools({nebulaCert: fake(release, 'nebula-cert')})
        const ca = await initCa({home, name: 'upstream', durationSeconds: 3600, tools})
        expect(ca).to.include({certVersion: 1, nebulaNeeded: 'nebula 1.6.0 or newer'})
        const cert = await readCert(ca.certPath, tools)
        expect(cert).to.include({version: 1, name: 'upstream', isCa: true})
      })
    }

    it('ca init --cert-version 2 with nebula-cert 1.6.1 exits 8, naming the nebula it needs, and writes nothing', async () => {
      const home = await tempDir()
      const error = await expectRejects(initCa({home, name: 'x', certVersion: 2}), MissingDependencyError)
      expect(error.message).to.match(/nebula-cert 1\.6\.1 .* cannot create v2 certificates: they need nebula 1\.10\.0 or newer/)
      expect(error.exitCode).to.equal(8)
      expect(await readFile(join(home, 'ca', 'ca.crt')).catch(() => 'none')).to.equal('none')
    })

    it('refuses v2 certificates on a device whose nebula is 1.6.1, accepts them with 1.10', async () => {
      const v2 = '-----BEGIN NEBULA CERTIFICATE V2-----\nAAAA\n-----END NEBULA CERTIFICATE V2-----\n'
      const error = await expectRejects(requireCertSupport({pem: v2, what: 'bundle.zip', tool: 'nebula'}), MissingDependencyError)
      expect(error.message).to.equal(
        `bundle.zip holds v2 certificates, which nebula 1.6.1 (/usr/bin/nebula) cannot use: this project needs nebula 1.10.0 or newer`,
      )
      expect(error.exitCode).to.equal(8)
      await requireCertSupport({pem: v2, what: 'bundle.zip', tool: 'nebula', tools: resolveTools({nebula: fake('nebula-v1.10.3', 'nebula')})})
    })
  })

  for (const backend of ['embedded', 'postgres'] as const) {
    describe(`the project's certificate version on ${backend}`, function () {
      this.timeout(180_000) // migrating a new embedded database is slow on a loaded machine
      let sql: SqlClient
      let drop: () => Promise<void> = async () => undefined
      let cp: ControlPlane

      before(async () => {
        if (backend === 'embedded') sql = await EmbeddedClient.open()
        else {
          const database = await createThrowawayDatabase('versions')
          sql = new PostgresClient(database.url, 2)
          drop = () => database.drop()
        }
        await migrate(sql, await loadMigrations())
        cp = new ControlPlane(new SqlRpc(sql))
        await cp.createProject({name: 'certs', cidr: '10.96.0.0/24'})
      })

      after(async () => {
        await sql?.close()
        await drop()
      })

      it('is unset until the first certificate fixes it, then refuses another version (exit 4)', async () => {
        expect(await cp.projectCertVersion({project: 'certs'})).to.equal(null)
        expect(await cp.recordCertVersion({project: 'certs', version: 1})).to.equal(1)
        expect(await cp.recordCertVersion({project: 'certs', version: 1})).to.equal(1)
        expect(await cp.projectCertVersion({project: 'certs'})).to.equal(1)
        const error = await expectRejects(cp.recordCertVersion({project: 'certs', version: 2}), ConflictError)
        expect(error.message).to.equal('project "certs" issues v1 certificates and this CA signs v2: its devices may not read v2 certificates')
        expect(error.exitCode).to.equal(4)
        await expectRejects(cp.projectCertVersion({project: 'nope'}), NotFoundError)
      })
    })
  }

  describe('a device whose nebula is too old for the project', () => {
    const v2 = '-----BEGIN NEBULA CERTIFICATE V2-----\nAAAA\n-----END NEBULA CERTIFICATE V2-----\n'

    it('join refuses a bundle of v2 certificates with exit 8 before installing anything', async () => {
      const home = await tempDir()
      const manifest = JSON.stringify({
        version: 1, project: 'newer', cidr: '10.99.30.0/24', device: 'd', ip: '10.99.30.2', groups: [], lighthouse: false,
        fingerprint: 'a'.repeat(64), notAfter: '2030-01-01T00:00:00.000Z', operatorGeneratedKey: true,
        lighthouses: [], peers: [], blocklist: [], issuedAt: '2026-11-27T00:00:00.000Z',
      })
      const files = new Map([
        ['vidsync.json', Buffer.from(manifest)],
        ['ca.crt', Buffer.from(v2)],
        ['node.crt', Buffer.from(v2)],
        ['node.key', Buffer.from('-----BEGIN NEBULA X25519 PRIVATE KEY-----\nAAAA\n-----END NEBULA X25519 PRIVATE KEY-----\n')],
        ['nebula.yml', Buffer.from('pki: {}\n')],
      ])
      const error = await expectRejects(installBundle({home, files, origin: 'newer.zip'}), MissingDependencyError)
      expect(error.message).to.match(/^newer\.zip holds v2 certificates, which nebula 1\.6\.1 .* cannot use: this project needs nebula 1\.10\.0 or newer$/)
      expect(error.hint).to.match(/install a newer nebula/)
      expect(await readdir(home)).not.to.include('projects')
    })

    it("up's preflight fails its nebula check for a project of v2 certificates", async () => {
      const dir = await tempDir()
      await writeFile(join(dir, 'ca.crt'), v2)
      await writeFile(join(dir, 'node.crt'), v2)
      const [nebula] = await preflight({projectDir: dir})
      expect(nebula).to.include({name: 'nebula', ok: false})
      expect(nebula?.problem).to.be.instanceOf(MissingDependencyError)
    })
  })

  describe('nebula logs', () => {
    const v16 = 'time="2026-11-23T14:00:43Z" level=info msg="Handshake message received" certName=lh fingerprint=ab handshake="map[stage:2 style:ix_psk0]" udpAddr="192.0.2.1:4242" vpnIp=10.99.7.1'
    // handshake_ix.go at v1.10.0 (logrus): vpnAddrs is a []netip.Addr, printed with %v.
    const v110 = 'time="2026-11-23T14:00:43Z" level=info msg="Handshake message received" certName=lh certVersion=1 from="192.0.2.1:4242" handshake="map[stage:2 style:ix_psk0]" vpnAddrs="[10.99.7.3 fd00::3]"'
    // handshake_manager.go at v1.11.0 through logging/logger.go (slog TextHandler).
    const v111 = 'time=2026-11-23T14:00:43.123456789Z level=INFO msg="Handshake message received" vpnAddrs=[10.99.7.4] from=192.0.2.1:4242 certName=lh certVersion=1'
    const slogJson = '{"time":"2026-11-23T14:00:43Z","level":"INFO","msg":"Handshake message received","vpnAddrs":["10.99.7.5"],"certName":"lh"}'
    const logrusJson = '{"level":"info","msg":"Handshake message received","time":"2026-11-23T14:00:43Z","vpnIp":"10.99.7.6"}'
    const noCommon = 'time=2026-11-23T14:00:43Z level=INFO msg="Handshake message received, but no vpnNetworks in common." vpnAddrs=[10.99.7.9]'

    it('finds handshake peers in logrus and slog, text and JSON, vpnIp and vpnAddrs', () => {
      const peers = handshakePeers([v16, v110, v111, slogJson, logrusJson, noCommon, 'plain text line'].join('\n'))
      expect([...peers].sort()).to.deep.equal(['10.99.7.1', '10.99.7.3', '10.99.7.4', '10.99.7.5', '10.99.7.6', 'fd00::3'])
    })

    it('tells direct from relayed tunnels in every release format, the latest handshake per peer winning', () => {
      // handshake_ix.go at v1.6.1: udpAddr is a *udp.Addr, "<nil>" (text) or null (JSON, its MarshalJSON) when the packet came through a relay;
      // the responder's stage 2 "Handshake message sent" names the relay's overlay IP in relay=.
      const lines = [
        'time="2026-11-27T05:00:00Z" level=info msg="Handshake message received" certName=a handshake="map[stage:2 style:ix_psk0]" udpAddr="192.0.2.2:4242" vpnIp=10.99.7.2',
        'time="2026-11-27T05:00:00Z" level=info msg="Handshake message received" certName=b handshake="map[stage:2 style:ix_psk0]" udpAddr="<nil>" vpnIp=10.99.7.3',
        'time="2026-11-27T05:00:00Z" level=info msg="Handshake message sent" certName=c handshake="map[stage:2 style:ix_psk0]" relay=10.99.7.1 vpnIp=10.99.7.4',
        '{"handshake":{"stage":2,"style":"ix_psk0"},"level":"info","msg":"Handshake message received","udpAddr":{"ip":"192.0.2.5","port":4242},"vpnIp":"10.99.7.5"}',
        '{"handshake":{"stage":1,"style":"ix_psk0"},"level":"info","msg":"Handshake message received","udpAddr":null,"vpnIp":"10.99.7.6"}',
        // v1.9.7: udpAddr is a netip.AddrPort, the zero one when relayed.
        'time="2026-11-27T05:00:00Z" level=info msg="Handshake message received" udpAddr="invalid AddrPort" vpnIp=10.99.7.7',
        // v1.10.3 (logrus) and v1.11.0 (slog text and JSON): from= is a ViaSender (hostmap.go String and MarshalJSON).
        'time="2026-11-27T05:00:00Z" level=info msg="Handshake message received" from="192.0.2.1:4242 (relayed)" vpnAddrs="[10.99.7.8]"',
        'time=2026-11-27T05:00:00.1Z level=INFO msg="Handshake message received" vpnAddrs=[10.99.7.9] from=192.0.2.9:4242 certName=i',
        'time=2026-11-27T05:00:00.1Z level=INFO msg="Handshake message received" vpnAddrs=[10.99.7.10] from="192.0.2.1:4242 (relayed)" certName=j',
        '{"time":"2026-11-27T05:00:00Z","level":"INFO","msg":"Handshake message received","vpnAddrs":["10.99.7.11"],"from":{"relay":"192.0.2.1:4242"}}',
        '{"time":"2026-11-27T05:00:00Z","level":"INFO","msg":"Handshake message received","vpnAddrs":["10.99.7.12"],"from":{"direct":"192.0.2.12:4242"}}',
        // The initiator's first message (no tunnel yet) names where it was sent, not how a tunnel runs: ignored.
        'time="2026-11-27T05:00:00Z" level=info msg="Handshake message sent" handshake="map[stage:1 style:ix_psk0]" udpAddrs="[192.0.2.13:4242]" vpnIp=10.99.7.13',
      ]
      const paths = Object.fromEntries(handshakePaths(lines.join('\n')))
      expect(paths).to.deep.equal({
        '10.99.7.2': 'direct',
        '10.99.7.3': 'relayed',
        '10.99.7.4': 'relayed',
        '10.99.7.5': 'direct',
        '10.99.7.6': 'relayed',
        '10.99.7.7': 'relayed',
        '10.99.7.8': 'relayed',
        '10.99.7.9': 'direct',
        '10.99.7.10': 'relayed',
        '10.99.7.11': 'relayed',
        '10.99.7.12': 'direct',
      })
      // With the peer's certificate name, for peers this device's manifest does not list.
      expect(handshakeTunnels(lines.join('\n')).get('10.99.7.3')).to.deep.equal({path: 'relayed', name: 'b'})
      expect(handshakeTunnels(lines.join('\n')).get('10.99.7.11')).to.deep.equal({path: 'relayed'})
      // A tunnel that was relayed and handshook again directly is direct now.
      const again = [lines[1], 'time="2026-11-27T05:01:00Z" level=info msg="Handshake message received" udpAddr="192.0.2.3:4242" vpnIp=10.99.7.3']
      expect(handshakePaths(again.join('\n')).get('10.99.7.3')).to.equal('direct')
    })

    it("reads the paths out of the upstream fakes' rewriting of real 1.6.1 handshake lines (test/fixtures/upstream)", async () => {
      // @ts-expect-error: a plain .mjs fixture without types
      const {rewriteNebulaLog} = (await import('./fixtures/upstream/lib/nebula.mjs')) as {rewriteNebulaLog: (release: object, text: string, relay?: string) => string}
      // What nebula 1.6.1 logged in test/e2e/supervision.test.ts: b direct, c through the relay.
      const direct = 'time="2026-11-27T05:00:00Z" level=info msg="Handshake message received" certName=b handshake="map[stage:2 style:ix_psk0]" udpAddr="192.0.2.3:4242" vpnIp=10.99.7.3'
      const relayed = 'time="2026-11-27T05:00:00Z" level=info msg="Handshake message received" certName=c handshake="map[stage:2 style:ix_psk0]" udpAddr="<nil>" vpnIp=10.99.7.4'
      for (const release of [{version: '1.9.7', minor: 9}, {version: '1.10.3', minor: 10}, {version: '1.11.0', minor: 11}]) {
        const log = [direct, relayed].map((line) => rewriteNebulaLog(release, line, '192.0.2.1:4242')).join('\n')
        expect(Object.fromEntries(handshakePaths(log)), `${release.version}: ${log}`).to.deep.equal({'10.99.7.3': 'direct', '10.99.7.4': 'relayed'})
        if (release.minor >= 10) expect(log).to.include('(relayed)').and.not.include('udpAddr')
      }
    })

    it('reads slog levels as logrus ones and finds the failure', () => {
      expect(parseLogLine(v111)?.level).to.equal('info')
      const log = [v111, 'time=2026-11-23T14:00:51Z level=ERROR msg="Failed to start" error="unable to bind to socket: address in use"'].join('\n')
      expect(failureReason(log)).to.equal('Failed to start: unable to bind to socket: address in use')
    })
  })

  describe('Syncthing', () => {
    let server: Server | undefined
    afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())))

    it('computes the device ID from cert.pem exactly as syncthing --device-id does', async () => {
      const home = await tempDir()
      const id = await syncthingDeviceId({vidsyncHome: home})
      const {stdout} = await execa('syncthing', [`--home=${join(home, 'syncthing')}`, '--device-id'])
      expect(id).to.equal(stdout.trim())
      expect(id).to.match(/^([A-Z2-7]{7}-){7}[A-Z2-7]{7}$/)
      expect(deviceIdFromCertPem(await readFile(join(home, 'syncthing', 'cert.pem')))).to.equal(id)
    })

    it('sets up the managed home with Syncthing 2.x, whose generate has no --no-default-folder', async () => {
      for (const release of ['syncthing-v2.0.2', 'syncthing-v2.1.3', 'syncthing-v1.27.12']) {
        const home = await tempDir()
        const tools = resolveTools({syncthing: fake(release, 'syncthing')})
        const id = await syncthingDeviceId({vidsyncHome: home, tools})
        const {stdout} = await execa('syncthing', [`--home=${join(home, 'syncthing')}`, '--device-id'])
        expect(id, release).to.equal(stdout.trim())
        const xml = await readFile(join(home, 'syncthing', 'config.xml'), 'utf8')
        expect(xml, release).not.to.match(/<folder id="default"/)
      }
    })

    it("recognises Syncthing 2's migration page (200, text/plain, every path) and reports its progress", async () => {
      const page = '*** Database migration in progress ***\n\n2026-11-27 02:00:00 INF Migrating old-style database to SQLite; this may take a while... (log.pkg=syncthing)\n2026-11-27 02:00:10 INF Still migrating folder (folder=abcd files=1000 blocks=4000 duration=10s log.pkg=syncthing)\n'
      server = createServer((_request, response) => {
        response.writeHead(200, {'Content-Type': 'text/plain; charset=utf-8'})
        response.end(page)
      })
      await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve))
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      const client = new SyncthingClient({url: `http://127.0.0.1:${port}`, apiKey: 'k'})
      const error = await expectRejects(client.status(), SyncthingMigratingError)
      expect(error).to.be.instanceOf(UnavailableError)
      expect(error.exitCode).to.equal(6)
      expect(error.progress).to.equal('2026-11-27 02:00:10 INF Still migrating folder (folder=abcd files=1000 blocks=4000 duration=10s log.pkg=syncthing)')
      expect(error.message).to.match(/is migrating its database to 2\.x: wait until it finishes/)
    })
  })
})
