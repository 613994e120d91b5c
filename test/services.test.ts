import {readFileSync} from 'node:fs'
import {chmod, chown, mkdir, readdir, readFile, readlink, realpath, rm, stat, symlink, writeFile} from 'node:fs/promises'
import {dirname, join} from 'node:path'

import {expect} from 'chai'

import {parse as parsePlist} from 'plist'

import {runSigner} from '../src/lib/devices/signer.js'
import {installSignerService, savedSignerSettings, signerEnvPath, signerServiceStatus, uninstallSignerService} from '../src/lib/devices/signer-service.js'
import {ConflictError, InvalidInputError, NotFoundError, PermissionError, ToolFailedError, UnavailableError} from '../src/lib/errors.js'
import {resolveTools, selfCommand} from '../src/lib/exec.js'
import {initCa} from '../src/lib/pki/ca.js'
import {systemdArg} from '../src/lib/platform/linux.js'
import type {ControlPlane} from '../src/lib/store/control-plane.js'
import {reloadNebula} from '../src/lib/nebula/process.js'
import {installNebulaService, uninstallNebulaService} from '../src/lib/nebula/service.js'
import {installSystemOverlay, systemOverlayProblem, systemOverlayRecordPath} from '../src/lib/nebula/system-overlay.js'
import {JoinedProject} from '../src/lib/project/joined-project.js'
import {serviceChecks} from '../src/lib/up/service-status.js'
import {renderServices} from '../src/lib/output/services.js'
import {type HostDeps, platformFor} from '../src/lib/platform/index.js'
import type {OsName, ProgramResult, ServiceSpec} from '../src/lib/platform/types.js'
import {agentEnvPath, agentServiceDefinition, installService, readServiceSettings, reportService, uninstallService, writeServiceSettings} from '../src/lib/up/services.js'
import {bringDown, ensureNebula} from '../src/lib/up/up.js'
import {cli} from './helpers/cli.js'
import {fakeHost, getAclAnswer} from './helpers/host.js'
import {placeholderBundle, placeholderPem, sampleManifest} from './helpers/joined.js'
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

const manifest = sampleManifest({project: 'studio'})
const pem = placeholderPem

/** A project joined below `home` on `platform` (placeholder PEMs: nothing here runs nebula for real). */
async function joinedStudio(home: string, platform: ReturnType<typeof platformFor>): Promise<JoinedProject> {
  const files = placeholderBundle(manifest)
  return (await JoinedProject.install(home, files, platform)).project
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
      await writeServiceSettings(agentEnvPath(project.dir), settings, linux, alice)
      const file = await stat(agentEnvPath(project.dir))
      expect([file.uid, file.mode & 0o777]).to.deep.equal([1001, 0o600])
      expect(await readServiceSettings(agentEnvPath(project.dir))).to.deep.equal(settings)
      expect(definition.content).not.to.match(/Environment|s3cret|anon-key/)
      await writeServiceSettings(agentEnvPath(project.dir), {}, linux, alice)
      expect(await readServiceSettings(agentEnvPath(project.dir))).to.deep.equal({})
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

    it('Windows: reload restarts the service the SCM runs (no signals), through the reload path `up` and `join` use; never onto a stale system copy', async () => {
      const root = await tempDir('vidsync-services-')
      const host = managedHost(root, (argv) => (argv[1] === 'queryex' ? ok(fixture('sc-queryex-running.txt')) : argv[1] === 'qc' ? ok(fixture('sc-qc.txt')) : ok()), {
        env: {VIDSYNC_SYSTEM_DIR: join(root, 'system')},
      })
      const win = platformFor('win32', host)
      const project = await joinedStudio(root, win)
      await installSystemOverlay(project, win)
      expect(await reloadNebula({projectDir: project.dir, platform: win})).to.equal(true)
      expect(host.calls.at(-1)?.at(-1)).to.equal("Restart-Service -Name 'vidsync-nebula-studio'")
      // A renewed certificate lands in the user's project directory; the SYSTEM service reads its own copy, which only the elevated step rewrites.
      await writeFile(project.certPath, pem('NEBULA CERTIFICATE', 'BBBB'))
      host.calls.length = 0
      expect(await reloadNebula({projectDir: project.dir, platform: win})).to.equal(false)
      expect(host.calls.flat().join(' ')).not.to.contain('Restart-Service')
    })

    it('Windows: the elevated step copies nebula.exe and wintun.dll to %ProgramData%\\vidsync\\bin; the SCM runs that copy with the system copy of nebula.yml; a stale copy is reported, and refreshed with a restart', async () => {
      const root = await tempDir('vidsync-services-')
      const system = join(root, 'system')
      // nebula unzipped by alice in her profile: her files, so not what SYSTEM may run. (A script that accepts `-test`: nothing runs nebula for real.)
      const unzipped = join(root, 'alice', 'nebula')
      const nebula = join(unzipped, 'nebula.exe')
      const wintun = join(unzipped, 'dist', 'windows', 'wintun', 'bin', 'amd64', 'wintun.dll')
      await mkdir(join(unzipped, 'dist', 'windows', 'wintun', 'bin', 'amd64'), {recursive: true})
      await writeFile(nebula, '#!/bin/sh\nexit 0\n')
      await chmod(nebula, 0o755)
      await writeFile(wintun, 'wintun dll')
      const copy = join(system, 'bin', 'nebula.exe')
      const sddl = (target: string) =>
        fixture(target === copy ? 'getacl-sddl-system-private.txt' : target === join(system, 'bin') ? 'getacl-sddl-system-private-dir.txt' : 'getacl-sddl-user-program.txt')
      let installed = false
      const host = managedHost(
        root,
        (argv) => {
          const acl = getAclAnswer(argv, sddl)
          if (acl) return acl
          if (argv[0] === 'powershell.exe' && (argv.at(-1) ?? '').includes('IsInRole')) return ok('True\r\n')
          if (argv[1] === 'create') installed = true
          if (argv[1] === 'queryex') return installed ? ok(fixture('sc-queryex-running.txt')) : failed(1060, '', fixture('sc-queryex-missing.txt'))
          if (argv[1] === 'qc') return ok(fixture('sc-qc.txt').replace(/(BINARY_PATH_NAME\s*: ).*/, `$1${bin}`))
          return ok()
        },
        {env: {VIDSYNC_SYSTEM_DIR: system}, exists: async (path) => path === wintun},
      )
      let bin = ''
      const win = platformFor('win32', host)
      const project = await joinedStudio(join(root, 'home'), win)
      const options = {home: join(root, 'home'), projectDir: project.dir, user: win.invokingUser(), tools: resolveTools({nebula}), platform: win, startDetached: () => Promise.reject(new Error('no'))}
      const first = await installNebulaService(options)
      const create = host.calls.find((argv) => argv[1] === 'create') ?? []
      bin = create[4] ?? ''
      // What the SCM runs as SYSTEM: the protected copy, reading the system copy of the overlay, nothing in alice's folders.
      expect(bin).to.equal(`${copy} -service run -config ${join(system, 'studio', 'nebula.yml')}`)
      expect(await readFile(copy, 'utf8')).to.equal('#!/bin/sh\nexit 0\n')
      expect(await readFile(join(system, 'bin', 'dist', 'windows', 'wintun', 'bin', 'amd64', 'wintun.dll'), 'utf8')).to.equal('wintun dll')
      expect(host.calls).to.deep.include(['icacls', join(system, 'bin'), '/inheritance:r', '/grant:r', '*S-1-5-18:(OI)(CI)(F)', '*S-1-5-32-544:(OI)(CI)(F)'])
      expect(host.calls).to.deep.include(['icacls', copy, '/setowner', '*S-1-5-32-544'])
      // Every folder of the copy, whoever made it first: no entry of anyone else's is kept (/reset), down to wintun.dll's.
      for (const level of ['dist', join('dist', 'windows', 'wintun', 'bin', 'amd64')]) expect(host.calls).to.deep.include(['icacls', join(system, 'bin', level), '/reset'])
      expect(host.calls).to.deep.include(['icacls', system, '/inheritance:r', '/grant:r', '*S-1-5-18:(OI)(CI)(F)', '*S-1-5-32-544:(OI)(CI)(F)'])
      expect(first.installed).to.deep.equal([
        'scm system service vidsync-nebula-studio: runs nebula as root at boot',
        `overlay files for studio in ${join(system, 'studio')} (readable by root only)`,
        `${nebula} and ${wintun} copied to ${join(system, 'bin')} (replaceable by administrators only)`,
      ])
      // The elevated step recorded what it wrote, where alice can read it: the copy is current.
      expect((await readFile(systemOverlayRecordPath(project.dir), 'utf8')).trim()).to.match(/^[0-9a-f]{64}$/)
      expect(await systemOverlayProblem(project, win)).to.equal(undefined)
      // A blocklist change arrives in alice's project: the SYSTEM service still reads the old copy; status and doctor say so.
      await JoinedProject.install(join(root, 'home'), placeholderBundle({...manifest, blocklist: ['c'.repeat(64)]}), win)
      const current = await JoinedProject.open(project.dir, win)
      const stale = await systemOverlayProblem(current, win)
      expect(stale).to.equal(
        `the system copy of studio's overlay (${join(system, 'studio')}), which the nebula service reads, is older than the project's certificate, blocklist or lighthouses`,
      )
      const report = {role: 'nebula' as const, name: 'vidsync-nebula-studio', manager: 'scm' as const, installed: true, running: true, pid: 4242, state: 'RUNNING', stale: false, staleOverlay: stale ?? ''}
      const fix = 'run `vidsync up`: it asks for administrator rights once, rewrites the copy and restarts the nebula service'
      expect(serviceChecks([report])).to.deep.equal([{name: 'nebula service', ok: false, fix: `${stale}: ${fix}`}])
      expect(renderServices([report]).split('\n')[1]).to.equal(`  stale: ${stale}: ${fix}`)
      // The elevated step again (what `vidsync up` runs through UAC): the copy rewritten, the running service restarted to read it.
      host.calls.length = 0
      const again = await installNebulaService(options)
      expect(host.calls.some((argv) => argv[1] === 'create')).to.equal(false)
      expect(host.calls.at(-1)?.at(-1)).to.equal("Restart-Service -Name 'vidsync-nebula-studio'")
      // nebula.exe and wintun.dll are unchanged: not written again (a running nebula.exe cannot be replaced on Windows).
      expect(again.installed).to.deep.equal([
        `overlay files for studio in ${join(system, 'studio')} (readable by root only), refreshed; vidsync-nebula-studio restarted to read them`,
      ])
      expect(await systemOverlayProblem(current, win)).to.equal(undefined)
      const yml = await readFile(join(system, 'studio', 'nebula.yml'), 'utf8')
      expect(yml).to.contain('c'.repeat(64))
    })

    it('Windows: `up` leaves a running service on a current copy alone, and asks for the elevated step when the copy is stale (exit 9 when none is granted)', async () => {
      const root = await tempDir('vidsync-services-')
      const host = managedHost(
        root,
        (argv) => {
          if (argv[0] === 'powershell.exe' && (argv.at(-1) ?? '').includes('IsInRole')) return ok('False\r\n') // a normal prompt
          return argv[1] === 'queryex' ? ok(fixture('sc-queryex-running.txt')) : argv[1] === 'qc' ? ok(fixture('sc-qc.txt')) : ok()
        },
        {env: {VIDSYNC_SYSTEM_DIR: join(root, 'system')}},
      )
      const win = platformFor('win32', host)
      const project = await joinedStudio(join(root, 'home'), win)
      await installSystemOverlay(project, win)
      const options = {home: join(root, 'home'), intervalSeconds: 10, interactive: false}
      expect(await ensureNebula(options, project, win)).to.deep.equal([])
      expect(host.calls.some((argv) => (argv.at(-1) ?? '').includes('IsInRole'))).to.equal(false)
      // A renewed certificate: the service still runs, on the old copy; `up` needs the elevated step (no prompt can answer here).
      await writeFile(project.certPath, pem('NEBULA CERTIFICATE', 'BBBB'))
      const error = await expectRejects(ensureNebula(options, project, win), PermissionError)
      expect(error.exitCode).to.equal(9)
      expect(error.message).to.equal(
        `the system copy of studio's overlay (${join(root, 'system', 'studio')}), which the nebula service reads, is older than the project's certificate, blocklist or lighthouses; no administrator rights were granted`,
      )
      expect(error.hint).to.equal('run `sudo vidsync up` (an elevated prompt on Windows)')
      // Linux: the root service renders its copy itself; a running nebula is left alone whatever the record says.
      expect(await systemOverlayProblem(project, platformFor('linux', host))).to.equal(undefined)
    })

    it('the elevated step refuses (exit 9, nothing installed) a service program someone other than an administrator could replace: the nebula copy on Windows', async () => {
      const root = await tempDir('vidsync-services-')
      const nebula = join(root, 'nebula.exe')
      await writeFile(nebula, '#!/bin/sh\nexit 0\n')
      await chmod(nebula, 0o755)
      // Windows: the copy's folder keeps %ProgramData%'s default (Users may create files), as when alice made it first and the ACL could not be set.
      const winHost = managedHost(
        root,
        (argv) => {
          const acl = getAclAnswer(argv, (path) =>
            fixture(path === join(root, 'system', 'bin') ? 'getacl-sddl-programdata-inherited.txt' : path === join(root, 'system', 'bin', 'nebula.exe') ? 'getacl-sddl-system-private.txt' : 'getacl-sddl-user-program.txt'),
          )
          return acl ?? (argv[0] === 'powershell.exe' ? ok('True\r\n') : ok())
        },
        {env: {VIDSYNC_SYSTEM_DIR: join(root, 'system')}},
      )
      const win = platformFor('win32', winHost)
      const project = await joinedStudio(join(root, 'home'), win)
      const options = {home: join(root, 'home'), projectDir: project.dir, user: win.invokingUser(), tools: resolveTools({nebula}), startDetached: () => Promise.reject(new Error('no'))}
      const error = await expectRejects(installNebulaService({...options, platform: win}), PermissionError)
      expect(error.exitCode).to.equal(9)
      const copy = join(root, 'system', 'bin', 'nebula.exe')
      expect(error.message).to.equal(`refusing to install the nebula service: ${copy} would run as SYSTEM in the nebula service, but the folder ${join(root, 'system', 'bin')} is writable by Users (BU)`)
      expect(error.hint).to.equal(`make ${copy} and its folder writable by administrators only, then run the elevated step again`)
      expect(winHost.calls.some((argv) => argv[0] === 'sc.exe')).to.equal(false)
      expect(await stat(join(root, 'system', 'studio')).catch(() => 'none')).to.equal('none')
    })

    it('POSIX: a Node.js or vidsync someone else could replace (nvm, Homebrew, a user npm prefix) runs from a root-owned copy, reused while unchanged, removed with the last service; refused (exit 9) only where the copy could be replaced too', async () => {
      const root = await tempDir('vidsync-services-')
      // A small vidsync package in a workspace: a dependency below it, one hoisted above it, one linked (pnpm), a dev dependency left out.
      const workspace = join(root, 'home', 'alice', 'ws')
      const pkg = join(workspace, 'packages', 'vidsync')
      const files: Record<string, string> = {
        [join(pkg, 'package.json')]: JSON.stringify({name: 'vidsync', version: '9.9.9', dependencies: {'dep-a': '1', 'dep-c': '1'}, devDependencies: {'dev-only': '1'}}),
        [join(pkg, 'bin', 'run.js')]: "require('dep-a'); require('dep-c'); process.exit(process.argv.includes('--help') ? 0 : 3)\n",
        [join(pkg, 'dist', 'index.js')]: 'module.exports = 1\n',
        [join(pkg, 'migrations', '001.sql')]: 'select 1;\n',
        [join(pkg, 'node_modules', 'dep-a', 'package.json')]: JSON.stringify({name: 'dep-a', dependencies: {'dep-b': '1'}}),
        [join(pkg, 'node_modules', 'dep-a', 'index.js')]: "require('dep-b')\n",
        [join(workspace, 'node_modules', 'dep-b', 'package.json')]: JSON.stringify({name: 'dep-b'}),
        [join(workspace, 'node_modules', 'dep-b', 'index.js')]: 'module.exports = 2\n',
        [join(pkg, 'node_modules', '.pnpm', 'dep-c@1', 'node_modules', 'dep-c', 'package.json')]: JSON.stringify({name: 'dep-c'}),
        [join(pkg, 'node_modules', '.pnpm', 'dep-c@1', 'node_modules', 'dep-c', 'index.js')]: 'module.exports = 3\n',
        [join(pkg, 'node_modules', 'dev-only', 'package.json')]: JSON.stringify({name: 'dev-only'}),
        // nvm's node in alice's home: here a script that runs this Node.js, so the copy's start check runs for real.
        [join(root, 'home', 'alice', '.nvm', 'node')]: `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} "$@"\n`,
      }
      for (const [path, text] of Object.entries(files)) {
        await mkdir(dirname(path), {recursive: true})
        await writeFile(path, text, {mode: /(node|run\.js)$/.test(path) ? 0o755 : 0o644})
      }
      await symlink(join('.pnpm', 'dep-c@1', 'node_modules', 'dep-c'), join(pkg, 'node_modules', 'dep-c'))
      await chown(join(root, 'home', 'alice'), 1001, 1001)
      const runtimeSource = {node: join(root, 'home', 'alice', '.nvm', 'node'), root: pkg}
      const runtimeDir = join(root, 'usr', 'local', 'lib', 'vidsync', 'runtime')
      const unitsDir = join(root, 'etc', 'systemd', 'system')
      // An older version's copy no service runs, and one another project's unit still runs.
      await mkdir(join(runtimeDir, '0.0.1', 'bin'), {recursive: true})
      await mkdir(join(runtimeDir, '0.0.2', 'bin'), {recursive: true})
      await mkdir(unitsDir, {recursive: true})
      await writeFile(join(unitsDir, 'vidsync-nebula-other.service'), `ExecStart="${join(runtimeDir, '0.0.2', 'bin', 'node')}"\n`)
      const owners = async (path: string) => (path === process.execPath ? {uid: 1001, gid: 1001, mode: 0o755} : stat(path).then((info) => ({uid: info.uid, gid: info.gid, mode: info.mode & 0o7777}), () => undefined))
      const host = managedHost(root, () => ok(fixture('systemctl-show-not-found.txt')), {
        env: {VIDSYNC_SYSTEM_DIR: join(root, 'etc', 'vidsync'), VIDSYNC_RUNTIME_DIR: runtimeDir},
        fileOwner: owners,
        realPath: (path) => realpath(path).catch(() => path),
      })
      const linux = platformFor('linux', host)
      const project = await joinedStudio(join(root, 'home'), linux)
      const nebula = join(root, 'nebula')
      await writeFile(nebula, '#!/bin/sh\nexit 0\n', {mode: 0o755})
      const options = {home: join(root, 'home'), projectDir: project.dir, user: linux.invokingUser(), tools: resolveTools({nebula}), platform: linux, runtimeSource, startDetached: () => Promise.reject(new Error('no'))}
      const copy = join(runtimeDir, '9.9.9')
      const first = await installNebulaService(options)
      expect(first.installed[2]).to.match(
        new RegExp(`^Node\\.js v[\\d.]+ and vidsync copied to ${copy.replaceAll('.', '\\.')} \\(10 files, 0 MB in [\\d.]+ s; replaceable by root only\\): the nebula service runs this copy, since ${process.execPath} would run as root in the nebula service, but the file belongs to uid 1001, not root$`),
      )
      expect(first.installed.slice(3)).to.deep.equal([`${join(runtimeDir, '0.0.1')} removed: no nebula service runs it`])
      const unit = await readFile(join(unitsDir, 'vidsync-nebula-studio.service'), 'utf8')
      expect(unit).to.include(`ExecStart="${join(copy, 'bin', 'node')}" "${join(copy, 'vidsync', 'bin', 'run.js')}" "nebula" "service" "studio" "--home" "${join(root, 'home')}"\n`)
      // Root's, writable by nobody else; what the package needs at runtime, as Node.js resolves it; no migrations, no dev dependencies.
      for (const [path, mode] of [[join(copy, 'bin', 'node'), 0o755], [join(copy, 'vidsync', 'dist', 'index.js'), 0o644], [join(copy, 'vidsync', 'node_modules', 'dep-b'), 0o755]] as const) {
        expect(await stat(path).then((info) => [info.uid, info.mode & 0o777])).to.deep.equal([0, mode])
      }
      expect(await linux.executableProblem(join(copy, 'vidsync', 'bin', 'run.js'))).to.equal(undefined)
      expect(await readlink(join(copy, 'vidsync', 'node_modules', 'dep-c'))).to.equal(join('.pnpm', 'dep-c@1', 'node_modules', 'dep-c'))
      expect((await readdir(join(copy, 'vidsync'))).sort()).to.deep.equal(['bin', 'dist', 'node_modules', 'package.json'])
      expect((await readdir(join(copy, 'vidsync', 'node_modules'))).sort()).to.deep.equal(['.pnpm', 'dep-a', 'dep-b', 'dep-c'])
      expect((await readdir(runtimeDir)).sort()).to.deep.equal(['0.0.2', '9.9.9'])
      // Unchanged: kept as it is (its manifest, written last, records the source's digest).
      const manifestTime = (await stat(join(copy, 'runtime.json'))).mtimeMs
      const again = await installNebulaService(options)
      expect(again.installed[2]).to.equal(`the nebula service runs the protected copy of Node.js and vidsync in ${copy} (unchanged)`)
      expect((await stat(join(copy, 'runtime.json'))).mtimeMs).to.equal(manifestTime)
      // The same version rebuilt: copied again, replacing the older copy whole.
      await writeFile(join(pkg, 'dist', 'index.js'), 'module.exports = 4\n')
      expect((await installNebulaService(options)).installed[2]).to.match(/^Node\.js .* copied to /)
      expect(await readFile(join(copy, 'vidsync', 'dist', 'index.js'), 'utf8')).to.equal('module.exports = 4\n')
      expect((await readdir(runtimeDir)).filter((name) => name.startsWith('.'))).to.deep.equal([])
      // down --uninstall: the unit goes, and with it the copy no service runs any more.
      const removed = await uninstallNebulaService(options)
      expect(removed).to.deep.equal([`vidsync-nebula-studio.service (${join(unitsDir, 'vidsync-nebula-studio.service')})`, copy])
      expect(await readdir(runtimeDir)).to.deep.equal(['0.0.2'])
      // Homebrew's node (here on Linux): the copy still loads a library alice can replace, which no copy fixes: refused, no unit written.
      const library = join(root, 'home', 'alice', '.linuxbrew', 'lib', 'libuv.so.1')
      await mkdir(dirname(library), {recursive: true})
      await writeFile(library, '')
      const brewHost: HostDeps = {...host, run: async (file, args, more) => (file === 'ldd' ? ok(`\tlibuv.so.1 => ${library} (0x00007f3a1c000000)\n`) : host.run(file, args, more))}
      const brew = await expectRejects(installNebulaService({...options, platform: platformFor('linux', brewHost)}), PermissionError)
      expect(brew.exitCode).to.equal(9)
      expect(brew.message).to.equal(`refusing to install the nebula service: ${join(copy, 'bin', 'node')} loads ${library}: the directory ${join(root, 'home', 'alice')} belongs to uid 1001, not root`)
      expect(brew.hint).to.match(/^use a Node\.js that loads only system libraries/)
      expect(await stat(join(unitsDir, 'vidsync-nebula-studio.service')).catch(() => 'none')).to.equal('none')
      // A runtime directory below alice's home: the copy could be replaced as well, refused before any unit is written.
      const userRuntime = join(root, 'home', 'alice', 'runtime')
      const refusing = platformFor('linux', {...host, env: {...host.env, VIDSYNC_RUNTIME_DIR: userRuntime}})
      const error = await expectRejects(installNebulaService({...options, platform: refusing}), PermissionError)
      expect(error.exitCode).to.equal(9)
      expect(error.message).to.equal(`refusing to install the nebula service: ${join(userRuntime, '9.9.9', 'bin', 'node')} would run as root in the nebula service, but the directory ${join(root, 'home', 'alice')} belongs to uid 1001, not root`)
      expect(error.hint).to.equal(`make ${userRuntime} and the directories above it writable by root only (VIDSYNC_RUNTIME_DIR chooses another place), then run \`sudo vidsync up\` again`)
      expect(await stat(join(unitsDir, 'vidsync-nebula-studio.service')).catch(() => 'none')).to.equal('none')
      // A missing dependency: the copy is not made.
      await rm(join(workspace, 'node_modules', 'dep-b'), {recursive: true})
      await writeFile(join(pkg, 'dist', 'index.js'), 'module.exports = 5\n')
      const missing = await expectRejects(installNebulaService(options), PermissionError)
      expect(missing.message).to.equal(`cannot copy vidsync into the protected runtime: its dependency dep-b is not installed (from ${join(pkg, 'node_modules', 'dep-a')})`)
      // What is there stays: the copy the refused install made, until an install or uninstall finds no service running it.
      expect((await readdir(runtimeDir)).sort()).to.deep.equal(['0.0.2', '9.9.9'])
      expect(await readFile(join(copy, 'vidsync', 'dist', 'index.js'), 'utf8')).to.equal('module.exports = 4\n')
    })

    it('Windows: the logon task gets the control-plane settings from agent.env (icacls: the user and SYSTEM only), none in its definition or argv', async () => {
      const root = await tempDir('vidsync-services-')
      const host = managedHost(root, (argv) => (argv[0] === 'schtasks' && argv[1] === '/Query' ? failed(1, fixture('schtasks-query-missing.txt')) : ok()), {userName: () => 'alice'})
      const win = platformFor('win32', host)
      const user = win.invokingUser()
      const project = {name: 'studio', dir: join(root, 'home', 'alice', 'vidsync', 'projects', 'studio')}
      const settings = {VIDSYNC_DATABASE_URL: 'postgres://device:s3cret@cp.example/vidsync', VIDSYNC_SUPABASE_KEY: 'anon-key', VIDSYNC_SUPABASE_URL: 'https://x.supabase.co'}
      await writeServiceSettings(agentEnvPath(project.dir), settings, win)
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
      expect(await readServiceSettings(agentEnvPath(project.dir))).to.deep.equal(settings)
    })
  })

  describe('no service manager (this machine and CI: systemd is not PID 1)', () => {
    it('`up --agent` (what every service manager starts, with no environment) takes the control plane from agent.env', async () => {
      const home = await tempDir('vidsync-services-')
      const dir = join(home, 'projects', 'studio')
      await mkdir(dir, {recursive: true})
      // Nothing listens on port 1: the agent fails opening the control plane that only agent.env names.
      await writeServiceSettings(agentEnvPath(dir), {VIDSYNC_DATABASE_URL: 'postgres://device:s3cret@127.0.0.1:1/cp'}, platformFor('linux', fakeHost(() => ok())))
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

describe('signer service: `vidsync signer PROJECT --install` / `--uninstall`', () => {
  after(removeTempDirs)
  const databaseUrl = 'postgres://operator:s3cret@cp.example/vidsync'
  const nebulaCert = '/usr/bin/nebula-cert'

  /** An operator's home below `root` with a real CA (real nebula-cert). */
  async function operatorHome(root: string): Promise<string> {
    const home = join(root, 'home', 'alice', '.local', 'state', 'vidsync')
    await initCa({home, name: 'ops'})
    return home
  }

  it('systemd --user: settings file 0600 first, then the unit (ExecStart = this vidsync signer, Restart=on-failure), daemon-reload, enable --now; idempotent; uninstall removes both', async () => {
    const root = await tempDir('vidsync-signer-service-')
    const home = await operatorHome(root)
    const envPath = signerEnvPath(home, 'studio')
    let installed = false
    let settingsAtEnable: string | undefined
    const host = managedHost(
      root,
      (argv) => {
        if (argv.includes('enable')) {
          installed = true
          settingsAtEnable = readFileSync(envPath, 'utf8')
        }
        if (argv.includes('disable')) installed = false
        return argv.includes('show') ? ok(fixture(installed ? 'systemctl-show-running.txt' : 'systemctl-show-not-found.txt')) : ok()
      },
      {uid: 1001, gid: 1001},
    )
    const linux = platformFor('linux', host)
    let checked = 0
    const install = () =>
      installSignerService({home, project: 'studio', platform: linux, intervalSeconds: 15, settings: {VIDSYNC_DATABASE_URL: databaseUrl}, checkProject: async () => checked++})
    const result = await install()
    const unitPath = join(root, 'home', 'alice', '.config', 'systemd', 'user', 'vidsync-signer.studio.service')
    expect(result).to.deep.equal({
      project: 'studio',
      action: 'installed',
      name: 'vidsync-signer.studio.service',
      manager: 'systemd',
      path: unitPath,
      settingsPath: envPath,
      line: `systemd user service vidsync-signer.studio.service (${unitPath}): signs studio's renewal requests as alice, from login, restarted after a failure (settings in ${envPath})`,
    })
    expect(checked).to.equal(1)
    expect(host.calls.filter((argv) => !argv.includes('show'))).to.deep.equal([
      ['systemctl', '--user', 'daemon-reload'],
      ['systemctl', '--user', 'enable', '--now', 'vidsync-signer.studio.service'],
    ])
    // The settings were in place when systemd started it: private, the database URL only.
    expect(settingsAtEnable).to.equal(`VIDSYNC_DATABASE_URL=${databaseUrl}\n`)
    expect((await stat(envPath)).mode & 0o777).to.equal(0o600)
    expect(await savedSignerSettings(home, 'studio')).to.deep.equal({VIDSYNC_DATABASE_URL: databaseUrl})
    const unit = await readFile(unitPath, 'utf8')
    expect((await stat(unitPath)).mode & 0o777).to.equal(0o600)
    expect(unit).to.contain('# Written by vidsync for project studio; removed by `vidsync signer studio --uninstall`.\n')
    expect(unit).to.contain(`ExecStart=${selfCommand(['signer', 'studio', '--home', home, '--interval', '15s']).map(systemdArg).join(' ')}\n`)
    expect(unit).to.contain('Restart=on-failure\nRestartSec=2\n')
    expect(unit).to.contain(`Environment="VIDSYNC_NEBULA_CERT=${nebulaCert}"\n`)
    expect(unit).to.contain(`StandardOutput=append:${join(home, 'signer', 'studio', 'signer.log')}\n`)
    expect(unit).to.contain('WantedBy=default.target\n')
    expect(unit).not.to.match(/s3cret|DATABASE_URL/)
    expect(JSON.stringify(host.calls)).not.to.contain('s3cret')

    // A second install finds it running: nothing written, nothing started.
    host.calls.length = 0
    const again = await install()
    expect([again.action, again.line]).to.deep.equal(['running', 'vidsync-signer.studio.service is installed and runs already (systemd): nothing changed'])
    expect(host.calls.map((argv) => argv.at(-2))).to.deep.equal(['LoadState,ActiveState,SubState,MainPID,Result'])

    const status = () => signerServiceStatus({home, project: 'studio', platform: linux, intervalSeconds: 15})
    expect(await status()).to.deep.equal({
      role: 'signer',
      project: 'studio',
      name: 'vidsync-signer.studio.service',
      manager: 'systemd',
      installed: true,
      running: true,
      pid: 4242,
      state: 'active (running)',
      stale: false,
      settingsPath: envPath,
      line: 'vidsync-signer.studio.service (systemd): active (running), pid 4242',
    })

    // Another vidsync's unit under the same name: left as it is, and so are the settings.
    await writeFile(unitPath, unit.replace('--interval" "15s', '--interval" "1m'))
    expect((await status()).line).to.equal(
      'vidsync-signer.studio.service (systemd): active (running), pid 4242; installed from another vidsync or with other settings: `vidsync signer studio --uninstall`, then `--install`',
    )
    const stale = await expectRejects(installSignerService({home, project: 'studio', platform: linux, intervalSeconds: 15, settings: {VIDSYNC_DATABASE_URL: 'postgres://other@cp/x'}, checkProject: async () => 0}), ConflictError)
    expect(stale.exitCode).to.equal(4)
    expect(stale.message).to.equal(
      `vidsync-signer.studio.service (${unitPath}) is installed from an older vidsync or with other settings and was left as it is: remove it with \`vidsync signer studio --uninstall\`, then run \`vidsync signer studio --install\` again`,
    )
    expect(await readFile(envPath, 'utf8')).to.equal(`VIDSYNC_DATABASE_URL=${databaseUrl}\n`)

    host.calls.length = 0
    const removed = await uninstallSignerService({home, project: 'studio', platform: linux})
    expect([removed.action, removed.line]).to.deep.equal(['uninstalled', `removed vidsync-signer.studio.service (${unitPath}) and ${envPath}`])
    expect(host.calls.filter((argv) => !argv.includes('show'))).to.deep.equal([
      ['systemctl', '--user', 'disable', '--now', 'vidsync-signer.studio.service'],
      ['systemctl', '--user', 'daemon-reload'],
    ])
    for (const path of [unitPath, envPath]) expect(await stat(path).then(() => 'there', () => 'removed'), path).to.equal('removed')
    expect((await uninstallSignerService({home, project: 'studio', platform: linux})).action).to.equal('absent')
  })

  it("launchd: a LaunchAgent of its own (KeepAlive on failure, RunAtLoad), bootstrapped in alice's gui domain; Supabase URL and key only in signer.env", async () => {
    const root = await tempDir('vidsync-signer-service-')
    const home = await operatorHome(root)
    let print = failed(113, '', fixture('launchctl-print-not-found.txt'))
    const host = managedHost(root, (argv) => (argv[1] !== 'print' ? ok() : argv[2] === 'gui/501' ? ok() : print), {uid: 501, gid: 20})
    const mac = platformFor('darwin', host)
    const settings = {VIDSYNC_SUPABASE_URL: 'https://x.supabase.co', VIDSYNC_SUPABASE_KEY: 'service-role-key'}
    const install = () => installSignerService({home, project: 'studio', platform: mac, intervalSeconds: 30, settings, checkProject: async () => 0})
    const result = await install()
    const plistPath = join(root, 'home', 'alice', 'Library', 'LaunchAgents', 'com.vidsync.signer.studio.plist')
    expect(result).to.include({action: 'installed', name: 'com.vidsync.signer.studio', manager: 'launchd', path: plistPath})
    expect(host.calls.filter((argv) => argv[1] !== 'print')).to.deep.equal([['launchctl', 'bootstrap', 'gui/501', plistPath]])
    const log = join(home, 'signer', 'studio', 'signer.log')
    expect(parsePlist(await readFile(plistPath, 'utf8'))).to.deep.equal({
      Label: 'com.vidsync.signer.studio',
      ProgramArguments: selfCommand(['signer', 'studio', '--home', home, '--interval', '30s']),
      EnvironmentVariables: {VIDSYNC_NEBULA_CERT: nebulaCert},
      RunAtLoad: true,
      KeepAlive: {SuccessfulExit: false},
      ThrottleInterval: 10,
      StandardOutPath: log,
      StandardErrorPath: log,
      ProcessType: 'Background',
    })
    expect(await readFile(plistPath, 'utf8')).not.to.match(/service-role-key|supabase\.co/)
    const envPath = signerEnvPath(home, 'studio')
    expect(await readFile(envPath, 'utf8')).to.equal('VIDSYNC_SUPABASE_URL=https://x.supabase.co\nVIDSYNC_SUPABASE_KEY=service-role-key\n')
    expect((await stat(envPath)).mode & 0o777).to.equal(0o600)

    print = ok(fixture('launchctl-print-running.txt'))
    expect((await install()).action).to.equal('running')
    print = ok(fixture('launchctl-print-stopped.txt'))
    expect((await install()).action).to.equal('started')
    expect(host.calls.at(-1)).to.deep.equal(['launchctl', 'kickstart', 'gui/501/com.vidsync.signer.studio'])

    print = ok(fixture('launchctl-print-running.txt'))
    expect((await uninstallSignerService({home, project: 'studio', platform: mac})).action).to.equal('uninstalled')
    expect(host.calls.at(-1)).to.deep.equal(['launchctl', 'bootout', 'gui/501/com.vidsync.signer.studio'])
    for (const path of [plistPath, envPath]) expect(await stat(path).then(() => 'there', () => 'removed'), path).to.equal('removed')
  })

  it('refuses before writing anything: no user manager (exit 6), no CA key here (exit 3), no shared control plane (exit 2)', async () => {
    const root = await tempDir('vidsync-signer-service-')
    const home = join(root, 'home', 'alice', '.local', 'state', 'vidsync')
    let userManager = false
    const host = managedHost(root, () => ok(), {uid: 1001, gid: 1001, exists: async (path) => path === '/run/systemd/system' || (userManager && path.startsWith('/run/user/'))})
    const linux = platformFor('linux', host)
    const options = {home, project: 'studio', platform: linux, intervalSeconds: 15, checkProject: async () => 0}
    const noManager = await expectRejects(installSignerService({...options, settings: {VIDSYNC_DATABASE_URL: databaseUrl}}), UnavailableError)
    expect([noManager.exitCode, noManager.message]).to.deep.equal([
      6,
      'cannot install the signer as a service: no systemd user manager runs for alice (log in, or `loginctl enable-linger alice`); run `vidsync signer studio` in the foreground instead, or under your own supervisor',
    ])
    userManager = true
    const noCa = await expectRejects(installSignerService({...options, settings: {VIDSYNC_DATABASE_URL: databaseUrl}}), NotFoundError)
    expect(noCa.exitCode).to.equal(3)
    expect(await readdir(root)).to.deep.equal([])
    await initCa({home, name: 'ops'})
    const embedded = await expectRejects(installSignerService({...options, settings: {}}), InvalidInputError)
    expect([embedded.exitCode, embedded.hint]).to.deep.equal([2, 'pass --database-url, or --supabase-url with the key in $VIDSYNC_SUPABASE_KEY'])
    expect(await readdir(home)).to.deep.equal(['ca'])
    expect(host.calls.filter((argv) => !argv.includes('show'))).to.deep.equal([])
  })

  it('the foreground signer refuses to start where the CA key is not (exit 3), before any pass', async () => {
    const home = await tempDir('vidsync-signer-service-')
    let passes = 0
    // The control plane is never reached: the CA is checked first.
    const controlPlane = undefined as unknown as ControlPlane
    const error = await expectRejects(
      runSigner({home, controlPlane, project: 'studio', intervalMs: 10, signal: new AbortController().signal, onPass: () => passes++}),
      NotFoundError,
    )
    expect([error.exitCode, passes]).to.deep.equal([3, 0])
  })

  it("the service's command line (no environment) takes the control plane from signer.env", async () => {
    const home = await tempDir('vidsync-signer-service-')
    await initCa({home, name: 'ops'})
    // Nothing listens on port 1: the signer fails opening the control plane that only signer.env names.
    await writeServiceSettings(signerEnvPath(home, 'studio'), {VIDSYNC_DATABASE_URL: 'postgres://operator:s3cret@127.0.0.1:1/cp'}, platformFor('linux', fakeHost(() => ok())))
    const result = await cli(['signer', 'studio', '--home', home, '--interval', '15s'], {VIDSYNC_SUPABASE_URL: ''})
    expect(result.stderr).to.contain('cannot reach the database at postgres://operator:***@127.0.0.1:1/cp')
    expect(result.stderr).not.to.contain('s3cret')
    expect(result.exitCode).to.equal(6)
  })

  it('on this machine (no systemd as PID 1, as in CI): one line, exit 6, nothing written', async () => {
    const home = await tempDir('vidsync-signer-service-')
    const init = (readFileSync('/proc/1/comm', 'utf8') || '?').trim()
    const result = await cli(['signer', 'studio', '--install', '--home', home, '--database-url', databaseUrl, '--json'])
    if (init === 'systemd') {
      process.stdout.write('      · systemd runs here: the refusal is covered by the injected test above\n')
      return
    }
    expect(result.exitCode).to.equal(6)
    expect(result.json.error).to.deep.equal({
      code: 'unavailable',
      exitCode: 6,
      message: `cannot install the signer as a service: systemd is not the init system here (PID 1 is ${init}); run \`vidsync signer studio\` in the foreground instead, or under your own supervisor`,
    })
    expect(await readdir(home)).to.deep.equal([])
    const status = await cli(['signer', 'studio', '--status', '--home', home, '--json'])
    expect(status.exitCode).to.equal(0)
    expect(status.json).to.deep.include({manager: null, installed: false, running: false, stale: false, settingsPath: null})
    expect(status.json.line).to.equal(`no signer service for studio: systemd is not the init system here (PID 1 is ${init}); run \`vidsync signer studio\` in the foreground instead, or under your own supervisor`)
  })
})
