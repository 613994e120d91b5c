import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'

import {
  ConflictError,
  ExhaustedError,
  IncompatibleSchemaError,
  InvalidInputError,
  NotFoundError,
  type VidsyncError,
} from '../src/lib/errors.js'
import {ControlPlane, SqlRpc} from '../src/lib/store/control-plane.js'
import {embeddedTemplatePath} from '../src/lib/store/embedded-template.js'
import {assertSchemaCurrent, latestMigrationVersion, loadMigrations, migrate, schemaVersion} from '../src/lib/store/migrate.js'
import {openStore} from '../src/lib/store/open.js'
import {EmbeddedClient, PostgresClient, type SqlClient} from '../src/lib/store/sql-client.js'
import {createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

async function rejection(promise: Promise<unknown>): Promise<VidsyncError> {
  try {
    await promise
  } catch (error) {
    return error as VidsyncError
  }
  throw new Error('expected the call to fail')
}

const backends = {
  async embedded(): Promise<{sql: SqlClient; cleanup(): Promise<void>}> {
    const sql = await EmbeddedClient.open()
    return {sql, cleanup: () => sql.close()}
  },
  async postgres(): Promise<{sql: SqlClient; cleanup(): Promise<void>}> {
    const database: ThrowawayDatabase = await createThrowawayDatabase('store')
    const sql = new PostgresClient(database.url, 4)
    return {
      sql,
      async cleanup() {
        await sql.close()
        await database.drop()
      },
    }
  },
}

for (const [backend, open] of Object.entries(backends)) {
  describe(`control-plane SQL functions on ${backend}`, () => {
    let sql: SqlClient
    let cleanup: () => Promise<void>
    let cp: ControlPlane

    const auditCount = async () =>
      Number((await sql.query<{n: number}>('SELECT count(*)::int AS n FROM vidsync.audit_log'))[0]?.n)

    before(async () => {
      ;({sql, cleanup} = await open())
      await migrate(sql, await loadMigrations())
      cp = new ControlPlane(new SqlRpc(sql))
    })

    after(async () => cleanup?.())

    describe('migrations', () => {
      it('records every migration and is a no-op when run again', async () => {
        const migrations = await loadMigrations()
        expect(await schemaVersion(sql)).to.equal(migrations.at(-1)?.version)
        expect(await latestMigrationVersion()).to.equal(migrations.at(-1)?.version)
        const again = await migrate(sql, migrations)
        expect(again.applied).to.deep.equal([])
        await assertSchemaCurrent(sql, await latestMigrationVersion())
      })

      it('refuses a schema written by a newer vidsync', async () => {
        const migrations = await loadMigrations()
        await sql.query("INSERT INTO vidsync.schema_migrations (version, name) VALUES (999, '999_future')")
        try {
          const error = await rejection(migrate(sql, migrations))
          expect(error).to.be.instanceOf(IncompatibleSchemaError)
          expect(error.message).to.match(/version 999 .* upgrade vidsync/)
          expect(await rejection(assertSchemaCurrent(sql, await latestMigrationVersion()))).to.be.instanceOf(IncompatibleSchemaError)
        } finally {
          await sql.query('DELETE FROM vidsync.schema_migrations WHERE version = 999')
        }
      })
    })

    describe('projects', () => {
      it('creates a project and lists it', async () => {
        const project = await cp.createProject({name: 'studio', cidr: '10.99.1.0/24'})
        expect(project).to.include({name: 'studio', cidr: '10.99.1.0/24', quarantineSeconds: 86_400})
        expect(Date.parse(project.createdAt)).to.be.closeTo(Date.now(), 60_000)
        const projects = await cp.listProjects()
        expect(projects.map((p) => p.name)).to.include('studio')
      })

      const invalid: [string, string, RegExp][] = [
        ['Bad_Name', '10.50.0.0/24', /invalid project name "Bad_Name"/],
        ['-lead', '10.50.0.0/24', /invalid project name/],
        ['ok', 'banana', /malformed CIDR "banana": expected an IPv4 network/],
        ['ok', '10.50.0.0', /malformed CIDR "10.50.0.0": expected .* prefix length/],
        ['ok', '10.50.0.0/33', /malformed CIDR/],
        ['ok', '10.50/16', /malformed CIDR "10.50\/16": expected four dotted numbers/],
        ['ok', '300.1.0.0/24', /malformed CIDR/],
        ['ok', 'fd00::/64', /IPv6 network "fd00::\/64" is not supported/],
        ['ok', '10.50.0.7/24', /host bits set: expected the network address, 10.50.0.0\/24/],
        ['ok', '10.50.0.0/15', /prefix \/15 .* too large: use a \/16 to \/30/],
        ['ok', '10.50.0.0/31', /prefix \/31 .* too small: use a \/16 to \/30/],
      ]
      for (const [name, cidr, message] of invalid) {
        it(`rejects ${name} ${cidr} with a clear message and writes nothing`, async () => {
          const before = await auditCount()
          const error = await rejection(cp.createProject({name, cidr}))
          expect(error).to.be.instanceOf(InvalidInputError)
          expect(error.message).to.match(message)
          expect(await auditCount()).to.equal(before)
          expect((await cp.listProjects()).map((p) => p.name)).not.to.include(name)
        })
      }

      it('rejects a duplicate name and an overlapping range as conflicts', async () => {
        const duplicate = await rejection(cp.createProject({name: 'studio', cidr: '10.60.0.0/24'}))
        expect(duplicate).to.be.instanceOf(ConflictError)
        expect(duplicate.message).to.contain('project "studio" already exists')
        const overlap = await rejection(cp.createProject({name: 'other', cidr: '10.99.0.0/16'}))
        expect(overlap).to.be.instanceOf(ConflictError)
        expect(overlap.message).to.contain('10.99.0.0/16 overlaps project "studio" (10.99.1.0/24)')
        const inside = await rejection(cp.createProject({name: 'other', cidr: '10.99.1.128/25'}))
        expect(inside).to.be.instanceOf(ConflictError)
      })

      it('enforces non-overlap in the table itself, not only in the function', async () => {
        const error = await sql
          .query("INSERT INTO vidsync.projects (name, cidr) VALUES ('sneaky', '10.99.1.0/25')")
          .catch((error_: unknown) => error_ as {code?: string})
        expect(error).to.have.property('code', '23P01')
      })
    })

    describe('pool', () => {
      before(async () => {
        await cp.createProject({name: 'tiny', cidr: '10.70.0.0/29', quarantineSeconds: 3600})
      })

      it('says an unpopulated pool is empty and how to fill it', async () => {
        const error = await rejection(cp.allocateIp({project: 'tiny', device: 'laptop'}))
        expect(error).to.be.instanceOf(ExhaustedError)
        expect(error.message).to.contain('run `vidsync pool populate tiny`')
      })

      it('populates host addresses only, idempotently', async () => {
        const first = await cp.populatePool({project: 'tiny'})
        expect(first).to.deep.equal({project: 'tiny', cidr: '10.70.0.0/29', added: 6, total: 6})
        const second = await cp.populatePool({project: 'tiny'})
        expect(second.added).to.equal(0)
        const ips = (await cp.poolList({project: 'tiny'})).map((entry) => entry.ip)
        expect(ips).to.deep.equal(['10.70.0.1', '10.70.0.2', '10.70.0.3', '10.70.0.4', '10.70.0.5', '10.70.0.6'])
      })

      it('populates part of a network, never its network or broadcast address', async () => {
        await cp.createProject({name: 'parts', cidr: '10.71.0.0/16'})
        const low = await cp.populatePool({project: 'parts', cidr: '10.71.0.0/30'})
        expect(low.added).to.equal(3)
        const high = await cp.populatePool({project: 'parts', cidr: '10.71.255.252/30'})
        expect(high.added).to.equal(3)
        const ips = (await cp.poolList({project: 'parts'})).map((entry) => entry.ip)
        expect(ips).to.not.include('10.71.0.0')
        expect(ips).to.not.include('10.71.255.255')
        expect(ips).to.include('10.71.0.3')
        expect(ips).to.include('10.71.255.252')
        const outside = await rejection(cp.populatePool({project: 'parts', cidr: '10.72.0.0/24'}))
        expect(outside).to.be.instanceOf(InvalidInputError)
        expect(outside.message).to.contain('outside project "parts" (10.71.0.0/16)')
      })

      it('allocates the lowest free address, with a device row and an audit entry', async () => {
        const before = await auditCount()
        const allocation = await cp.allocateIp({project: 'tiny', device: 'laptop'})
        expect(allocation).to.include({device: 'laptop', ip: '10.70.0.1'})
        const [device] = await sql.query<{ip: string; status: string}>(
          "SELECT host(ip) AS ip, status FROM vidsync.devices WHERE name = 'laptop'",
        )
        expect(device).to.deep.equal({ip: '10.70.0.1', status: 'active'})
        const [audit] = await sql.query<{action: string; ip: string}>(
          'SELECT action, host(ip) AS ip FROM vidsync.audit_log ORDER BY id DESC LIMIT 1',
        )
        expect(audit).to.deep.equal({action: 'ip.allocate', ip: '10.70.0.1'})
        expect(await auditCount()).to.equal(before + 1)
      })

      it('refuses a duplicate device, an unknown project and a bad device name', async () => {
        expect(await rejection(cp.allocateIp({project: 'tiny', device: 'laptop'}))).to.be.instanceOf(ConflictError)
        const unknown = await rejection(cp.allocateIp({project: 'nope', device: 'x'}))
        expect(unknown).to.be.instanceOf(NotFoundError)
        expect(unknown.message).to.contain('unknown project "nope"')
        expect(await rejection(cp.allocateIp({project: 'tiny', device: 'Bad Name'}))).to.be.instanceOf(InvalidInputError)
        expect((await cp.poolStatus({project: 'tiny'})).allocated).to.equal(1)
      })

      it('leaves the address free when the allocating transaction rolls back', async () => {
        const rollback = new Error('rollback')
        const error = await sql
          .transaction(async (tx) => {
            const inside = await new ControlPlane(new SqlRpc(tx)).allocateIp({project: 'tiny', device: 'ghost'})
            expect(inside.ip).to.equal('10.70.0.2')
            throw rollback
          })
          .catch((error_: unknown) => error_)
        expect(error).to.equal(rollback)
        expect((await cp.poolStatus({project: 'tiny'})).allocated).to.equal(1)
        expect(await sql.query("SELECT 1 FROM vidsync.devices WHERE name = 'ghost'")).to.have.length(0)
        expect((await cp.allocateIp({project: 'tiny', device: 'desktop'})).ip).to.equal('10.70.0.2')
      })

      it('exhausts exactly at the pool size and names the project and range', async () => {
        for (const device of ['a', 'b', 'c', 'd']) await cp.allocateIp({project: 'tiny', device})
        const error = await rejection(cp.allocateIp({project: 'tiny', device: 'seventh'}))
        expect(error).to.be.instanceOf(ExhaustedError)
        expect(error.message).to.match(/pool of project "tiny" \(10\.70\.0\.0\/29\) is exhausted: 6 addresses allocated, 0 quarantined/)
        expect(await rejection(cp.allocateIp({project: 'tiny', device: 'seventh'}))).to.be.instanceOf(ExhaustedError)
      })

      it('quarantines released addresses and does not hand them out early', async () => {
        const release = await cp.releaseIp({project: 'tiny', device: 'laptop'})
        expect(release.ip).to.equal('10.70.0.1')
        expect(Date.parse(release.quarantinedUntil) - Date.now()).to.be.within(3_500_000, 3_700_000)
        expect(await cp.poolStatus({project: 'tiny'})).to.deep.equal({
          project: 'tiny',
          cidr: '10.70.0.0/29',
          total: 6,
          allocated: 5,
          quarantined: 1,
          free: 0,
        })
        const error = await rejection(cp.allocateIp({project: 'tiny', device: 'newcomer'}))
        expect(error).to.be.instanceOf(ExhaustedError)
        expect(error.message).to.contain('1 quarantined')
        const listed = await cp.poolList({project: 'tiny'})
        expect(listed[0]).to.include({ip: '10.70.0.1', state: 'quarantined', device: null})
        const allocated = await cp.poolList({project: 'tiny', allocatedOnly: true})
        expect(allocated.map((entry) => entry.state)).to.deep.equal(Array(5).fill('allocated'))
        expect(await rejection(cp.releaseIp({project: 'tiny', device: 'laptop'}))).to.be.instanceOf(NotFoundError)
      })

      it('hands a released address out again once its quarantine is over, and lets the name be reused', async () => {
        // An hour's quarantine that the test then ends by moving its end into the past: no race with the clock.
        await cp.createProject({name: 'brief', cidr: '10.72.0.0/30', quarantineSeconds: 3600})
        await cp.populatePool({project: 'brief'})
        await cp.allocateIp({project: 'brief', device: 'one'})
        await cp.allocateIp({project: 'brief', device: 'two'})
        await cp.releaseIp({project: 'brief', device: 'one'})
        expect(await rejection(cp.allocateIp({project: 'brief', device: 'one'}))).to.be.instanceOf(ExhaustedError)
        const ended = await sql.query<{ip: string}>(
          `UPDATE vidsync.ip_pool SET quarantined_until = now() - interval '1 second'
            WHERE quarantined_until > now() AND project_id = (SELECT id FROM vidsync.projects WHERE name = 'brief')
            RETURNING host(ip) AS ip`,
        )
        expect(ended).to.deep.equal([{ip: '10.72.0.1'}])
        expect((await cp.poolStatus({project: 'brief'})).free).to.equal(1)
        expect(await cp.allocateIp({project: 'brief', device: 'one'})).to.include({ip: '10.72.0.1'})
      })

      it('logs every allocation and release', async () => {
        const rows = await sql.query<{action: string; n: number}>(
          "SELECT action, count(*)::int AS n FROM vidsync.audit_log WHERE action LIKE 'ip.%' GROUP BY action ORDER BY action",
        )
        expect(rows).to.deep.equal([
          {action: 'ip.allocate', n: 9},
          {action: 'ip.release', n: 2},
        ])
      })
    })
  })
}

describe('the embedded database template', function () {
  this.timeout(120_000)
  after(removeTempDirs)

  it('is built with the package and gives a new data directory the current schema without initdb or migrations', async () => {
    const migrations = await loadMigrations()
    const dataDir = await tempDir()
    const sql = await EmbeddedClient.open(dataDir, embeddedTemplatePath)
    try {
      expect(await schemaVersion(sql)).to.equal(migrations.at(-1)?.version)
      await sql.query(`SELECT * FROM vidsync.create_project('templated', '10.77.0.0/24')`)
    } finally {
      await sql.close()
    }
    // The data lives in dataDir, not in the template: reopened without it, the project is there.
    const reopened = await EmbeddedClient.open(dataDir)
    try {
      expect(await reopened.query(`SELECT name FROM vidsync.list_projects()`)).to.deep.equal([{name: 'templated'}])
    } finally {
      await reopened.close()
    }
  })

  it('is never applied over an existing data directory, and a missing template means initdb', async () => {
    const dataDir = await tempDir()
    const bare = await EmbeddedClient.open(dataDir, join(dataDir, '..', 'no-such-template.tar.gz'))
    try {
      expect(await schemaVersion(bare)).to.equal(0)
    } finally {
      await bare.close()
    }
    const again = await EmbeddedClient.open(dataDir, embeddedTemplatePath)
    try {
      expect(await schemaVersion(again)).to.equal(0)
    } finally {
      await again.close()
    }
  })
})

describe('the embedded store', function () {
  this.timeout(120_000)
  after(removeTempDirs)

  it('stamps its data directory with the schema version, trusts a current stamp and asks the database otherwise', async () => {
    const home = await tempDir()
    const stamp = join(home, 'db', 'vidsync-schema-version')
    await (await openStore({home})).close()
    expect(await readFile(stamp, 'utf8')).to.equal(`${await latestMigrationVersion()}\n`)
    // A schema this build does not know, behind a stamp that says it is current: the stamp is
    // trusted and the database not asked (only vidsync migrates this directory, and stamps it).
    const sql = await EmbeddedClient.open(join(home, 'db'))
    await sql.query("INSERT INTO vidsync.schema_migrations (version, name) VALUES (999, '999_future')")
    await sql.close()
    await (await openStore({home})).close()
    // As a newer vidsync leaves it: the stamp differs, the database is asked, and refused.
    await writeFile(stamp, '999\n')
    const error = await rejection(openStore({home}))
    expect(error).to.be.instanceOf(IncompatibleSchemaError)
    expect(error.message).to.match(/version 999 .* upgrade vidsync/)
  })
})
