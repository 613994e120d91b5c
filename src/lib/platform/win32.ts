import {createHash} from 'node:crypto'
import {dirname, join, posix, win32} from 'node:path'

import {InvalidInputError} from '../errors.js'

import {firstLine, interfaceHolding, listenForServiceRequests, manageWith, sameProcessRunning} from './host.js'
import type {HostDeps, Platform, ProcessIdentity, ServiceDefinition, ServiceSpec, UserServiceSpec} from './types.js'

const powershell = (command: string) => ['powershell.exe', '-NoProfile', '-NonInteractive', '-Command', command]

/** One argument quoted for CommandLineToArgvW (backslashes doubled only before a quote). */
export function windowsArg(arg: string): string {
  if (arg !== '' && !/[\s"]/.test(arg)) return arg
  return `"${arg.replace(/(\\*)"/g, '$1$1\\"').replace(/(\\+)$/, '$1$1')}"`
}

export const windowsCommandLine = (args: string[]) => args.map(windowsArg).join(' ')

/**
 * The access entries of `icacls PATH` (icacls(1) on Windows): the first line is the path followed
 * by an entry, the next lines are indented entries, then an empty line and a summary.
 */
export function parseIcacls(output: string, path: string): {principal: string; rights: string; inherited: boolean}[] {
  const lines = output.replace(/\r/g, '').split('\n')
  const entries: string[] = []
  for (const [index, line] of lines.entries()) {
    if (line.trim() === '') break
    entries.push(index === 0 && line.startsWith(path) ? line.slice(path.length).trim() : line.trim())
  }
  return entries.flatMap((entry) => {
    const match = /^(.*?):((?:\([A-Z,]+\))+)$/.exec(entry)
    return match?.[1] && match[2] ? [{principal: match[1], rights: match[2], inherited: match[2].includes('(I)')}] : []
  })
}

/**
 * Access mask bits that let a principal change a file or folder, or what a folder holds
 * ("File Security and Access Rights", "Access Mask", Microsoft Learn): FILE_WRITE_DATA/ADD_FILE
 * 0x2, FILE_APPEND_DATA/ADD_SUBDIRECTORY 0x4, FILE_WRITE_EA 0x10, FILE_DELETE_CHILD 0x40,
 * FILE_WRITE_ATTRIBUTES 0x100, DELETE 0x10000, WRITE_DAC 0x40000, WRITE_OWNER 0x80000,
 * GENERIC_ALL 0x10000000, GENERIC_WRITE 0x40000000.
 */
const writeMask = 0x2 | 0x4 | 0x10 | 0x40 | 0x100 | 0x10000 | 0x40000 | 0x80000 | 0x10000000 | 0x40000000

/**
 * SDDL's access right strings and their masks ("ACE Strings",
 * https://learn.microsoft.com/windows/win32/secauthz/ace-strings). A file's rights
 * print as the directory-service letters when no file string fits: %ProgramData% gives Users
 * `DCLCRPCR` (0x116: add file, add folder, write EA and attributes).
 */
const sddlRights: Record<string, number> = {
  GA: 0x10000000, GR: 0x80000000, GW: 0x40000000, GX: 0x20000000,
  RC: 0x20000, SD: 0x10000, WD: 0x40000, WO: 0x80000,
  FA: 0x1f01ff, FR: 0x120089, FW: 0x120116, FX: 0x1200a0,
  CC: 0x1, DC: 0x2, LC: 0x4, SW: 0x8, RP: 0x10, WP: 0x20, DT: 0x40, LO: 0x80, CR: 0x100,
  KA: 0xf003f, KR: 0x20019, KW: 0x20006, KX: 0x20019,
}

/** An SDDL rights field as a mask: hex (`0x1200a9`) or two-letter strings (`FA`, `DCLCRPCR`); undefined for an unknown string. */
export function sddlMask(rights: string): number | undefined {
  if (/^0x[0-9a-f]+$/i.test(rights)) return Number.parseInt(rights.slice(2), 16)
  let mask = 0
  for (let index = 0; index < rights.length; index += 2) {
    const bits = sddlRights[rights.slice(index, index + 2).toUpperCase()]
    if (bits === undefined) return undefined
    mask |= bits
  }
  return mask
}

/**
 * SYSTEM, Administrators, TrustedInstaller and CREATOR OWNER (which only passes rights to who
 * creates an entry), as SDDL writes them: an alias (SY, BA, CO) or a SID ("SID Strings",
 * Microsoft Learn). SIDs and aliases are the same on every Windows whatever its language.
 */
const adminSids = new Set(['SY', 'BA', 'CO', 'S-1-5-18', 'S-1-5-32-544', 'S-1-3-0', 'S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464'])

/** Names for the aliases an SDDL string may show a writer as, for one readable line. */
const sddlAliasNames: Record<string, string> = {
  BU: 'Users (BU)', AU: 'Authenticated Users (AU)', WD: 'Everyone (WD)', IU: 'Interactive (IU)', PU: 'Power Users (PU)', OW: 'Owner Rights (OW)', AN: 'Anonymous (AN)',
}

/**
 * Who other than SYSTEM and administrators may change the object a security descriptor in SDDL
 * describes (`(Get-Acl -LiteralPath X).Sddl`; "Security Descriptor String Format", Microsoft
 * Learn): its owner (who may always rewrite the DACL), and every allow ACE with a write right that
 * applies to the object itself (not INHERIT_ONLY, `IO`). No DACL at all (`D:NO_ACCESS_CONTROL`, or
 * none given) lets everyone write. Deny ACEs are not subtracted: a check that errs toward refusing.
 */
export function sddlWriters(sddl: string): string[] {
  const text = sddl.trim()
  const name = (sid: string) => sddlAliasNames[sid.toUpperCase()] ?? sid
  const writers: string[] = []
  const seen = new Set<string>()
  const owner = /^O:((?:S-\d+(?:-\d+)+)|[A-Z]{2})/i.exec(text)?.[1]
  if (owner && !adminSids.has(owner.toUpperCase())) {
    writers.push(`${name(owner)} (owner)`)
    seen.add(owner.toUpperCase())
  }
  const dacl = /D:([A-Z_]*)((?:\([^)]*\))*)/i.exec(text)
  if (!dacl || /NO_ACCESS_CONTROL/i.test(dacl[1] ?? '')) return [...writers, 'Everyone (no DACL)']
  for (const [, ace = ''] of (dacl[2] ?? '').matchAll(/\(([^)]*)\)/g)) {
    const [type = '', flags = '', rights = '', , , sid = ''] = ace.split(';')
    if (!['A', 'OA'].includes(type.toUpperCase()) || (flags.match(/../g) ?? []).some((flag) => flag.toUpperCase() === 'IO')) continue
    const mask = sddlMask(rights)
    // An unknown rights string counts as write: refusing is the safe side.
    if ((mask === undefined || (mask & writeMask) !== 0) && !adminSids.has(sid.toUpperCase()) && !seen.has(sid.toUpperCase())) {
      writers.push(name(sid))
      seen.add(sid.toUpperCase())
    }
  }
  return writers
}
/** `sc.exe query NAME`: the STATE line, e.g. "        STATE              : 4  RUNNING". */
export function scState(output: string): string | undefined {
  return /^\s*STATE\s*:\s*\d+\s+(\w+)/m.exec(output)?.[1]
}

/** `Get-CimInstance Win32_Process` formatted "{0} {1:o}": PID and CreationDate in .NET's round-trip format. */
export function parseCimProcess(output: string, pid: number): string | undefined {
  const line = output.replace(/\r/g, '').split('\n').find((text) => text.startsWith(`${pid} `))
  return line?.slice(String(pid).length + 1).trim() || undefined
}

/** `schtasks /Query /TN NAME /FO LIST [/V]`: the value of one "Key: value" line ("Status", "Task To Run"). */
export function schtasksField(output: string, key: string): string | undefined {
  const line = output.replace(/\r/g, '').split('\n').find((text) => text.startsWith(`${key}:`))
  return line?.slice(key.length + 1).trim()
}

export const schtasksStatus = (output: string) => schtasksField(output, 'Status')

/** `sc.exe queryex NAME`: "PID                : 4242" (0 while stopped). */
export function scPid(output: string): number | undefined {
  const pid = Number(/^\s*PID\s*:\s*(\d+)/m.exec(output)?.[1])
  return pid > 0 ? pid : undefined
}

/** `sc.exe qc NAME`: the command line the SCM starts ("BINARY_PATH_NAME   : ..."). */
export function scBinaryPath(output: string): string | undefined {
  return /^\s*BINARY_PATH_NAME\s*:\s*(.+?)\s*$/m.exec(output.replace(/\r/g, ''))?.[1]
}

/** `schtasks /Create /TR` takes at most 261 characters ("schtasks create", Microsoft Learn); past that it refuses. */
export const schtasksTaskRunLimit = 261

/**
 * One argument on a line of a .cmd file: quoted (CommandLineToArgvW's rules, trailing backslashes
 * doubled) when cmd.exe would split or interpret it, and % doubled, which cmd expands even inside
 * quotes. Windows paths cannot hold " or line breaks, so those are refused.
 */
export function cmdArg(arg: string): string {
  if (/["\r\n]/.test(arg)) throw new InvalidInputError(`cannot put ${JSON.stringify(arg)} on a .cmd line: it holds a quote or a line break`)
  const quoted = arg === '' || /[\s&|<>^(),;=%!]/.test(arg) ? `"${arg.replace(/(\\+)$/, '$1$1')}"` : arg
  return quoted.replaceAll('%', '%%')
}

/** A .cmd line setting a variable: quoted whole (`set "K=V"`, so & | < > ^ stay literal), % doubled. */
function cmdSet(key: string, value: string): string {
  if (/["\r\n]/.test(value)) throw new InvalidInputError(`cannot put ${JSON.stringify(value)} on a .cmd line: it holds a quote or a line break`)
  return `set "${key}=${value.replaceAll('%', '%%')}"`
}

/** The logon task's wrapper: Task Scheduler runs it, it runs the agent or the signer (so /TR stays short whatever the paths). */
export const taskWrapper = (spec: UserServiceSpec, task: string) =>
  [
    '@echo off',
    `rem ${spec.description}: written by vidsync ${spec.role === 'agent' ? 'up' : 'signer --install'}, run at logon by the task ${task}`,
    ...Object.entries(spec.environment ?? {}).map(([key, value]) => cmdSet(key, value)),
    spec.command.map(cmdArg).join(' '),
    '',
  ].join('\r\n')

/** A PowerShell single-quoted string: only ' is special, doubled. */
export const powershellString = (text: string) => `'${text.replaceAll("'", "''")}'`

/**
 * The service's security descriptor with the installing user allowed to start, stop and query it
 * (RP, WP, LC, RC; "Security Descriptor Definition Language", Microsoft Learn), after the SCM's
 * defaults for SYSTEM, Administrators and interactive users: the user's agent restarts nebula to
 * reload it without an elevated prompt.
 */
export const serviceSddl = (sid: string) =>
  `D:(A;;CCLCSWRPWPDTLOCRRC;;;SY)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)(A;;CCLCSWLOCRRC;;;IU)(A;;RPWPLCRC;;;${sid})`

/** The signer's task is `signer.<project>`: project names have no dot, so no project's agent task has its name. */
const names = (project: string) => ({nebula: `vidsync-nebula-${project}`, agent: `vidsync\\${project}`, signer: `vidsync\\signer.${project}`})

export function win32Platform(deps: HostDeps): Platform {
  const run = async (argv: string[]) => {
    const [file = '', ...args] = argv
    return deps.run(file, args, {timeoutMs: 30_000})
  }
  const user = () => ({name: deps.userName(), home: deps.homedir(), viaSudo: false})
  const isSystem = (principal: string) => /(^|\\)SYSTEM$/i.test(principal)
  const isUser = (principal: string) => principal.toLowerCase().split('\\').at(-1) === deps.userName().toLowerCase()
  // nebula loads wintun.dll from dist\windows\wintun\bin\<arch>\ beside nebula.exe (its release zip's
  // layout; checkWinTunExists in slackhq/nebula overlay/tun_windows.go), or beside it.
  const wintunRelative = win32.join('dist', 'windows', 'wintun', 'bin', deps.env.PROCESSOR_ARCHITECTURE?.toLowerCase() === 'arm64' ? 'arm64' : 'amd64', 'wintun.dll')
  const wintunCandidates = (nebulaPath: string) => {
    // A POSIX path (tests of this branch on Linux) keeps its separators.
    const path = posix.isAbsolute(nebulaPath) ? posix : win32
    const dir = path.dirname(nebulaPath)
    return [path.join(dir, ...wintunRelative.split('\\')), path.join(dir, 'wintun.dll')]
  }
  const processIdentity = async (pid: number): Promise<ProcessIdentity | undefined> => {
    const query = `Get-CimInstance Win32_Process -Filter "ProcessId=${pid}" | ForEach-Object { "{0} {1:o}" -f $_.ProcessId, $_.CreationDate }`
    const result = await run(powershell(query))
    const startedAt = result.exitCode === 0 ? parseCimProcess(result.stdout, pid) : undefined
    return startedAt ? {pid, startedAt} : undefined
  }
  return {
    os: 'win32',
    cpuCount: deps.cpuCount,
    systemDir: deps.env.VIDSYNC_SYSTEM_DIR || win32.join(deps.env.ProgramData ?? 'C:\\ProgramData', 'vidsync'),
    honoursTunDev: true, // the Wintun adapter is named after tun.dev
    invokingUser: user,
    defaultHome: (who) => win32.join(deps.env.LOCALAPPDATA ?? win32.join(who.home, 'AppData', 'Local'), 'vidsync'),
    async canCreateTun() {
      const check = '([Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()).IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)'
      return (await run(powershell(check))).stdout.trim() === 'True'
    },
    async tunProblem(nebulaPath) {
      const candidates = wintunCandidates(nebulaPath)
      for (const candidate of candidates) if (await deps.exists(candidate)) return undefined
      return `wintun.dll is missing: nebula needs it at ${candidates[0]} (from nebula's Windows release zip, or https://www.wintun.net/)`
    },
    overlayInterface: (project) => interfaceHolding(deps, project.overlayIp),
    pingCommand: (ip, timeoutMs) => ['ping', '-n', '1', '-w', String(timeoutMs), ip],
    executable: (name) => (name.toLowerCase().endsWith('.exe') ? name : `${name}.exe`),
    async makePrivate(path) {
      // Inherited entries off, then only this user and SYSTEM (by SID, whatever the OS language).
      const result = await run(['icacls', path, '/inheritance:r', '/grant:r', `${deps.userName()}:(F)`, '*S-1-5-18:(F)'])
      if (result.exitCode !== 0) throw new Error(`icacls ${path} failed: ${result.stdout.trim() || result.stderr.trim()}`)
    },
    async makeSystemPrivate(path, directory) {
      // Owned by Administrators (an owner may always change the ACL), every explicit entry dropped
      // (/reset: a user who made the directory first keeps no entry of their own), then SYSTEM
      // (S-1-5-18) and Administrators (S-1-5-32-544) only, by SID, nothing inherited; a directory
      // passes it on to what it holds.
      const grant = directory ? '(OI)(CI)(F)' : '(F)'
      const steps = [
        ['icacls', path, '/setowner', '*S-1-5-32-544'],
        ['icacls', path, '/reset'],
        ['icacls', path, '/inheritance:r', '/grant:r', `*S-1-5-18:${grant}`, `*S-1-5-32-544:${grant}`],
      ]
      for (const argv of steps) {
        const result = await run(argv)
        if (result.exitCode !== 0) throw new Error(`icacls ${path} failed: ${result.stdout.trim() || result.stderr.trim()}`)
      }
    },
    async executableProblem(path) {
      // The file and the folder holding it: whoever may write either can replace what SYSTEM runs.
      // Read as SDDL (SIDs, aliases, masks), never as icacls' names, which follow the OS's language.
      const targets = [path, win32.dirname(path)]
      const result = await run(powershell(`${targets.map(powershellString).join(',')} | ForEach-Object { (Get-Acl -LiteralPath $_).Sddl }`))
      const sddls = result.stdout.replace(/\r/g, '').split('\n').map((line) => line.trim()).filter((line) => /^(O|G|D|S):/.test(line))
      if (result.exitCode !== 0 || sddls.length !== targets.length) return `${path} cannot be checked: Get-Acl failed: ${firstLine(result)}`
      for (const [index, target] of targets.entries()) {
        const writers = sddlWriters(sddls[index] ?? '')
        if (writers.length > 0) {
          return `${path} would run as SYSTEM in the nebula service, but ${target === path ? 'the file' : `the folder ${target}`} is writable by ${writers.join(', ')}`
        }
      }
      return undefined
    },
    // The SCM runs nebula.exe, whose one library of its own (wintun.dll) is a companion, checked with it.
    linkedLibraries: async () => [],
    async nebulaCompanions(nebulaPath) {
      for (const candidate of wintunCandidates(nebulaPath)) if (await deps.exists(candidate)) return [{path: candidate, relative: wintunRelative}]
      return []
    },
    // The SCM runs nebula.exe itself: only the elevated step writes the system copy.
    serviceRendersOverlay: false,
    async privacyProblem(path) {
      const result = await run(['icacls', path])
      if (result.exitCode !== 0) return undefined // missing: nothing to protect
      const others = parseIcacls(result.stdout, path).filter((entry) => entry.inherited || !(isSystem(entry.principal) || isUser(entry.principal)))
      if (others.length === 0) return undefined
      return `${path} is readable by others (${others.map((entry) => entry.principal).join(', ')}): run icacls "${path}" /inheritance:r /grant:r ${deps.userName()}:(F) *S-1-5-18:(F)`
    },
    processIdentity,
    isRunning: sameProcessRunning(processIdentity),
    pidExists: (pid) => deps.signal(pid, 0) !== 'gone',
    async terminate(pid, force) {
      await run(['taskkill', ...(force ? ['/F'] : []), '/PID', String(pid)])
    },
    async reloadNebula(target) {
      // No SIGHUP on Windows: the service restarts with the new files.
      if (!target.service) return false
      return (await run(powershell(`Restart-Service -Name '${target.service}'`))).exitCode === 0
    },
    // No reload signal on Windows: a reload restarts the service (reloadNebula).
    // Node.js emits SIGBREAK for Ctrl-Break, and SIGINT for Ctrl-C, in a console.
    onServiceRequests: (handlers) => listenForServiceRequests(handlers, ['SIGINT', 'SIGTERM', 'SIGBREAK']),
    controlAddress: (dir, name) => `\\\\.\\pipe\\vidsync-${name}-${createHash('sha256').update(dir).digest('hex').slice(0, 12)}`,
    elevate(argv, interactive) {
      // UAC: Start-Process -Verb RunAs shows the consent prompt; declined, it throws and PowerShell exits 1.
      if (!interactive) return undefined
      const [file = '', ...args] = argv
      const start = `$p = Start-Process -FilePath ${powershellString(file)} -ArgumentList ${powershellString(windowsCommandLine(args))} -Verb RunAs -Wait -PassThru; exit $p.ExitCode`
      return powershell(start)
    },
    serviceManagerProblem: async () => undefined,
    serviceNames: names,
    async nebulaService(spec: ServiceSpec): Promise<ServiceDefinition> {
      // A service of its own per project (not nebula's fixed "Nebula"), run by the SCM as LocalSystem.
      // nebula's -service run hands itself to the SCM; the name it passes is ignored for an
      // own-process service (golang.org/x/sys/windows/svc.Run), so the per-project name holds.
      const name = `vidsync-nebula-${spec.project}`
      const binPath = windowsCommandLine(spec.command)
      const sddl = `sc.exe sdset ${name} (${powershellString(serviceSddl('').slice(0, -1))} + $sid + ')')`
      return {
        name,
        manager: 'scm',
        scope: 'system',
        fingerprint: binPath,
        install: [
          ['sc.exe', 'create', name, 'binPath=', binPath, 'start=', 'auto', 'DisplayName=', spec.description],
          // Restart after 2 s, 5 s, then every 10 s; the count starts again after a day without failures.
          ['sc.exe', 'failure', name, 'reset=', '86400', 'actions=', 'restart/2000/restart/5000/restart/10000'],
          // Failure actions also when nebula exits with an error, not only when it crashes.
          ['sc.exe', 'failureflag', name, '1'],
          powershell(`$sid = [Security.Principal.WindowsIdentity]::GetCurrent().User.Value; ${sddl}; exit $LASTEXITCODE`),
          ['sc.exe', 'start', name],
        ],
        start: [['sc.exe', 'start', name]],
        stop: [['sc.exe', 'stop', name]],
        uninstall: [['sc.exe', 'stop', name], ['sc.exe', 'delete', name]],
        cleanup: [],
      }
    },
    async userService(spec: UserServiceSpec): Promise<ServiceDefinition> {
      const name = names(spec.project)[spec.role]
      const taskName = name.slice('vidsync\\'.length)
      // The task runs a short wrapper in its state directory, not node.exe with its arguments: a
      // deep Node.js or home path would pass /TR's 261 characters.
      const path = join(spec.stateDir ?? dirname(spec.logPath), `${spec.role}-task.cmd`)
      const command = windowsArg(path)
      if (command.length > schtasksTaskRunLimit) {
        throw new InvalidInputError(`the logon task would run ${command}, ${command.length} characters: schtasks takes at most ${schtasksTaskRunLimit}`, {
          hint: 'use a shorter --home',
        })
      }
      const content = taskWrapper(spec, name)
      return {
        name,
        manager: 'task-scheduler',
        scope: 'user',
        path,
        content,
        fingerprint: content,
        // Runs as the user who creates it, at their logon, without elevation (/RL LIMITED).
        install: [
          ['schtasks', '/Create', '/TN', name, '/TR', command, '/SC', 'ONLOGON', '/RL', 'LIMITED', '/F'],
          // schtasks /Create stops a task after 72 hours and never restarts it: no time limit, and
          // started again a minute after it fails (New-ScheduledTaskSettingsSet, Microsoft Learn).
          powershell(
            `Set-ScheduledTask -TaskPath '\\vidsync\\' -TaskName ${powershellString(taskName)} -Settings ` +
              '(New-ScheduledTaskSettingsSet -ExecutionTimeLimit ([TimeSpan]::Zero) -RestartCount 999 -RestartInterval (New-TimeSpan -Minutes 1)) | Out-Null',
          ),
          ['schtasks', '/Run', '/TN', name],
        ],
        start: [['schtasks', '/Run', '/TN', name]],
        stop: [['schtasks', '/End', '/TN', name]],
        uninstall: [['schtasks', '/End', '/TN', name], ['schtasks', '/Delete', '/TN', name, '/F']],
        cleanup: [],
      }
    },
    async serviceState(definition) {
      if (definition.manager === 'task-scheduler') {
        const result = await run(['schtasks', '/Query', '/TN', definition.name, '/FO', 'LIST', '/V'])
        if (result.exitCode !== 0) return {installed: false, running: false, state: firstLine(result)}
        const status = schtasksStatus(result.stdout) ?? 'unknown'
        // The task runs this definition's wrapper: the wrapper's content tells the install apart.
        const command = schtasksField(result.stdout, 'Task To Run')
        const unquoted = (text?: string) => text?.replaceAll('"', '')
        const runsWrapper = definition.path !== undefined && unquoted(command) === unquoted(definition.path)
        const fingerprint = runsWrapper ? ((await deps.readFile(definition.path ?? '')) ?? '') : command
        return {installed: true, running: status === 'Running', state: status, ...(fingerprint === undefined ? {} : {fingerprint})}
      }
      const query = await run(['sc.exe', 'queryex', definition.name])
      // 1060: "The specified service does not exist as an installed service."
      if (query.exitCode !== 0) return {installed: false, running: false, state: firstLine(query)}
      const state = scState(query.stdout) ?? 'unknown'
      const pid = scPid(query.stdout)
      const binPath = scBinaryPath((await run(['sc.exe', 'qc', definition.name])).stdout)
      return {installed: true, running: state === 'RUNNING', ...(pid ? {pid} : {}), state, ...(binPath === undefined ? {} : {fingerprint: binPath})}
    },
    manage: manageWith(deps),
    serviceRoot: deps.serviceRoot ?? '',
  }
}
