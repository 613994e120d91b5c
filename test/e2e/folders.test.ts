import {randomBytes} from 'node:crypto'
import {mkdir, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'

import {fileHash, Mesh, sha256, waitFor} from './helpers.js'

const note = (text: string) => process.stdout.write(`      · ${text}\n`)

/**
 * Project folders (issue 13) end to end, with real nebula and Syncthing in network namespaces and
 * the CLI as the operator and users run it: a and b share differently named directories as the
 * project folder "footage"; "renders" (auto-accept) reaches the others on its own; c joins later in
 * group viewers, finds footage offered, accepts it (receive-only) and never sends its local edits.
 */
describe('e2e: project folders across devices with differently named directories', function () {
  this.timeout(600_000)
  const mesh = new Mesh({project: 'pf', cidr: '10.99.13.0/24', devices: ['a', 'b', 'c'], ownHomes: true})
  const dirs: Record<string, string> = {}
  let footageId = ''
  let rendersId = ''

  async function arrives(node: string, name: string, data: Buffer, timeoutMs = 90_000): Promise<void> {
    const hash = sha256(data)
    await waitFor(`${name} on ${node}`, async () => ((await fileHash(join(dirs[node] ?? '', name), data.length)) === hash ? true : undefined), {timeoutMs})
  }

  const scan = (node: string) => mesh.rest(node, 'POST', `/rest/db/scan?folder=${encodeURIComponent(footageId)}`)

  before(async function () {
    this.timeout(300_000)
    await mesh.start()
    const footage = await mesh.admin('folder', 'create', mesh.project, 'footage')
    footageId = `${mesh.project}.${footage.id}`
    rendersId = `${mesh.project}.${(await mesh.admin('folder', 'create', mesh.project, 'renders', '--auto-accept')).id}`
    const rule = await mesh.admin('folder', 'access', mesh.project, 'footage', '--group', 'viewers', '--mode', 'receive-only')
    expect(rule.access).to.deep.equal([{kind: 'group', subject: 'viewers', mode: 'receive-only'}])
    await mesh.addDevices(['a', 'b'])
  })

  after(async () => {
    await mesh.stop()
  })

  afterEach(async function () {
    if (this.currentTest?.state === 'failed') process.stdout.write(`${await mesh.diagnose().catch((error: Error) => error.message)}\n`)
  })

  it('a and b share ~/dataA/Footage and ~/Projects/dataB as one folder', async () => {
    dirs.a = join(mesh.homes.a ?? '', 'dataA', 'Footage')
    dirs.b = join(mesh.homes.b ?? '', 'Projects', 'dataB')
    await mkdir(dirs.a, {recursive: true})
    await mkdir(dirs.b, {recursive: true})
    const addedA = (await mesh.must('a', ['sync', 'add', dirs.a, '--name', 'footage'])).json
    const addedB = (await mesh.must('b', ['sync', 'add', dirs.b, '--name', 'footage'])).json
    expect(addedA).to.include({folderId: footageId, name: 'footage', mode: 'send-receive', type: 'sendreceive'})
    expect(addedB.folderId).to.equal(footageId)
    const data = randomBytes(4 * 1024 * 1024)
    const started = Date.now()
    await writeFile(join(dirs.a, 'take1.mov'), data)
    await scan('a')
    await arrives('b', 'take1.mov', data)
    note(`4 MiB from a to b through the project folder in ${((Date.now() - started) / 1000).toFixed(1)} s`)
    const listed = (await mesh.must('b', ['sync', 'list'])).json
    expect(listed.projectFolders.find((folder: {name: string}) => folder.name === 'footage')).to.include({state: 'shared', path: dirs.b, mode: 'send-receive'})

    // renders is auto-accept: b takes it on its own into ~/vidsync/<project>/renders.
    const renders = join(mesh.homes.a ?? '', 'Renders')
    await mkdir(renders)
    await writeFile(join(renders, 'final.mp4'), 'render')
    await mesh.must('a', ['sync', 'add', renders, '--name', 'renders'])
    const accepted = await waitFor('renders accepted on b', async () => {
      const folder = await mesh.rest('b', 'GET', `/rest/config/folders/${encodeURIComponent(rendersId)}`).catch(() => undefined)
      return folder?.path ? folder : undefined
    }, {timeoutMs: 60_000, intervalMs: 1000})
    expect(accepted).to.include({path: join(mesh.homes.b ?? '', 'vidsync', mesh.project, 'renders'), type: 'sendreceive'})
  })

  it('c joins later as a viewer: renders arrives on its own, footage is offered and accepted receive-only, c\'s edits are never sent', async () => {
    const bundle = await mesh.register('c', await mesh.prepare('c'), '--groups', 'viewers')
    await mesh.bringUp('c', bundle)
    await waitFor('renders accepted on c', async () => {
      const folder = await mesh.rest('c', 'GET', `/rest/config/folders/${encodeURIComponent(rendersId)}`).catch(() => undefined)
      return folder?.path ? folder : undefined
    }, {timeoutMs: 120_000, intervalMs: 1000})
    const offered = await waitFor('footage offered on c', async () => {
      const {json} = await mesh.must('c', ['sync', 'list'])
      const footage = json.projectFolders.find((folder: {name: string}) => folder.name === 'footage')
      return footage?.state === 'offered' ? footage : undefined
    }, {timeoutMs: 120_000, intervalMs: 1000})
    expect(offered).to.include({mode: 'receive-only', path: null})
    const accepted = (await mesh.must('c', ['sync', 'accept', 'footage'])).json
    dirs.c = join(mesh.homes.c ?? '', 'vidsync', mesh.project, 'footage')
    expect(accepted).to.include({path: dirs.c, type: 'receiveonly', folderId: footageId})
    const take1 = await fileHash(join(dirs.a ?? '', 'take1.mov'), 4 * 1024 * 1024)
    await waitFor('take1.mov on c', async () => ((await fileHash(join(dirs.c ?? '', 'take1.mov'), 4 * 1024 * 1024)) === take1 ? true : undefined), {timeoutMs: 120_000})

    // A local edit on c: counted by `sync list`, never sent to a or b.
    await writeFile(join(dirs.c, 'take1.mov'), 'edited on the viewer')
    await writeFile(join(dirs.c, 'notes.txt'), 'local only')
    await scan('c')
    const listed = await waitFor('c lists its local changes', async () => {
      const {json} = await mesh.must('c', ['sync', 'list'])
      const footage = json.projectFolders.find((folder: {name: string}) => folder.name === 'footage')
      return footage?.localChanges > 0 ? footage : undefined
    }, {timeoutMs: 30_000, intervalMs: 1000})
    expect(listed).to.include({state: 'shared', mode: 'receive-only'})
    await sleep(5000)
    expect(await fileHash(join(dirs.a ?? '', 'take1.mov'), 4 * 1024 * 1024)).to.equal(take1)
    expect(await fileHash(join(dirs.b ?? '', 'notes.txt'), 10)).to.equal(undefined)
    // Reverting brings the project's version back.
    await mesh.must('c', ['sync', 'revert', 'footage'])
    await waitFor('take1.mov restored on c', async () => ((await fileHash(join(dirs.c ?? '', 'take1.mov'), 4 * 1024 * 1024)) === take1 ? true : undefined), {timeoutMs: 60_000})

    // Bad input: one line, documented exit codes, nothing changed in Syncthing.
    const before = (await mesh.rest('c', 'GET', '/rest/config/folders')).length
    const gone = await mesh.on('c', ['sync', 'accept', 'shared-nope'])
    expect(gone.exitCode).to.equal(3)
    expect(gone.json.error.message).to.match(/has no folder "shared-nope"/)
    const twice = await mesh.on('c', ['sync', 'accept', 'footage'])
    expect(twice.exitCode).to.equal(4)
    const badName = await mesh.on('c', ['sync', 'add', mesh.homes.c ?? '', '--name', 'Föö/bar'])
    expect(badName.exitCode).to.equal(2)
    expect(badName.json.error.message).to.match(/^invalid folder name/)
    expect((await mesh.rest('c', 'GET', '/rest/config/folders')).length).to.equal(before)
  })
})
