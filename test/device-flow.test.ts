import {randomBytes} from 'node:crypto'
import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'

import {pollUntil} from '../src/lib/poll.js'
import {Mesh, type RunResult, sha256} from './e2e/helpers.js'

/**
 * The end user's whole path with real nebula and syncthing: two devices joined from bundles,
 * each in its own network namespace, exchange a file over the overlay.
 */
describe('end user: join, up, sync a folder over the overlay, status, doctor', function () {
  this.timeout(300_000)
  const mesh = new Mesh({project: 'e2e', cidr: '10.99.8.0/24', devices: ['a', 'b']})
  const folders = mesh.folders
  const on = (node: string, args: string[]) => mesh.on(node, args)

  before(async () => {
    await mesh.start()
  })

  after(async () => {
    await mesh.stop()
  })

  for (const node of ['a', 'b']) {
    it(`registers and brings up device ${node}`, async () => {
      const {up, added} = await mesh.addDevice(node)
      expect(up.json.nebula).to.include({running: true, tunUp: true, lighthouseReachable: true})
      expect(up.json.syncthing.listenAddresses).to.deep.equal([`tcp://${up.json.overlayIp}:22000`])
      expect(added.json.folderId).to.equal(mesh.folderId).and.match(/^e2e\.[0-9a-f]{12}$/)
    })
  }

  it('syncs a file from a to b over the overlay with an identical sha256', async () => {
    const data = randomBytes(4 * 1024 * 1024)
    await writeFile(join(folders.a ?? '', 'footage.bin'), data)
    let received: Buffer | undefined
    const arrived = async () => {
      received = await readFile(join(folders.b ?? '', 'footage.bin')).catch(() => undefined)
      return received?.length === data.length && sha256(received) === sha256(data)
    }
    await pollUntil(arrived, {timeoutMs: 120_000, intervalMs: 500, onTimeout: () => false})
    expect(received && sha256(received)).to.equal(sha256(data))
  })

  it('shows both ends connected over overlay addresses and the folder complete', async () => {
    let status: RunResult['json']
    const complete = async () => {
      status = (await on('b', ['status'])).json
      return status.syncthing.folders[0]?.completion === 100
    }
    await pollUntil(complete, {timeoutMs: 60_000, intervalMs: 500, onTimeout: () => false})
    expect(status.overlay).to.include({running: true, tunUp: true})
    const peer = status.syncthing.peers.find((candidate: {connected: boolean}) => candidate.connected)
    expect(peer?.address).to.match(/^10\.99\.8\.\d+:\d+$/)
    expect(status.syncthing.folders[0]).to.include({folderId: mesh.folderId, completion: 100})
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
