import {existsSync} from 'node:fs'
import {cp, readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'

import {UnavailableError} from '../src/lib/errors.js'
import {isAlive, resolveTools} from '../src/lib/exec.js'
import {SyncthingClient} from '../src/lib/syncthing/client.js'
import {startManagedSyncthing, stopManagedSyncthing} from '../src/lib/syncthing/managed.js'
import {Mesh} from './e2e/helpers.js'
import {prepareTestHome, stopTestSyncthings, startTestSyncthing} from './helpers/syncthing.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

const fixtures = new URL('fixtures/upstream/', import.meta.url).pathname

/**
 * The operator's and the end user's whole path against each newer upstream release, through the
 * fake executables in test/fixtures/upstream (their CLI and output formats at the release tag,
 * the work done by this machine's nebula 1.6.1 and Syncthing 1.19.2). The real binaries run the
 * same path in device-flow.test.ts and e2e/.
 */
const sets: {name: string; nebula: string; syncthing: string; cidr: string}[] = [
  {name: 'nebula 1.9.7 + Syncthing 1.27.12', nebula: 'nebula-v1.9.7', syncthing: 'syncthing-v1.27.12', cidr: '10.99.22.0/24'},
  {name: 'nebula 1.10.3 + Syncthing 2.0.2', nebula: 'nebula-v1.10.3', syncthing: 'syncthing-v2.0.2', cidr: '10.99.23.0/24'},
  {name: 'nebula 1.11.0 + Syncthing 2.1.3', nebula: 'nebula-v1.11.0', syncthing: 'syncthing-v2.1.3', cidr: '10.99.24.0/24'},
]

function envOf(set: (typeof sets)[number]): Record<string, string> {
  return {
    VIDSYNC_NEBULA_CERT: join(fixtures, set.nebula, 'nebula-cert'),
    VIDSYNC_NEBULA: join(fixtures, set.nebula, 'nebula'),
    VIDSYNC_SYNCTHING: join(fixtures, set.syncthing, 'syncthing'),
  }
}

for (const set of sets) {
  describe(`upstream release flow: ${set.name}`, function () {
    this.timeout(300_000)
    const mesh = new Mesh({project: 'rel', cidr: set.cidr, devices: ['a'], env: envOf(set)})

    before(async () => {
      await mesh.start() // ca init, project create, pool populate, lighthouse add, lighthouse join + nebula up
    })

    after(async () => {
      await mesh.stop()
    })

    it('ca show says the certificate version and which nebula the project needs', async () => {
      const ca = await mesh.admin('ca', 'show')
      expect(ca).to.include({certVersion: 1, nebulaNeeded: 'nebula 1.6.0 or newer'})
    })

    it('key create, sync id, device register, join, up until the lighthouse answers, sync add', async () => {
      const {up} = await mesh.addDevice('a')
      expect(up.json.nebula).to.include({running: true, tunUp: true, lighthouseReachable: true})
      const status = await mesh.must('a', ['status'])
      expect(status.json.overlay).to.include({running: true, tunUp: true, lighthouseReachable: true})
      expect(status.json.syncthing.reachable).to.equal(true)
    })

    it('status --json and doctor show the versions found and that the project can use them', async () => {
      const status = await mesh.must('a', ['status'])
      const versions = Object.fromEntries(status.json.versions.map((tool: {tool: string}) => [tool.tool, tool]))
      expect(versions.nebula).to.include({usable: true, tested: true, version: set.nebula.replace('nebula-v', '')})
      expect(versions.syncthing).to.include({usable: true, tested: true, version: set.syncthing.replace('syncthing-v', '')})
      const doctor = await mesh.on('a', ['doctor'])
      expect(doctor.json.checks.map((check: {name: string}) => check.name)).to.include(`nebula ${versions.nebula.version}`)
      expect(doctor.json.checks.find((check: {name: string}) => check.name.startsWith('syncthing '))).to.include({ok: true})
    })

    it('sync up adopts the running instance and reports the same device ID as sync id', async () => {
      const id = (await mesh.must('a', ['sync', 'id'])).json.deviceId
      const up = await mesh.must('a', ['sync', 'up', '--detach'])
      expect(up.json).to.include({adopted: true, deviceId: id})
    })

    if (set.syncthing.startsWith('syncthing-v2.')) {
      it("up on a device upgraded from 1.x waits through Syncthing's database migration, reporting progress, never stopping it", async () => {
        await mesh.must('a', ['down'])
        // The 1.x database is there (the fake's work is done by Syncthing 1.19); without the 2.x one the next start migrates.
        const syncthingHome = join(mesh.homes.a ?? '', 'syncthing')
        expect(existsSync(join(syncthingHome, 'index-v0.14.0.db'))).to.equal(true)
        await rm(join(syncthingHome, 'index-v2.db'), {recursive: true, force: true})
        mesh.env.UPSTREAM_FAKE_MIGRATION_SECONDS = '8'
        try {
          const up = await mesh.must('a', ['up', '--detach'], 180_000)
          const agentLog = await readFile(up.json.agent.logPath, 'utf8')
          expect(agentLog).to.match(/syncthing is migrating its database to 2\.x \(do not stop it\): .*Still migrating folder/)
          expect(existsSync(join(syncthingHome, 'index-v2.db'))).to.equal(true)
          expect((await mesh.must('a', ['status'])).json.syncthing.reachable).to.equal(true)
        } finally {
          delete mesh.env.UPSTREAM_FAKE_MIGRATION_SECONDS
        }
      })
    }
  })
}

describe("Syncthing 2's database migration on the first start after 1.x (fake 2.1.3 on 127.0.0.1)", function () {
  this.timeout(180_000)
  const tools = resolveTools({syncthing: join(fixtures, 'syncthing-v2.1.3', 'syncthing')})
  const previous = process.env.UPSTREAM_FAKE_MIGRATION_SECONDS
  let legacyHome = ''

  before(async () => {
    // A home that Syncthing 1.19.2 has run in: its LevelDB database is what 2.x migrates.
    const prepared = await prepareTestHome()
    await startTestSyncthing(prepared)
    await stopTestSyncthings()
    legacyHome = prepared.home
  })

  after(async () => {
    if (previous === undefined) delete process.env.UPSTREAM_FAKE_MIGRATION_SECONDS
    else process.env.UPSTREAM_FAKE_MIGRATION_SECONDS = previous
    await removeTempDirs()
  })

  async function copyOfLegacyHome(): Promise<string> {
    const home = await tempDir()
    await cp(legacyHome, home, {recursive: true})
    return home
  }

  it('waits past the start timeout while it migrates, reports progress, and never stops it', async () => {
    const home = await copyOfLegacyHome()
    process.env.UPSTREAM_FAKE_MIGRATION_SECONDS = '10'
    const progress: string[] = []
    const started = Date.now()
    const syncthing = await startManagedSyncthing({vidsyncHome: home, tools, startTimeoutMs: 3000, onProgress: (line) => progress.push(line)})
    try {
      expect(Date.now() - started).to.be.greaterThan(9000) // the migration lasted 10 s; 3 s alone would have given up
      expect(progress.some((line) => /Still migrating folder/.test(line))).to.equal(true)
      // Its temporary API answered every poll with the text page for the last 5 s: reading that as
      // JSON would have failed the start, so the page was recognised as a migration in progress.
      expect(await readFile(syncthing.logPath, 'utf8')).to.match(/INF Starting temporary GUI\/API during migration[\s\S]*INF Temporary GUI\/API closed/)
      const client = new SyncthingClient({url: syncthing.url, apiKey: syncthing.apiKey})
      expect((await client.status()).myID).to.equal(syncthing.deviceId)
    } finally {
      await stopManagedSyncthing({vidsyncHome: home})
    }
  })

  it('gives up waiting after the migration bound with exit 6, leaving Syncthing running; a later start adopts it', async () => {
    const home = await copyOfLegacyHome()
    process.env.UPSTREAM_FAKE_MIGRATION_SECONDS = '12'
    let pid: number | undefined
    try {
      const error = await startManagedSyncthing({vidsyncHome: home, tools, startTimeoutMs: 1000, migrationTimeoutMs: 3000}).then(
        () => undefined,
        (error: Error) => error,
      )
      expect(error).to.be.instanceOf(UnavailableError)
      expect(error?.message).to.match(/^Syncthing \(pid (\d+)\) is still migrating its database to 2\.x; it keeps running/)
      pid = Number(/pid (\d+)/.exec(error?.message ?? '')?.[1])
      expect(isAlive(pid)).to.equal(true)
      const adopted = await startManagedSyncthing({vidsyncHome: home, tools, startTimeoutMs: 1000})
      expect(adopted).to.include({adopted: true, pid})
    } finally {
      await stopManagedSyncthing({vidsyncHome: home})
    }
    expect(pid !== undefined && isAlive(pid)).to.equal(false)
  })
})
