import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {runCommand} from '@oclif/test'
import {expect} from 'chai'

import {cli, root} from './helpers/cli.js'
import {createThrowawayDatabase, type ThrowawayDatabase} from './helpers/postgres.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

/** Where a process started with `--import=<register>` logs the URL of every ES module it resolves. */
async function moduleLog(): Promise<{dir: string; loaded: string; register: string}> {
  const dir = await tempDir()
  const loaded = join(dir, 'loaded.txt')
  await writeFile(join(dir, 'hooks.mjs'), `import {appendFileSync} from 'node:fs'
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context)
  appendFileSync(${JSON.stringify(loaded)}, resolved.url + '\\n')
  return resolved
}
`)
  await writeFile(join(dir, 'register.mjs'), `import {register} from 'node:module'\nregister('./hooks.mjs', import.meta.url)\n`)
  return {dir, loaded, register: join(dir, 'register.mjs')}
}

describe('commands through runCommand (embedded backend)', () => {
  let home: string
  const previousHome = process.env.VIDSYNC_HOME

  before(async () => {
    home = await tempDir()
    process.env.VIDSYNC_HOME = home
  })

  after(async () => {
    if (previousHome === undefined) delete process.env.VIDSYNC_HOME
    else process.env.VIDSYNC_HOME = previousHome
    await removeTempDirs()
  })

  it('creates, populates, lists and counts', async () => {
    const created = await runCommand<{name: string; cidr: string}>(['project', 'create', 'studio', '--cidr', '10.99.1.0/24'])
    expect(created.error).to.equal(undefined)
    expect(created.result).to.include({name: 'studio', cidr: '10.99.1.0/24'})
    expect(created.stdout).to.contain('Created project studio (10.99.1.0/24, quarantine 1d)')

    const populated = await runCommand<{added: number}>(['pool', 'populate', 'studio'])
    expect(populated.result?.added).to.equal(254)

    const listed = await runCommand(['project', 'list'])
    expect(listed.stdout).to.match(/NAME\s+CIDR\s+POOL\s+ALLOCATED\s+QUARANTINE\nstudio\s+10\.99\.1\.0\/24\s+254\s+0\s+1d/)

    const status = await runCommand<{free: number}>(['pool', 'status', 'studio'])
    expect(status.result).to.include({total: 254, allocated: 0, quarantined: 0, free: 254})
    expect(status.stdout).to.match(/free\s+254/)

    const allocated = await runCommand<{addresses: unknown[]}>(['pool', 'list', 'studio', '--allocated'])
    expect(allocated.result?.addresses).to.deep.equal([])
  })

  it('reports user errors in one line with their exit code', async () => {
    const unknown = await runCommand(['pool', 'status', 'nope'])
    expect(unknown.error?.oclif?.exit).to.equal(3)
    expect(unknown.stderr.trim()).to.equal('Error: unknown project "nope": see the projects with `vidsync project list`')

    const badDuration = await runCommand(['project', 'create', 'x', '--cidr', '10.1.0.0/24', '--quarantine', 'soon'])
    expect(badDuration.error?.oclif?.exit).to.equal(2)
    expect(badDuration.stderr).to.contain('invalid quarantine "soon"')
  })
})

describe('the built binary', function () {
  this.timeout(120_000)
  let home: string
  let database: ThrowawayDatabase

  before(async () => {
    home = await tempDir()
    database = await createThrowawayDatabase('cli')
  })

  after(async () => {
    await database?.drop()
    await removeTempDirs()
  })

  const embedded = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: home})

  it('prints help quickly with every topic: from the manifest, without loading any command or the database', async () => {
    // "Quickly" means help costs no more than oclif itself: every module the process loads is logged
    // by a resolve hook, and none may be a command or a store (PGlite alone takes seconds to load).
    const {loaded, register} = await moduleLog()
    const started = performance.now()
    const help = await cli(['--help'], {NODE_OPTIONS: `--import=${register}`})
    const elapsedMs = performance.now() - started
    expect(help.exitCode, help.stderr).to.equal(0)
    const topics = Object.keys(JSON.parse(await readFile(join(root, 'package.json'), 'utf8')).oclif.topics as Record<string, unknown>)
    expect(topics).to.have.length.above(10)
    for (const topic of topics) expect(help.stdout, topic).to.match(new RegExp(`^\\s+${topic}\\s`, 'm'))
    const modules = (await readFile(loaded, 'utf8')).split('\n').filter(Boolean)
    expect(modules.some((url) => url.includes('@oclif/core')), 'the hook saw oclif load').to.equal(true)
    // The time goes into the message, not into a bound on this machine's speed: the module check is what keeps help fast.
    const heavy = modules.filter((url) => /\/dist\/(commands|lib)\//.test(url) || url.includes('@electric-sql/pglite'))
    expect(heavy, `--help took ${Math.round(elapsedMs)} ms`).to.deep.equal([])
  })

  it('loads only the driver a command uses: no pg, execa, supabase-js or plist on the embedded backend, no PGlite on Postgres', async () => {
    const {dir, loaded, register} = await moduleLog()
    // CommonJS (pg is, and vidsync loads it with require) passes Module._load, not the ESM hook.
    await writeFile(join(dir, 'require.cjs'), `const Module = require('node:module')
const {appendFileSync} = require('node:fs')
const load = Module._load
Module._load = function (request, parent, isMain) {
  try { appendFileSync(${JSON.stringify(loaded)}, Module._resolveFilename(request, parent, isMain) + '\\n') } catch {}
  return load.apply(this, arguments)
}
`)
    const modulesOf = async (args: string[], env: Record<string, string>) => {
      await writeFile(loaded, '')
      const result = await cli(args, {...env, NODE_OPTIONS: `--import=${register} --require=${join(dir, 'require.cjs')}`})
      expect(result.exitCode, result.stderr).to.equal(0)
      return (await readFile(loaded, 'utf8')).split('\n').filter(Boolean)
    }
    const onEmbedded = await modulesOf(['project', 'list', '--json'], {VIDSYNC_HOME: home})
    expect(onEmbedded.some((url) => url.includes('@electric-sql/pglite')), 'the hook saw PGlite load').to.equal(true)
    // plist only when a launchd plist is built (darwin.ts imports it there), not on every command on every OS.
    expect(onEmbedded.filter((url) => /node_modules\/(?:pg|execa|@supabase\/[^/]+|registry-auth-token|plist)\//.test(url))).to.deep.equal([])
    // Its own database: the tests on Postgres below start from one that was never migrated.
    const own = await createThrowawayDatabase('drivers')
    try {
      const migrated = await cli(['db', 'migrate', '--json'], {VIDSYNC_HOME: home, VIDSYNC_DATABASE_URL: own.url})
      expect(migrated.exitCode, migrated.stderr).to.equal(0)
      const onPostgres = await modulesOf(['project', 'list', '--json'], {VIDSYNC_HOME: home, VIDSYNC_DATABASE_URL: own.url})
      expect(onPostgres.filter((url) => /node_modules\/(?:@electric-sql\/pglite|execa|@supabase\/[^/]+)\//.test(url))).to.deep.equal([])
    } finally {
      await own.drop()
    }
  })

  it('answers --json with parseable results on the embedded backend', async () => {
    const created = await embedded('project', 'create', 'films', '--cidr', '10.60.0.0/24', '--quarantine', '1h')
    expect(created.exitCode).to.equal(0)
    expect(created.json).to.include({name: 'films', cidr: '10.60.0.0/24', quarantineSeconds: 3600})
    const populated = await embedded('pool', 'populate', 'films', '--cidr', '10.60.0.0/28')
    expect(populated.json).to.deep.equal({project: 'films', cidr: '10.60.0.0/28', added: 15, total: 15})
    const list = await embedded('project', 'list')
    expect(list.json.projects).to.have.length(1)
  })

  const userErrors: [string, string[], number, RegExp][] = [
    ['malformed CIDR', ['project', 'create', 'a', '--cidr', '10.1.2/24'], 2, /malformed CIDR/],
    ['IPv6', ['project', 'create', 'a', '--cidr', '2001:db8::/48'], 2, /IPv6/],
    ['host bits', ['project', 'create', 'a', '--cidr', '10.61.0.1/24'], 2, /host bits set: expected the network address, 10.61.0.0\/24/],
    ['prefix too large', ['project', 'create', 'a', '--cidr', '10.0.0.0/8'], 2, /too large: use a \/16 to \/30/],
    ['prefix too small', ['project', 'create', 'a', '--cidr', '10.61.0.0/32'], 2, /too small/],
    ['invalid name', ['project', 'create', 'Films!', '--cidr', '10.61.0.0/24'], 2, /invalid project name/],
    ['duplicate name', ['project', 'create', 'films', '--cidr', '10.61.0.0/24'], 4, /already exists/],
    ['overlap', ['project', 'create', 'b', '--cidr', '10.60.0.0/23'], 4, /overlaps project "films"/],
    ['unknown project', ['pool', 'status', 'ghost'], 3, /unknown project "ghost"/],
    ['missing flag', ['project', 'create', 'c'], 2, /cidr/],
  ]
  for (const [what, args, exitCode, message] of userErrors) {
    it(`exits ${exitCode} on ${what}, as JSON and as one line without a stack`, async () => {
      const json = await embedded(...args)
      expect(json.exitCode).to.equal(exitCode)
      expect(json.json.error.exitCode).to.equal(exitCode)
      expect(json.json.error.message).to.match(message)
      const human = await cli(args, {VIDSYNC_HOME: home})
      expect(human.exitCode).to.equal(exitCode)
      expect(human.stderr).to.match(message)
      expect(human.stderr).not.to.match(/\n\s+at /)
    })
  }

  it('serialises concurrent processes on the embedded database', async () => {
    const runs = await Promise.all(
      ['p1', 'p2', 'p3', 'p4'].map((name, i) => embedded('project', 'create', name, '--cidr', `10.62.${i}.0/24`)),
    )
    expect(runs.map((run) => run.exitCode)).to.deep.equal([0, 0, 0, 0])
    const projects = (await embedded('project', 'list')).json.projects as {name: string; cidr: string}[]
    const cidrOf = new Map(projects.map((project) => [project.name, project.cidr]))
    for (const [i, name] of ['p1', 'p2', 'p3', 'p4'].entries()) expect(cidrOf.get(name), name).to.equal(`10.62.${i}.0/24`)
  })

  describe('on Postgres', () => {
    const postgres = (...args: string[]) => cli([...args, '--json'], {VIDSYNC_HOME: home, VIDSYNC_DATABASE_URL: database.url})

    it('asks for `db migrate` before use, then works', async () => {
      const early = await postgres('pool', 'status', 'any')
      expect(early.exitCode).to.equal(7)
      expect(early.json.error.message).to.contain('run `vidsync db migrate`')

      const migrated = await postgres('db', 'migrate')
      expect(migrated.exitCode).to.equal(0)
      expect(migrated.json.backend).to.equal('postgres')
      expect(migrated.json.applied[0].name).to.equal('001_foundation')
      expect((await postgres('db', 'migrate')).json.applied).to.deep.equal([])

      const created = await cli(['project', 'create', 'pg', '--cidr', '10.63.0.0/24', '--database-url', database.url, '--json'])
      expect(created.exitCode).to.equal(0)
      expect((await postgres('pool', 'populate', 'pg')).json.added).to.equal(254)
      expect((await postgres('pool', 'status', 'pg')).json.free).to.equal(254)
    })

    it('refuses a schema from a newer vidsync with exit 7', async () => {
      const {PostgresClient} = await import('../src/lib/store/sql-client.js')
      const sql = new PostgresClient(database.url, 1)
      try {
        await sql.query("INSERT INTO vidsync.schema_migrations (version, name) VALUES (998, '998_future')")
        const status = await postgres('pool', 'status', 'pg')
        expect(status.exitCode).to.equal(7)
        expect(status.json.error.message).to.match(/version 998 .* upgrade vidsync/)
        expect((await postgres('db', 'migrate')).exitCode).to.equal(7)
      } finally {
        await sql.query('DELETE FROM vidsync.schema_migrations WHERE version = 998')
        await sql.close()
      }
    })

    it('exits 6 when the database is unreachable, without showing the password', async () => {
      const url = 'postgres://vidsync:s3cret-pass@127.0.0.1:1/vidsync'
      const down = await cli(['pool', 'status', 'pg', '--json'], {VIDSYNC_HOME: home, VIDSYNC_DATABASE_URL: url})
      expect(down.exitCode).to.equal(6)
      expect(down.json.error.message).to.contain('cannot reach the database at postgres://vidsync:***@127.0.0.1:1/vidsync')
      expect(down.stdout + down.stderr).not.to.contain('s3cret-pass')
    })
  })
})
