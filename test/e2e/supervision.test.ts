import {randomBytes} from 'node:crypto'
import {chmod, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'
import {execa} from 'execa'

import {root} from '../helpers/cli.js'
import {runIn} from '../helpers/netns.js'
import {tempDir} from '../helpers/temp.js'
import {fileHash, Mesh, note, type RunResult, sha256, waitFor} from './helpers.js'

/**
 * What `status` says is true now, and what comes back by itself, for real between network
 * namespaces: a lighthouse that relays, device a and device b whose direct underlay path is cut
 * (blackhole routes), so that their tunnel runs through the relay; nebula and Syncthing killed
 * with -9 under their supervisors (`vidsync nebula service`, the agent), with the time to
 * recover measured; `up` run twice, concurrently and with a missing or too old Syncthing.
 */
describe('e2e: status tells what is true now, and crashed parts come back', function () {
  this.timeout(900_000)
  const mesh = new Mesh({project: 'health', cidr: '10.99.12.0/24', devices: ['a', 'b'], relay: true})
  const projectDir = (node: string) => join(mesh.homes[node] ?? '', 'projects', mesh.project)
  const underlay = (node: string) => mesh.lab?.nodes[node]?.ip ?? ''
  const route = (verb: 'add' | 'del', from: string, to: string) => execa('ip', ['-n', mesh.ns(from), 'route', verb, 'blackhole', `${underlay(to)}/32`])
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const peer = (status: RunResult, name: string): any => status.json.overlayPeers.find((entry: {name: string}) => entry.name === name)
  const arrives = async (from: string, to: string, name: string, timeoutMs: number) => {
    const data = randomBytes(64 * 1024)
    await writeFile(join(mesh.folders[from] ?? '', name), data)
    await mesh.scan(from)
    await waitFor(`${name} on ${to}`, async () => ((await fileHash(join(mesh.folders[to] ?? '', name), data.length)) === sha256(data) ? true : undefined), {timeoutMs, intervalMs: 100})
  }
  /** vidsync on a node with extra environment (a Syncthing that is missing or too old). */
  const withEnv = async (node: string, args: string[], env: Record<string, string>) => {
    const result = await runIn(mesh.ns(node), process.execPath, [`${root}bin/run.js`, ...args, '--home', mesh.homes[node] ?? '', '--json'], {env: {VIDSYNC_DATABASE_URL: '', ...env}, timeoutMs: 120_000})
    let json: unknown
    try {
      json = JSON.parse(result.stdout)
    } catch {
      json = undefined
    }
    return {exitCode: result.exitCode, json, stdout: result.stdout, stderr: result.stderr} as RunResult
  }

  before(async () => {
    await mesh.start()
    // a and b cannot reach each other's underlay address; both reach the lighthouse.
    await route('add', 'a', 'b')
    await route('add', 'b', 'a')
    await mesh.addDevices(['a', 'b'])
  })

  after(async () => {
    await mesh.stop()
  })

  it('status shows the lighthouse direct and the peer cut off underneath relayed, and the folder syncs through the relay', async () => {
    // b joined after a, so a is in b's manifest (a learns of b through Syncthing, not its manifest).
    let last: RunResult | undefined
    const status = await waitFor(
      'b to reach lh and a over the overlay',
      async () => {
        last = await mesh.must('b', ['status'])
        return peer(last, 'lh')?.reachable && peer(last, 'a')?.reachable && peer(last, 'a')?.path ? last : undefined
      },
      {timeoutMs: 90_000, intervalMs: 1000},
    ).catch(async (error: Error) => {
      const log = await readFile(join(projectDir('b'), 'nebula.log'), 'utf8').catch(() => '')
      const lines = log.split('\n').filter((line) => /relay|Relay|Handshake/.test(line)).slice(-15)
      throw new Error(`${error.message}\nlast status: ${JSON.stringify(last?.json?.overlayPeers)}\nb's nebula.log:\n${lines.join('\n')}`)
    })
    expect(status.json.overlayPeers).to.deep.equal([
      {name: 'lh', overlayIp: peer(status, 'lh').overlayIp, lighthouse: true, reachable: true, path: 'direct'},
      {name: 'a', overlayIp: mesh.overlayIps.a, lighthouse: false, reachable: true, path: 'relayed'},
    ])
    const human = await runIn(mesh.ns('b'), process.execPath, [`${root}bin/run.js`, 'status', '--home', mesh.homes.b ?? ''], {env: {VIDSYNC_DATABASE_URL: '', NO_COLOR: '1'}})
    expect(human.stdout).to.include('overlay peers 2/2 answer: lh (lighthouse) direct, a relayed')
    const log = await readFile(join(projectDir('b'), 'nebula.log'), 'utf8')
    note(`b's nebula.log on the tunnel to a: ${log.split('\n').find((line) => /Handshake message (received|sent)/.test(line) && line.includes(`vpnIp=${mesh.overlayIps.a}`) && /udpAddr="<nil>"|relay=/.test(line))?.replace(/ (fingerprint|issuer)=\w+/g, '')}`)
    // a's bundle predates b: b is listed all the same, by its certificate's name, once nebula handshook with it.
    const fromA = await mesh.must('a', ['status'])
    expect(peer(fromA, 'b')).to.deep.equal({name: 'b', overlayIp: mesh.overlayIps.b, lighthouse: false, reachable: true, path: 'relayed'})
    await arrives('a', 'b', 'through-relay.bin', 120_000)
  })

  it('a second `up` while everything runs changes nothing and says so', async () => {
    const before = await mesh.must('b', ['status'])
    const again = await mesh.must('b', ['up', '--detach', '--interval', '1s'])
    expect(again.json.alreadyUp).to.equal(true)
    expect(again.json.installed).to.deep.equal([])
    expect(again.json.nebula.pid).to.equal(before.json.overlay.pid)
    const human = await runIn(mesh.ns('b'), process.execPath, [`${root}bin/run.js`, 'up', '--detach', '--interval', '1s', '--home', mesh.homes.b ?? ''], {env: {VIDSYNC_DATABASE_URL: ''}})
    expect(human.exitCode).to.equal(0)
    expect(human.stdout.split('\n')[0]).to.equal(`health was already up (agent pid ${again.json.agent.pid}): nothing changed.`)
  })

  it('kill -9 of nebula under its service: restarted within seconds with a log line, and a peer’s file arrives within 60 s', async () => {
    // With the underlay path open again, the new tunnel may be direct or relayed: status says which.
    await route('del', 'a', 'b')
    await route('del', 'b', 'a')
    const before = await mesh.must('b', ['status'])
    const pid = before.json.overlay.pid as number
    expect(before.json.overlay.service, 'nebula runs under vidsync nebula service').to.be.an('object')
    const killedAt = Date.now()
    process.kill(pid, 'SIGKILL')
    const after = await waitFor(
      'a new nebula with the overlay address on b',
      async () => {
        const result = await mesh.on('b', ['status'])
        return result.json?.overlay?.pid && result.json.overlay.pid !== pid && result.json.overlay.tunUp ? result : undefined
      },
      {timeoutMs: 60_000, intervalMs: 100},
    )
    const restartMs = Date.now() - killedAt
    expect(after.json.overlay.service.restarts).to.equal(before.json.overlay.service.restarts + 1)
    await arrives('a', 'b', 'after-nebula-kill.bin', 60_000)
    const arrivedMs = Date.now() - killedAt
    const path = await waitFor('b to reach a', async () => peer(await mesh.must('b', ['status']), 'a')?.path ?? undefined, {timeoutMs: 30_000, intervalMs: 500})
    // The supervisor's own view, from its log's timestamps: the crash seen, and the new nebula up (tun device with the address).
    const log = await readFile(join(projectDir('b'), 'nebula-service.log'), 'utf8')
    const at = (pattern: RegExp) => Date.parse(log.split('\n').find((line) => pattern.test(line))?.split(' ')[0] ?? '')
    const ended = at(/nebula ended \(killed by SIGKILL\); restart \d+ in 0\.5s/)
    const running = at(new RegExp(`nebula running \\(pid ${after.json.overlay.pid}\\)`))
    expect(ended - killedAt, 'the crash is seen at once').to.be.lessThan(5000)
    expect(running - ended, 'nebula is up again within seconds').to.be.within(500, 15_000)
    note(
      `kill -9 of nebula (pid ${pid}): the service saw it after ${((ended - killedAt) / 1000).toFixed(1)} s and had a new nebula up ${((running - ended) / 1000).toFixed(1)} s later ` +
        `(status saw it ${(restartMs / 1000).toFixed(1)} s after the kill); a's new file arrived ${(arrivedMs / 1000).toFixed(1)} s after the kill; tunnel to a now ${path}`,
    )
    expect(restartMs).to.be.lessThan(30_000)
    expect(arrivedMs).to.be.lessThan(60_000)
  })

  it('kill -9 of Syncthing under the agent: restarted within seconds with a log line, and a peer’s file arrives within 60 s', async () => {
    const killedAt = Date.now()
    const {killed, restartMs} = await mesh.killSyncthing('b')
    await arrives('a', 'b', 'after-syncthing-kill.bin', 60_000)
    const arrivedMs = Date.now() - killedAt
    note(`kill -9 of Syncthing (pids ${killed.join(', ')}): answering again after ${(restartMs / 1000).toFixed(1)} s; a's new file arrived ${(arrivedMs / 1000).toFixed(1)} s after the kill`)
    expect(await readFile(join(projectDir('b'), 'agent.log'), 'utf8')).to.match(/syncthing ended \((killed by SIGKILL|exit code \d+)\); restart \d+ in/)
    expect(arrivedMs).to.be.lessThan(60_000)
  })

  it('kill -9 of the agent: without a service manager nothing restarts it, Syncthing keeps syncing, and `up` starts a new agent that adopts Syncthing', async () => {
    const before = await mesh.must('b', ['up', '--detach', '--interval', '1s'])
    expect(before.json.alreadyUp).to.equal(true)
    const agent = before.json.agent.pid as number
    process.kill(agent, 'SIGKILL')
    await waitFor('the agent to be gone', async () => ((await execa('kill', ['-0', String(agent)], {reject: false})).exitCode === 0 ? undefined : true), {timeoutMs: 10_000, intervalMs: 50})
    // Syncthing was the agent's child; it runs on by itself and still syncs (only the reconcile loop is gone).
    await arrives('a', 'b', 'agent-gone.bin', 60_000)
    const after = await mesh.must('b', ['up', '--detach', '--interval', '1s'])
    expect(after.json.alreadyUp).to.equal(false)
    expect(after.json.agent.pid).not.to.equal(agent)
    expect(after.json.syncthing.pid, 'the running Syncthing is adopted, not started twice').to.equal(before.json.syncthing.pid)
    note(`kill -9 of the agent (pid ${agent}): Syncthing ${before.json.syncthing.pid} kept syncing; \`up\` started agent ${after.json.agent.pid}, which adopted it`)
  })

  it('up with Syncthing missing or too old: one line, exit 8, nothing started; two concurrent ups: one runs, the other exits 4', async () => {
    await mesh.must('b', ['down'])
    const files = ['vidsync.json', 'nebula.yml']
    const saved = await Promise.all(files.map((name) => readFile(join(projectDir('b'), name), 'utf8')))

    const missing = await withEnv('b', ['up', '--detach'], {VIDSYNC_SYNCTHING: '/nonexistent/syncthing'})
    expect(missing.exitCode, missing.stdout).to.equal(8)
    expect(missing.json.error.message).to.match(/syncthing/)
    expect(missing.json.error.message).not.to.include('\n')
    const old = join(await tempDir(), 'syncthing')
    // The version line of Syncthing 1.18 (lib/build at v1.18.6); vidsync supports 1.19 to 2.x.
    await writeFile(old, '#!/bin/sh\necho \'syncthing v1.18.6 "Fermium Flea" (go1.17.6 linux-amd64) debian@debian 2022-01-15 00:00:00 UTC\'\n')
    await chmod(old, 0o755)
    const tooOld = await withEnv('b', ['up', '--detach'], {VIDSYNC_SYNCTHING: old})
    expect(tooOld.exitCode, tooOld.stdout).to.equal(8)
    expect(tooOld.json.error.message).to.match(/syncthing 1\.18\.6 .* is too old: vidsync supports/)
    note(`missing: ${missing.json.error.message}; too old: ${tooOld.json.error.message}`)
    const status = await mesh.must('b', ['status'])
    expect(status.json.overlay.running, 'nebula was not started').to.equal(false)
    expect(status.json.syncthing.reachable).to.equal(false)
    expect(await Promise.all(files.map((name) => readFile(join(projectDir('b'), name), 'utf8')))).to.deep.equal(saved)

    const both = await Promise.all([mesh.on('b', ['up', '--detach', '--interval', '1s'], 120_000), mesh.on('b', ['up', '--detach', '--interval', '1s'], 120_000)])
    const codes = both.map((result) => result.exitCode).sort()
    expect(codes, both.map((result) => result.stdout).join('\n')).to.deep.equal([0, 4])
    const loser = both.find((result) => result.exitCode === 4)
    expect(loser?.json.error.message).to.match(/^another `vidsync up` for health is running \(pid \d+\): wait for it to finish/)
    const up = await mesh.must('b', ['status'])
    expect(up.json.overlay).to.include({running: true, tunUp: true})
    expect(up.json.syncthing.reachable).to.equal(true)
    await arrives('a', 'b', 'after-second-up.bin', 60_000)
  })

  it('after the lighthouse stops, status says it is unreachable', async () => {
    await mesh.must('lh', ['nebula', 'down'])
    const status = await mesh.must('a', ['status'])
    expect(status.json.overlay).to.include({running: true, lighthouseReachable: false})
    expect(peer(status, 'lh')).to.include({reachable: false, path: null})
  })
})
