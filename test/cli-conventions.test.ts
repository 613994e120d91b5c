import {spawnSync} from 'node:child_process'
import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {stripVTControlCharacters} from 'node:util'

import {expect} from 'chai'

import {endpointResolveProblem} from '../src/lib/devices/endpoint.js'
import {colorEnabled} from '../src/lib/output/progress.js'
import {renderTable} from '../src/lib/output/table.js'
import {formatWhen, relativeTime} from '../src/lib/output/time.js'
import {updateCheckOff} from '../src/hooks/update-check.js'
import {cli, root} from './helpers/cli.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

describe('oclif conventions', function () {
  this.timeout(120_000)
  let home: string

  before(async () => {
    home = await tempDir()
  })

  after(removeTempDirs)

  it('groups root help for operators and for devices, with -h and `help COMMAND`', async () => {
    const help = await cli(['-h'])
    expect(help.exitCode).to.equal(0)
    const operator = help.stdout.indexOf('OPERATOR')
    const device = help.stdout.indexOf('DEVICE')
    expect(operator).to.be.greaterThan(0)
    expect(device).to.be.greaterThan(operator)
    const section = (from: number, to: number) => help.stdout.slice(from, to)
    expect(section(operator, device)).to.match(/\n {2}device +Register devices/)
    expect(section(operator, device)).not.to.match(/\n {2}join /)
    expect(section(device, help.stdout.length)).to.match(/\n {2}join +Join a project/)
    const commandHelp = await cli(['help', 'project', 'create'])
    expect(commandHelp.stdout).to.contain('$ vidsync project create NAME')
  })

  it('shows --database-url and --supabase-url only on commands that use the control plane', async () => {
    const keyHelp = await cli(['key', 'create', '--help'])
    expect(keyHelp.stdout).to.contain('--home')
    expect(keyHelp.stdout).not.to.contain('--database-url')
    expect(keyHelp.stdout).not.to.contain('--supabase-url')
    const listHelp = await cli(['project', 'list', '--help'])
    expect(listHelp.stdout).to.contain('--database-url')
    expect(listHelp.stdout).to.contain('--supabase-url')
    const refused = await cli(['key', 'create', '--database-url', 'postgres://x@127.0.0.1/x'], {VIDSYNC_HOME: home})
    expect(refused.exitCode).to.equal(2)
    expect(refused.stderr).to.contain('Nonexistent flag: --database-url')
  })

  it('answers a mistyped command with exit 127 and a pointer to help, a version, and a command list', async () => {
    const typo = await cli(['prjoect', 'create'])
    expect(typo.exitCode).to.equal(127)
    // The plugin paints its message where CI=true makes colour look supported: compare the text.
    expect(stripVTControlCharacters(typo.stderr)).to.contain('prjoect create is not a vidsync command')
    const version = await cli(['--version'])
    expect(version.stdout).to.match(/^vidsync\/0\.1\.0 /)
    const commands = await cli(['commands', '--json'])
    expect(commands.json.map((command: {id: string}) => command.id)).to.include.members(['project:create', 'join', 'device:register'])
  })

  it('lists with --columns and --no-header', async () => {
    expect((await cli(['project', 'create', 'films', '--cidr', '10.60.0.0/24'], {VIDSYNC_HOME: home})).exitCode).to.equal(0)
    const narrow = await cli(['project', 'list', '--columns', 'cidr,name', '--no-header'], {VIDSYNC_HOME: home})
    expect(narrow.stdout).to.equal('10.60.0.0/24  films')
    const unknown = await cli(['project', 'list', '--columns', 'name,colour', '--json'], {VIDSYNC_HOME: home})
    expect(unknown.exitCode).to.equal(2)
    expect(unknown.json.error.message).to.equal('unknown column "colour": choose from name, cidr, pool, allocated, quarantine')
  })

  it('cancels on Ctrl-C at a prompt: exit 130, "cancelled", no unexpected error', async function () {
    // A real terminal for the prompt: Python's pty module runs the built binary and types Ctrl-C once it asks.
    const script = `
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execvp('node', ['node', '${root}bin/run.js', 'device', 'revoke', 'films', 'laptop'])
out = b''
deadline = time.time() + 60
while b'?' not in out and time.time() < deadline:
    try:
        out += os.read(fd, 1024)
    except OSError:
        break
os.write(fd, b'\\x03')
while time.time() < deadline:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors='replace'))
sys.exit(os.waitstatus_to_exitcode(status))
`
    const run = spawnSync('python3', ['-c', script], {env: {...process.env, VIDSYNC_HOME: home, VIDSYNC_SKIP_NEW_VERSION_CHECK: 'true', VIDSYNC_DATABASE_URL: ''}, encoding: 'utf8', timeout: 90_000})
    expect(run.stdout).to.contain('Revoke laptop in films?')
    expect(run.status, run.stdout).to.equal(130)
    expect(run.stdout).to.contain('cancelled')
    expect(run.stdout).not.to.contain('unexpected error')
  })
})

/**
 * Runs the built binary on a pseudo-terminal (util-linux `script`) 100 columns wide, stdin closed:
 * what a person at a terminal sees, stdout and stderr together.
 */
function onTerminal(args: string[], env: Record<string, string>): {status: number | null; output: string} {
  const quoted = args.map((arg) => `'${arg.replaceAll("'", "'\\''")}'`).join(' ')
  // Not in CI: ora (like most tools) never animates where the CI variable exists at all.
  const outsideCi = {...process.env}
  delete outsideCi.CI
  const run = spawnSync('script', ['-qec', `stty cols 100 rows 40; exec node ${root}bin/run.js ${quoted}`, '/dev/null'], {
    env: {...outsideCi, VIDSYNC_DATABASE_URL: '', NO_COLOR: '', ...env},
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
    timeout: 120_000,
  })
  return {status: run.status, output: run.stdout}
}

describe('progress on a terminal', function () {
  this.timeout(300_000)
  after(removeTempDirs)

  it('shows a spinner while the embedded database is created and opened, never under --json, NO_COLOR or without a terminal', async () => {
    const home = await tempDir()
    const created = onTerminal(['project', 'create', 'films', '--cidr', '10.61.0.0/24'], {VIDSYNC_HOME: home})
    expect(created.status, created.output).to.equal(0)
    // ora hides the cursor and draws its frames (braille dots, or - \ | / without Unicode) before the step.
    const expectSpinner = (output: string, text: string) => {
      expect(output).to.contain('\u001B[?25l')
      expect(stripVTControlCharacters(output)).to.match(new RegExp(String.raw`(?:[\u2800-\u28ff]|[-\\|/]) ${text}`))
    }
    expectSpinner(created.output, 'Creating the embedded database')
    expect(stripVTControlCharacters(created.output)).to.contain('Created project films')
    const opened = onTerminal(['project', 'list'], {VIDSYNC_HOME: home})
    expectSpinner(opened.output, 'Opening the embedded database')
    const json = onTerminal(['project', 'list', '--json'], {VIDSYNC_HOME: home})
    expect(JSON.parse(json.output).projects[0].name).to.equal('films')
    const plain = onTerminal(['project', 'list'], {VIDSYNC_HOME: home, NO_COLOR: '1'})
    expect(plain.output).not.to.contain('embedded database')
    expect(plain.output).not.to.contain('\u001B[')
    const piped = await cli(['project', 'list'], {VIDSYNC_HOME: home})
    expect(piped.stderr).to.equal('')
  })
})

describe('the check for a newer release', function () {
  this.timeout(120_000)
  after(removeTempDirs)

  it('warns from its cache, and is off with VIDSYNC_SKIP_NEW_VERSION_CHECK and in CI', async () => {
    expect(updateCheckOff({})).to.equal(false)
    expect(updateCheckOff({VIDSYNC_SKIP_NEW_VERSION_CHECK: '1'})).to.equal(true)
    expect(updateCheckOff({CI: 'true'})).to.equal(true)
    expect(updateCheckOff({CI: 'false'})).to.equal(false)
    // A fresh cache (as the plugin's own refresh writes it) names a newer release: no network needed.
    const cache = await tempDir()
    await writeFile(join(cache, 'version'), JSON.stringify({latest: '99.0.0', current: '0.1.0'}))
    const on = {VIDSYNC_CACHE_DIR: cache, VIDSYNC_SKIP_NEW_VERSION_CHECK: '', CI: ''}
    const warned = await cli(['commands', '--json'], on)
    expect(warned.exitCode).to.equal(0)
    expect(stripVTControlCharacters(warned.stderr)).to.contain('vidsync 0.1.0 is installed; 99.0.0 is out: npm install -g vidsync')
    expect((await cli(['commands', '--json'], {...on, VIDSYNC_SKIP_NEW_VERSION_CHECK: '1'})).stderr).to.equal('')
    expect((await cli(['commands', '--json'], {...on, CI: 'true'})).stderr).to.equal('')
  })
})

describe('output for people', () => {
  it('says how far off a time is', () => {
    const now = new Date('2026-11-27T00:00:00Z')
    expect(relativeTime('2027-11-26T00:00:00Z', now)).to.equal('in 364 days')
    expect(relativeTime('2026-11-26T21:00:00Z', now)).to.equal('3 hours ago')
    expect(relativeTime('2036-11-27T00:00:00Z', now)).to.equal('in 10 years')
    expect(formatWhen('2027-11-26T14:03:00.000Z', now)).to.equal('2027-11-26 14:03 UTC, in 364 days')
    expect(formatWhen(null, now)).to.equal('-')
  })

  it('paints only on a terminal and never with NO_COLOR', () => {
    const previous = process.env.NO_COLOR
    try {
      delete process.env.NO_COLOR
      expect(colorEnabled({isTTY: true} as NodeJS.WriteStream)).to.equal(true)
      expect(colorEnabled({isTTY: false} as NodeJS.WriteStream)).to.equal(false)
      process.env.NO_COLOR = '1'
      expect(colorEnabled({isTTY: true} as NodeJS.WriteStream)).to.equal(false)
    } finally {
      if (previous === undefined) delete process.env.NO_COLOR
      else process.env.NO_COLOR = previous
    }
  })

  it('renders tables aligned, with chosen columns', () => {
    const rows = [{name: 'laptop', ip: '10.99.1.2'}, {name: 'lh1', ip: '10.99.1.1'}]
    const columns = [
      {header: 'name', get: (row: (typeof rows)[number]) => row.name},
      {header: 'ip', get: (row: (typeof rows)[number]) => row.ip},
    ]
    expect(renderTable(rows, columns)).to.equal('NAME    IP\nlaptop  10.99.1.2\nlh1     10.99.1.1')
    expect(renderTable(rows, columns, {columns: 'ip', noHeader: true})).to.equal('10.99.1.2\n10.99.1.1')
  })
})

describe('lighthouse endpoints that do not resolve', () => {
  it('are reported, IP addresses never looked up, and a silent resolver bounded', async () => {
    const refuse = async () => Promise.reject(Object.assign(new Error('getaddrinfo ENOTFOUND'), {code: 'ENOTFOUND'}))
    expect(await endpointResolveProblem('lh1.example.org:4242', {lookup: refuse})).to.match(/^lh1\.example\.org does not resolve on this machine \(ENOTFOUND\)/)
    let asked = false
    const spy = async () => {
      asked = true
    }
    expect(await endpointResolveProblem('192.0.2.1:4242', {lookup: spy})).to.equal(undefined)
    expect(asked).to.equal(false)
    expect(await endpointResolveProblem('lh1.example.org:4242', {lookup: spy})).to.equal(undefined)
    const silent = () => new Promise<never>(() => {})
    expect(await endpointResolveProblem('lh1.example.org:4242', {lookup: silent, timeoutMs: 50})).to.contain('no answer within 0.05 s')
    // /etc/hosts answers for localhost: the real resolver, without a packet on the network.
    expect(await endpointResolveProblem('localhost:4242')).to.equal(undefined)
  })
})
