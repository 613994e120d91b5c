import {execFileSync} from 'node:child_process'
import {mkdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'
import {execa} from 'execa'

import {MissingDependencyError, PermissionError} from '../src/lib/errors.js'
import {isAlive, resolveTools} from '../src/lib/exec.js'
import {type Lighthouse, renderNebulaConfig} from '../src/lib/nebula/config.js'
import {failureReason, handshakePeers} from '../src/lib/nebula/log.js'
import {preflight, privilegesProblem} from '../src/lib/nebula/process.js'
import {hasNetAdmin} from '../src/lib/platform/linux.js'
import {caPaths, initCa} from '../src/lib/pki/ca.js'
import {signDevice} from '../src/lib/pki/sign.js'
import {root} from './helpers/cli.js'
import {createLab, type Lab, removeLab, runIn, spawnIn} from './helpers/netns.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

const cidr = '10.99.7.0/24'
const lighthouse = {name: 'a', ip: '10.99.7.1', endpoint: '192.0.2.1:4242'}
const lighthouses: Lighthouse[] = [{overlayIp: lighthouse.ip, endpoints: [lighthouse.endpoint]}]

describe('nebula process (real nebula between network namespaces)', function () {
  this.timeout(120_000)
  let lab: Lab | undefined
  let caHome: string
  const homes: Record<string, string> = {}

  interface Joined {
    home: string
    dir: string
  }

  /** The layout `vidsync join` installs: <home>/projects/<project>/ with absolute pki paths and tun.dev. */
  async function joinedProject(options: {
    home: string
    project: string
    ip: string
    amLighthouse?: boolean
    lighthouses?: Lighthouse[]
    listenHost?: string
  }): Promise<Joined> {
    const dir = join(options.home, 'projects', options.project)
    await mkdir(dir, {recursive: true, mode: 0o700})
    const device = `${options.project}-${options.ip.replaceAll('.', '-')}`
    const signed = await signDevice({home: caHome, name: device, ip: options.ip, prefixLength: 24, generateKey: true})
    await writeFile(join(dir, 'ca.crt'), await readFile(caPaths(caHome).certPath))
    await writeFile(join(dir, 'node.crt'), signed.certPem)
    await writeFile(join(dir, 'node.key'), signed.privateKeyPem ?? '', {mode: 0o600})
    const config = renderNebulaConfig({
      caPath: join(dir, 'ca.crt'),
      certPath: join(dir, 'node.crt'),
      keyPath: join(dir, 'node.key'),
      lighthouses: options.amLighthouse ? [] : (options.lighthouses ?? lighthouses),
      amLighthouse: options.amLighthouse,
      listenPort: options.amLighthouse ? 4242 : 0,
      cidr,
      tunDev: `vs-${options.project}`.slice(0, 15),
    })
    // renderNebulaConfig always listens on 0.0.0.0; the crash test needs an address the namespace lacks.
    await writeFile(join(dir, 'nebula.yml'), config.replace('host: 0.0.0.0', `host: ${options.listenHost ?? '0.0.0.0'}`))
    const manifest = {
      version: 1, project: options.project, cidr, device, ip: options.ip, groups: [], lighthouse: options.amLighthouse ?? false,
      fingerprint: signed.fingerprint, notAfter: signed.notAfter, operatorGeneratedKey: true, lighthouses: [{...lighthouse, relay: false}], peers: [], blocklist: [],
      issuedAt: new Date().toISOString(),
    }
    await writeFile(join(dir, 'vidsync.json'), JSON.stringify(manifest))
    return {home: options.home, dir}
  }

  /** The built CLI inside a node's namespace, with --json. */
  async function vidsync(node: string, home: string, args: string[]) {
    const ns = lab?.nodes[node]?.ns ?? ''
    const started = Date.now()
    const result = await runIn(ns, process.execPath, [`${root}bin/run.js`, ...args, '--home', home, '--json'], {env: {VIDSYNC_DATABASE_URL: ''}})
    const json = result.stdout ? JSON.parse(result.stdout) : undefined
    return {exitCode: result.exitCode, json, stderr: result.stderr, ms: Date.now() - started}
  }

  const addressesOf = (node: string, dev: string) => {
    const result = execFileSync('ip', ['-n', lab?.nodes[node]?.ns ?? '', '-j', 'addr', 'show'], {encoding: 'utf8'})
    const links = JSON.parse(result) as {ifname: string; addr_info: {local: string}[]}[]
    return links.find((link) => link.ifname === dev)?.addr_info.map((info) => info.local)
  }

  before(async () => {
    caHome = await tempDir('vidsync-nebula-process-')
    await initCa({home: caHome, name: 'lab', durationSeconds: 86_400})
    for (const node of ['a', 'b', 'c']) homes[node] = await tempDir('vidsync-nebula-process-')
    await joinedProject({home: homes.a ?? '', project: 'lab', ip: '10.99.7.1', amLighthouse: true})
    await joinedProject({home: homes.b ?? '', project: 'lab', ip: '10.99.7.2'})
    await joinedProject({home: homes.c ?? '', project: 'lab', ip: '10.99.7.3'})
    lab = await createLab(['a', 'b', 'c'])
  })

  after(async () => {
    // Every process a test started runs inside the lab: removeLab ends them by PID, then deletes the namespaces by name.
    await removeLab(lab)
    await removeTempDirs()
  })

  it('reads CAP_NET_ADMIN from CapEff', () => {
    expect(hasNetAdmin('Name:\tx\nCapEff:\t000001fffeffffff\n')).to.equal(true)
    expect(hasNetAdmin('CapEff:\t0000000000001000\n')).to.equal(true)
    expect(hasNetAdmin('CapEff:\t000001fffeffefff\n')).to.equal(false) // everything but bit 12
    expect(hasNetAdmin('CapEff:\t0000000000000000\n')).to.equal(false)
    expect(hasNetAdmin('Name:\tx\n')).to.equal(false)
    expect(new PermissionError(privilegesProblem).message).to.equal(
      'nebula needs root or CAP_NET_ADMIN: run vidsync with sudo, or install the overlay as a service with `vidsync nebula up --service`',
    )
  })

  it("reads nebula 1.6.1's log lines", () => {
    const log = [
      'time="2026-11-23T14:00:43Z" level=info msg="Nebula interface is active" build=1.6.1 interface=vs-b network=10.99.7.2/24 udpAddr="0.0.0.0:47647"',
      'time="2026-11-23T14:00:43Z" level=info msg="Handshake message received" certName=a handshake="map[stage:2 style:ix_psk0]" udpAddr="192.0.2.1:4242" vpnIp=10.99.7.1',
      'time="2026-11-23T14:00:51Z" level=error msg="Failed to open udp listener" error="unable to bind to socket: cannot assign requested address" queue=0',
      'time="2026-11-23T14:00:52Z" level=info msg="Goodbye"',
    ].join('\n')
    expect([...handshakePeers(log)]).to.deep.equal(['10.99.7.1'])
    expect(failureReason(log)).to.equal('Failed to open udp listener: unable to bind to socket: cannot assign requested address (queue=0)')
    expect(failureReason('failed to load config: no config files found at x.yml\n')).to.equal('failed to load config: no config files found at x.yml')
  })

  it('preflight checks the binary, privileges, /dev/net/tun and the config', async () => {
    const dir = join(homes.b ?? '', 'projects', 'lab')
    const checks = await preflight({projectDir: dir})
    expect(checks.map(({name, ok}) => ({name, ok}))).to.deep.equal([
      {name: 'nebula', ok: true},
      {name: 'privileges', ok: true},
      {name: 'tun', ok: true},
      {name: 'config', ok: true},
    ])
    const missing = await preflight({projectDir: dir, tools: resolveTools({nebula: '/nonexistent/nebula'})})
    expect(missing.map((check) => check.name)).to.deep.equal(['nebula', 'privileges', 'tun'])
    expect(missing[0]?.problem).to.be.instanceOf(MissingDependencyError)
    expect(missing[0]?.problem?.message).to.contain('apt-get install nebula')
  })

  it('up --detach returns once the tun has the overlay IP and the lighthouse answered', async () => {
    const lighthouseUp = await vidsync('a', homes.a ?? '', ['nebula', 'up', '--detach'])
    expect(lighthouseUp.exitCode, lighthouseUp.stderr).to.equal(0)
    expect(lighthouseUp.json).to.include({project: 'lab', running: true, tunUp: true, tunDev: 'vs-lab', overlayIp: '10.99.7.1', lighthouseReachable: null})

    for (const [node, ip] of [
      ['b', '10.99.7.2'],
      ['c', '10.99.7.3'],
    ] as const) {
      const up = await vidsync(node, homes[node] ?? '', ['nebula', 'up', 'lab', '--detach'])
      expect(up.exitCode, up.stderr).to.equal(0)
      expect(up.json).to.include({running: true, tunUp: true, overlayIp: ip, lighthouseReachable: true, detached: true})
      // Measured around the wait: more than nothing, and within the wait's deadline (--timeout, 20s by default).
      expect(up.json.startupMs).to.be.within(1, 20_000)
      expect(addressesOf(node, 'vs-lab')).to.include(ip)
      const log = await readFile(join(homes[node] ?? '', 'projects', 'lab', 'nebula.log'), 'utf8')
      expect(log).to.match(/msg="Handshake message received" .*vpnIp=10\.99\.7\.1/)
      const pidFile = await readFile(join(homes[node] ?? '', 'projects', 'lab', 'nebula.pid'), 'utf8')
      expect(pidFile.split('\n')[0]).to.equal(String(up.json.pid)) // then its start time
    }
  })

  it('b reaches c over the overlay', async () => {
    const server = spawnIn(lab?.nodes.c?.ns ?? '', process.execPath, [
      '-e',
      "const server = require('net').createServer((s) => { s.end('pong from c'); server.close() }).listen(22000, '10.99.7.3', () => console.log('listening'))",
    ])
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('server did not start')), 10_000)
      server.stdout?.once('data', () => {
        clearTimeout(timer)
        resolve()
      })
    })
    const client = await runIn(lab?.nodes.b?.ns ?? '', process.execPath, [
      '-e',
      "const s = require('net').connect(22000, '10.99.7.3'); let d = ''; s.on('data', (c) => (d += c)); s.on('end', () => console.log(d)); s.setTimeout(10000, () => process.exit(3))",
    ])
    expect(client.stdout).to.equal('pong from c')
    expect((await server).exitCode).to.equal(0)
  })

  it('status --json shows it running; a second up is refused', async () => {
    const status = await vidsync('b', homes.b ?? '', ['nebula', 'status'])
    expect(status.exitCode, status.stderr).to.equal(0)
    expect(status.json).to.include({project: 'lab', running: true, tunUp: true, lighthouseReachable: true, overlayIp: '10.99.7.2'})
    expect(status.json.pid).to.be.a('number')

    const again = await vidsync('b', homes.b ?? '', ['nebula', 'up', '--detach'])
    expect(again.exitCode).to.equal(4)
    expect(again.json.error.message).to.equal(`nebula is already running for lab (pid ${status.json.pid}): stop it first with \`vidsync nebula down lab\``)

    // Another home's nebula (say, a system service) already holds the tun device.
    const other = await joinedProject({home: await tempDir('vidsync-nebula-process-'), project: 'lab', ip: '10.99.7.23'})
    const clash = await vidsync('b', other.home, ['nebula', 'up', '--detach'])
    expect(clash.exitCode).to.equal(4)
    expect(clash.json.error.message).to.equal('vs-lab already exists: another nebula runs lab (a system service?); stop it first')
  })

  it('down stops it by PID, the tun disappears, and a second down has nothing to do', async () => {
    const status = await vidsync('c', homes.c ?? '', ['nebula', 'status'])
    const down = await vidsync('c', homes.c ?? '', ['nebula', 'down'])
    expect(down.exitCode, down.stderr).to.equal(0)
    expect(down.json).to.deep.equal({project: 'lab', stopped: true, pid: status.json.pid})
    expect(isAlive(status.json.pid)).to.equal(false)
    expect(addressesOf('c', 'vs-lab')).to.equal(undefined)
    const after = await vidsync('c', homes.c ?? '', ['nebula', 'status'])
    expect(after.json).to.include({running: false, pid: null, tunUp: false, lighthouseReachable: false})
    const again = await vidsync('c', homes.c ?? '', ['nebula', 'down'])
    expect(again.json).to.deep.equal({project: 'lab', stopped: false, pid: null})
  })

  it('treats a pid file of a dead process or another program as stale', async () => {
    const pidPath = join(homes.c ?? '', 'projects', 'lab', 'nebula.pid')
    await writeFile(pidPath, `${process.pid}\n`) // alive, but not nebula
    expect((await vidsync('c', homes.c ?? '', ['nebula', 'status'])).json).to.include({running: false})
    const up = await vidsync('c', homes.c ?? '', ['nebula', 'up', '--detach'])
    expect(up.exitCode, up.stderr).to.equal(0)
    expect((await readFile(pidPath, 'utf8')).split('\n')[0]).to.equal(String(up.json.pid))
    expect((await vidsync('c', homes.c ?? '', ['nebula', 'down'])).json).to.include({stopped: true})

    const exited = execa('true')
    await exited
    await writeFile(pidPath, `${exited.pid}\n`)
    expect((await vidsync('c', homes.c ?? '', ['nebula', 'down'])).json).to.deep.equal({project: 'lab', stopped: false, pid: null})
    expect(await stat(pidPath).catch(() => undefined)).to.equal(undefined)
  })

  it('without --detach stays in the foreground until SIGTERM, then stops nebula', async () => {
    const {home, dir} = await joinedProject({home: await tempDir('vidsync-nebula-process-'), project: 'fg', ip: '10.99.7.24'})
    const foreground = spawnIn(lab?.nodes.c?.ns ?? '', process.execPath, [`${root}bin/run.js`, 'nebula', 'up', '--home', home])
    let ended = false
    void foreground.then(() => (ended = true))
    let status
    for (let tries = 0; tries < 100 && !ended && !status?.lighthouseReachable; tries++) {
      await sleep(200)
      status = (await vidsync('c', home, ['nebula', 'status'])).json
    }
    expect(status, ended ? (await foreground).stderr : 'still starting').to.include({running: true, tunUp: true, lighthouseReachable: true})
    process.kill(foreground.pid ?? 0, 'SIGTERM')
    const result = await foreground
    expect(result.exitCode, result.stderr).to.equal(0)
    expect(result.stdout).to.contain('nebula is up for fg: 10.99.7.24 on vs-fg, a lighthouse answered')
    expect(result.stdout).to.contain('nebula stopped.')
    expect(isAlive(status.pid)).to.equal(false)
    expect(addressesOf('c', 'vs-fg')).to.equal(undefined)
    expect(await stat(join(dir, 'nebula.pid')).catch(() => undefined)).to.equal(undefined)
  })

  it('a config nebula rejects fails before starting, with nebula’s reason', async () => {
    const home = await tempDir('vidsync-nebula-process-')
    await joinedProject({home, project: 'outside', ip: '10.99.7.20', lighthouses: [{overlayIp: '10.98.0.1', endpoints: [lighthouse.endpoint]}]})
    const up = await vidsync('b', home, ['nebula', 'up', '--detach', '--timeout', '40s'])
    expect(up.exitCode).to.equal(2)
    expect(up.json.error.message).to.equal(
      `nebula rejects ${home}/projects/outside/nebula.yml: static_host_map key is not in our subnet, invalid (entry=1 network=10.99.7.20/24 vpnIp=10.98.0.1)`,
    )
    // At once, not after waiting out the 40s it was given for nebula to come up.
    expect(up.ms).to.be.below(40_000)
    expect(await stat(join(home, 'projects', 'outside', 'nebula.pid')).catch(() => undefined)).to.equal(undefined)
  })

  it('nebula crashing at start reports its reason, not a timeout', async () => {
    const home = await tempDir('vidsync-nebula-process-')
    // nebula -test does not bind, so only the real start finds that the address is not here.
    await joinedProject({home, project: 'crash', ip: '10.99.7.21', listenHost: '192.0.2.99'})
    const up = await vidsync('b', home, ['nebula', 'up', '--detach', '--timeout', '40s'])
    expect(up.exitCode).to.equal(1)
    expect(up.json.error.message).to.equal(
      'nebula exited while starting: Failed to open udp listener: unable to bind to socket: cannot assign requested address (queue=0)',
    )
    // At once, not after waiting out the 40s it was given for nebula to come up.
    expect(up.ms).to.be.below(40_000)
    expect(await stat(join(home, 'projects', 'crash', 'nebula.pid')).catch(() => undefined)).to.equal(undefined)
  })

  it('a lighthouse that never answers ends the wait with a clear message, and nebula is stopped', async () => {
    const home = await tempDir('vidsync-nebula-process-')
    // 192.0.2.9 is in the lab's subnet but nobody has it.
    await joinedProject({home, project: 'lonely', ip: '10.99.7.22', lighthouses: [{overlayIp: '10.99.7.1', endpoints: ['192.0.2.9:4242']}]})
    const up = await vidsync('b', home, ['nebula', 'up', '--detach', '--timeout', '2s'])
    expect(up.exitCode).to.equal(6)
    expect(up.json.error.message).to.match(/^no lighthouse \(10\.99\.7\.1\) answered within 2s: check that it runs and that UDP reaches/)
    expect(addressesOf('b', 'vs-lonely')).to.equal(undefined)
    expect(await stat(join(home, 'projects', 'lonely', 'nebula.pid')).catch(() => undefined)).to.equal(undefined)
  })

  it('refuses to start without CAP_NET_ADMIN (capsh from libcap2-bin drops it)', async () => {
    const {home} = await joinedProject({home: await tempDir('vidsync-nebula-process-'), project: 'nocap', ip: '10.99.7.25'})
    const command = `exec ${process.execPath} ${root}bin/run.js nebula up --detach --home ${home} --json`
    const result = await runIn(lab?.nodes.c?.ns ?? '', 'capsh', ['--drop=cap_net_admin', '--', '-c', command])
    expect(result.exitCode).to.equal(9)
    expect(JSON.parse(result.stdout).error.message).to.equal(privilegesProblem)
  })

  it('needs PROJECT when several projects are joined, and a joined one', async () => {
    const home = await tempDir('vidsync-nebula-process-')
    const none = await vidsync('b', home, ['nebula', 'status'])
    expect(none.exitCode).to.equal(3)
    expect(none.json.error.message).to.equal(`no project is joined in ${home}: run \`vidsync join <bundle>\` first`)
    await mkdir(join(home, 'projects', 'studio'), {recursive: true})
    await mkdir(join(home, 'projects', 'archive'), {recursive: true})
    const several = await vidsync('b', home, ['nebula', 'down'])
    expect(several.exitCode).to.equal(2)
    expect(several.json.error.message).to.equal('several projects are joined (archive, studio): name the one you mean')
    const unknown = await vidsync('b', home, ['nebula', 'down', 'nope'])
    expect(unknown.exitCode).to.equal(3)
  })

  it('down on the lighthouse and b leaves no nebula behind', async () => {
    for (const node of ['a', 'b']) {
      const down = await vidsync(node, homes[node] ?? '', ['nebula', 'down'])
      expect(down.json).to.include({stopped: true})
      expect(addressesOf(node, 'vs-lab')).to.equal(undefined)
    }
  })
})
