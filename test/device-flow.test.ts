import {createHash, randomBytes} from 'node:crypto'
import {mkdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'

import {cli, root} from './helpers/cli.js'
import {createLab, type Lab, removeLab, runIn} from './helpers/netns.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * The end user's whole path with real nebula and syncthing: two devices joined from bundles,
 * each in its own network namespace, exchange a file over the overlay.
 */
describe('end user: join, up, sync a folder over the overlay, status, doctor', function () {
  this.timeout(300_000)
  let lab: Lab | undefined
  let operator: string
  const homes: Record<string, string> = {}
  const folders: Record<string, string> = {}

  /** The built CLI inside a lab node's namespace, as that device's user runs it. */
  async function on(node: string, args: string[], timeoutMs = 60_000) {
    const ns = lab?.nodes[node]?.ns ?? ''
    const result = await runIn(ns, process.execPath, [`${root}bin/run.js`, ...args, '--home', homes[node] ?? '', '--json'], {
      env: {VIDSYNC_DATABASE_URL: ''},
      timeoutMs,
    })
    return {exitCode: result.exitCode, json: result.stdout ? JSON.parse(result.stdout) : undefined, stderr: result.stderr}
  }

  const admin = async (...args: string[]) => {
    const result = await cli([...args, '--json'], {VIDSYNC_HOME: operator})
    expect(result.exitCode, `${args.join(' ')}: ${result.stdout} ${result.stderr}`).to.equal(0)
    return result.json
  }

  before(async () => {
    lab = await createLab(['lh', 'a', 'b'])
    operator = await tempDir()
    for (const node of ['lh', 'a', 'b']) homes[node] = await tempDir()
    await admin('ca', 'init')
    await admin('project', 'create', 'e2e', '--cidr', '10.99.8.0/24', '--quarantine', '1m')
    await admin('pool', 'populate', 'e2e')
    await admin('lighthouse', 'add', 'e2e', '--name', 'lh', '--endpoint', `${lab.nodes.lh?.ip}:4242`, '--generate-key', '--out', join(operator, 'lh.zip'))
    expect((await on('lh', ['join', join(operator, 'lh.zip')])).exitCode).to.equal(0)
    expect((await on('lh', ['nebula', 'up', '--detach'])).exitCode).to.equal(0)
  })

  after(async () => {
    for (const node of ['a', 'b']) if (lab) await on(node, ['down']).catch(() => undefined)
    if (lab) await on('lh', ['nebula', 'down']).catch(() => undefined)
    await removeLab(lab)
    await removeTempDirs()
  })

  for (const node of ['a', 'b']) {
    it(`registers and brings up device ${node}`, async () => {
      const key = await on(node, ['key', 'create'])
      expect(key.exitCode).to.equal(0)
      const {deviceId} = (await on(node, ['sync', 'id'])).json
      const bundle = join(operator, `${node}.zip`)
      await admin('device', 'register', 'e2e', '--name', node, '--public-key', key.json.publicKeyPath, '--syncthing-id', deviceId, '--out', bundle)
      const joined = await on(node, ['join', bundle])
      expect(joined.exitCode, joined.stderr).to.equal(0)
      const up = await on(node, ['up', '--detach', '--interval', '1s'])
      expect(up.exitCode, JSON.stringify(up.json)).to.equal(0)
      expect(up.json.nebula).to.include({running: true, tunUp: true, lighthouseReachable: true})
      expect(up.json.syncthing.listenAddresses).to.deep.equal([`tcp://${up.json.overlayIp}:22000`])
      folders[node] = join(homes[node] ?? '', 'shared')
      await mkdir(folders[node] ?? '')
      const added = await on(node, ['sync', 'add', folders[node] ?? ''])
      expect(added.exitCode, added.stderr).to.equal(0)
      expect(added.json.folderId).to.equal('e2e-shared')
    })
  }

  it('syncs a file from a to b over the overlay with an identical sha256', async () => {
    const data = randomBytes(4 * 1024 * 1024)
    await writeFile(join(folders.a ?? '', 'footage.bin'), data)
    const deadline = Date.now() + 120_000
    let received: Buffer | undefined
    while (Date.now() < deadline) {
      received = await readFile(join(folders.b ?? '', 'footage.bin')).catch(() => undefined)
      if (received?.length === data.length && sha256(received) === sha256(data)) break
      await sleep(500)
    }
    expect(received && sha256(received)).to.equal(sha256(data))
  })

  it('shows both ends connected over overlay addresses and the folder complete', async () => {
    const deadline = Date.now() + 60_000
    let status = (await on('b', ['status'])).json
    while (Date.now() < deadline && status.syncthing.folders[0]?.completion !== 100) {
      await sleep(500)
      status = (await on('b', ['status'])).json
    }
    expect(status.overlay).to.include({running: true, tunUp: true})
    const peer = status.syncthing.peers.find((candidate: {connected: boolean}) => candidate.connected)
    expect(peer?.address).to.match(/^10\.99\.8\.\d+:\d+$/)
    expect(status.syncthing.folders[0]).to.include({folderId: 'e2e-shared', completion: 100})
    const doctor = await on('b', ['doctor'])
    expect(doctor.exitCode, JSON.stringify(doctor.json)).to.equal(0)
    expect(doctor.json.ok).to.equal(true)
  })

  it('down stops the loop, Syncthing and Nebula, and doctor says what to fix', async () => {
    const down = await on('b', ['down'])
    expect(down.exitCode).to.equal(0)
    expect(down.json).to.deep.include({loopStopped: true})
    expect(down.json.nebula.stopped).to.equal(true)
    const doctor = await on('b', ['doctor'])
    expect(doctor.exitCode).to.equal(1)
    const failed = doctor.json.checks.filter((check: {ok: boolean}) => !check.ok).map((check: {name: string}) => check.name)
    expect(failed).to.include('nebula running')
    expect(failed).to.include('syncthing answers')
  })
})
