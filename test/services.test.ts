import {readFileSync} from 'node:fs'
import {mkdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'

import {ConflictError, PermissionError, ToolFailedError} from '../src/lib/errors.js'
import {reloadNebula} from '../src/lib/nebula/process.js'
import {type HostDeps, platformFor} from '../src/lib/platform/index.js'
import type {OsName, ProgramResult, ServiceSpec} from '../src/lib/platform/types.js'
import {agentEnvPath, agentServiceDefinition, installService, readAgentSettings, reportService, uninstallService, writeAgentSettings} from '../src/lib/up/services.js'
import {bringDown} from '../src/lib/up/up.js'
import {cli} from './helpers/cli.js'
import {fakeHost} from './helpers/host.js'
import {expectRejects} from './helpers/rejects.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

const fixture = (name: string) => readFileSync(new URL(`fixtures/platform/${name}`, import.meta.url), 'utf8')
const ok = (stdout = ''): ProgramResult => ({stdout, stderr: '', exitCode: 0, missing: false})
const failed = (exitCode: number, stderr = '', stdout = ''): ProgramResult => ({stdout, stderr, exitCode, missing: false})

/**
 * A machine whose service manager answers from recorded outputs (test/fixtures/platform/, each
 * naming its source): every program call is kept, definitions are written below `serviceRoot`.
 */
function managedHost(root: string, answer: (argv: string[]) => ProgramResult, overrides: Partial<HostDeps> = {}): HostDeps & {calls: string[][]} {
  return fakeHost(answer, {
    homedir: () => join(root, 'home', 'alice'),
    uid: 0,
    gid: 0,
    readFile: (path) => readFile(path, 'utf8').catch(() => undefined),
    // systemd is PID 1 and alice's user manager runs.
    exists: async (path) => path === '/run/systemd/system' || path.startsWith('/run/user/'),
    serviceRoot: root,
    ...overrides,
  })
}

const spec = (command: string[]): ServiceSpec => ({project: 'studio', command, logPath: '/var/log/x.log', description: 'vidsync: Nebula overlay for project studio'})

describe('services: install, start, uninstall through the service manager', () => {
  after(removeTempDirs)

  describe('systemd (Linux, injected: systemd as PID 1)', () => {
    it('installs a unit that is not there: writes it, daemon-reload, enable --now', async () => {
      const root = await tempDir('vidsync-services-')
      let installed = false
      const host = managedHost(root, (argv) => {
        if (argv[1] === 'enable') installed = true
        return argv[1] === 'show' ? ok(fixture(installed ? 'systemctl-show-running.txt' : 'systemctl-show-not-found.txt')) : ok()
      })
      const linux = platformFor('linux', host)
      const unit = await linux.nebulaService(spec(['/usr/bin/node', '/opt/vidsync/bin/run.js', 'nebula', 'service', 'studio']))
      expect(unit.path).to.equal(join(root, 'etc', 'systemd', 'system', 'vidsync-nebula-studio.service'))
      const change = await installService(unit, {platform: linux})
      expect(change).to.deep.equal({
        name: 'vidsync-nebula-studio.service',
        action: 'installed',
        line: `systemd system service vidsync-nebula-studio.service (${unit.path})`,
      })
      expect(await readFile(unit.path ?? '', 'utf8')).to.equal(unit.content)
      expect(((await stat(unit.path ?? '')).mode & 0o777).toString(8)).to.equal('644')
      expect(host.calls.filter((argv) => argv[1] !== 'show')).to.deep.equal([
        ['systemctl', 'daemon-reload'],
        ['systemctl', 'enable', '--now', 'vidsync-nebula-studio.service'],
      ])
      // Installed and running now: a second install changes nothing.
      host.calls.length = 0
      expect((await installService(unit, {platform: linux})).action).to.equal('running')
      expect(host.calls.map((argv) => argv[1])).to.deep.equal(['show'])
    })

    it('starts an installed unit that stopped (after `vidsync down`, or its start limit hit)', async () => {
      const root = await tempDir('vidsync-services-')
      const host = managedHost(root, (argv) => (argv[1] === 'show' ? ok(fixture('systemctl-show-failed.txt')) : ok()))
      const linux = platformFor('linux', host)
      const unit = await linux.nebulaService(spec(['/usr/bin/node']))
      await mkdir(join(root, 'etc', 'systemd', 'system'), {recursive: true})
      await writeFile(unit.path ?? '', unit.content ?? '')
      expect((await installService(unit, {platform: linux})).action).to.equal('started')
      expect(host.calls.at(-1)).to.deep.equal(['systemctl', 'start', 'vidsync-nebula-studio.service'])
    })

    it('a stale unit from an older install: exit 4, one line, the unit left as it was', async () => {
      const root = await tempDir('vidsync-services-')
      const host = managedHost(root, (argv) => (argv[1] === 'show' ? ok(fixture('systemctl-show-failed.txt')) : ok()))
      const linux = platformFor('linux', host)
      const unit = await linux.nebulaService(spec(['/usr/bin/node', '/opt/vidsync-0.1/bin/run.js']))
      const older = (await linux.nebulaService(spec(['/usr/bin/node', '/usr/lib/vidsync-0.0.9/bin/run.js']))).content ?? ''
      await mkdir(join(root, 'etc', 'systemd', 'system'), {recursive: true})
      await writeFile(unit.path ?? '', older)
      const error = await expectRejects(installService(unit, {platform: linux}), ConflictError)
      expect(error.exitCode).to.equal(4)
      expect(error.message).to.equal(
        `vidsync-nebula-studio.service (${unit.path}) is installed from an older vidsync or with other settings and was left as it is: remove it as root with \`vidsync down --uninstall\`, then run \`vidsync up\` again`,
      )
      expect(error.message).not.to.contain('\n')
      expect(await readFile(unit.path ?? '', 'utf8')).to.equal(older)
      expect(host.calls.map((argv) => argv[1])).to.deep.equal(['show'])
    })

    it('a service manager that refuses: exit 1 with its reason, nothing left installed', async () => {
      const root = await tempDir('vidsync-services-')
      const refusal = 'Failed to enable unit: Access denied'
      const host = managedHost(root, (argv) => (argv[1] === 'show' ? ok(fixture('systemctl-show-not-found.txt')) : argv[1] === 'enable' ? failed(1, `${refusal}\n`) : ok()))
      const linux = platformFor('linux', host)
      const unit = await linux.nebulaService(spec(['/usr/bin/node']))
      const error = await expectRejects(installService(unit, {platform: linux}), ToolFailedError)
      expect(error.exitCode).to.equal(1)
      expect(error.message).to.equal(`the service manager refused \`systemctl enable --now vidsync-nebula-studio.service\` for vidsync-nebula-studio.service: ${refusal}; nothing was installed`)
      expect(await readFile(unit.path ?? '', 'utf8').catch(() => 'removed')).to.equal('removed')
      expect(host.calls.filter((argv) => argv[1] !== 'show').map((argv) => argv[1])).to.deep.equal(['daemon-reload', 'enable', 'disable', 'daemon-reload'])
    })

    it('uninstalls: disable --now, removes the file, daemon-reload; a refusal keeps the unit', async () => {
      const root = await tempDir('vidsync-services-')
      let refuse = true
      const host = managedHost(root, (argv) => (argv[1] === 'show' ? ok(fixture('systemctl-show-running.txt')) : argv[1] === 'disable' && refuse ? failed(1, 'Failed to disable unit: Access denied\n') : ok()))
      const linux = platformFor('linux', host)
      const unit = await linux.nebulaService(spec(['/usr/bin/node']))
      await mkdir(join(root, 'etc', 'systemd', 'system'), {recursive: true})
      await writeFile(unit.path ?? '', unit.content ?? '')
      const error = await expectRejects(uninstallService(unit, {platform: linux}), ToolFailedError)
      expect(error.message).to.contain('it stays installed')
      expect(await readFile(unit.path ?? '', 'utf8')).to.equal(unit.content)
      refuse = false
      host.calls.length = 0
      expect(await uninstallService(unit, {platform: linux})).to.equal(true)
      expect(await readFile(unit.path ?? '', 'utf8').catch(() => 'removed')).to.equal('removed')
      expect(host.calls.filter((argv) => argv[1] !== 'show')).to.deep.equal([
        ['systemctl', 'disable', '--now', 'vidsync-nebula-studio.service'],
        ['systemctl', 'daemon-reload'],
      ])
    })

    it('the agent is a user unit installed for alice (as her, from root under sudo); its settings are in her private agent.env, not in the unit', async () => {
      const root = await tempDir('vidsync-services-')
      const host = managedHost(root, (argv) => (argv.includes('show') ? ok(fixture('systemctl-show-not-found.txt')) : ok()))
      const linux = platformFor('linux', host)
      const alice = {name: 'alice', home: join(root, 'home', 'alice'), uid: 1001, gid: 1001, viaSudo: true}
      const project = {name: 'studio', dir: join(alice.home, '.vidsync', 'projects', 'studio')}
      const definition = await agentServiceDefinition({home: join(alice.home, '.vidsync'), project, user: alice, platform: linux, intervalSeconds: 10})
      await installService(definition, {platform: linux, user: alice, owner: alice, mode: 0o600})
      expect(definition.path).to.equal(join(alice.home, '.config', 'systemd', 'user', 'vidsync-studio.service'))
      // Files in alice's home are hers, not root's.
      for (const path of [definition.path ?? '', join(alice.home, '.config'), join(alice.home, '.config', 'systemd', 'user')]) {
        expect((await stat(path)).uid, path).to.equal(1001)
      }
      expect(host.calls.filter((argv) => !argv.includes('show'))).to.deep.equal([
        ['systemctl', '--user', '--machine=alice@', 'daemon-reload'],
        ['systemctl', '--user', '--machine=alice@', 'enable', '--now', 'vidsync-studio.service'],
      ])
      const settings = {VIDSYNC_DATABASE_URL: 'postgres://device:s3cret@cp.example/vidsync', VIDSYNC_SUPABASE_URL: 'https://x.supabase.co', VIDSYNC_SUPABASE_KEY: 'anon-key'}
      await writeAgentSettings(project.dir, settings, linux, alice)
      const file = await stat(agentEnvPath(project.dir))
      expect([file.uid, file.mode & 0o777]).to.deep.equal([1001, 0o600])
      expect(await readAgentSettings(project.dir)).to.deep.equal(settings)
      expect(definition.content).not.to.match(/Environment|s3cret|anon-key/)
      await writeAgentSettings(project.dir, {}, linux, alice)
      expect(await readAgentSettings(project.dir)).to.deep.equal({})
      expect(definition.content).to.match(/ExecStart=.* "up" "studio" "--agent" "--home" ".*\/\.vidsync" "--interval" "10s"\n/)
    })
  })

  describe('launchd and the SCM (injected, recorded outputs)', () => {
    it('launchd: bootstraps a LaunchDaemon that is not loaded; kickstarts one that is loaded and stopped', async () => {
      const root = await tempDir('vidsync-services-')
      let print = failed(113, '', fixture('launchctl-print-not-found.txt'))
      const host = managedHost(root, (argv) => (argv[1] === 'print' ? print : ok()))
      const mac = platformFor('darwin', host)
      const daemon = await mac.nebulaService(spec(['/opt/homebrew/bin/node', '/opt/homebrew/lib/node_modules/vidsync/bin/run.js', 'nebula', 'service', 'studio']))
      expect((await installService(daemon, {platform: mac})).action).to.equal('installed')
      expect(host.calls.at(-1)).to.deep.equal(['launchctl', 'bootstrap', 'system', join(root, 'Library', 'LaunchDaemons', 'com.vidsync.nebula.studio.plist')])
      print = ok(fixture('launchctl-print-stopped.txt'))
      expect((await installService(daemon, {platform: mac})).action).to.equal('started')
      expect(host.calls.at(-1)).to.deep.equal(['launchctl', 'kickstart', 'system/com.vidsync.nebula.studio'])
      print = ok(fixture('launchctl-print-running.txt'))
      expect(await uninstallService(daemon, {platform: mac})).to.equal(true)
      expect(host.calls.at(-1)).to.deep.equal(['launchctl', 'bootout', 'system/com.vidsync.nebula.studio'])
    })

    it('SCM: creates the service, sets failure actions, lets the user restart it; access denied is one line, exit 1', async () => {
      const root = await tempDir('vidsync-services-')
      let create = ok('[SC] CreateService SUCCESS\r\n')
      const host = managedHost(root, (argv) => {
        if (argv[1] === 'queryex') return failed(1060, '', fixture('sc-queryex-missing.txt'))
        return argv[1] === 'create' ? create : ok()
      })
      const win = platformFor('win32', host)
      const service = await win.nebulaService(spec(['C:\\Program Files\\nebula\\nebula.exe', '-service', 'run', '-config', 'C:\\Users\\alice\\AppData\\Local\\vidsync\\projects\\studio\\nebula.yml']))
      expect((await installService(service, {platform: win})).line).to.equal('scm system service vidsync-nebula-studio')
      expect(host.calls.slice(1).map((argv) => `${argv[0]} ${argv[1]}`)).to.deep.equal([
        'sc.exe create',
        'sc.exe failure',
        'sc.exe failureflag',
        'powershell.exe -NoProfile',
        'sc.exe start',
      ])
      // sc.exe prints its failures on stdout (Microsoft Learn, "sc.exe create"; 5 is ERROR_ACCESS_DENIED).
      create = failed(5, '', '[SC] OpenSCManager FAILED 5:\r\n\r\nAccess is denied.\r\n')
      const error = await expectRejects(installService(service, {platform: win}), ToolFailedError)
      expect(error.message).to.match(/^the service manager refused `sc\.exe create vidsync-nebula-studio binPath= .*` for vidsync-nebula-studio: \[SC\] OpenSCManager FAILED 5:; nothing was installed$/)
    })

    it('Windows: reload restarts the service the SCM runs (no signals), through the reload path `up` and `join` use', async () => {
      const root = await tempDir('vidsync-services-')
      const host = managedHost(root, (argv) => (argv[1] === 'queryex' ? ok(fixture('sc-queryex-running.txt')) : argv[1] === 'qc' ? ok(fixture('sc-qc.txt')) : ok()))
      const win = platformFor('win32', host)
      const dir = join(root, 'projects', 'studio')
      await mkdir(dir, {recursive: true})
      expect(await reloadNebula({projectDir: dir, platform: win})).to.equal(true)
      expect(host.calls.at(-1)?.at(-1)).to.equal("Restart-Service -Name 'vidsync-nebula-studio'")
    })
    it('Windows: the logon task gets the control-plane settings from agent.env (icacls: the user and SYSTEM only), none in its definition or argv', async () => {
      const root = await tempDir('vidsync-services-')
      const host = managedHost(root, (argv) => (argv[0] === 'schtasks' && argv[1] === '/Query' ? failed(1, fixture('schtasks-query-missing.txt')) : ok()), {userName: () => 'alice'})
      const win = platformFor('win32', host)
      const user = win.invokingUser()
      const project = {name: 'studio', dir: join(root, 'home', 'alice', 'vidsync', 'projects', 'studio')}
      const settings = {VIDSYNC_DATABASE_URL: 'postgres://device:s3cret@cp.example/vidsync', VIDSYNC_SUPABASE_KEY: 'anon-key', VIDSYNC_SUPABASE_URL: 'https://x.supabase.co'}
      await writeAgentSettings(project.dir, settings, win)
      const env = agentEnvPath(project.dir)
      expect(host.calls).to.deep.include(['icacls', env, '/inheritance:r', '/grant:r', 'alice:(F)', '*S-1-5-18:(F)'])
      const definition = await agentServiceDefinition({home: join(root, 'home', 'alice', 'vidsync'), project, user, platform: win})
      await installService(definition, {platform: win, user})
      expect(host.calls.some((argv) => argv[0] === 'schtasks' && argv[1] === '/Create')).to.equal(true)
      expect(JSON.stringify(host.calls)).not.to.match(/s3cret|anon-key|supabase\.co/)
      // The task runs the wrapper beside agent.env; the wrapper runs `vidsync up studio --agent` and holds no setting.
      const wrapper = await readFile(definition.path ?? '', 'utf8')
      expect(wrapper).to.match(/ up studio --agent --home .* --interval 10s\r\n$/)
      expect(wrapper).not.to.match(/s3cret|anon-key|supabase\.co/)
      // What the agent reads at start (`vidsync up --agent`), on every OS.
      expect(await readAgentSettings(project.dir)).to.deep.equal(settings)
    })
  })

  describe('no service manager (this machine and CI: systemd is not PID 1)', () => {
    it('`up --agent` (what every service manager starts, with no environment) takes the control plane from agent.env', async () => {
      const home = await tempDir('vidsync-services-')
      const dir = join(home, 'projects', 'studio')
      await mkdir(dir, {recursive: true})
      // Nothing listens on port 1: the agent fails opening the control plane that only agent.env names.
      await writeAgentSettings(dir, {VIDSYNC_DATABASE_URL: 'postgres://device:s3cret@127.0.0.1:1/cp'}, platformFor('linux', fakeHost(() => ok())))
      const result = await cli(['up', 'studio', '--agent', '--home', home], {VIDSYNC_SUPABASE_URL: ''})
      expect(result.stderr).to.contain('cannot reach the database at postgres://device:***@127.0.0.1:1/cp')
      expect(result.stderr).not.to.contain('s3cret')
      expect(result.exitCode).to.not.equal(0)
    })

    it('reports the fallback: no manager, vidsync supervises the service, and why', async () => {
      const linux = platformFor('linux')
      const init = readFileSync('/proc/1/comm', 'utf8').trim()
      const unit = await linux.nebulaService(spec(['/usr/bin/node']))
      const report = await reportService('nebula', unit, {platform: linux, supervisor: {running: true, pid: 4242, address: '/x/nebula.sock'}})
      if (init === 'systemd') {
        expect(report.manager).to.equal('systemd')
        process.stdout.write('      · systemd runs here: the manager is asked\n')
        return
      }
      expect(report).to.deep.equal({
        role: 'nebula',
        name: 'vidsync-nebula-studio.service',
        manager: null,
        installed: false,
        running: true,
        pid: 4242,
        state: 'supervised by vidsync (/x/nebula.sock)',
        stale: false,
        fallback: `systemd is not the init system here (PID 1 is ${init}): vidsync supervises nebula and the agent itself`,
      })
      process.stdout.write(`      · no systemd here (PID 1 is ${init}): status, up and down take the supervisor sockets\n`)
    })

    it('down --uninstall without administrator rights: exit 9, one line, nothing stopped or removed', async () => {
      const root = await tempDir('vidsync-services-')
      await mkdir(join(root, 'projects', 'studio'), {recursive: true})
      for (const os of ['linux', 'darwin'] as OsName[]) {
        const host = managedHost(root, () => ok(), {uid: 1001, readFile: async () => 'CapEff:\t0000000000000000\n'})
        const error = await expectRejects(bringDown({home: root, uninstall: true, platform: platformFor(os, host)}), PermissionError)
        expect(error.exitCode).to.equal(9)
        expect(error.message).to.equal('removing the nebula service needs administrator rights; nothing was stopped or removed')
        expect(host.calls, os).to.deep.equal([])
      }
    })
  })
})
