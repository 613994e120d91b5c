/**
 * Project folders on devices (issue 13) with three real Syncthings on loopback addresses
 * (three 127.x.y.1-3 addresses stand in for overlay addresses, 127.0.0.0/8 for the project network): devices with
 * differently named directories share one folder, a receive-only device accepts an offer on its
 * own and never sends its changes, and bad input changes nothing in Syncthing.
 */
import {createHash, randomBytes} from 'node:crypto'
import {mkdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'

import {type BundleManifest, type ManifestFolder, parseManifest} from '../src/lib/bundle/manifest.js'
import {ConflictError, ExhaustedError, InvalidInputError, NotFoundError} from '../src/lib/errors.js'
import {addFolder} from '../src/lib/syncthing/folders.js'
import {parseRate, setDeviceLimits} from '../src/lib/folders/bandwidth.js'
import {acceptFolder, applyProjectFolders, declineFolder, setAutoAccept, defaultIgnorePatterns, projectFolderStates, refreshFolders, revertLocalChanges, shareProjectFolder, syncthingFolderId} from '../src/lib/folders/device.js'
import {JoinedProject} from '../src/lib/project/joined-project.js'
import {SyncthingClient} from '../src/lib/syncthing/client.js'
import {startManagedSyncthing, stopManagedSyncthing, writeManagedConfig} from '../src/lib/syncthing/managed.js'
import {expectRejects} from './helpers/rejects.js'
import {reconcile} from '../src/lib/up/up.js'
import {deviceStatus} from '../src/lib/up/status.js'
import {renderStatus} from '../src/lib/output/status.js'
import {deviceTokenPath} from '../src/lib/join/invite.js'
import {newSecret, sha256Hex} from '../src/lib/invites/secrets.js'
import {createFolder, listProjectFolders, projectFolderSettings} from '../src/lib/folders/store.js'
import {ControlPlane, SqlRpc} from '../src/lib/store/control-plane.js'
import {loadMigrations, migrate} from '../src/lib/store/migrate.js'
import {PostgresClient} from '../src/lib/store/sql-client.js'
import {createThrowawayDatabase} from './helpers/postgres.js'
import {freePort, waitFor} from './helpers/syncthing.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

const names = ['a', 'b', 'c'] as const
type Node = (typeof names)[number]
// Addresses of this process's own (from its PID): the suite may run in several processes at once.
const ipOf = (node: Node) => `127.${(process.pid >> 8) % 256}.${process.pid % 256}.${names.indexOf(node) + 1}`
const footageId = '0123456789ab'
const pem = (label: string) => Buffer.from(`-----BEGIN ${label}-----\nAAAA\n-----END ${label}-----\n`)
const sha256 = async (path: string) => createHash('sha256').update(await readFile(path).catch(() => Buffer.alloc(0))).digest('hex')

interface Device {
  home: string
  userHome: string
  deviceId: string
  client: SyncthingClient
}

describe('project folders on devices (real Syncthing x3)', function () {
  this.timeout(180_000)
  const devices = {} as Record<Node, Device>
  let footage: ManifestFolder

  const manifestOf = (node: Node, folders: ManifestFolder[]): BundleManifest => ({
    version: 1,
    project: 'films',
    cidr: '127.0.0.0/8',
    device: node,
    ip: ipOf(node),
    groups: [],
    lighthouse: false,
    fingerprint: 'a'.repeat(64),
    notAfter: '2030-01-01T00:00:00.000Z',
    operatorGeneratedKey: false,
    lighthouses: [{name: 'lh', ip: '127.0.9.1', endpoint: '192.0.2.1:4242', relay: false}],
    peers: names.filter((other) => other !== node).map((other) => ({name: other, ip: ipOf(other), syncthingId: devices[other].deviceId})),
    blocklist: [],
    folders,
    issuedAt: new Date().toISOString(),
  })
  /** The folder as `node` sees it: c is receive-only. */
  const folderFor = (node: Node, autoAccept = true): ManifestFolder => ({
    id: footageId,
    name: 'footage',
    autoAccept,
    mode: node === 'c' ? 'receive-only' : 'send-receive',
    devices: names.filter((other) => other !== node).map((other) => ({name: other, mode: other === 'c' ? 'receive-only' : 'send-receive'})),
  })
  const install = async (node: Node, folders: ManifestFolder[]) => {
    const {home} = devices[node]
    const project = await JoinedProject.find({home}).catch(() => undefined)
    if (project) return project.update(manifestOf(node, folders))
    return (await JoinedProject.install(home, {manifest: manifestOf(node, folders), caPem: pem('NEBULA CERTIFICATE'), certPem: pem('NEBULA CERTIFICATE'), keyPem: pem('NEBULA X25519 PRIVATE KEY')})).project
  }
  const folderCount = async (node: Node) => (await devices[node].client.folders()).length

  before(async () => {
    for (const node of names) {
      const home = await tempDir('vidsync-fd-')
      await writeManagedConfig({vidsyncHome: home, guiPort: await freePort(), listenAddresses: [`tcp://${ipOf(node)}:22000`]})
      const managed = await startManagedSyncthing({vidsyncHome: home})
      devices[node] = {home, userHome: await tempDir('vidsync-user-'), deviceId: managed.deviceId, client: new SyncthingClient({url: managed.url, apiKey: managed.apiKey})}
    }
    for (const node of names) await install(node, [folderFor(node)])
    footage = folderFor('a')
  })

  after(async () => {
    for (const node of names) if (devices[node]) await stopManagedSyncthing({vidsyncHome: devices[node].home, timeoutMs: 10_000}).catch(() => undefined)
    await removeTempDirs()
  })

  it('two devices share differently named directories as one project folder, with the shared ignore file', async () => {
    const dirA = join(devices.a.userHome, 'dataA', 'Footage')
    const dirB = join(devices.b.userHome, 'Projects', 'dataB')
    await mkdir(dirA, {recursive: true})
    await mkdir(dirB, {recursive: true})
    const sharedA = await shareProjectFolder({client: devices.a.client, home: devices.a.home, path: dirA, name: 'footage'})
    const sharedB = await shareProjectFolder({client: devices.b.client, home: devices.b.home, path: dirB, name: 'footage'})
    expect(sharedA.folderId).to.equal(syncthingFolderId('films', footageId)).and.to.equal(sharedB.folderId)
    expect(sharedA).to.include({name: 'footage', id: footageId, mode: 'send-receive', type: 'sendreceive', label: 'footage', ignoresIncluded: true})
    expect(sharedA.devices).to.have.members([devices.b.deviceId, devices.c.deviceId])
    expect(await readFile(join(dirA, '.stignore'), 'utf8')).to.equal('#include .vidsync-ignore\n')
    expect(await readFile(join(dirA, '.vidsync-ignore'), 'utf8')).to.include('(?d).DS_Store').and.include('(?d)._*')

    const data = randomBytes(512 * 1024)
    await writeFile(join(dirA, 'clip.mov'), data)
    await writeFile(join(dirA, '.DS_Store'), 'finder litter')
    await devices.a.client.patchFolder(sharedA.folderId, {}) // no-op write: the folder exists
    const expected = createHash('sha256').update(data).digest('hex')
    await waitFor('clip.mov on b', 90_000, async () => ((await sha256(join(dirB, 'clip.mov'))) === expected ? true : undefined))
    // The shared ignore file itself syncs, and what it names does not.
    await waitFor('.vidsync-ignore on b', 30_000, async () => ((await stat(join(dirB, '.vidsync-ignore')).catch(() => undefined)) ? true : undefined))
    expect(await stat(join(dirB, '.DS_Store')).catch(() => undefined)).to.equal(undefined)
    expect(defaultIgnorePatterns.length).to.be.greaterThan(10)
  })

  it('an ignore pattern added on one device stops files on the others', async () => {
    const dirA = join(devices.a.userHome, 'dataA', 'Footage')
    const dirB = join(devices.b.userHome, 'Projects', 'dataB')
    const folderId = syncthingFolderId('films', footageId)
    const scan = async (node: Node) => {
      const apiKey = (await readFile(join(devices[node].home, 'syncthing', 'apikey'), 'utf8')).trim()
      await fetch(`${devices[node].client.url}/rest/db/scan?folder=${encodeURIComponent(folderId)}`, {method: 'POST', headers: {'X-API-Key': apiKey}})
    }
    await writeFile(join(dirA, '.vidsync-ignore'), `${await readFile(join(dirA, '.vidsync-ignore'), 'utf8')}(?d)*.proxy\n`)
    await scan('a')
    await waitFor('the new pattern on b', 60_000, async () => ((await readFile(join(dirB, '.vidsync-ignore'), 'utf8').catch(() => '')).includes('*.proxy') ? true : undefined))
    await scan('b')
    await writeFile(join(dirB, 'take1.proxy'), 'a proxy made on b')
    await writeFile(join(dirA, 'take2.proxy'), 'a proxy made on a')
    await writeFile(join(dirA, 'marker.txt'), 'after the proxies')
    await scan('a')
    await scan('b')
    // marker.txt, written after the proxies, arrives; the proxies do not.
    await waitFor('marker.txt on b', 60_000, async () => ((await stat(join(dirB, 'marker.txt')).catch(() => undefined)) ? true : undefined))
    await sleep(2000)
    expect(await stat(join(dirB, 'take2.proxy')).catch(() => undefined)).to.equal(undefined)
    expect(await stat(join(dirA, 'take1.proxy')).catch(() => undefined)).to.equal(undefined)
  })

  it('a receive-only device accepts the offer on its own into ~/vidsync/<project>/<folder> and never sends its changes', async () => {
    const target = join(devices.c.userHome, 'vidsync', 'films', 'footage')
    // c's reconcile pass, as its `up` loop runs it: the manifest's peers become devices, offers from them count.
    const pass = await waitFor('c accepts footage', 90_000, async () => {
      const result = await reconcile({client: devices.c.client, home: devices.c.home, project: 'films', userHome: devices.c.userHome})
      return result.projectFolders?.accepted.length ? result.projectFolders : undefined
    })
    expect(pass.accepted).to.deep.equal(['footage'])
    const folder = await devices.c.client.folder(syncthingFolderId('films', footageId))
    expect(folder).to.include({path: target, type: 'receiveonly', label: 'footage'})
    const dirA = join(devices.a.userHome, 'dataA', 'Footage')
    const original = await sha256(join(dirA, 'clip.mov'))
    await waitFor('clip.mov on c', 90_000, async () => ((await sha256(join(target, 'clip.mov'))) === original ? true : undefined))

    // A local edit on c stays on c: a keeps its version; sync list counts it; revert brings the project's back.
    await writeFile(join(target, 'clip.mov'), 'edited on c')
    await devices.c.client.patchFolder(folder?.id ?? '', {}) // the watcher or the next scan sees it
    await fetch(`${devices.c.client.url}/rest/db/scan?folder=${encodeURIComponent(folder?.id ?? '')}`, {method: 'POST', headers: {'X-API-Key': (await readFile(join(devices.c.home, 'syncthing', 'apikey'), 'utf8')).trim()}})
    const states = await waitFor('c reports its local change', 30_000, async () => {
      const {folders} = await projectFolderStates({client: devices.c.client, home: devices.c.home})
      return (folders[0]?.localChanges ?? 0) > 0 ? folders : undefined
    })
    expect(states[0]).to.include({name: 'footage', state: 'shared', mode: 'receive-only', path: target})
    await sleep(3000)
    expect(await sha256(join(dirA, 'clip.mov'))).to.equal(original)
    const reverted = await revertLocalChanges({client: devices.c.client, home: devices.c.home, name: 'footage'})
    expect(reverted.localChanges).to.be.greaterThan(0)
    await waitFor('the project version back on c', 60_000, async () => ((await sha256(join(target, 'clip.mov'))) === original ? true : undefined))
  })

  it('sync list on b: footage shared with its size', async () => {
    const {folders} = await projectFolderStates({client: devices.b.client, home: devices.b.home})
    expect(folders).to.have.length(1)
    // Everything shared but the ignored: the clip, the shared ignore file and the marker.
    const dirA = join(devices.a.userHome, 'dataA', 'Footage')
    const sizes = await Promise.all(['clip.mov', '.vidsync-ignore', 'marker.txt'].map(async (name) => (await stat(join(dirA, name))).size))
    expect(folders[0]).to.include({name: 'footage', state: 'shared', mode: 'send-receive', sizeBytes: sizes.reduce((sum, size) => sum + size, 0), localChanges: null})
  })

  it('applies access changes: a device set to none no longer gets the folder', async () => {
    const withoutB: ManifestFolder = {...footage, devices: footage.devices.map((device) => (device.name === 'b' ? {...device, mode: 'none'} : device))}
    const project = await install('a', [withoutB])
    const pass = await applyProjectFolders({client: devices.a.client, manifest: project.manifest})
    expect(pass.updated).to.deep.equal(['footage'])
    const folder = await devices.a.client.folder(syncthingFolderId('films', footageId))
    expect(folder?.devices.map((device) => device.deviceID)).to.have.members([devices.a.deviceId, devices.c.deviceId])
    // Idempotent.
    expect((await applyProjectFolders({client: devices.a.client, manifest: project.manifest})).updated).to.deep.equal([])
    await install('a', [footage])
  })

  it('sets bandwidth limits that hold between overlay (private) addresses: own limits over the project default, and refuses bad rates writing nothing', async () => {
    expect(parseRate('50mbit', 'upload')).to.equal(6104)
    expect(parseRate('200mbit', 'download')).to.equal(24_414)
    expect(parseRate('none', 'upload')).to.equal(0)
    const {client, home} = devices.a
    const options = async () => {
      const current = await client.options()
      return {up: current.maxSendKbps, down: current.maxRecvKbps, lan: current.limitBandwidthInLan}
    }
    const limits = await setDeviceLimits({client, home, up: '50mbit', down: '200mbit'})
    expect(limits).to.deep.equal({upKiBps: 6104, downKiBps: 24_414, upFrom: 'device', downFrom: 'device', upProject: 'films', downProject: 'films', limitBandwidthInLan: true})
    for (const bad of ['50', 'fast', '-3mbit', '50MB', '1e9gbit']) {
      expect((await expectRejects(setDeviceLimits({client, home, up: bad}), InvalidInputError)).message).to.match(/^invalid upload rate/)
    }
    expect(await options()).to.deep.equal({up: 6104, down: 24_414, lan: true})

    // The project's default (from a refresh or a bundle) applies only where a has no limit of its own.
    const project = await JoinedProject.find({home})
    await project.update({...project.manifest, syncLimits: {upKiBps: 1000, downKiBps: 2000}})
    const pass = await reconcile({client, home, project: 'films', userHome: devices.a.userHome})
    expect(pass.bandwidth).to.include({upKiBps: 6104, upFrom: 'device', downKiBps: 24_414, downFrom: 'device'})
    expect(await setDeviceLimits({client, home, down: 'default'})).to.include({upKiBps: 6104, upFrom: 'device', downKiBps: 2000, downFrom: 'project'})
    expect(await options()).to.deep.equal({up: 6104, down: 2000, lan: true})
    expect(await setDeviceLimits({client, home, reset: true})).to.include({upKiBps: 1000, upFrom: 'project', downKiBps: 2000, downFrom: 'project'})
    // The operator clears the default: the loop lifts the limits.
    await project.update({...project.manifest, syncLimits: {upKiBps: null, downKiBps: null}})
    expect((await reconcile({client, home, project: 'films', userHome: devices.a.userHome})).bandwidth).to.include({upKiBps: 0, upFrom: 'none', downKiBps: 0, downFrom: 'none'})
    expect(await options()).to.deep.equal({up: 0, down: 0, lan: true})
    expect((await projectFolderStates({client, home})).bandwidth).to.deep.equal({upKiBps: 0, upFrom: 'none', downKiBps: 0, downFrom: 'none', upProject: null, downProject: null})
    await setDeviceLimits({client, home, up: '8mbit'})
    const status = await deviceStatus({home})
    expect(status.bandwidth).to.deep.equal({upKiBps: 977, upFrom: 'device', downKiBps: 0, downFrom: 'none', upProject: 'films', downProject: null})
    expect(renderStatus(status, {color: false})).to.include("limits    up 8.0mbit (this device's for project films), down none (no limit set)")
    await setDeviceLimits({client, home, up: 'none', down: 'none'})
    const folder = await client.folder(syncthingFolderId('films', footageId))
    expect(folder?.minDiskFree).to.deep.equal({value: 2, unit: 'GB'})
  })

  it('several joined projects share one Syncthing: per direction the smallest of their limits holds, whichever project reconciles last', async () => {
    const {client, home, userHome} = devices.a
    const series = (await JoinedProject.install(home, {
      manifest: {...manifestOf('a', []), project: 'series', syncLimits: {upKiBps: 500, downKiBps: 3000}},
      caPem: pem('NEBULA CERTIFICATE'),
      certPem: pem('NEBULA CERTIFICATE'),
      keyPem: pem('NEBULA X25519 PRIVATE KEY'),
    })).project
    try {
      await setDeviceLimits({client, home, project: 'films', up: '8mbit', down: 'none'})
      const options = async () => {
        const current = await client.options()
        return {up: current.maxSendKbps, down: current.maxRecvKbps}
      }
      // series's defaults are its own: films's limits in Syncthing are not taken as series's the first time.
      const smallest = {upKiBps: 500, upFrom: 'project', upProject: 'series', downKiBps: 3000, downFrom: 'project', downProject: 'series'}
      for (const project of ['series', 'films', 'series']) {
        expect((await reconcile({client, home, project, userHome})).bandwidth, project).to.include(smallest)
        expect(await options()).to.deep.equal({up: 500, down: 3000})
      }
      expect(await series.settings()).to.deep.equal({limits: {}})
      expect((await projectFolderStates({client, home, project: 'films'})).bandwidth).to.deep.equal(smallest)
      // films's own 2 mbit is now the smaller upload limit: it holds, and status says whose it is.
      expect(await setDeviceLimits({client, home, project: 'films', up: '2mbit'})).to.include({upKiBps: 244, upFrom: 'device', upProject: 'films', downKiBps: 3000, downProject: 'series'})
      expect(await options()).to.deep.equal({up: 244, down: 3000})
      expect(renderStatus(await deviceStatus({home, project: 'films'}), {color: false})).to.include("limits    up 2.0mbit (this device's for project films), down 24.6mbit (project series's default)")
    } finally {
      await rm(series.dir, {recursive: true, force: true})
      await setDeviceLimits({client, home, up: 'none', down: 'none'})
    }
    expect(await client.options()).to.include({maxSendKbps: 0, maxRecvKbps: 0})
  })

  it('refuses bad input in one line with nothing configured in Syncthing', async () => {
    const before = await folderCount('b')
    const file = join(devices.b.userHome, 'a-file')
    await writeFile(file, 'x')
    const share = (path: string, name?: string) => shareProjectFolder({client: devices.b.client, home: devices.b.home, path, name})
    expect((await expectRejects(share(file, 'footage'), InvalidInputError)).message).to.match(/is not a directory/)
    expect((await expectRejects(share(join(devices.b.userHome, 'missing'), 'footage'), InvalidInputError)).message).to.match(/does not exist/)
    for (const name of ['Footage', 'föö', 'a/b', 'x'.repeat(80), 'two words']) expect((await expectRejects(share(devices.b.userHome, name), InvalidInputError)).message).to.match(/invalid folder name/)
    expect((await expectRejects(share(devices.b.userHome, 'renders'), NotFoundError)).message).to.match(/has no folder "renders" in this device's bundle: the operator creates it with `vidsync folder create films renders`/)
    // An offer that is gone (nobody offers "footage" to a device that shares it already, or a folder nobody offers).
    expect((await expectRejects(acceptFolder({client: devices.b.client, home: devices.b.home, name: 'footage'}), ConflictError)).message).to.match(/already shared here/)
    await install('b', [folderFor('b'), {...folderFor('b'), id: 'ffffffffffff', name: 'renders'}])
    const nested = join(devices.b.userHome, 'Projects', 'dataB', 'inner')
    await mkdir(nested, {recursive: true})
    expect((await expectRejects(share(nested, 'renders'), ConflictError)).message).to.match(/inside .* which folder footage already shares: folders must not nest/)
    expect((await expectRejects(share(devices.b.userHome, 'renders'), ConflictError)).message).to.match(/contains .* which folder footage already shares/)
    expect((await expectRejects(acceptFolder({client: devices.b.client, home: devices.b.home, name: 'renders'}), NotFoundError)).message).to.match(/no device of films offers folder renders now/)
    expect(await folderCount('b')).to.equal(before)
    await install('b', [folderFor('b')])
    // A manifest (bundle or refresh) with a bad size or limit is refused whole.
    const manifest = (extra: object, folder: object = {}) => JSON.stringify({...manifestOf('b', [{...folderFor('b'), ...folder}]), ...extra})
    expect(parseManifest(manifest({syncLimits: {upKiBps: 6104, downKiBps: null}}, {sizeBytes: 42}), 'test')).to.deep.include({syncLimits: {upKiBps: 6104, downKiBps: null}})
    for (const [extra, folder] of [[{}, {sizeBytes: -1}], [{}, {sizeBytes: '42'}], [{syncLimits: {upKiBps: 'fast', downKiBps: null}}, {}], [{syncLimits: {upKiBps: 1.5}}, {}]]) {
      expect((await expectRejects(Promise.resolve().then(() => parseManifest(manifest(extra ?? {}, folder), 'test')), InvalidInputError)).message).to.match(/size|syncLimits/)
    }
  })

  it('never auto-accepts into an existing non-empty directory', async () => {
    // c drops its share; the offer comes back; its default directory now holds files.
    const folderId = syncthingFolderId('films', footageId)
    await devices.c.client.deleteFolder(folderId)
    const target = join(devices.c.userHome, 'vidsync', 'films', 'footage')
    await writeFile(join(target, 'mine.txt'), 'not from the project')
    // Reconnecting makes a offer its folders again.
    await devices.c.client.patchDevice(devices.a.deviceId, {paused: true})
    await devices.c.client.patchDevice(devices.a.deviceId, {paused: false})
    const pass = await waitFor('the offer back on c', 60_000, async () => {
      const result = await reconcile({client: devices.c.client, home: devices.c.home, project: 'films', userHome: devices.c.userHome})
      return result.projectFolders?.skipped.length ? result.projectFolders : undefined
    })
    expect(pass.skipped[0]?.reason).to.match(/exists and is not empty/)
    expect(await devices.c.client.folder(folderId)).to.equal(undefined)
    const {folders} = await projectFolderStates({client: devices.c.client, home: devices.c.home})
    expect(folders[0]).to.include({state: 'offered'})

    // Bigger than the free space (as the last device sharing it reported): refused in one line, nothing set up.
    const huge = 2 ** 52
    await install('c', [{...folderFor('c'), sizeBytes: huge}])
    const into = join(devices.c.userHome, 'Elsewhere', 'footage')
    const accept = (path?: string) => acceptFolder({client: devices.c.client, home: devices.c.home, name: 'footage', path})
    expect((await projectFolderStates({client: devices.c.client, home: devices.c.home})).folders[0]).to.include({state: 'offered', sizeBytes: huge})
    const refused = await expectRejects(accept(into), ExhaustedError)
    expect(refused.message).to.match(/^folder footage needs 4096\.0 TiB plus 1\.9 GiB kept free, but \/.* has .* free: nothing was set up$/)
    expect(refused.hint).to.match(/vidsync sync accept footage DIR/)
    expect(await stat(join(devices.c.userHome, 'Elsewhere')).catch(() => undefined)).to.equal(undefined)
    // The loop's auto-accept (into a home where ~/vidsync/films/footage is free) refuses it the same way.
    const otherHome = await tempDir('vidsync-user-')
    const autoPass = await reconcile({client: devices.c.client, home: devices.c.home, project: 'films', userHome: otherHome})
    expect(autoPass.projectFolders?.skipped[0]?.reason).to.match(/^folder footage needs 4096\.0 TiB/)
    // Bad directories for an offer that is there: a file, inside another shared folder.
    const aFile = join(devices.c.userHome, 'a-file')
    await writeFile(aFile, 'x')
    expect((await expectRejects(accept(aFile), InvalidInputError)).message).to.match(/is not a directory/)
    const other = join(devices.c.userHome, 'other')
    await mkdir(other)
    await addFolder({client: devices.c.client, path: other, project: 'films', folderId: 'films-other', projectCidr: '127.0.0.0/8', peers: []})
    expect((await expectRejects(accept(join(other, 'footage')), ConflictError)).message).to.match(/inside .* which folder .* already shares: folders must not nest/)
    await devices.c.client.deleteFolder('films-other')
    expect(await devices.c.client.folder(folderId)).to.equal(undefined)
    expect(await stat(join(otherHome, 'vidsync')).catch(() => undefined)).to.equal(undefined)

    // A folder the project does not mark auto-accept: the loop leaves it, until the device says so (into its own root).
    await install('c', [folderFor('c', false)])
    expect((await reconcile({client: devices.c.client, home: devices.c.home, project: 'films', userHome: otherHome})).projectFolders?.accepted).to.deep.equal([])
    expect((await expectRejects(setAutoAccept({home: devices.c.home, enabled: true, into: aFile}), InvalidInputError)).message).to.match(/is not a directory/)
    const root = join(otherHome, 'media')
    expect(await setAutoAccept({home: devices.c.home, enabled: true, into: root})).to.deep.equal({project: 'films', autoAccept: true, folderRoot: root})
    const own = await reconcile({client: devices.c.client, home: devices.c.home, project: 'films', userHome: otherHome})
    expect(own.projectFolders?.accepted).to.deep.equal(['footage'])
    expect(await devices.c.client.folder(folderId)).to.include({path: join(root, 'footage')})
    expect((await setAutoAccept({home: devices.c.home, enabled: false})).folderRoot).to.equal(root)
    await devices.c.client.deleteFolder(folderId)
    // A change of a's folder makes a send its folders to c again: the offer comes back at once.
    await devices.a.client.patchFolder(folderId, {rescanIntervalS: 3601})
    await waitFor('the offer back on c again', 60_000, async () => ((await projectFolderStates({client: devices.c.client, home: devices.c.home})).folders[0]?.state === 'offered' ? true : undefined))
    await install('c', [folderFor('c')])

    // Declined: listed as such, and the loop leaves it alone even with its directory emptied.
    const declined = await declineFolder({client: devices.c.client, home: devices.c.home, name: 'footage'})
    expect(declined.declinedFrom).to.include(devices.a.deviceId)
    await rm(join(target, 'mine.txt'))
    const {manifest} = await JoinedProject.find({home: devices.c.home})
    expect((await applyProjectFolders({client: devices.c.client, manifest, userHome: devices.c.userHome})).accepted).to.deep.equal([])
    expect((await projectFolderStates({client: devices.c.client, home: devices.c.home})).folders[0]).to.include({state: 'declined'})
  })

  it('a device joined with an invite creates a new project folder in Postgres by sync add, and refreshes the list', async () => {
    const database = await createThrowawayDatabase('folders_dev')
    const sql = new PostgresClient(database.url)
    try {
      await migrate(sql, await loadMigrations())
      const controlPlane = new ControlPlane(new SqlRpc(sql))
      // The control plane's project "films" (its own range: the device functions go by token alone).
      await controlPlane.createProject({name: 'films', cidr: '10.95.7.0/24'})
      await controlPlane.populatePool({project: 'films'})
      const code = newSecret('invite')
      await controlPlane.createInvite({project: 'films', codeSha256: sha256Hex(code), maxUses: 1})
      const token = newSecret('device')
      await controlPlane.redeemInvite({code, token, device: 'b', publicKey: `-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${randomBytes(32).toString('base64')}\n-----END NEBULA X25519 PUBLIC KEY-----\n`})
      const [request] = await controlPlane.listJoinRequests({project: 'films'})
      const candidate = await controlPlane.approveJoinRequest({requestId: request?.id ?? 0})
      const bundle = {'ca.crt': 'ca', 'node.crt': 'cert', 'nebula.yml': 'pki: {}', 'vidsync.json': '{}'}
      await controlPlane.approveJoinRequest({requestId: request?.id ?? 0, signed: {ip: candidate.ip, fingerprint: randomBytes(32).toString('hex'), notAfter: '2030-01-01T00:00:00.000Z', certPem: 'cert', bundle}})
      await writeFile(deviceTokenPath(devices.b.home, 'films'), `${token}\n`, {mode: 0o600})

      const dir = join(devices.b.userHome, 'Dailies')
      // A directory that cannot be shared creates no folder in the project: the directory is checked first.
      expect((await expectRejects(shareProjectFolder({client: devices.b.client, home: devices.b.home, path: dir, controlPlane}), InvalidInputError)).message).to.match(/does not exist/)
      expect(await listProjectFolders(controlPlane, {project: 'films'})).to.deep.equal([])
      await mkdir(dir)
      const shared = await shareProjectFolder({client: devices.b.client, home: devices.b.home, path: dir, controlPlane})
      expect(shared).to.include({name: 'dailies', mode: 'send-receive'})
      expect(shared.folderId).to.equal(syncthingFolderId('films', shared.id))
      const {manifest} = await JoinedProject.find({home: devices.b.home})
      expect(manifest.folders?.map((folder) => folder.name)).to.include('dailies')
      // The operator adds another; the device's refresh brings the list in.
      await createFolder(controlPlane, {project: 'films', name: 'grading'})
      // Once Syncthing has scanned it, b reports the size of dailies with its refresh; the list comes back with sizes.
      await waitFor('dailies scanned on b', 30_000, async () => ((await devices.b.client.folderStatus(shared.folderId)).state === 'idle' ? true : undefined))
      const refreshed = await refreshFolders({home: devices.b.home, project: 'films', controlPlane, client: devices.b.client})
      expect(refreshed?.map((folder) => folder.name)).to.deep.equal(['dailies', 'grading'])
      const ignoreSize = (await stat(join(dir, '.vidsync-ignore'))).size
      expect(refreshed?.map((folder) => folder.sizeBytes)).to.deep.equal([ignoreSize, undefined])
      expect((await projectFolderSettings(controlPlane, {project: 'films'})).sizes).to.deep.equal({[shared.id]: ignoreSize})
      const {manifest: refreshedManifest} = await JoinedProject.find({home: devices.b.home})
      expect(refreshedManifest.folders?.map((folder) => folder.name)).to.deep.equal(['dailies', 'grading'])
      expect(refreshedManifest.syncLimits).to.deep.equal({upKiBps: null, downKiBps: null})
    } finally {
      await rm(deviceTokenPath(devices.b.home, 'films'), {force: true})
      await sql.close()
      await database.drop()
    }
  })
})
