import {randomBytes} from 'node:crypto'
import {chmod, copyFile, mkdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'
import {execa} from 'execa'

import {root} from '../helpers/cli.js'
import {runIn} from '../helpers/netns.js'
import {fileHash, Mesh, note, sha256, waitFor} from './helpers.js'

/** The real user ID that owns a process (Linux /proc/<pid>/status, "Uid: real effective ..."). */
async function processUid(pid: number): Promise<number | undefined> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  const uid = /^Uid:\s+(\d+)/m.exec(status)?.[1]
  return uid === undefined ? undefined : Number(uid)
}

/**
 * The README's flow for a person who is not root, for real: a throw-away user with sudo runs
 * `key create`, `join`, `sudo vidsync up`, `sync add` in a network namespace, against a lighthouse
 * and a second device run as root the way the other end-to-end tests run them. Being no root, the
 * user is also refused a directory it cannot write (root writes anywhere, so only here can it be tested).
 */
describe('e2e: a non-root user follows the README with sudo', function () {
  this.timeout(600_000)
  const user = `vst${process.pid}`
  const mesh = new Mesh({project: 'sudo', cidr: '10.99.11.0/24', devices: ['a', 'u']})
  let home = ''
  /** A new user's default state home: no ~/.vidsync, no XDG_STATE_HOME in `env -i`, so ~/.local/state/vidsync. */
  const state = '.local/state/vidsync'
  let uid = 0
  let gid = 0
  const sudoers = `/etc/sudoers.d/${user}`

  /** vidsync as the user inside the device's namespace: a clean environment with only HOME and PATH, no --home. */
  const asUser = async (args: string[], options: {sudo?: boolean; timeoutMs?: number} = {}) => {
    const node = [process.execPath, `${root}bin/run.js`, ...args, '--json']
    const command = ['runuser', '-u', user, '--', 'env', '-i', `HOME=${home}`, `USER=${user}`, 'PATH=/usr/local/bin:/usr/bin:/bin', ...(options.sudo ? ['sudo', '-n'] : []), ...node]
    const result = await runIn(mesh.ns('u'), command[0] ?? '', command.slice(1), {timeoutMs: options.timeoutMs ?? 120_000})
    let json: any // eslint-disable-line @typescript-eslint/no-explicit-any
    try {
      json = JSON.parse(result.stdout)
    } catch {
      json = undefined
    }
    return {exitCode: result.exitCode, json, stdout: result.stdout, stderr: result.stderr}
  }
  const mustAsUser = async (args: string[], options: {sudo?: boolean; timeoutMs?: number} = {}) => {
    const result = await asUser(args, options)
    expect(result.exitCode, `${options.sudo ? 'sudo ' : ''}vidsync ${args.join(' ')}: ${result.stdout} ${result.stderr}`).to.equal(0)
    return result
  }

  before(async () => {
    const base = await execa('mktemp', ['-d', '/tmp/vidsync-sudo-XXXXXX'])
    await chmod(base.stdout, 0o755)
    home = join(base.stdout, user)
    await execa('useradd', ['--create-home', '--home-dir', home, '--shell', '/bin/sh', '--user-group', user])
    uid = Number((await execa('id', ['-u', user])).stdout)
    gid = Number((await execa('id', ['-g', user])).stdout)
    await mesh.start()
    mesh.homes.u = join(home, state) // for Mesh.rest and Mesh.stop: the user's default home
    await mesh.addDevice('a')
  })

  after(async () => {
    // The user's own processes first (by their PIDs in the namespace), then the mesh, then the user.
    await asUser(['down']).catch(() => undefined)
    await mesh.stop()
    await rm(sudoers, {force: true})
    await rm('/etc/vidsync/sudo', {recursive: true, force: true})
    await execa('userdel', ['--remove', user], {reject: false})
    if (home) await rm(join(home, '..'), {recursive: true, force: true})
  })

  it('key create, join, sudo vidsync up, sync add: the file arrives and belongs to the user', async () => {
    const key = await mustAsUser(['key', 'create'])
    expect(key.json.publicKeyPath.startsWith(`${join(home, state)}/`), key.json.publicKeyPath).to.equal(true) // the default home of a new user
    const {deviceId} = (await mustAsUser(['sync', 'id'])).json
    const bundle = await mesh.register('u', {publicKeyPath: key.json.publicKeyPath, deviceId})
    const mine = join(home, 'u.zip')
    await copyFile(bundle, mine)
    await execa('chown', [`${uid}:${gid}`, mine])
    await mustAsUser(['join', mine, '--ca-fingerprint', mesh.caFingerprint]) // the fingerprint the operator's `ca show` gives

    // Without sudo rights, `up` cannot get the one elevated step: one clear line, exit 9, nothing started.
    const refused = await asUser(['up', '--detach'])
    expect(refused.exitCode, refused.stdout).to.equal(9)
    expect(refused.json.error.message).to.equal('nebula needs administrator rights once, to install its service, and none were granted')
    expect(refused.json.error.hint).to.equal('run `sudo vidsync up` (an elevated prompt on Windows)')
    expect((await asUser(['status'])).json.overlay.running).to.equal(false)

    await writeFile(sudoers, `${user} ALL=(root) NOPASSWD: ALL\n`, {mode: 0o440})
    const up = await mustAsUser(['up', '--detach', '--interval', '1s'], {sudo: true})
    expect(up.json.user).to.equal(user)
    // No systemd as PID 1 here: vidsync supervises nebula (as root) and the agent (as the user) itself, and says so.
    expect(up.json.installed).to.have.length(3)
    expect(up.json.installed[0]).to.match(/^nebula supervisor for sudo \(pid \d+; systemd is not the init system here \(PID 1 is .+\): vidsync supervises nebula and the agent itself; it does not start at boot\)$/)
    // sudo drops the environment: the machine's own system directory, root-only.
    expect(up.json.installed[1]).to.equal('overlay files for sudo in /etc/vidsync/sudo (readable by root only)')
    for (const name of ['nebula.yml', 'ca.crt', 'node.crt', 'node.key']) expect((await stat(join('/etc/vidsync/sudo', name))).mode & 0o777, name).to.equal(0o600)
    expect((await stat('/etc/vidsync/sudo')).mode & 0o777).to.equal(0o700)
    expect(up.json.installed[2]).to.match(new RegExp(`^agent for sudo as ${user} \\(pid \\d+; systemd is not the init system here .*; it does not start at login\\)$`))
    note(`sudo vidsync up installed: ${up.json.installed.join(' | ')}`)
    mesh.overlayIps.u = up.json.overlayIp

    // Bad input: a directory this user cannot write (root's), to share or to accept an offer into,
    // or to create one in: one line, exit 2 (invalid input), nothing in Syncthing, nothing on disk.
    const locked = join(home, '..', 'locked')
    await mkdir(locked, {mode: 0o755})
    const folderCount = async () => (await mesh.rest('u', 'GET', '/rest/config/folders')).length
    const before = await folderCount()
    const notWritable = `${locked} is not writable by this user: Syncthing could not write what peers send`
    const add = await asUser(['sync', 'add', locked])
    expect([add.exitCode, add.json?.error?.message], add.stdout).to.deep.equal([2, notWritable])
    await waitFor('shared offered to the user', async () => {
      const {json} = await asUser(['sync', 'list'])
      return json?.projectFolders?.find((folder: {name: string; state: string}) => folder.name === 'shared' && folder.state === 'offered')
    }, {timeoutMs: 120_000, intervalMs: 1000})
    const accept = await asUser(['sync', 'accept', 'shared', locked])
    expect([accept.exitCode, accept.json?.error?.message], accept.stdout).to.deep.equal([2, notWritable])
    const inside = join(locked, 'shared')
    const acceptNew = await asUser(['sync', 'accept', 'shared', inside])
    expect([acceptNew.exitCode, acceptNew.json?.error?.message], acceptNew.stdout).to.deep.equal([2, `cannot create ${inside}: ${locked} is not writable by this user`])
    expect(await stat(inside).catch(() => undefined)).to.equal(undefined)
    expect(await folderCount()).to.equal(before)

    const shared = join(home, 'shared')
    await mkdir(shared)
    await execa('chown', [`${uid}:${gid}`, shared])
    await mustAsUser(['sync', 'add', shared])
    mesh.folders.u = shared

    const data = randomBytes(256 * 1024)
    await writeFile(join(mesh.folders.a ?? '', 'from-a.bin'), data)
    await mesh.scan('a')
    await waitFor('from-a.bin on the user device', async () => ((await fileHash(join(shared, 'from-a.bin'), data.length)) === sha256(data) ? true : undefined), {timeoutMs: 120_000})

    // The synced file, the user's state and Syncthing belong to the user; only nebula runs as root.
    expect((await stat(join(shared, 'from-a.bin'))).uid).to.equal(uid)
    // ~/.local and ~/.local/state too: created by root under sudo when the user had none, they are the user's.
    for (const path of ['.local', '.local/state', state, `${state}/syncthing/config.xml`, `${state}/projects/sudo/agent.log`, `${state}/projects/sudo/nebula.log`]) {
      expect((await stat(join(home, path))).uid, path).to.equal(uid)
    }
    const status = await mustAsUser(['status'])
    expect(status.json.overlay).to.include({running: true, tunUp: true})
    expect(status.json.syncthing.reachable).to.equal(true)
    const syncthingPid = Number((await readFile(join(home, state, 'syncthing', 'syncthing.pid'), 'utf8')).split('\n')[0])
    expect(await processUid(syncthingPid)).to.equal(uid)
    expect(await processUid(status.json.overlay.pid)).to.equal(0)
    // status asks the service manager where one runs; here it says none does and that the supervisors answer.
    expect(status.json.services.map((service: {role: string; manager: null; running: boolean}) => [service.role, service.manager, service.running])).to.deep.equal([
      ['nebula', null, true],
      ['agent', null, true],
    ])
    expect(status.json.services[0].fallback).to.match(/^systemd is not the init system here/)
  })

  it('after kill -9 of its Syncthing, the agent has it running again within seconds, and a peer’s file arrives', async () => {
    const killedAt = Date.now()
    const {killed, pid: running, restartMs} = await mesh.killSyncthing('u')
    expect(await processUid(running)).to.equal(uid)
    const data = randomBytes(64 * 1024)
    await writeFile(join(mesh.folders.a ?? '', 'after-kill.bin'), data)
    await mesh.scan('a')
    await waitFor('after-kill.bin on the user device', async () => ((await fileHash(join(mesh.folders.u ?? '', 'after-kill.bin'), data.length)) === sha256(data) ? true : undefined), {
      timeoutMs: 120_000,
      intervalMs: 100,
    })
    const arrivedMs = Date.now() - killedAt
    note(`kill -9 of Syncthing (pids ${killed.join(', ')}): running and answering again after ${(restartMs / 1000).toFixed(1)} s, a peer's new file arrived ${(arrivedMs / 1000).toFixed(1)} s after the kill`)
    const log = await readFile(join(home, state, 'projects', 'sudo', 'agent.log'), 'utf8')
    expect(log).to.match(/syncthing ended \(killed by SIGKILL|syncthing ended \(exit code/)
    // Bounded by meaning: the agent's first restart delay is 0.5 s; Syncthing itself starts in a few seconds.
    expect(restartMs).to.be.lessThan(30_000)
  })

  it('status and down as the user see and stop everything, without sudo', async () => {
    const status = await mustAsUser(['status'])
    expect(status.json.overlay).to.include({running: true, lighthouseReachable: true})
    expect(status.json.overlayPeers).to.deep.include({name: 'a', overlayIp: mesh.overlayIps.a, lighthouse: false, reachable: true, path: 'direct'})

    // What is true now, not what a log once said: with the lighthouse stopped, status says so.
    await mesh.must('lh', ['nebula', 'down'])
    const alone = await mustAsUser(['status'])
    expect(alone.json.overlay).to.include({running: true, lighthouseReachable: false})

    // Removing the services needs sudo: one line, exit 9, and everything keeps running.
    const refused = await asUser(['down', '--uninstall'])
    expect(refused.exitCode, refused.stdout).to.equal(9)
    expect(refused.json.error.message).to.equal('removing the nebula service needs administrator rights; nothing was stopped or removed')
    expect((await mustAsUser(['status'])).json.overlay.running).to.equal(true)

    const down = await mustAsUser(['down'])
    expect(down.json).to.include({loopStopped: true})
    expect(down.json.syncthing.stopped).to.equal(true)
    expect(down.json.nebula.stopped).to.equal(true)
    await waitFor('no process left in the user device namespace', async () => ((await execa('ip', ['netns', 'pids', mesh.ns('u')])).stdout.trim() === '' ? true : undefined), {
      timeoutMs: 30_000,
    })
    const after = await mustAsUser(['status'])
    expect(after.json.overlay.running).to.equal(false)
    expect(after.json.syncthing.reachable).to.equal(false)
  })
})
