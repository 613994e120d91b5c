import {readFileSync} from 'node:fs'
import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'
import {execa} from 'execa'
import {parse as parsePlist} from 'plist'

import {hostDeps, type HostDeps, platformFor} from '../src/lib/platform/index.js'
import {parseOtoolLibraries} from '../src/lib/platform/darwin.js'
import {hasNetAdmin, parseLdd, parseProcStat, parseSystemctlShow, passwdHome} from '../src/lib/platform/linux.js'
import {posixExecutableProblem} from '../src/lib/platform/posix.js'
import type {ProgramResult} from '../src/lib/platform/types.js'
import {cmdArg, parseIcacls, sddlMask, sddlWriters, scBinaryPath, schtasksField, schtasksStatus, schtasksTaskRunLimit, windowsArg, windowsCommandLine} from '../src/lib/platform/win32.js'
import {InvalidInputError} from '../src/lib/errors.js'
import {fakeHost, getAclAnswer} from './helpers/host.js'
import {expectRejects} from './helpers/rejects.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

const fixture = (name: string) => readFileSync(new URL(`fixtures/platform/${name}`, import.meta.url), 'utf8')

const ok = (stdout: string): ProgramResult => ({stdout, stderr: '', exitCode: 0, missing: false})
const failed = (exitCode: number, stderr = ''): ProgramResult => ({stdout: '', stderr, exitCode, missing: false})

/** CommandLineToArgvW's rules (Microsoft Learn, "Parsing C command-line arguments"): how Windows splits a service's command line. */
function commandLineToArgv(line: string): string[] {
  const args: string[] = []
  let current = ''
  let quoted = false
  let started = false
  for (let i = 0; i < line.length; i++) {
    const char = line[i]
    if (char === '\\') {
      let count = 0
      while (line[i] === '\\') {
        count++
        i++
      }
      if (line[i] === '"') {
        current += '\\'.repeat(Math.floor(count / 2))
        if (count % 2 === 1) current += '"'
        else quoted = !quoted
      } else {
        current += '\\'.repeat(count)
        i--
      }
      started = true
    } else if (char === '"') {
      quoted = !quoted
      started = true
    } else if ((char === ' ' || char === '\t') && !quoted) {
      if (started) args.push(current)
      current = ''
      started = false
    } else {
      current += char
      started = true
    }
  }
  if (started) args.push(current)
  return args
}

describe('platform layer', () => {
  after(removeTempDirs)

  describe('linux (this machine, for real)', () => {
    const linux = platformFor('linux')

    it("hands a service process the manager's stop (SIGTERM, SIGINT) and reload (SIGHUP), and stops listening when told", () => {
      const before = ['SIGTERM', 'SIGINT', 'SIGHUP'].map((signal) => process.listenerCount(signal))
      const calls: string[] = []
      const stopListening = linux.onServiceRequests({stop: () => calls.push('stop'), reload: () => calls.push('reload')})
      process.emit('SIGHUP', 'SIGHUP')
      process.emit('SIGHUP', 'SIGHUP')
      process.emit('SIGTERM', 'SIGTERM')
      expect(calls).to.deep.equal(['reload', 'reload', 'stop'])
      stopListening()
      expect(['SIGTERM', 'SIGINT', 'SIGHUP'].map((signal) => process.listenerCount(signal))).to.deep.equal(before)
      // Windows has no reload signal (a reload restarts the service): only the stop is handed over.
      const windows = platformFor('win32', fakeHost(() => ok('')))
      const stopWindows = windows.onServiceRequests({stop: () => calls.push('stop on windows'), reload: () => calls.push('reload on windows')})
      expect(process.listenerCount('SIGHUP')).to.equal(before[2])
      process.emit('SIGTERM', 'SIGTERM')
      stopWindows()
      expect(calls.slice(3)).to.deep.equal(['stop on windows'])
      expect(['SIGTERM', 'SIGINT', 'SIGHUP'].map((signal) => process.listenerCount(signal))).to.deep.equal(before)
    })

    it('hands a foreground command Ctrl-C and the stop, but leaves SIGHUP alone when it takes no reloads; Ctrl-Break on Windows', () => {
      const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGBREAK']
      const before = signals.map((signal) => process.listenerCount(signal))
      const calls: string[] = []
      const stopListening = linux.onServiceRequests({stop: () => calls.push('stop')})
      expect(signals.map((signal) => process.listenerCount(signal))).to.deep.equal([before[0]! + 1, before[1]! + 1, before[2], before[3]])
      process.emit('SIGINT', 'SIGINT')
      stopListening()
      const windows = platformFor('win32', fakeHost(() => ok('')))
      const stopWindows = windows.onServiceRequests({stop: () => calls.push('stop on windows')})
      process.emit('SIGBREAK', 'SIGBREAK')
      stopWindows()
      expect(calls).to.deep.equal(['stop', 'stop on windows'])
      expect(signals.map((signal) => process.listenerCount(signal))).to.deep.equal(before)
    })

    it('identifies a process by PID and start time from /proc, and tells a recycled PID apart', async () => {
      const me = await linux.processIdentity(process.pid)
      expect(me?.pid).to.equal(process.pid)
      expect(me?.startedAt).to.match(/^\d+$/)
      expect(await linux.isRunning(me ?? {pid: 0, startedAt: ''})).to.equal(true)
      expect(await linux.isRunning({pid: process.pid, startedAt: `${me?.startedAt}1`})).to.equal(false)
      const child = execa('true')
      const pid = child.pid ?? 0
      await child
      expect(await linux.processIdentity(pid)).to.equal(undefined)
      expect(linux.pidExists(pid)).to.equal(false)
      expect(parseProcStat('42 (a) b) c) Z 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0')).to.deep.equal({state: 'Z', startTicks: '99'})
    })

    it('keeps ~/.vidsync where it exists, else uses $XDG_STATE_HOME/vidsync (absolute only), else ~/.local/state/vidsync', () => {
      const alice = {name: 'alice', home: '/home/alice', uid: 1001, gid: 1001, viaSudo: false}
      const home = (env: Record<string, string>, existing: string[]) =>
        platformFor('linux', fakeHost(() => failed(2), {env, existsSync: (path) => existing.includes(path)})).defaultHome(alice)
      expect(home({}, ['/home/alice/.vidsync'])).to.equal('/home/alice/.vidsync')
      expect(home({XDG_STATE_HOME: '/srv/state'}, ['/home/alice/.vidsync'])).to.equal('/home/alice/.vidsync')
      expect(home({XDG_STATE_HOME: '/srv/state'}, [])).to.equal('/srv/state/vidsync')
      expect(home({XDG_STATE_HOME: 'relative/state'}, [])).to.equal('/home/alice/.local/state/vidsync')
      expect(home({}, [])).to.equal('/home/alice/.local/state/vidsync')
      // The overlay files nebula's root service reads live apart from the user's state.
      expect(platformFor('linux', fakeHost(() => failed(2))).systemDir).to.equal('/etc/vidsync')
    })

    it('reads CAP_NET_ADMIN from CapEff and the invoking user from SUDO_USER', async () => {
      expect(hasNetAdmin('CapEff:\t0000000000001000\n')).to.equal(true)
      expect(hasNetAdmin('CapEff:\t000001fffeffefff\n')).to.equal(false)
      const passwd = 'root:x:0:0:root:/root:/bin/bash\nalice:x:1001:1001:Alice:/home/alice:/bin/bash\n'
      expect(passwdHome(passwd, 'alice')).to.equal('/home/alice')
      const underSudo = platformFor('linux', fakeHost(() => failed(2), {uid: 0, gid: 0, env: {SUDO_USER: 'alice', SUDO_UID: '1001', SUDO_GID: '1001'}, readFileSync: () => passwd, homedir: () => '/root', userName: () => 'root'}))
      const user = underSudo.invokingUser()
      expect(user).to.deep.equal({name: 'alice', home: '/home/alice', uid: 1001, gid: 1001, viaSudo: true})
      expect(underSudo.defaultHome(user)).to.equal('/home/alice/.local/state/vidsync')
      // Not root: SUDO_USER in the environment means nothing.
      const notRoot = platformFor('linux', fakeHost(() => failed(2), {uid: 1002, env: {SUDO_USER: 'alice', SUDO_UID: '1001', SUDO_GID: '1001'}, homedir: () => '/home/bob', userName: () => 'bob'}))
      expect(notRoot.invokingUser()).to.include({name: 'bob', home: '/home/bob', viaSudo: false})
    })

    it('makes files private with chmod and says when one is not', async () => {
      const dir = await tempDir('vidsync-platform-')
      const file = join(dir, 'node.key')
      await writeFile(file, 'secret', {mode: 0o644})
      expect(await linux.privacyProblem(file)).to.equal(`${file} is readable by others (mode 0644): run chmod 600 ${file}`)
      await linux.makePrivate(file)
      expect(await linux.privacyProblem(file)).to.equal(undefined)
    })

    it('refuses a program for root\'s service that someone other than root could replace: owner, group and world write bits up to /, sticky /tmp', async () => {
      const tree: Record<string, {uid: number; gid: number; mode: number}> = {
        '/': {uid: 0, gid: 0, mode: 0o755},
        '/usr': {uid: 0, gid: 0, mode: 0o755},
        '/usr/bin': {uid: 0, gid: 0, mode: 0o755},
        '/usr/bin/node': {uid: 0, gid: 0, mode: 0o755},
        '/home': {uid: 0, gid: 0, mode: 0o755},
        '/home/alice': {uid: 1001, gid: 1001, mode: 0o750},
        '/home/alice/.nvm/node': {uid: 1001, gid: 1001, mode: 0o755},
        '/opt': {uid: 0, gid: 0, mode: 0o755},
        '/opt/shared': {uid: 0, gid: 50, mode: 0o775},
        '/opt/shared/run.js': {uid: 0, gid: 0, mode: 0o644},
        '/opt/wheel': {uid: 0, gid: 0, mode: 0o775},
        '/opt/wheel/run.js': {uid: 0, gid: 0, mode: 0o644},
        '/tmp': {uid: 0, gid: 0, mode: 0o1777},
        '/tmp/vidsync': {uid: 0, gid: 0, mode: 0o755},
        '/tmp/vidsync/run.js': {uid: 0, gid: 0, mode: 0o755},
        '/tmp/open.js': {uid: 0, gid: 0, mode: 0o666},
      }
      const host = fakeHost(() => failed(1), {fileOwner: async (path) => tree[path], realPath: async (path) => (path === '/usr/local/bin/node' ? '/usr/bin/node' : path)})
      const check = (path: string) => posixExecutableProblem(host, path)
      expect(await check('/usr/bin/node')).to.equal(undefined)
      expect(await check('/usr/local/bin/node')).to.equal(undefined) // a link to a root-owned file in root-owned directories
      expect(await check('/home/alice/.nvm/node')).to.equal('/home/alice/.nvm/node would run as root in the nebula service, but the file belongs to uid 1001, not root')
      expect(await check('/opt/shared/run.js')).to.equal('/opt/shared/run.js would run as root in the nebula service, but the directory /opt/shared is writable by group 50 (mode 0775)')
      expect(await check('/opt/wheel/run.js')).to.equal(undefined) // root's own group
      // /tmp is sticky: nobody but root replaces root's entries in it; a file everyone may write is another matter.
      expect(await check('/tmp/vidsync/run.js')).to.equal(undefined)
      expect(await check('/tmp/open.js')).to.equal('/tmp/open.js would run as root in the nebula service, but the file is writable by everyone (mode 0666)')
      expect(await check('/usr/bin/gone')).to.equal('/usr/bin/gone cannot be checked: /usr/bin/gone is missing')
      // Both POSIX platforms check this way.
      expect(await platformFor('darwin', host).executableProblem('/home/alice/.nvm/node')).to.match(/belongs to uid 1001/)
      expect(await platformFor('linux', host).nebulaCompanions('/usr/bin/nebula')).to.deep.equal([])
      expect([platformFor('linux', host).serviceRendersOverlay, platformFor('darwin', host).serviceRendersOverlay, platformFor('win32', host).serviceRendersOverlay]).to.deep.equal([true, true, false])
    })

    it("lists the shared libraries Node.js loads, for the service's check: ldd (real here, and recorded), otool -L without SIP's /usr/lib and /System", async () => {
      expect(parseLdd(fixture('ldd-node.txt'))).to.deep.equal([
        '/lib/x86_64-linux-gnu/libdl.so.2', '/lib/x86_64-linux-gnu/libstdc++.so.6', '/lib/x86_64-linux-gnu/libm.so.6', '/lib/x86_64-linux-gnu/libgcc_s.so.1',
        '/lib/x86_64-linux-gnu/libpthread.so.0', '/lib/x86_64-linux-gnu/libc.so.6', '/lib64/ld-linux-x86-64.so.2',
      ])
      // This machine's node: every library it loads is root's.
      const linux = platformFor('linux', hostDeps())
      const libraries = await linux.linkedLibraries(process.execPath)
      for (const library of libraries) expect(await linux.executableProblem(library)).to.equal(undefined)
      expect(await linux.linkedLibraries('/bin/sh')).to.include.members(libraries.filter((path) => /\/libc\.so/.test(path)))
      expect(parseOtoolLibraries(fixture('otool-node-nodejs-org.txt'))).to.deep.equal([])
      const brew = fakeHost((argv) => (argv[0] === 'otool' ? ok(fixture('otool-node-homebrew.txt')) : failed(1)))
      expect(await platformFor('darwin', brew).linkedLibraries('/opt/homebrew/opt/node/bin/node')).to.deep.equal([
        '/opt/homebrew/opt/brotli/lib/libbrotlidec.1.dylib', '/opt/homebrew/opt/brotli/lib/libbrotlienc.1.dylib', '/opt/homebrew/opt/c-ares/lib/libcares.2.dylib',
        '/opt/homebrew/opt/icu4c@76/lib/libicui18n.76.dylib', '/opt/homebrew/opt/icu4c@76/lib/libicuuc.76.dylib', '/opt/homebrew/opt/libnghttp2/lib/libnghttp2.14.dylib',
        '/opt/homebrew/opt/libuv/lib/libuv.1.dylib', '/opt/homebrew/opt/openssl@3/lib/libssl.3.dylib', '/opt/homebrew/opt/openssl@3/lib/libcrypto.3.dylib',
      ])
      expect(brew.calls).to.deep.equal([['otool', '-L', '/opt/homebrew/opt/node/bin/node']])
      expect(await platformFor('win32', brew).linkedLibraries('C:\\nebula.exe')).to.deep.equal([])
    })

    it('writes systemd units that systemd-analyze verify accepts (started only where systemd runs)', async () => {
      const dir = await tempDir('vidsync-platform-')
      const command = [process.execPath, '/opt/vidsync/bin/run.js', 'nebula', 'service', 'studio', '--home', '/home/alice/.vidsync 100%']
      const nebula = await linux.nebulaService({project: 'studio', command, logPath: '/dev/null', description: 'vidsync: Nebula overlay for project studio'})
      const agent = await linux.userService({role: 'agent', project: 'studio', command, logPath: '/dev/null', description: 'vidsync: Syncthing and reconcile loop for studio', user: {name: 'alice', home: '/home/alice', uid: 1001, gid: 1001, viaSudo: false}})
      expect(nebula).to.include({name: 'vidsync-nebula-studio.service', path: '/etc/systemd/system/vidsync-nebula-studio.service'})
      expect(nebula.install).to.deep.equal([['systemctl', 'daemon-reload'], ['systemctl', 'enable', '--now', 'vidsync-nebula-studio.service']])
      expect(nebula.uninstall).to.deep.equal([['systemctl', 'disable', '--now', 'vidsync-nebula-studio.service']])
      expect(nebula.cleanup).to.deep.equal([['systemctl', 'daemon-reload']])
      expect(agent.path).to.equal('/home/alice/.config/systemd/user/vidsync-studio.service')
      // This process is root: the user's manager is reached with --machine=alice@, never a root --user unit.
      expect(agent.install.at(-1)).to.deep.equal(['systemctl', '--user', '--machine=alice@', 'enable', '--now', 'vidsync-studio.service'])
      expect(agent.scope).to.equal('user')
      expect(nebula.content).to.contain(`ExecStart="${process.execPath}" "/opt/vidsync/bin/run.js" "nebula" "service" "studio" "--home" "/home/alice/.vidsync 100%%"\n`)
      expect(nebula.content).to.contain('Restart=on-failure\nRestartSec=2\n')
      expect(nebula.content).to.contain('StartLimitIntervalSec=120\nStartLimitBurst=5\n')
      expect(nebula.content).to.contain('ExecReload=/bin/kill -HUP $MAINPID\n')
      // The agent reads agent.env itself: the unit passes no environment.
      expect(agent.content).not.to.match(/Environment/)
      expect(agent.content).to.contain('WantedBy=default.target\n')
      // The signer's unit: its own name (no project's agent unit has a dot), and nebula-cert's path, which is no secret.
      const signer = await linux.userService({role: 'signer', project: 'studio', command, logPath: '/dev/null', description: 'x', environment: {VIDSYNC_NEBULA_CERT: '/opt/nebula "1" 100%/nebula-cert'}})
      expect(signer.name).to.equal('vidsync-signer.studio.service')
      expect(signer.content).to.contain('removed by `vidsync signer studio --uninstall`.\n')
      expect(signer.content).to.contain('Environment="VIDSYNC_NEBULA_CERT=/opt/nebula \\"1\\" 100%%/nebula-cert"\n')
      for (const unit of [nebula, agent, signer]) {
        const path = join(dir, unit.name)
        await writeFile(path, unit.content ?? '')
        const verify = await execa('systemd-analyze', ['verify', path], {reject: false})
        // Only our unit's own problems count (verify also reports unrelated units of the host).
        const ours = `${verify.stdout}\n${verify.stderr}`.split('\n').filter((line) => line.includes(unit.name))
        expect(ours, `${unit.name}: ${verify.stderr}`).to.deep.equal([])
      }
      // Where systemd runs, `vidsync up` installs and starts the unit; here it must say it does not, and why.
      const problem = await linux.serviceManagerProblem('system')
      const init = (readFileSync('/proc/1/comm', 'utf8') || '?').trim()
      if (init === 'systemd') {
        expect(problem).to.equal(undefined)
        process.stdout.write('      · systemd runs here (PID 1): units verified with systemd-analyze\n')
      } else {
        expect(problem).to.equal(`systemd is not the init system here (PID 1 is ${init}): vidsync supervises nebula and the agent itself`)
        // The real systemctl answers as recorded in the fixture, and the unit counts as not installed.
        const state = await linux.serviceState(nebula)
        expect(state).to.include({installed: false, running: false, state: fixture('systemctl-show-no-systemd.txt').split('\n')[0]})
        process.stdout.write(`      · systemd does not run here (PID 1 is ${init}): units verified with systemd-analyze, not started; the fallback path is taken\n`)
      }
    })

    it('reads systemctl show: running, failed, not installed; the installed file is the fingerprint', async () => {
      let answer = ok(fixture('systemctl-show-running.txt'))
      const host = fakeHost(() => answer, {readFile: async (path) => (path === '/etc/systemd/system/vidsync-nebula-studio.service' ? 'unit text' : undefined)})
      const linuxHost = platformFor('linux', host)
      const unit = await linuxHost.nebulaService({project: 'studio', command: ['/usr/bin/node'], logPath: '/dev/null', description: 'x'})
      expect(await linuxHost.serviceState(unit)).to.deep.equal({installed: true, running: true, pid: 4242, state: 'active (running)', fingerprint: 'unit text'})
      expect(host.calls.at(-1)).to.deep.equal(['systemctl', 'show', '-p', 'LoadState,ActiveState,SubState,MainPID,Result', 'vidsync-nebula-studio.service'])
      // A crash loop ends at the start limit, and the state says so.
      answer = ok(fixture('systemctl-show-failed.txt'))
      expect(await linuxHost.serviceState(unit)).to.deep.include({
        installed: true,
        running: false,
        state: 'failed (started 5 times within 120 s and failed each time: systemd stopped restarting it)',
      })
      answer = ok(fixture('systemctl-show-failed.txt').replace('Result=start-limit-hit', 'Result=exit-code'))
      expect(await linuxHost.serviceState(unit)).to.deep.include({state: 'failed (failed)'})
      // Started again after the start limit: the failed state is reset first, or systemd refuses.
      expect(unit.start).to.deep.equal([['systemctl', 'reset-failed', 'vidsync-nebula-studio.service'], ['systemctl', 'start', 'vidsync-nebula-studio.service']])
      answer = ok(fixture('systemctl-show-not-found.txt'))
      expect(await linuxHost.serviceState(unit)).to.deep.include({installed: false, running: false})
      expect(parseSystemctlShow('A=b=c\nEmpty=\n')).to.deep.equal({A: 'b=c', Empty: ''})
    })
  })

  describe('darwin (recorded outputs of ps, launchctl, dscl)', () => {
    it('identifies processes with ps -o lstart=, zombies as gone', async () => {
      const host = fakeHost((argv) => (argv.includes('4242') ? ok(fixture('ps-lstart.txt')) : argv.includes('666') ? ok('Z    Thu Nov 26 09:14:03 2026\n') : failed(1)))
      const mac = platformFor('darwin', host)
      expect(await mac.processIdentity(4242)).to.deep.equal({pid: 4242, startedAt: 'Thu Nov 26 09:14:03 2026'})
      expect(host.calls[0]).to.deep.equal(['ps', '-o', 'stat=', '-o', 'lstart=', '-p', '4242'])
      expect(await mac.isRunning({pid: 4242, startedAt: 'Wed Nov 25 10:00:00 2026'})).to.equal(false)
      expect(await mac.processIdentity(666)).to.equal(undefined)
      expect(await mac.processIdentity(7)).to.equal(undefined)
      expect(host.calls.some((argv) => argv.some((arg) => arg.includes('/proc')))).to.equal(false)
    })

    it('asks launchctl print whether a job is bootstrapped and runs, with its pid', async () => {
      let answer = ok(fixture('launchctl-print-running.txt'))
      const host = fakeHost(() => answer)
      const mac = platformFor('darwin', host)
      const daemon = await mac.nebulaService({project: 'studio', command: ['/opt/homebrew/bin/node'], logPath: '/tmp/x.log', description: 'x'})
      expect(await mac.serviceState(daemon)).to.deep.equal({installed: true, running: true, pid: 4242, state: 'running'})
      expect(host.calls[0]).to.deep.equal(['launchctl', 'print', 'system/com.vidsync.nebula.studio'])
      answer = ok(fixture('launchctl-print-stopped.txt'))
      expect(await mac.serviceState(daemon)).to.deep.equal({installed: true, running: false, state: 'not running'})
      answer = {...failed(113), stdout: fixture('launchctl-print-not-found.txt')}
      expect(await mac.serviceState(daemon)).to.deep.equal({installed: false, running: false, state: 'Bad request.'})
      // A LaunchAgent needs the user's GUI session: none over ssh without a login.
      answer = failed(113, 'Bad request.\nCould not find domain for user gui: 501\n')
      expect(await mac.serviceManagerProblem('user', {name: 'alice', home: '/Users/alice', uid: 501, gid: 20, viaSudo: false})).to.equal(
        'alice has no login session (launchd domain gui/501): vidsync starts the agent itself',
      )
      expect(await mac.serviceManagerProblem('system')).to.equal(undefined)
    })

    it('writes a LaunchDaemon and a LaunchAgent plist that parse back to the command', async () => {
      const mac = platformFor('darwin', fakeHost(() => failed(1)))
      const command = ['/opt/homebrew/bin/node', '/opt/homebrew/lib/node_modules/vidsync/bin/run.js', 'nebula', 'service', 'studio', '--home', '/Users/alice/Library/Application Support/vidsync']
      const daemon = await mac.nebulaService({project: 'studio', command, logPath: '/Users/alice/Library/Application Support/vidsync/projects/studio/nebula-service.log', description: 'x'})
      expect(daemon.path).to.equal('/Library/LaunchDaemons/com.vidsync.nebula.studio.plist')
      expect(daemon.install).to.deep.equal([['launchctl', 'bootstrap', 'system', '/Library/LaunchDaemons/com.vidsync.nebula.studio.plist']])
      expect(daemon.uninstall).to.deep.equal([['launchctl', 'bootout', 'system/com.vidsync.nebula.studio']])
      expect(daemon.start).to.deep.equal([['launchctl', 'kickstart', 'system/com.vidsync.nebula.studio']])
      const parsed = parsePlist(daemon.content ?? '') as Record<string, unknown>
      expect(parsed).to.deep.equal({
        Label: 'com.vidsync.nebula.studio',
        ProgramArguments: command,
        RunAtLoad: true,
        KeepAlive: {SuccessfulExit: false},
        ThrottleInterval: 10,
        StandardOutPath: '/Users/alice/Library/Application Support/vidsync/projects/studio/nebula-service.log',
        StandardErrorPath: '/Users/alice/Library/Application Support/vidsync/projects/studio/nebula-service.log',
      })
      const user = {name: 'alice', home: '/Users/alice', uid: 501, gid: 20, viaSudo: true}
      const agent = await mac.userService({role: 'agent', project: 'studio', command: [...command.slice(0, 2), 'up', 'studio', '--agent'], logPath: '/tmp/a.log', description: 'x', user})
      expect(agent.path).to.equal('/Users/alice/Library/LaunchAgents/com.vidsync.agent.studio.plist')
      expect(agent.install).to.deep.equal([['launchctl', 'bootstrap', 'gui/501', agent.path]])
      expect(agent.scope).to.equal('user')
      const agentPlist = parsePlist(agent.content ?? '') as Record<string, unknown>
      expect(agentPlist).to.deep.include({ProgramArguments: [...command.slice(0, 2), 'up', 'studio', '--agent'], ProcessType: 'Background', KeepAlive: {SuccessfulExit: false}})
      expect(agentPlist).not.to.have.property('EnvironmentVariables')
    })

    it('finds the invoking user with dscl, the utun holding the overlay IP, and its state directory', () => {
      const host = fakeHost((argv) => (argv[0] === 'dscl' ? ok('NFSHomeDirectory: /Users/alice\n') : failed(1)), {uid: 0, env: {SUDO_USER: 'alice', SUDO_UID: '501', SUDO_GID: '20'}, homedir: () => '/var/root', userName: () => 'root'})
      host.interfaces = () => ({lo0: [{address: '127.0.0.1'}], utun4: [{address: '10.99.1.5'}]}) as unknown as ReturnType<HostDeps['interfaces']>
      const mac = platformFor('darwin', host)
      const user = mac.invokingUser()
      expect(user).to.deep.equal({name: 'alice', home: '/Users/alice', uid: 501, gid: 20, viaSudo: true})
      expect(host.calls[0]).to.deep.equal(['dscl', '.', '-read', '/Users/alice', 'NFSHomeDirectory'])
      expect(mac.defaultHome(user)).to.equal('/Users/alice/Library/Application Support/vidsync')
      expect(mac.systemDir).to.equal('/Library/Application Support/vidsync')
      expect(mac.overlayInterface({tunDev: 'vs-studio', overlayIp: '10.99.1.5'})).to.equal('utun4')
      expect(mac.honoursTunDev).to.equal(false)
    })
  })

  describe('win32 (recorded outputs of PowerShell, icacls, sc.exe, schtasks)', () => {
    const key = 'C:\\Users\\alice\\AppData\\Local\\vidsync\\projects\\studio\\node.key'

    it('identifies processes with Get-CimInstance Win32_Process', async () => {
      const host = fakeHost((argv) => (argv.join(' ').includes('ProcessId=4242') ? ok(fixture('cim-process.txt')) : ok('')))
      const win = platformFor('win32', host)
      expect(await win.processIdentity(4242)).to.deep.equal({pid: 4242, startedAt: '2026-11-26T09:14:03.5120000+01:00'})
      expect(host.calls[0]?.slice(0, 4)).to.deep.equal(['powershell.exe', '-NoProfile', '-NonInteractive', '-Command'])
      expect(await win.processIdentity(5)).to.equal(undefined)
    })

    it('checks private files with icacls: only the user and SYSTEM, nothing inherited; sets them so', async () => {
      let answer = fixture('icacls-inherited.txt')
      const host = fakeHost((argv) => (argv.length === 2 ? ok(answer) : ok('processed file: x\r\nSuccessfully processed 1 files; Failed processing 0 files\r\n')))
      const win = platformFor('win32', host)
      expect(parseIcacls(fixture('icacls-private.txt'), key)).to.deep.equal([
        {principal: 'NT AUTHORITY\\SYSTEM', rights: '(F)', inherited: false},
        {principal: 'DESKTOP-7Q2\\alice', rights: '(F)', inherited: false},
      ])
      expect(await win.privacyProblem(key)).to.match(/readable by others \(BUILTIN\\Administrators, NT AUTHORITY\\SYSTEM, DESKTOP-7Q2\\alice, BUILTIN\\Users\)/)
      await win.makePrivate(key)
      expect(host.calls.at(-1)).to.deep.equal(['icacls', key, '/inheritance:r', '/grant:r', 'alice:(F)', '*S-1-5-18:(F)'])
      answer = fixture('icacls-private.txt')
      expect(await win.privacyProblem(key)).to.equal(undefined)
      // The system copy for root's nebula (%ProgramData%\vidsync\<project>): SYSTEM and Administrators only, by SID; the directory passes it on.
      await win.makeSystemPrivate('C:\\ProgramData\\vidsync\\studio', true)
      // Owned by Administrators and reset first: a user who made the folder first would otherwise keep the right to change its ACL, or an entry of their own.
      expect(host.calls.at(-3)).to.deep.equal(['icacls', 'C:\\ProgramData\\vidsync\\studio', '/setowner', '*S-1-5-32-544'])
      expect(host.calls.at(-2)).to.deep.equal(['icacls', 'C:\\ProgramData\\vidsync\\studio', '/reset'])
      expect(host.calls.at(-1)).to.deep.equal(['icacls', 'C:\\ProgramData\\vidsync\\studio', '/inheritance:r', '/grant:r', '*S-1-5-18:(OI)(CI)(F)', '*S-1-5-32-544:(OI)(CI)(F)'])
      await win.makeSystemPrivate('C:\\ProgramData\\vidsync\\studio\\node.key')
      expect(host.calls.at(-1)).to.deep.equal(['icacls', 'C:\\ProgramData\\vidsync\\studio\\node.key', '/inheritance:r', '/grant:r', '*S-1-5-18:(F)', '*S-1-5-32-544:(F)'])
    })

    it('installs nebula as an SCM service of its own per project; its command line parses back', async () => {
      let answer = fixture('sc-query-running.txt')
      const win = platformFor('win32', fakeHost(() => ok(answer), {env: {ProgramData: 'C:\\ProgramData', LOCALAPPDATA: 'C:\\Users\\alice\\AppData\\Local'}}))
      // The protected copy of nebula.exe with the system copy of the overlay (what the elevated step installs; see services.test.ts).
      const command = ['C:\\ProgramData\\vidsync\\bin\\nebula.exe', '-service', 'run', '-config', 'C:\\ProgramData\\vidsync\\studio\\nebula.yml']
      const service = await win.nebulaService({project: 'studio', command, logPath: 'x', description: 'vidsync: Nebula overlay for project studio'})
      expect(service.name).to.equal('vidsync-nebula-studio')
      const create = service.install[0] ?? []
      expect(create.slice(0, 4)).to.deep.equal(['sc.exe', 'create', 'vidsync-nebula-studio', 'binPath='])
      expect(commandLineToArgv(create[4] ?? '')).to.deep.equal(command)
      expect(create.slice(5)).to.deep.equal(['start=', 'auto', 'DisplayName=', 'vidsync: Nebula overlay for project studio'])
      expect(service.install[1]).to.deep.equal(['sc.exe', 'failure', 'vidsync-nebula-studio', 'reset=', '86400', 'actions=', 'restart/2000/restart/5000/restart/10000'])
      expect(service.install[2]).to.deep.equal(['sc.exe', 'failureflag', 'vidsync-nebula-studio', '1'])
      // The installing user may start and stop it (to reload nebula) without an elevated prompt.
      expect(service.install[3]?.at(-1)).to.equal(
        "$sid = [Security.Principal.WindowsIdentity]::GetCurrent().User.Value; sc.exe sdset vidsync-nebula-studio ('D:(A;;CCLCSWRPWPDTLOCRRC;;;SY)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)(A;;CCLCSWLOCRRC;;;IU)(A;;RPWPLCRC;;;' + $sid + ')'); exit $LASTEXITCODE",
      )
      expect(service.install.at(-1)).to.deep.equal(['sc.exe', 'start', 'vidsync-nebula-studio'])
      expect(service.uninstall).to.deep.equal([['sc.exe', 'stop', 'vidsync-nebula-studio'], ['sc.exe', 'delete', 'vidsync-nebula-studio']])
      answer = fixture('sc-queryex-running.txt')
      const qc = fixture('sc-qc.txt')
      const host = fakeHost((argv) => (argv[1] === 'qc' ? ok(qc) : ok(answer)))
      const scm = platformFor('win32', host)
      expect(await scm.serviceState(service)).to.deep.equal({installed: true, running: true, pid: 4242, state: 'RUNNING', fingerprint: scBinaryPath(qc)})
      expect(host.calls.map((argv) => argv.slice(0, 2))).to.deep.equal([['sc.exe', 'queryex'], ['sc.exe', 'qc']])
      // What the SCM recorded is the binPath vidsync gave it, verbatim: the same install is not stale.
      expect(scBinaryPath(qc)).to.equal(service.fingerprint)
      answer = fixture('sc-query-stopped.txt')
      expect(await scm.serviceState(service)).to.deep.include({installed: true, running: false, state: 'STOPPED'})
      const missing = platformFor('win32', fakeHost(() => ({...failed(1060), stdout: fixture('sc-queryex-missing.txt')})))
      expect(await missing.serviceState(service)).to.deep.equal({installed: false, running: false, state: '[SC] EnumQueryServicesStatus:OpenService FAILED 1060:'})
      expect(win.systemDir).to.equal('C:\\ProgramData\\vidsync')
      expect(win.defaultHome(win.invokingUser())).to.equal('C:\\Users\\alice\\AppData\\Local\\vidsync')
    })

    it('runs the agent as a logon task through a short wrapper; its command line parses back, also from a long path', async () => {
      const dir = await tempDir('vidsync-platform-')
      let answer = ok(fixture('schtasks-query-verbose.txt'))
      const host = fakeHost(() => answer, {readFile: (path) => readFile(path, 'utf8').catch(() => undefined)})
      const win = platformFor('win32', host)
      const deep = `C:\\Users\\alice\\${'a very deep folder\\'.repeat(12)}nodejs\\node.exe`
      const command = [deep, 'C:\\Users\\alice\\AppData\\Roaming\\npm\\node_modules\\vidsync\\bin\\run.js', 'up', 'studio', '--agent', '--home', 'C:\\Users\\al & 100%\\vidsync\\', '']
      expect(windowsCommandLine(command).length).to.be.above(schtasksTaskRunLimit)
      const task = await win.userService({role: 'agent', project: 'studio', command, logPath: 'x', description: 'x', user: win.invokingUser(), stateDir: dir})
      const create = task.install[0] ?? []
      expect(create.slice(0, 5)).to.deep.equal(['schtasks', '/Create', '/TN', 'vidsync\\studio', '/TR'])
      // /TR runs the wrapper in the project directory, whatever the length of node's and vidsync's paths.
      expect(task.path).to.equal(join(dir, 'agent-task.cmd'))
      expect(create[5]).to.equal(windowsArg(task.path ?? ''))
      expect((create[5] ?? '').length).to.be.at.most(schtasksTaskRunLimit)
      expect(create.slice(6)).to.deep.equal(['/SC', 'ONLOGON', '/RL', 'LIMITED', '/F'])
      // The wrapper's last line is the command: cmd.exe turns %% into %, then CommandLineToArgvW splits it.
      const lines = (task.content ?? '').split('\r\n')
      expect(lines[0]).to.equal('@echo off')
      expect(commandLineToArgv((lines[2] ?? '').replaceAll('%%', '%'))).to.deep.equal(command)
      expect(lines[2]).to.contain('"C:\\Users\\al & 100%%\\vidsync\\\\"')
      expect(() => cmdArg('a"b')).to.throw(InvalidInputError)
      expect(task.install[1]?.at(-1)).to.equal(
        "Set-ScheduledTask -TaskPath '\\vidsync\\' -TaskName 'studio' -Settings (New-ScheduledTaskSettingsSet -ExecutionTimeLimit ([TimeSpan]::Zero) -RestartCount 999 -RestartInterval (New-TimeSpan -Minutes 1)) | Out-Null",
      )
      expect(task.install.at(-1)).to.deep.equal(['schtasks', '/Run', '/TN', 'vidsync\\studio'])
      expect(schtasksStatus(fixture('schtasks-query.txt'))).to.equal('Running')
      // A task from before the wrapper (the recorded one runs node.exe itself): its command line is the fingerprint, so it is stale.
      expect(await win.serviceState(task)).to.deep.equal({installed: true, running: false, state: 'Ready', fingerprint: schtasksField(fixture('schtasks-query-verbose.txt'), 'Task To Run')})
      expect(host.calls.at(-1)).to.deep.equal(['schtasks', '/Query', '/TN', 'vidsync\\studio', '/FO', 'LIST', '/V'])
      // A task that runs this wrapper: the wrapper's content is the fingerprint.
      answer = ok(fixture('schtasks-query-verbose.txt').replace(/^Task To Run: .*$/m, `Task To Run:                          ${task.path}`))
      await writeFile(task.path ?? '', task.content ?? '')
      expect((await win.serviceState(task)).fingerprint).to.equal(task.fingerprint)
      answer = {...failed(1), stderr: fixture('schtasks-query-missing.txt')}
      expect(await win.serviceState(task)).to.deep.equal({installed: false, running: false, state: 'ERROR: The system cannot find the file specified.'})
      expect(commandLineToArgv(windowsCommandLine(['a b', 'c\\', 'd"e', '']))).to.deep.equal(['a b', 'c\\', 'd"e', ''])
      // The signer's task: a name of its own (no project's agent task has a dot), its wrapper in its own directory, nebula-cert's path set first.
      const signerDir = join(dir, 'signer')
      const signer = await win.userService({role: 'signer', project: 'studio', command: command.slice(0, 3), logPath: 'x', description: 'x', stateDir: signerDir, environment: {VIDSYNC_NEBULA_CERT: 'C:\\nebula 100%\\nebula-cert.exe'}})
      expect([signer.name, signer.path]).to.deep.equal(['vidsync\\signer.studio', join(signerDir, 'signer-task.cmd')])
      expect((signer.content ?? '').split('\r\n').slice(1, 3)).to.deep.equal([
        'rem x: written by vidsync signer --install, run at logon by the task vidsync\\signer.studio',
        'set "VIDSYNC_NEBULA_CERT=C:\\nebula 100%%\\nebula-cert.exe"',
      ])
      expect(signer.install[1]?.at(-1)).to.contain("-TaskName 'signer.studio' ")
      // A home so deep that even the wrapper's path passes 261 characters: exit 2, naming --home.
      const tooDeep = `C:\\Users\\alice\\${'x'.repeat(260)}\\projects\\studio`
      const error = await expectRejects(win.userService({role: 'agent', project: 'studio', command, logPath: 'x', description: 'x', stateDir: tooDeep}), InvalidInputError)
      expect(error.exitCode).to.equal(2)
      expect(error.message).to.match(/^the logon task would run .*agent-task\.cmd, 3\d\d characters: schtasks takes at most 261$/)
      expect(error.hint).to.equal('use a shorter --home')
    })

    it('refuses a nebula.exe for the SYSTEM service that a non-administrator could replace (Get-Acl SDDL of the file and its folder, by SID, whatever the language); finds wintun.dll to copy', async () => {
      const answers: Record<string, string> = {
        'C:\\Program Files\\nebula\\nebula.exe': fixture('getacl-sddl-program-files.txt'),
        'C:\\Program Files\\nebula': fixture('getacl-sddl-program-files-dir.txt'),
        'C:\\Users\\alice\\AppData\\Local\\nebula\\nebula.exe': fixture('getacl-sddl-user-program.txt'),
        'C:\\Users\\alice\\AppData\\Local\\nebula': fixture('getacl-sddl-user-program.txt'),
        'C:\\ProgramData\\vidsync\\bin\\nebula.exe': fixture('getacl-sddl-system-private.txt'),
        'C:\\ProgramData\\vidsync\\bin': fixture('getacl-sddl-programdata-inherited.txt'),
      }
      const host = fakeHost((argv) => getAclAnswer(argv, (path) => answers[path]) ?? (argv[0] === 'icacls' ? ok(fixture('icacls-de-program-files.txt')) : failed(1)), {
        exists: async (path) => path === 'C:\\Program Files\\nebula\\dist\\windows\\wintun\\bin\\amd64\\wintun.dll',
      })
      const win = platformFor('win32', host)
      // Unzipped into Program Files by an administrator: only TrustedInstaller, SYSTEM and Administrators may write; entries for what the folder will hold (IO) do not count.
      expect(await win.executableProblem('C:\\Program Files\\nebula\\nebula.exe')).to.equal(undefined)
      // One PowerShell for both, paths as single-quoted strings.
      expect(host.calls).to.deep.equal([
        ['powershell.exe', '-NoProfile', '-NonInteractive', '-Command', "'C:\\Program Files\\nebula\\nebula.exe','C:\\Program Files\\nebula' | ForEach-Object { (Get-Acl -LiteralPath $_).Sddl }"],
      ])
      // The same file on a German Windows: icacls names VORDEFINIERT\Administratoren and NT-AUTORITÄT\SYSTEM, Get-Acl's Sddl is the same SIDs and masks; icacls is not asked.
      const german = fixture('getacl-format-list-de.txt')
      expect(german).to.include('Owner  : VORDEFINIERT\\Administratoren')
      answers['C:\\Program Files\\nebula\\nebula.exe'] = /^Sddl\s*: (.*)$/m.exec(german.replace(/\r/g, ''))?.[1] ?? ''
      expect(answers['C:\\Program Files\\nebula\\nebula.exe']).to.equal(fixture('getacl-sddl-program-files.txt').trim())
      expect(fixture('icacls-de-program-files.txt')).to.include('VORDEFINIERT\\Administratoren:(I)(F)')
      expect(await win.executableProblem('C:\\Program Files\\nebula\\nebula.exe')).to.equal(undefined)
      expect(host.calls.some((argv) => argv[0] === 'icacls')).to.equal(false)
      // alice's own file: she owns it (and may rewrite its DACL) and has full control.
      expect(await win.executableProblem('C:\\Users\\alice\\AppData\\Local\\nebula\\nebula.exe')).to.equal(
        'C:\\Users\\alice\\AppData\\Local\\nebula\\nebula.exe would run as SYSTEM in the nebula service, but the file is writable by S-1-5-21-3623811015-3361044348-30300820-1001 (owner)',
      )
      // %ProgramData%'s default lets Users add files and folders (DCLCRPCR, 0x116): the copy's folder must not keep it.
      expect(await win.executableProblem('C:\\ProgramData\\vidsync\\bin\\nebula.exe')).to.equal(
        'C:\\ProgramData\\vidsync\\bin\\nebula.exe would run as SYSTEM in the nebula service, but the folder C:\\ProgramData\\vidsync\\bin is writable by Users (BU)',
      )
      answers['C:\\ProgramData\\vidsync\\bin'] = fixture('getacl-sddl-system-private-dir.txt')
      expect(await win.executableProblem('C:\\ProgramData\\vidsync\\bin\\nebula.exe')).to.equal(undefined)
      expect(await win.executableProblem('C:\\nowhere\\nebula.exe')).to.equal("C:\\nowhere\\nebula.exe cannot be checked: Get-Acl failed: Get-Acl : Cannot find path 'C:\\nowhere\\nebula.exe' because it does not exist.")
      // Rights as masks, whichever way SDDL writes them; read-only and inherit-only entries, SYSTEM, Administrators and TrustedInstaller by SID do not count.
      expect(sddlMask('FA')).to.equal(0x1f01ff)
      expect(sddlMask('DCLCRPCR')).to.equal(0x116)
      expect(sddlMask('0x1200A9')).to.equal(0x1200a9)
      expect(sddlMask('ZZ')).to.equal(undefined)
      expect(sddlWriters('O:S-1-5-32-544G:SYD:(A;;0x1301bf;;;S-1-5-18)(A;;GA;;;S-1-5-32-544)(A;OICIIO;GA;;;BU)(A;;0x1200a9;;;WD)(A;;FX;;;AU)')).to.deep.equal([])
      expect(sddlWriters('O:BAG:SYD:(A;;0x1200a9;;;WD)(A;;WD;;;AU)(A;;GW;;;IU)(A;;SD;;;S-1-5-21-1-2-3-1001)(A;;0x2;;;BU)(D;;FA;;;BU)')).to.deep.equal([
        'Authenticated Users (AU)', 'Interactive (IU)', 'S-1-5-21-1-2-3-1001', 'Users (BU)',
      ])
      expect(sddlWriters('O:BAG:SYD:NO_ACCESS_CONTROL')).to.deep.equal(['Everyone (no DACL)'])
      expect(sddlWriters('O:BAG:SY')).to.deep.equal(['Everyone (no DACL)'])
      expect(sddlWriters('O:BAG:SYD:(A;;XY;;;BU)')).to.deep.equal(['Users (BU)'])
      // wintun.dll where nebula's release zip puts it (slackhq/nebula overlay/tun_windows.go, checkWinTunExists), to copy along.
      expect(await win.nebulaCompanions('C:\\Program Files\\nebula\\nebula.exe')).to.deep.equal([
        {path: 'C:\\Program Files\\nebula\\dist\\windows\\wintun\\bin\\amd64\\wintun.dll', relative: 'dist\\windows\\wintun\\bin\\amd64\\wintun.dll'},
      ])
      expect(await win.nebulaCompanions('C:\\elsewhere\\nebula.exe')).to.deep.equal([])
    })

    it('reloads nebula by restarting its service, finds wintun.dll or says it is missing, names executables .exe', async () => {
      let present = false
      const host = fakeHost(() => ok(''), {exists: async (path) => present && path.endsWith('amd64\\wintun.dll')})
      const win = platformFor('win32', host)
      expect(await win.reloadNebula({pid: 4242, service: 'vidsync-nebula-studio'})).to.equal(true)
      expect(host.calls.at(-1)?.at(-1)).to.equal("Restart-Service -Name 'vidsync-nebula-studio'")
      expect(await win.reloadNebula({pid: 4242})).to.equal(false) // no signals on Windows
      expect(await win.tunProblem('C:\\nebula\\nebula.exe')).to.equal(
        "wintun.dll is missing: nebula needs it at C:\\nebula\\dist\\windows\\wintun\\bin\\amd64\\wintun.dll (from nebula's Windows release zip, or https://www.wintun.net/)",
      )
      present = true
      expect(await win.tunProblem('C:\\nebula\\nebula.exe')).to.equal(undefined)
      expect(win.executable('nebula')).to.equal('nebula.exe')
      expect(win.executable('syncthing.exe')).to.equal('syncthing.exe')
      expect(win.controlAddress('C:\\x', 'agent')).to.match(/^\\\\\.\\pipe\\vidsync-agent-[0-9a-f]{12}$/)
      expect(win.elevate(['C:\\Program Files\\nodejs\\node.exe', 'run.js', 'nebula', 'up', "it's", '--service'], false)).to.equal(undefined)
      const uac = win.elevate(['C:\\Program Files\\nodejs\\node.exe', 'run.js', 'nebula', 'up', "it's", '--service'], true) ?? []
      expect(uac.slice(0, 4)).to.deep.equal(['powershell.exe', '-NoProfile', '-NonInteractive', '-Command'])
      // UAC's consent prompt comes from Start-Process -Verb RunAs; the argument list parses back to the argv.
      const match = /^\$p = Start-Process -FilePath '((?:[^']|'')*)' -ArgumentList '((?:[^']|'')*)' -Verb RunAs -Wait -PassThru; exit \$p\.ExitCode$/.exec(uac[4] ?? '')
      expect(match?.[1]).to.equal('C:\\Program Files\\nodejs\\node.exe')
      expect(commandLineToArgv((match?.[2] ?? '').replaceAll("''", "'"))).to.deep.equal(['run.js', 'nebula', 'up', "it's", '--service'])
    })
  })

  it('the real host is what currentPlatform uses here', () => {
    expect(hostDeps().cpuCount).to.be.greaterThan(0)
  })
})
