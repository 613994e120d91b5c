import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'

import {readCert} from '../src/lib/pki/cert.js'
import {pollUntil} from '../src/lib/poll.js'
import {cli, root} from './helpers/cli.js'
import {createLab, type Lab, removeLab, runIn, spawnIn} from './helpers/netns.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

/**
 * Bulk renewal on the embedded backend with real nebula 1.6.1 between network namespaces: the
 * operator renews the expiring devices into a directory, each device joins its bundle while
 * nebula runs, and nebula reloads the certificate (SIGHUP) without a restart and without
 * dropping a TCP connection that runs across the reloads. Run under `flock /tmp/vidsync-netns.lock`.
 */
describe('renewal while running (real nebula between network namespaces)', function () {
  this.timeout(240_000)
  let lab: Lab | undefined
  let operator: string
  let out: string
  const homes: Record<string, string> = {}
  const admin = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: operator})

  async function inNode(node: string, args: string[]) {
    const result = await runIn(lab?.nodes[node]?.ns ?? '', process.execPath, [`${root}bin/run.js`, ...args, '--home', homes[node] ?? '', '--json'], {env: {VIDSYNC_DATABASE_URL: ''}})
    return {exitCode: result.exitCode, stderr: result.stderr, json: result.stdout ? JSON.parse(result.stdout) : undefined}
  }

  before(async () => {
    operator = await tempDir()
    out = await tempDir()
    for (const node of ['a', 'b', 'c']) homes[node] = await tempDir()
    for (const args of [['ca', 'init'], ['project', 'create', 'films', '--cidr', '10.95.0.0/24'], ['pool', 'populate', 'films']]) {
      const result = await admin(...args)
      expect(result.exitCode, result.stdout).to.equal(0)
    }
    const fingerprint = (await admin('ca', 'show')).json.fingerprint as string
    lab = await createLab(['a', 'b', 'c'])
    const lighthouse = await admin('lighthouse', 'add', 'films', '--name', 'a', '--endpoint', `${lab.nodes.a?.ip}:4242`, '--generate-key', '--out', join(out, 'a.zip'))
    expect(lighthouse.exitCode, lighthouse.stdout).to.equal(0)
    for (const node of ['b', 'c']) {
      expect((await cli(['key', 'create', '--json'], {VIDSYNC_HOME: homes[node] ?? ''})).exitCode).to.equal(0)
      const registered = await admin('device', 'register', 'films', '--name', node, '--public-key', join(homes[node] ?? '', 'keys', 'node.pub'), '--duration', '2h', '--out', join(out, `${node}.zip`))
      expect(registered.exitCode, registered.stdout).to.equal(0)
    }
    for (const node of ['a', 'b', 'c']) {
      const joined = await cli(['join', join(out, `${node}.zip`), '--ca-fingerprint', fingerprint, '--json'], {VIDSYNC_HOME: homes[node] ?? ''})
      expect(joined.exitCode, joined.stdout).to.equal(0)
      const up = await inNode(node, ['nebula', 'up', '--detach'])
      expect(up.exitCode, up.stderr).to.equal(0)
    }
  })

  after(async () => {
    // removeLab ends every process in the namespaces by PID, then deletes them by name.
    await removeLab(lab)
    await removeTempDirs()
  })

  it('renews the expiring devices in bulk; each joins its bundle and nebula reloads it without a restart or a dropped connection', async () => {
    // c echoes lines; b sends one every 100 ms for 12 s over one TCP connection through the overlay.
    const server = spawnIn(lab?.nodes.c?.ns ?? '', process.execPath, [
      '-e',
      "const server = require('net').createServer((s) => { s.pipe(s); s.on('close', () => server.close()) }).listen(22000, '10.95.0.3', () => console.log('listening'))",
    ])
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('echo server did not start')), 10_000)
      server.stdout?.once('data', () => {
        clearTimeout(timer)
        resolve()
      })
    })
    const client = runIn(lab?.nodes.b?.ns ?? '', process.execPath, [
      '-e',
      `const s = require('net').connect(22000, '10.95.0.3'); let sent = 0, got = ''
       s.on('error', (e) => { console.log('error ' + e.message); process.exit(3) })
       s.on('data', (c) => (got += c))
       const t = setInterval(() => { s.write('x' + sent++ + '\\n'); if (sent === 120) { clearInterval(t); setTimeout(() => { console.log(JSON.stringify({sent, got: got.split('\\n').filter(Boolean).length})); s.end() }, 2000) } }, 100)`,
    ], {timeoutMs: 60_000})
    const before = Object.fromEntries(await Promise.all(['b', 'c'].map(async (node) => [node, (await inNode(node, ['nebula', 'status'])).json.pid as number])))

    const renewed = await admin('device', 'renew', 'films', '--expiring-within', '3h', '--out-dir', join(out, 'renewed'))
    expect(renewed.exitCode, renewed.stdout).to.equal(0)
    expect(renewed.json.renewed.map((r: {device: {name: string}}) => r.device.name)).to.deep.equal(['b', 'c'])
    for (const node of ['b', 'c']) {
      const bundle = join(out, 'renewed', `films-${node}.zip`)
      const installedBefore = await readCert(join(homes[node] ?? '', 'projects', 'films', 'node.crt'))
      const joined = await cli(['join', bundle, '--json'], {VIDSYNC_HOME: homes[node] ?? ''})
      expect(joined.exitCode, joined.stdout).to.equal(0)
      expect(joined.json).to.include({changed: true, nebulaReloaded: true})
      const installed = await readCert(join(homes[node] ?? '', 'projects', 'films', 'node.crt'))
      expect(installed.fingerprint).to.not.equal(installedBefore.fingerprint)
      expect(installed.publicKey).to.equal(installedBefore.publicKey)
      // nebula 1.6.1 logs this when a SIGHUP made it take the new certificate (interface.go reloadCertKey).
      let log = ''
      const refreshed = async () => /Client cert refreshed from disk/.test((log = await readFile(join(homes[node] ?? '', 'projects', 'films', 'nebula.log'), 'utf8')))
      await pollUntil(refreshed, {timeoutMs: 10_000, intervalMs: 50, onTimeout: () => false})
      expect(log).to.match(/Client cert refreshed from disk/)
      const status = await inNode(node, ['nebula', 'status'])
      expect(status.json).to.include({running: true, tunUp: true, pid: before[node]})
    }
    const result = await client
    expect(result.exitCode, result.stdout).to.equal(0)
    expect(JSON.parse(result.stdout)).to.deep.equal({sent: 120, got: 120})
    await server
  })
})
