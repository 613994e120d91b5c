import {execFileSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {existsSync, readdirSync, readFileSync} from 'node:fs'
import {readFile, rm, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'
import {execa} from 'execa'

import {isAlive} from '../src/lib/exec.js'
import {labDemo} from '../src/lib/lab/demo.js'
import {labPrefix, type LabState, vidsyncCli} from '../src/lib/lab/lab.js'
import {listNetns, removeNetns} from '../src/lib/lab/netns.js'
import {cli, root} from './helpers/cli.js'
import {runIn, spawnIn} from './helpers/netns.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

/** The host namespace's links and addresses, to check that a lab leaves them alone. */
const hostNetwork = () => execFileSync('ip', ['-br', 'addr', 'show'], {encoding: 'utf8'})

/** sha256 of every file under `dir` by relative path, leaving out Syncthing's temporary files. */
function treeDigests(dir: string): Map<string, string> {
  const entries = readdirSync(dir, {recursive: true, withFileTypes: true}).filter((entry) => entry.isFile() && !entry.name.startsWith('.syncthing.'))
  return new Map(
    entries.map((entry) => {
      const path = join(entry.parentPath ?? entry.path, entry.name)
      return [path.slice(dir.length + 1), createHash('sha256').update(readFileSync(path)).digest('hex')]
    }),
  )
}

/** Whether this kernel has the netem qdisc: tried on the loopback of a throw-away namespace. */
function kernelHasNetem(): boolean {
  const ns = `vst-netem-${process.pid}`
  try {
    execFileSync('ip', ['netns', 'add', ns])
    execFileSync('tc', ['-n', ns, 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms'], {stdio: 'ignore'})
    return true
  } catch {
    return false
  } finally {
    if (existsSync(`/run/netns/${ns}`)) execFileSync('ip', ['netns', 'delete', ns])
  }
}

describe('lab (real nebula in network namespaces, as root)', function () {
  this.timeout(120_000)
  const labHomes: string[] = []

  /** A fresh vidsync home; its lab lives in <home>/lab. */
  async function newHome(): Promise<string> {
    const home = await tempDir('vidsync-lab-')
    labHomes.push(join(home, 'lab'))
    return home
  }

  const lab = (home: string, args: string[]) => cli(['lab', ...args, '--home', home, '--json'], {}, {timeoutMs: 110_000})
  const readState = async (home: string) => JSON.parse(await readFile(join(home, 'lab', 'lab.json'), 'utf8')) as LabState
  const pidsOf = (state: LabState) => [state.lighthouse, ...state.devices].flatMap((node) => (node.nebulaPid === null ? [] : [node.nebulaPid]))

  /** Asserts that nothing of the lab in `home` is left: namespaces, processes, state file. */
  async function expectGone(home: string, pids: number[]) {
    expect(await listNetns(labPrefix(join(home, 'lab')))).to.deep.equal([])
    expect(pids.filter((pid) => isAlive(pid))).to.deep.equal([])
    expect(existsSync(join(home, 'lab', 'lab.json'))).to.equal(false)
  }

  /** Resolves once a server started with spawnIn prints its first line (bounded). */
  function listening(server: ReturnType<typeof spawnIn>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('server did not start')), 10_000)
      server.stdout?.once('data', () => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  before(() => {
    if (!existsSync(join(root, 'dist', 'commands', 'lab', 'up.js'))) throw new Error('run `npm run build` first: this test runs the built CLI')
  })

  after(async () => {
    // By name and PID, whatever the tests left: every namespace with a lab's prefix.
    for (const home of labHomes) await removeNetns(await listNetns(labPrefix(home)))
    await removeTempDirs()
  })

  describe('with two devices', () => {
    let home: string
    let state: LabState
    let hostLinks: string

    before(async () => {
      home = await newHome()
      hostLinks = hostNetwork()
      const up = await lab(home, ['up', '--devices', '2'])
      expect(up.exitCode, up.stdout + up.stderr).to.equal(0)
      state = up.json
    })

    it('reports the nodes and the time of each step; the namespaces exist, the host network is untouched', async () => {
      expect(state).to.deep.include({status: 'up', project: 'lab', cidr: '10.213.0.0/24', shaping: null})
      expect(state.lighthouse).to.include({name: 'lh', underlayIp: '192.0.2.1', overlayIp: '10.213.0.1'})
      expect(state.devices.map((device) => ({name: device.name, underlayIp: device.underlayIp, home: device.home}))).to.deep.equal([
        {name: 'd1', underlayIp: '192.0.2.2', home: join(home, 'lab', 'd1')},
        {name: 'd2', underlayIp: '192.0.2.3', home: join(home, 'lab', 'd2')},
      ])
      expect(state.timings.map((timing) => timing.step)).to.include.members(['namespaces', 'ca init', 'lighthouse add', 'd2 device register', 'd2 nebula up', 'd2 up', 'd2 sync add'])
      expect(await readState(home)).to.deep.equal(state)
      const prefix = labPrefix(join(home, 'lab'))
      expect((await listNetns(prefix)).sort()).to.deep.equal(['br', 'd1', 'd2', 'lh'].map((name) => prefix + name))
      expect(hostNetwork()).to.equal(hostLinks)
    })

    it("each device's tun has its overlay IP, and its nebula shook hands with the lighthouse", async () => {
      for (const device of state.devices) {
        const addresses = JSON.parse(execFileSync('ip', ['-n', device.ns, '-j', 'addr', 'show', 'dev', 'vs-lab'], {encoding: 'utf8'}))
        const inet = addresses[0].addr_info.filter((info: {family: string}) => info.family === 'inet')
        expect(inet.map((info: {local: string}) => info.local)).to.deep.equal([device.overlayIp])
        const log = await readFile(join(device.home, 'projects', 'lab', 'nebula.log'), 'utf8')
        expect(log).to.match(/msg="Handshake message received" .*vpnIp=10\.213\.0\.1\b/)
      }
    })

    it('d1 and d2 reach each other over the overlay: Syncthing connects at overlay addresses and syncs the lab folder', async () => {
      const [d1, d2] = state.devices
      await writeFile(join(d1?.folder ?? '', 'hello.txt'), 'from d1')
      let received: string | undefined
      for (let tries = 0; tries < 120 && received !== 'from d1'; tries++) {
        await sleep(500)
        received = await readFile(join(d2?.folder ?? '', 'hello.txt'), 'utf8').catch(() => undefined)
      }
      expect(received).to.equal('from d1')
      const status = await runIn(d2?.ns ?? '', process.execPath, [`${root}bin/run.js`, 'status', 'lab', '--home', d2?.home ?? '', '--json'])
      const peers = JSON.parse(status.stdout).syncthing.peers as {connected: boolean; address: string}[]
      expect(peers.filter((peer) => peer.connected).map((peer) => peer.address.split(':')[0])).to.deep.equal([d1?.overlayIp])
    })

    it('a second lab up in the same home is refused', async () => {
      const again = await lab(home, ['up', '--devices', '1'])
      expect(again.exitCode).to.equal(4)
      expect(again.json.error.message).to.equal(`a lab is already up in ${join(home, 'lab')}: remove it first with \`vidsync lab down\``)
      expect(await readState(home)).to.deep.equal(state)
    })

    it('lab down removes every namespace and process; a second lab down has nothing to do', async () => {
      const down = await lab(home, ['down'])
      expect(down.exitCode, down.stderr).to.equal(0)
      expect(down.json).to.deep.include({found: true, stopped: ['lh', 'd1', 'd2'], killed: []})
      expect(down.json.namespaces).to.have.members(state.namespaces)
      await expectGone(home, pidsOf(state))
      const again = await lab(home, ['down'])
      expect(again.json).to.deep.equal({home: join(home, 'lab'), found: false, stopped: [], killed: [], namespaces: []})
    })
  })

  it('lab demo: sample data from d1 arrives identical (sha256 of every file) on every device, no faster than --rate allows, then the lab is gone', async function () {
    this.timeout(300_000)
    const home = await newHome()
    const labHome = join(home, 'lab')
    const rateMbit = 40
    // Hashed by the test itself while the lab is still up: the demo's progress callback runs before
    // it takes the lab down, and a synchronous read keeps the demo from moving on meanwhile.
    let digests: Map<string, Map<string, string>> | undefined
    const demo = await labDemo({
      home: labHome,
      devices: 3,
      cli: vidsyncCli(root),
      rate: `${rateMbit}mbit`,
      bigFileMiB: 8,
      smallFiles: 20,
      timeoutMs: 240_000,
      onProgress(progress) {
        if (digests || !progress.every(({bytes, totalBytes}) => bytes === totalBytes)) return
        const state = JSON.parse(readFileSync(join(labHome, 'lab.json'), 'utf8')) as LabState
        digests = new Map(state.devices.map((device) => [device.name, treeDigests(join(device.folder ?? '', 'demo'))]))
      },
    })
    expect(demo).to.include({files: 21, bytes: 8 * 1024 * 1024 + 20 * 16 * 1024})
    const source = digests?.get('d1')
    expect(source?.size).to.equal(21)
    for (const device of ['d2', 'd3']) expect(Object.fromEntries(digests?.get(device) ?? []), device).to.deep.equal(Object.fromEntries(source ?? []))
    expect(demo.devices.map((d) => d.device)).to.deep.equal(['d2', 'd3'])
    for (const device of demo.devices) {
      // d1's link carries at most --rate; the demo samples every 250 ms, so its window may be that much short at each end.
      const fastestSeconds = (demo.bytes * 8) / (rateMbit * 1e6)
      expect(device.transferSeconds, device.device).to.be.at.least(fastestSeconds - 0.5)
      expect(device.mibPerSecond).to.be.closeTo(demo.bytes / 1024 / 1024 / device.transferSeconds, 1e-9)
      expect(device.totalSeconds).to.be.at.least(device.transferSeconds)
    }
    await expectGone(home, pidsOf(demo.lab))
  })

  it('says clearly that it needs root', async () => {
    const nobody = ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, `${root}bin/run.js`, 'lab', 'up', '--home', '/nonexistent', '--json']
    const result = await execa('setpriv', nobody, {reject: false, env: {VIDSYNC_DATABASE_URL: ''}, timeout: 30_000})
    expect(result.exitCode).to.equal(9)
    expect(JSON.parse(result.stdout).error.message).to.equal('the lab manages network namespaces, which needs root: run it with sudo')
  })

  it('lab down completes after lab up was killed halfway, and without the state file', async () => {
    const home = await newHome()
    const up = execa('node', [`${root}bin/run.js`, 'lab', 'up', '--devices', '2', '--home', home, '--json'], {reject: false, env: {VIDSYNC_DATABASE_URL: ''}})
    let state: LabState | undefined
    let ended = false
    void up.then(() => (ended = true))
    for (let tries = 0; tries < 600 && !ended && !state?.devices[0]?.nebulaPid; tries++) {
      await sleep(100)
      state = await readState(home).catch(() => undefined)
    }
    up.kill('SIGKILL')
    await up
    const d1Nebula = state?.devices[0]?.nebulaPid ?? 0
    expect(d1Nebula, `d1 never came up: ${(await up).stdout}`).to.be.above(0)
    process.kill(d1Nebula, 'SIGKILL')
    const down = await lab(home, ['down'])
    expect(down.exitCode, down.stderr).to.equal(0)
    expect(down.json).to.deep.include({found: true})
    // d1's `vidsync up`, started just before the kill, may have brought a new nebula up: either way all is gone below.
    expect(down.json.stopped).to.include('lh')
    await expectGone(home, pidsOf(state as LabState))
    expect((await lab(home, ['down'])).json).to.include({found: false})

    // The same home again, then its state file lost: the namespaces are found by their prefix.
    const second = await lab(home, ['up', '--devices', '1'])
    expect(second.exitCode, second.stdout).to.equal(0)
    await rm(join(home, 'lab', 'lab.json'))
    const blind = await lab(home, ['down'])
    expect(blind.json).to.deep.include({found: true, stopped: []})
    expect(blind.json.killed).to.include.members(pidsOf(second.json))
    await expectGone(home, pidsOf(second.json))
    expect((await lab(home, ['down'])).json).to.include({found: false})
  })

  // Whether this kernel has sch_netem decides what --delay must do: shape, or refuse clearly. The
  // title says which was checked, and each case fails if the other behaviour shows up.
  const netem = kernelHasNetem()
  it(
    netem
      ? 'shapes the underlay with --delay: the fastest round trip takes twice the delay'
      : 'refuses --delay clearly on this kernel, which has no sch_netem (the delay itself is untested here)',
    async () => {
      const home = await newHome()
      const up = await lab(home, ['up', '--devices', '1', '--rate', '1gbit', '--delay', '10ms'])
      if (!netem) {
        expect(up.exitCode, up.stdout).to.equal(8)
        expect(up.json.error.message).to.match(/this kernel has no netem qdisc \(sch_netem\), which --delay needs: .* or shape with --rate alone$/)
        await expectGone(home, [])
        return
      }
      expect(up.exitCode, up.stdout).to.equal(0)
      const state = up.json as LabState
      const server = spawnIn(state.lighthouse.ns, process.execPath, [
        '-e',
        `const server = require('net').createServer((s) => { s.setNoDelay(true); s.pipe(s); s.on('close', () => server.close()) }).listen(5201, '192.0.2.1', () => console.log('listening'))`,
      ])
      await listening(server)
      // 20 one-byte round trips on an open connection; the fastest is the one load did not slow down.
      const pingPong = `const s = require('net').connect(5201, '192.0.2.1', () => {
        s.setNoDelay(true); const rtts = []; let sent = process.hrtime.bigint(); s.write('x')
        s.on('data', () => {
          rtts.push(Number(process.hrtime.bigint() - sent) / 1e6)
          if (rtts.length === 20) { console.log(Math.min(...rtts)); s.end() } else { sent = process.hrtime.bigint(); s.write('x') }
        })
      }); s.setTimeout(10000, () => process.exit(3))`
      const client = await runIn(state.devices[0]?.ns ?? '', process.execPath, ['-e', pingPong], {timeoutMs: 15_000})
      expect(client.exitCode, client.stderr).to.equal(0)
      // netem holds each packet at least 10 ms each way; a delay applied twice per direction would make 40.
      expect(Number(client.stdout)).to.be.within(19.5, 35)
      await server
      expect((await lab(home, ['down'])).exitCode).to.equal(0)
    },
  )

  it('shapes a link to --rate alone with a token bucket, which every kernel here has', async () => {
    const home = await newHome()
    const up = await lab(home, ['up', '--devices', '1', '--rate', '40mbit'])
    expect(up.exitCode, up.stdout).to.equal(0)
    const state = up.json as LabState
    expect(state.shaping).to.deep.equal({rate: '40mbit'})
    const device = state.devices[0]?.ns ?? ''
    const qdisc = await execa('tc', ['-n', device, 'qdisc', 'show', 'dev', 'eth0'])
    expect(qdisc.stdout).to.match(/qdisc tbf .* rate 40Mbit/)
    // The device sends as fast as it can for 2 s; the lighthouse counts what arrives.
    const server = spawnIn(state.lighthouse.ns, process.execPath, [
      '-e',
      `let bytes = 0; let first
      const server = require('net').createServer((s) => s.on('data', (d) => { first ??= Date.now(); bytes += d.length }).on('end', () => {
        console.log(JSON.stringify({mbps: (bytes * 8) / (Date.now() - first) / 1000})); server.close()
      })).listen(5201, '192.0.2.1', () => console.log('listening'))`,
    ])
    await listening(server)
    const send = `const s = require('net').connect(5201, '192.0.2.1', () => {
      const chunk = Buffer.alloc(65536); const end = Date.now() + 2000
      const pump = () => { while (Date.now() < end) { if (!s.write(chunk)) return s.once('drain', pump) } s.end() }
      pump()
    }); s.setTimeout(10000, () => process.exit(3))`
    const client = await runIn(device, process.execPath, ['-e', send], {timeoutMs: 15_000})
    expect(client.exitCode, client.stderr).to.equal(0)
    const {stdout} = await server
    const {mbps} = JSON.parse(stdout.split('\n').at(-1) ?? '{}') as {mbps: number}
    // Unshaped, this veth carries several Gbit/s; the token bucket caps it at 40 Mbit/s (plus its
    // burst). Load on this machine can only lower the rate, so only the cap is a bound.
    expect(mbps).to.be.above(0).and.at.most(44)
    expect((await lab(home, ['down'])).exitCode).to.equal(0)
    await expectGone(home, pidsOf(state))
  })
})
