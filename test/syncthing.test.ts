import {createHash, randomBytes} from 'node:crypto'
import {mkdir, readdir, readFile, stat, writeFile} from 'node:fs/promises'
import {createServer, type Server} from 'node:net'
import {join} from 'node:path'

import {runCommand} from '@oclif/test'
import {expect} from 'chai'
import {execa} from 'execa'

import {ConflictError, InvalidInputError, NotFoundError, PermissionError, ToolFailedError, UnavailableError} from '../src/lib/errors.js'
import {resolveTools} from '../src/lib/exec.js'
import {SyncthingClient} from '../src/lib/syncthing/client.js'
import {acceptPendingDevices, addFolder, defaultFolderId, defaultWatcherDelayS, isCaseSensitive, listFolders, projectDeviceIds, removeFolder, syncStatus} from '../src/lib/syncthing/folders.js'
import {
  connectSyncthing,
  managedPaths,
  readConfigValues,
  startManagedSyncthing,
  stopManagedSyncthing,
} from '../src/lib/syncthing/managed.js'
import {freePort, prepareTestHome, startTestSyncthing, stopTestSyncthings, waitFor, type TestSyncthing} from './helpers/syncthing.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'
import {expectRejects} from './helpers/rejects.js'
import {reconcileLoop, type ReconcileResult} from '../src/lib/up/up.js'

// Valid device IDs of devices that never run here: Syncthing only dials them at 127.0.0.2/3.
const ghostX = 'P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ2'
const ghostY = 'GKF6NOQ-VKHFQUO-WCZDBGN-KESMGPJ-ALZOZXP-BMSQTTB-CZSX2RE-FR24VQC'
const loopback = '127.0.0.0/8'


const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex')

async function occupy(port: number): Promise<Server> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen({host: '127.0.0.1', port}, resolve))
  return server
}

describe('syncthing (real syncthing on 127.0.0.1)', function () {
  this.timeout(120_000)
  let a: TestSyncthing

  before(async () => {
    a = await startTestSyncthing()
  })

  after(async () => {
    await stopTestSyncthings()
    await removeTempDirs()
  })

  describe('managed instance', () => {
    it('writes a safe config before the first start, with the API key in a 0600 file', async () => {
      const {home, guiPort, listenPort} = await prepareTestHome()
      const paths = managedPaths(home)
      const xml = await readFile(paths.config, 'utf8')
      const option = (name: string) => readConfigValues(xml, 'options', name)
      expect(option('globalAnnounceEnabled')).to.deep.equal(['false'])
      expect(option('localAnnounceEnabled')).to.deep.equal(['false'])
      expect(option('relaysEnabled')).to.deep.equal(['false'])
      expect(option('natEnabled')).to.deep.equal(['false'])
      expect(option('urAccepted')).to.deep.equal(['-1'])
      expect(option('crashReportingEnabled')).to.deep.equal(['false'])
      expect(option('autoUpgradeIntervalH')).to.deep.equal(['0'])
      expect(option('startBrowser')).to.deep.equal(['false'])
      expect(option('listenAddress')).to.deep.equal([`tcp://127.0.0.1:${listenPort}`])
      expect(readConfigValues(xml, 'gui', 'address')).to.deep.equal([`127.0.0.1:${guiPort}`])
      expect(xml).not.to.match(/<folder id="[^"]/) // no default folder
      const apiKey = readConfigValues(xml, 'gui', 'apikey')[0] ?? ''
      expect(apiKey).to.have.length.greaterThan(20)
      expect((await readFile(paths.apiKey, 'utf8')).trim()).to.equal(apiKey)
      expect((await stat(paths.apiKey)).mode & 0o777).to.equal(0o600)
      expect((await stat(paths.config)).mode & 0o777).to.equal(0o600)
      expect(await stat(paths.pid).catch(() => undefined)).to.equal(undefined) // never started
    })

    it('runs with those options and keeps its API key across config rewrites', async () => {
      const options = await a.client.options()
      expect(options).to.include({
        globalAnnounceEnabled: false,
        localAnnounceEnabled: false,
        relaysEnabled: false,
        natEnabled: false,
        urAccepted: -1,
        crashReportingEnabled: false,
        autoUpgradeIntervalH: 0,
        startBrowser: false,
      })
      expect(options.listenAddresses).to.deep.equal([`tcp://127.0.0.1:${a.listenPort}`])
      expect(await a.client.folders()).to.deep.equal([])
      expect(a.deviceId).to.match(/^[A-Z0-9]{7}(-[A-Z0-9]{7}){7}$/)
      expect(a.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/)
    })

    it('adopts the instance already running for the home', async () => {
      const again = await startManagedSyncthing({vidsyncHome: a.home})
      expect(again).to.include({adopted: true, pid: a.pid, deviceId: a.deviceId, url: a.url})
    })

    it('refuses a taken GUI or listen port before starting, naming the port', async () => {
      const {home, guiPort, listenPort} = await prepareTestHome()
      const blocker = await occupy(guiPort)
      try {
        const error = await expectRejects(startManagedSyncthing({vidsyncHome: home}), ConflictError)
        expect(error.message).to.contain(`127.0.0.1:${guiPort} is already in use`)
      } finally {
        blocker.close()
      }
      const listenBlocker = await occupy(listenPort)
      try {
        const error = await expectRejects(startManagedSyncthing({vidsyncHome: home}), ConflictError)
        expect(error.message).to.contain(`127.0.0.1:${listenPort} is already in use`)
      } finally {
        listenBlocker.close()
      }
      expect(await stat(managedPaths(home).pid).catch(() => undefined)).to.equal(undefined)
    })

    it("reports Syncthing's own reason when it exits while starting, not a timeout", async () => {
      const {home} = await prepareTestHome()
      const fake = join(await tempDir(), 'syncthing')
      const fakeSyncthing = (line: string) =>
        // It answers the version query (vidsync asks it first) like 1.19.2, then fails to start.
        writeFile(
          fake,
          `#!/bin/sh\nif [ "$1" = --version ]; then echo 'syncthing v1.19.2 "Fermium Flea" (go1.19.8 linux-amd64) test@test'; exit 0; fi\n` +
            `echo "[ABCDE] 2026/01/01 12:00:00 INFO: starting"\necho "[ABCDE] 2026/01/01 12:00:01 ${line}"\nexit 1\n`,
          {mode: 0o755},
        )
      const tools = resolveTools({syncthing: fake})
      await fakeSyncthing('WARNING: Starting API/GUI: listen tcp 127.0.0.1:9: bind: address already in use')
      const taken = await expectRejects(startManagedSyncthing({vidsyncHome: home, tools}), ConflictError)
      expect(taken.message).to.contain('Starting API/GUI: listen tcp 127.0.0.1:9: bind: address already in use')
      await fakeSyncthing('FATAL: config.xml: unexpected EOF')
      const broken = await expectRejects(startManagedSyncthing({vidsyncHome: home, tools}), ToolFailedError)
      expect(broken.message).to.match(/^syncthing exited while starting: config.xml: unexpected EOF \(log: .*syncthing\.log\)$/)
      expect(await stat(managedPaths(home).pid).catch(() => undefined)).to.equal(undefined)
    })

    it('rejects malformed listen addresses', async () => {
      const home = await tempDir()
      await expectRejects(startManagedSyncthing({vidsyncHome: home, listenAddresses: ['0.0.0.0:22000']}), InvalidInputError)
    })

    it('treats a pid file naming another process as stale and never stops that process', async () => {
      const {home} = await prepareTestHome()
      await writeFile(managedPaths(home).pid, `${process.pid}\n`)
      expect(await stopManagedSyncthing({vidsyncHome: home})).to.deep.equal({stopped: false})
      expect(await stat(managedPaths(home).pid).catch(() => undefined)).to.equal(undefined)
    })

    it('starts, stops by PID, and starts again from the same home', async () => {
      const b = await startTestSyncthing()
      const stopped = await stopManagedSyncthing({vidsyncHome: b.home})
      expect(stopped).to.deep.equal({stopped: true, pid: b.pid})
      await expectRejects(b.client.ping(), UnavailableError)
      const again = await startTestSyncthing({home: b.home, listenPort: b.listenPort})
      expect(again).to.include({adopted: false, deviceId: b.deviceId, apiKey: b.apiKey})
      await stopManagedSyncthing({vidsyncHome: b.home})
    })
  })

  describe('REST client errors', () => {
    it('rejects a wrong API key with PermissionError and never prints a key', async () => {
      const wrongKey = 'wrong-key-1234567890'
      const client = new SyncthingClient({url: a.url, apiKey: wrongKey})
      const error = await expectRejects(client.status(), PermissionError)
      expect(error.message).to.contain(`Syncthing at ${a.url} rejected the API key`)
      expect(error.message).not.to.contain(wrongKey)
      expect(error.message).not.to.contain(a.apiKey)
      expect(JSON.stringify(client)).not.to.contain(wrongKey)
    })

    it('reports an unreachable Syncthing as UnavailableError with the fix', async () => {
      const url = `http://127.0.0.1:${await freePort()}`
      const client = new SyncthingClient({url, apiKey: a.apiKey, timeoutMs: 2000})
      const error = await expectRejects(client.ping(), UnavailableError)
      expect(error.message).to.equal(`cannot reach Syncthing at ${url} (connection refused): is it running? start it with \`vidsync sync up\``)
    })

    it("passes Syncthing's own reason for other failures, without the key", async () => {
      const error = await expectRejects(a.client.completion('no-such-folder'), Error)
      expect(error.message).to.contain('no such folder')
      expect(error.message).not.to.contain(a.apiKey)
    })

    it("connects to a user's own Syncthing with the key from its config.xml, and to the managed one by default", async () => {
      const own = await connectSyncthing({vidsyncHome: await tempDir(), url: a.url, configXmlPath: managedPaths(a.home).config})
      expect(own.managed).to.equal(false)
      expect((await own.client.status()).myID).to.equal(a.deviceId)
      const managed = await connectSyncthing({vidsyncHome: a.home})
      expect(managed.managed).to.equal(true)
      expect((await managed.client.status()).myID).to.equal(a.deviceId)
      await expectRejects(connectSyncthing({vidsyncHome: await tempDir()}), NotFoundError)
      await expectRejects(connectSyncthing({vidsyncHome: a.home, url: a.url, apiKey: ''}), InvalidInputError)
    })
  })

  describe('folders', () => {
    const peerX = {deviceId: ghostX, name: 'x', overlayIp: '127.0.0.2'}
    const peerY = {deviceId: ghostY, name: 'y', overlayIp: '127.0.0.3'}

    it('adds the peers as devices before the folder, so the folder lists them, and leaves global options alone', async () => {
      const path = await tempDir()
      const optionsBefore = await a.client.options()
      const result = await addFolder({client: a.client, path, project: 'demo', folderId: 'demo-one', type: 'sendonly', peers: [peerX], projectCidr: loopback})
      expect(await a.client.options()).to.deep.equal(optionsBefore)
      // The temp directory is on a case-sensitive file system (ext4 or tmpfs), so Syncthing may skip its case checks.
      expect(result).to.include({folderId: 'demo-one', created: true, type: 'sendonly', path, caseSensitiveFS: true})
      expect(result.devices).to.deep.equal([ghostX])
      const device = await a.client.device(ghostX)
      expect(device?.addresses).to.deep.equal(['tcp://127.0.0.2:22000'])
      expect(device?.allowedNetworks).to.deep.equal([loopback])
      const folder = await a.client.folder('demo-one')
      expect(folder?.versioning).to.include({type: 'simple'})
      expect(folder?.versioning.params).to.deep.equal({keep: '5'})
      expect(folder?.caseSensitiveFS).to.equal(true)
      expect(folder?.fsWatcherDelayS).to.equal(defaultWatcherDelayS) // not Syncthing's 10 s (bench/watcher.ts)
      // Syncthing, not vidsync, creates the marker.
      await waitFor('.stfolder', 10_000, async () => (await stat(join(path, '.stfolder'))).isDirectory() || undefined)
    })

    it('merges into an existing share without losing its devices or its settings', async () => {
      await a.client.patchFolder('demo-one', {caseSensitiveFS: false}) // as a user may have chosen
      const folder = await a.client.folder('demo-one')
      const result = await addFolder({client: a.client, path: folder?.path ?? '', project: 'demo', folderId: 'demo-one', peers: [peerY], projectCidr: loopback})
      expect(result.created).to.equal(false)
      expect(result.caseSensitiveFS).to.equal(false)
      expect(result.type).to.equal('sendonly') // kept: no type asked for
      expect(result.devices).to.have.members([ghostX, ghostY])
      const again = await addFolder({client: a.client, path: folder?.path ?? '', project: 'demo', folderId: 'demo-one', peers: [peerY], projectCidr: loopback})
      expect(again.peers).to.deep.equal([{deviceId: ghostY, name: 'y', change: 'unchanged'}])
    })

    it('refuses to point an existing folder ID at another path', async () => {
      const before = await a.client.folder('demo-one')
      const error = await expectRejects(
        addFolder({client: a.client, path: await tempDir(), project: 'demo', folderId: 'demo-one', peers: [], projectCidr: loopback}),
        ConflictError,
      )
      expect(error.message).to.contain('folder ID "demo-one" already shares')
      expect((await a.client.folder('demo-one'))?.path).to.equal(before?.path)
    })

    it('needs an existing directory', async () => {
      const dir = await tempDir()
      const missing = await expectRejects(
        addFolder({client: a.client, path: join(dir, 'nope'), project: 'demo', peers: [], projectCidr: loopback}),
        InvalidInputError,
      )
      expect(missing.message).to.equal(`${join(dir, 'nope')} does not exist: create the directory first`)
      await writeFile(join(dir, 'file'), 'x')
      const file = await expectRejects(addFolder({client: a.client, path: join(dir, 'file'), project: 'demo', peers: [], projectCidr: loopback}), InvalidInputError)
      expect(file.message).to.equal(`${join(dir, 'file')} is not a directory`)
    })

    it('probes case sensitivity with a file it removes again, and counts a directory it cannot write to as insensitive', async () => {
      const dir = await tempDir()
      expect(await isCaseSensitive(dir)).to.equal(true)
      expect(await readdir(dir)).to.deep.equal([])
      // An immutable directory (chattr, from e2fsprogs) refuses even root.
      await execa('chattr', ['+i', dir])
      try {
        expect(await isCaseSensitive(dir)).to.equal(false)
      } finally {
        await execa('chattr', ['-i', dir])
      }
    })

    it('derives a stable folder ID from the project and the directory name', () => {
      expect(defaultFolderId('studio', '/home/ana/Footage 2024/')).to.equal('studio-footage-2024')
      expect(defaultFolderId('studio', '/srv/Footage 2024')).to.equal('studio-footage-2024')
    })

    it('lists folders with their completion and removes them, keeping the files', async () => {
      const folders = await listFolders({client: a.client})
      const one = folders.find((folder) => folder.folderId === 'demo-one')
      expect(one).to.include({type: 'sendonly', paused: false})
      expect(one?.completion).to.be.a('number')
      expect(one?.devices).to.have.members([ghostX, ghostY])
      const removed = await removeFolder({client: a.client, folderId: 'demo-one'})
      expect((await stat(removed.path)).isDirectory()).to.equal(true)
      expect(await a.client.folder('demo-one')).to.equal(undefined)
      await expectRejects(removeFolder({client: a.client, folderId: 'demo-one'}), NotFoundError)
    })
  })

  describe('two devices', () => {
    let b: TestSyncthing
    const folderId = 'demo-share'
    let pathA: string
    let pathB: string

    before(async () => {
      b = await startTestSyncthing()
      pathA = await tempDir()
      pathB = await tempDir()
    })

    it('add each other and exchange a file with an identical sha256', async () => {
      // 127.0.0.1 stands in for the overlay addresses; 127.0.0.0/8 for the project network.
      await addFolder({client: a.client, path: pathA, project: 'demo', folderId, peers: [{deviceId: b.deviceId, name: 'b', overlayIp: '127.0.0.1', port: b.listenPort}], projectCidr: loopback})
      await addFolder({client: b.client, path: pathB, project: 'demo', folderId, peers: [{deviceId: a.deviceId, name: 'a', overlayIp: '127.0.0.1', port: a.listenPort}], projectCidr: loopback})
      await writeFile(join(pathA, 'clip.bin'), randomBytes(2 * 1024 * 1024))
      const expected = await sha256(join(pathA, 'clip.bin'))
      await waitFor('the file on b', 60_000, async () => ((await sha256(join(pathB, 'clip.bin'))) === expected ? true : undefined))

      const status = await waitFor('completion 100% on a', 20_000, async () => {
        const current = await syncStatus({client: a.client})
        const folder = current.folders.find((candidate) => candidate.folderId === folderId)
        return folder?.completion === 100 && folder.peers[0]?.completion === 100 ? current : undefined
      })
      const peer = status.peers.find((candidate) => candidate.deviceId === b.deviceId)
      expect(peer).to.include({connected: true, name: 'b'})
      expect(peer?.address).to.match(/^127\.0\.0\.1:\d+$/)
      expect(peer?.outBytesTotal).to.be.greaterThan(2 * 1024 * 1024)
      expect(status.total.outBytesTotal).to.be.greaterThan(0)
      expect(status.folders.find((folder) => folder.folderId === folderId)?.globalBytes).to.equal(2 * 1024 * 1024)
    })

    it('accepts a pending device connecting from inside the project network only', async () => {
      const c = await startTestSyncthing()
      // c knows a, a does not know c yet: c's connection attempts make it pending on a.
      await c.client.putDevice({deviceID: a.deviceId, name: 'a', addresses: [`tcp://127.0.0.1:${a.listenPort}`]})
      await waitFor('c pending on a', 60_000, async () => (await a.client.pendingDevices())[c.deviceId])

      const outside = await acceptPendingDevices({client: a.client, projectCidr: '10.99.0.0/16', folders: [folderId]})
      expect(outside.accepted).to.deep.equal([])
      expect(outside.ignored.map((device) => device.deviceId)).to.include(c.deviceId)
      expect(await a.client.device(c.deviceId)).to.equal(undefined)

      const inside = await acceptPendingDevices({client: a.client, projectCidr: loopback, folders: [folderId]})
      expect(inside.accepted.map((device) => device.deviceId)).to.deep.equal([c.deviceId])
      expect(inside.accepted[0]?.address).to.match(/^127\.0\.0\.1:\d+$/)
      expect((await a.client.device(c.deviceId))?.allowedNetworks).to.deep.equal([loopback])
      const shared = (await a.client.folder(folderId))?.devices.map((device) => device.deviceID)
      expect(shared).to.include.members([b.deviceId, c.deviceId])
      await expectRejects(acceptPendingDevices({client: a.client, projectCidr: loopback, folders: ['nope']}), NotFoundError)
    })

    it("up's reconcile loop accepts a device as it connects, not an interval later, and stops at once", async () => {
      // a joined project "demo" (127.0.0.0/8 standing in for its network) with no peers yet.
      const project = join(a.home, 'projects', 'demo')
      await mkdir(project, {recursive: true})
      const manifest = {
        version: 1, project: 'demo', cidr: loopback, device: 'a', ip: '127.0.0.1', groups: [], lighthouse: false, fingerprint: 'a'.repeat(64),
        notAfter: '2030-01-01T00:00:00.000Z', operatorGeneratedKey: false, lighthouses: [], blocklist: [], peers: [], issuedAt: '2026-11-27T00:00:00.000Z',
      }
      await writeFile(join(project, 'vidsync.json'), JSON.stringify(manifest))
      const d = await startTestSyncthing()
      // Every long poll the loop makes, to tell when it is blocked waiting on Syncthing's events.
      const polls: {since: number; types: string[]; endsAt: number; settled: boolean}[] = []
      const client = new Proxy(a.client, {
        get(target, property) {
          const value = Reflect.get(target, property, target) as unknown
          if (typeof value !== 'function') return value
          if (property !== 'events') return value.bind(target)
          return (options: Parameters<SyncthingClient['events']>[0] = {}) => {
            const poll = {since: options.since ?? 0, types: options.types ?? [], endsAt: Date.now() + (options.timeoutS ?? 60) * 1000, settled: false}
            polls.push(poll)
            return (value as SyncthingClient['events']).call(target, options).finally(() => (poll.settled = true))
          }
        },
      })
      /** The loop waits in a poll that nothing Syncthing holds can end: the same poll of ours stays empty for 1 s. */
      const idle = async () => {
        const poll = polls.at(-1)
        if (!poll || poll.settled) return undefined
        const pending = await a.client.events({since: poll.since, types: poll.types, timeoutS: 1})
        return pending.length === 0 && !poll.settled && polls.at(-1) === poll ? true : undefined
      }
      const stop = new AbortController()
      const passes: (ReconcileResult | Error)[] = []
      const intervalMs = 120_000
      const loop = reconcileLoop({client, home: a.home, project: 'demo', intervalMs, signal: stop.signal, onPass: (pass) => passes.push(pass)})
      try {
        await waitFor('the loop to wait on Syncthing events', 30_000, idle)
        expect(passes).to.deep.equal([]) // no event, no pass before the interval
        const started = Date.now()
        await d.client.putDevice({deviceID: a.deviceId, name: 'a', addresses: [`tcp://127.0.0.1:${a.listenPort}`]})
        // Waits for the loop to report the pass that accepted d: d shows up in a's config while that
        // pass is still sharing folders, before it reports.
        const acceptedIn = (pass: ReconcileResult | Error) => !(pass instanceof Error) && pass.accepted.some((device) => device.deviceId === d.deviceId)
        await waitFor('a pass of the loop that accepts d', 60_000, async () => (passes.some((pass) => pass instanceof Error || acceptedIn(pass)) ? true : undefined))
        expect(Date.now() - started).to.be.below(intervalMs / 4)
        expect(await a.client.device(d.deviceId)).not.to.equal(undefined)
        const accepted = passes.flatMap((pass) => (pass instanceof Error ? [] : pass.accepted.map((device) => device.deviceId)))
        expect(accepted).to.deep.equal([d.deviceId])
        expect(passes.filter((pass) => pass instanceof Error)).to.deep.equal([])
        // Once the loop waits again with nothing left to wake it, count: the accept (and Syncthing's
        // "removed" event after it) woke it once or twice, not in a loop.
        await waitFor('the loop to settle', 30_000, idle)
        expect(passes.length).to.be.within(1, 2)
      } finally {
        const stopping = Date.now()
        const pollEndsIn = (polls.at(-1)?.endsAt ?? Infinity) - stopping
        stop.abort()
        await loop
        // At once: the abort ends the long poll instead of waiting for it to time out.
        expect(Date.now() - stopping, `the poll had ${pollEndsIn} ms left`).to.be.below(pollEndsIn)
      }
    })
  })

  describe('commands', () => {
    it('sync add / list / remove with peers from the joined project', async () => {
      const home = a.home
      const project = join(home, 'projects', 'demo')
      await mkdir(project, {recursive: true})
      const manifest = {
        version: 1, project: 'demo', cidr: loopback, device: 'a', ip: '127.0.0.1', groups: [], lighthouse: false,
        fingerprint: 'a'.repeat(64), notAfter: '2030-01-01T00:00:00.000Z', operatorGeneratedKey: false, lighthouses: [], blocklist: [],
        peers: [{name: 'x', ip: '127.0.0.2', syncthingId: ghostX}, {name: 'later', ip: '127.0.0.9', syncthingId: null}], issuedAt: '2026-11-27T00:00:00.000Z',
      }
      await writeFile(join(project, 'vidsync.json'), JSON.stringify(manifest))
      const dir = join(await tempDir(), 'Renders')
      await mkdir(dir)

      // Without --id, Renders is the project folder "renders", which this manifest does not list.
      const notInProject = await runCommand(['sync', 'add', dir, '--home', home])
      expect(notInProject.error?.oclif?.exit).to.equal(3)
      expect(notInProject.stderr).to.contain('project demo has no folder "renders" in this device\'s bundle: the operator creates it with `vidsync folder create demo renders`')
      const typeWithoutId = await runCommand(['sync', 'add', dir, '--home', home, '--type', 'receiveonly'])
      expect(typeWithoutId.error?.oclif?.exit).to.equal(2)
      expect(await a.client.folder('demo-renders')).to.equal(undefined)

      const added = await runCommand<{folderId: string; devices: string[]; skippedPeers: string[]}>(['sync', 'add', dir, '--home', home, '--id', 'demo-renders', '--type', 'receiveonly'])
      expect(added.error).to.equal(undefined)
      expect(added.result).to.include({folderId: 'demo-renders'})
      // x from the manifest, and the devices already accepted in the project network (127.0.0.0/8 here).
      expect(added.result?.devices).to.include(ghostX)
      expect(added.result?.devices).to.have.members(await projectDeviceIds({client: a.client, projectCidr: loopback}))
      expect(added.result?.skippedPeers).to.deep.equal(['later'])
      expect(added.stdout).to.contain(`Sharing ${dir} as demo-renders (receiveonly) in demo with x.`)

      const listed = await runCommand(['sync', 'list', '--home', home])
      expect(listed.stdout).to.match(/demo-renders\s+\S+Renders\s+receiveonly/)

      const removed = await runCommand(['sync', 'remove', 'demo-renders', '--home', home])
      expect(removed.stdout).to.contain(`Stopped sharing demo-renders; its files stay in ${dir}.`)
      const again = await runCommand(['sync', 'remove', 'demo-renders', '--home', home])
      expect(again.error?.oclif?.exit).to.equal(3)
    })

    it('sync up adopts the running instance; sync add without a project asks for one', async () => {
      const up = await runCommand<{adopted: boolean; pid: number}>(['sync', 'up', '--home', a.home, '--detach', '--json'])
      expect(up.result).to.include({adopted: true, pid: a.pid})
      expect(up.stdout).not.to.contain(a.apiKey)
      const keyWithoutUrl = await runCommand(['sync', 'up', '--home', await tempDir(), '--api-key', 'x'])
      expect(keyWithoutUrl.error?.oclif?.exit).to.equal(2)
      const empty = await tempDir()
      const add = await runCommand(['sync', 'add', empty, '--home', empty, '--syncthing-url', a.url, '--api-key', a.apiKey])
      expect(add.error?.oclif?.exit).to.equal(3)
      expect(add.stderr).to.contain('no project is joined')
    })
  })
})
