import {readdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'

import {readBundle} from '../src/lib/bundle/bundle.js'
import {runTool} from '../src/lib/exec.js'
import {readCert, verifyCert} from '../src/lib/pki/cert.js'
import {cli} from './helpers/cli.js'
import {createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

const devices = 200

describe(`${devices} concurrent device register processes on real Postgres`, function () {
  this.timeout(600_000)
  let database: ThrowawayDatabase
  let home: string
  let keys: string
  let out: string
  let env: Record<string, string>

  before(async () => {
    database = await createThrowawayDatabase('register')
    home = await tempDir()
    keys = await tempDir()
    out = await tempDir()
    env = {VIDSYNC_HOME: home, VIDSYNC_DATABASE_URL: database.url}
    for (const args of [['db', 'migrate'], ['ca', 'init'], ['project', 'create', 'fleet', '--cidr', '10.90.0.0/23'], ['pool', 'populate', 'fleet']]) {
      const result = await cli([...args, '--json'], env)
      expect(result.exitCode, result.stdout + result.stderr).to.equal(0)
    }
    for (let i = 0; i < devices; i++) {
      await runTool('nebula-cert', ['keygen', '-out-key', join(keys, `d${i}.key`), '-out-pub', join(keys, `d${i}.pub`)])
    }
  })

  after(async () => {
    await removeTempDirs()
    await database?.drop()
  })

  it('gives every process a distinct address and a certificate that verifies', async () => {
    const started = Date.now()
    const results = await Promise.all(
      Array.from({length: devices}, (_, i) =>
        cli(['device', 'register', 'fleet', '--name', `d${i}`, '--public-key', join(keys, `d${i}.pub`), '--out', join(out, `d${i}.zip`), '--json'], env, {
          timeoutMs: 300_000,
        }),
      ),
    )
    const seconds = (Date.now() - started) / 1000
    // A process ended by the timeout has no output: its exit code (undefined) still says so.
    const failures = results.filter((result) => result.exitCode !== 0).map((result) => `exit ${result.exitCode}: ${result.stdout}${result.stderr}`)
    expect(failures).to.deep.equal([])
    const ips = results.map((result) => result.json.device.ip as string)
    expect(new Set(ips).size).to.equal(devices)
    expect((await readdir(out)).filter((name) => name.endsWith('.zip'))).to.have.length(devices)

    const caDir = await tempDir()
    for (let i = 0; i < devices; i++) {
      const files = await readBundle(join(out, `d${i}.zip`))
      await writeFile(join(caDir, 'ca.crt'), files.get('ca.crt') ?? '')
      await writeFile(join(caDir, 'node.crt'), files.get('node.crt') ?? '')
      await verifyCert({caCertPath: join(caDir, 'ca.crt'), certPath: join(caDir, 'node.crt')})
      const cert = await readCert(join(caDir, 'node.crt'))
      expect(cert.ips).to.deep.equal([`${results[i]?.json.device.ip}/23`])
      const pub = (await readFile(join(keys, `d${i}.pub`), 'utf8')).split('\n')[1] ?? ''
      expect(Buffer.from(pub, 'base64').toString('hex')).to.equal(cert.publicKey)
    }
    const status = (await cli(['pool', 'status', 'fleet', '--json'], env)).json
    expect(status.allocated).to.equal(devices)
    console.log(`      ${devices} registrations in ${seconds.toFixed(1)} s`) // eslint-disable-line no-console
  })
})
