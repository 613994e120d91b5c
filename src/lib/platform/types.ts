import type {NetworkInterfaceInfo} from 'node:os'

/** The operating systems a vidsync device runs on. */
export type OsName = 'linux' | 'darwin' | 'win32'

/** A program's result; never thrown for a non-zero exit. `missing`: the program is not installed. */
export interface ProgramResult {
  stdout: string
  stderr: string
  exitCode: number | undefined
  missing: boolean
}

/**
 * What a platform reads from the machine. The real host is in host.ts; tests inject recorded
 * outputs of the real tools (launchctl, ps, sc.exe, icacls, PowerShell) instead.
 */
export interface HostDeps {
  env: Record<string, string | undefined>
  homedir(): string
  userName(): string
  /** This process's user and group IDs (POSIX), undefined on Windows. */
  uid?: number
  gid?: number
  run(file: string, args: string[], options?: {timeoutMs?: number}): Promise<ProgramResult>
  /** For the few lookups that cannot wait (the home directory is resolved while flags are parsed). */
  runSync(file: string, args: string[]): ProgramResult
  readFile(path: string): Promise<string | undefined>
  readFileSync(path: string): string | undefined
  exists(path: string): Promise<boolean>
  /** For the home directory, resolved while flags are parsed; absent in fakes that have no files. */
  existsSync?(path: string): boolean
  chmod(path: string, mode: number): Promise<void>
  /** st_mode & 0o777 of a file, undefined when it is missing. */
  fileMode(path: string): Promise<number | undefined>
  /** Owner, group and st_mode & 0o7777 (with the sticky bit) of a file or directory, following links; undefined when it is missing. */
  fileOwner(path: string): Promise<{uid: number; gid: number; mode: number} | undefined>
  /** The path with every symbolic link resolved (the path itself when it cannot be resolved). */
  realPath(path: string): Promise<string>
  /** Sends a POSIX signal (0 probes); 'gone' when no such process, 'denied' when it is another user's. */
  signal(pid: number, signal: NodeJS.Signals | 0): 'sent' | 'gone' | 'denied'
  interfaces(): NodeJS.Dict<NetworkInterfaceInfo[]>
  cpuCount: number
  /** Service definitions go below this directory instead of / (tests; systemctl's --root does the same). */
  serviceRoot?: string
}

/** The person vidsync acts for. Under sudo, the invoking user (SUDO_USER), not root. */
export interface User {
  name: string
  home: string
  /** POSIX only. */
  uid?: number
  gid?: number
  /** True when this process runs as someone else (root under sudo) on this user's behalf. */
  viaSudo: boolean
}

/** A process told apart from a later one that reuses its PID: PID plus start time as the OS reports it. */
export interface ProcessIdentity {
  pid: number
  startedAt: string
}

/** Which service manager keeps a service: systemd units, launchd jobs, the Windows SCM, Task Scheduler logon tasks. */
export type ServiceManagerName = 'systemd' | 'launchd' | 'scm' | 'task-scheduler'

/** System services run as root/SYSTEM from boot; user services run as the user from login. */
export type ServiceScope = 'system' | 'user'

/** A service for the OS's service manager: where its definition goes, its text, and how to (un)install it. */
export interface ServiceDefinition {
  /** The service manager's name for it: unit, launchd label, SCM service name or task name. */
  name: string
  manager: ServiceManagerName
  scope: ServiceScope
  /** Where the definition file goes; undefined where the manager keeps it (Windows SCM, Task Scheduler). */
  path?: string
  /** The file's content (unit, plist); undefined on Windows. */
  content?: string
  /**
   * What tells this definition apart from an older install's: the file's content (unit, plist), or
   * the command line the SCM / Task Scheduler records. Compared with `ServiceState.fingerprint`.
   */
  fingerprint: string
  /** Programs with arguments that register and start it, after the file is written (run elevated for system services). */
  install: string[][]
  /** Programs with arguments that start it when it is installed but does not run. */
  start: string[][]
  /** Programs with arguments that stop it (it stays installed). */
  stop: string[][]
  /** Programs with arguments that stop and unregister it; then the file is removed and `cleanup` runs. */
  uninstall: string[][]
  /** Programs run after the file is removed (systemctl daemon-reload). */
  cleanup: string[][]
}

/** What the service manager says about a service now. */
export interface ServiceState {
  /** The manager knows it: unit loaded, job bootstrapped, service created, task registered. */
  installed: boolean
  running: boolean
  /** Its main process, where the manager reports one. */
  pid?: number
  /** The manager's own word for the state: "active (running)", "running", "STOPPED", "Ready"... */
  state: string
  /** The installed definition (file content, or the recorded command line), to compare with `ServiceDefinition.fingerprint`. */
  fingerprint?: string
}

export interface ServiceSpec {
  project: string
  /** Program and arguments the service runs (absolute paths). */
  command: string[]
  logPath: string
  /** The user it runs as (user services); system services run as root/SYSTEM. */
  user?: User
  description: string
  /** The service's own directory (the project directory): Windows' logon task runs a wrapper written there. */
  stateDir?: string
  /** Environment the service starts with, never secrets (they go in a private file): a program's absolute path. */
  environment?: Record<string, string>
}

/** vidsync's per-user services: a device's agent (Syncthing and the reconcile loop), the operator's signer. */
export type UserServiceRole = 'agent' | 'signer'

export interface UserServiceSpec extends ServiceSpec {
  role: UserServiceRole
}

/** What a long-running process does when asked to end, and to reload (only processes that can). */
export interface ServiceRequestHandlers {
  stop(): void
  reload?(): void
}

export interface Platform {
  readonly os: OsName
  /** CPUs this process may use, for per-device tuning (nebula routines). */
  readonly cpuCount: number
  /** Root-owned directory for overlay files and service logs: /etc/vidsync, ..., %ProgramData%\vidsync. */
  readonly systemDir: string
  /**
   * Root-owned directory for the protected copy of Node.js and vidsync that the POSIX nebula
   * service runs when the user's could be replaced by someone other than root:
   * /usr/local/lib/vidsync/runtime, /Library/Application Support/vidsync-runtime
   * (VIDSYNC_RUNTIME_DIR overrides it). Undefined on Windows, where the SCM runs nebula.exe itself.
   */
  readonly runtimeDir?: string
  /** The user vidsync acts for (SUDO_USER under sudo). */
  invokingUser(): User
  /**
   * vidsync's state directory for `user` when neither --home nor VIDSYNC_HOME is set: Linux
   * `~/.vidsync` where it exists, else `$XDG_STATE_HOME/vidsync` (`~/.local/state/vidsync`);
   * macOS `~/Library/Application Support/vidsync`; Windows `%LOCALAPPDATA%\vidsync`.
   */
  defaultHome(user: User): string
  /** Whether this process may create nebula's tun device: CapEff CAP_NET_ADMIN or root, euid 0, an elevated token. */
  canCreateTun(): Promise<boolean>
  /** Why nebula cannot create its tun device here (missing /dev/net/tun, missing wintun.dll), if it cannot. */
  tunProblem(nebulaPath: string): Promise<string | undefined>
  /** The interface holding `overlayIp`: tun.dev on Linux, the utunN on macOS, the Wintun adapter on Windows. */
  overlayInterface(project: {tunDev?: string; overlayIp: string}): string | undefined
  /** Whether nebula.yml's tun.dev is honoured (Linux, Windows) or ignored (macOS utunN). */
  readonly honoursTunDev: boolean
  /** One ICMP echo to `ip` with a timeout, as this OS's ping takes it: exit code 0 when it answered. */
  pingCommand(ip: string, timeoutMs: number): string[]
  /** `name` as the OS runs it: nebula.exe on Windows. */
  executable(name: string): string
  /** Makes a file readable by its owner only (chmod 0600, or an ACL of the user and SYSTEM). */
  makePrivate(path: string): Promise<void>
  /**
   * Makes a file or directory of the system copy (root's nebula) accessible to root only: chmod
   * 0600/0700, or on Windows an ACL of SYSTEM and Administrators only, nothing inherited.
   */
  makeSystemPrivate(path: string, directory?: boolean): Promise<void>
  /**
   * Why `path`, a program a system service runs as root/SYSTEM, could be replaced by someone who
   * is not root/SYSTEM or an administrator: it, or a directory holding it, is owned or writable by
   * another user or group (POSIX: owner and mode of the file and every directory up to /; Windows:
   * icacls of the file and its directory). Undefined when only they can replace it.
   */
  executableProblem(path: string): Promise<string | undefined>
  /**
   * The shared libraries `program` loads that a check must cover as well, by absolute path
   * (`ldd` on Linux; `otool -L` on macOS, without /usr/lib and /System, which SIP protects and the
   * dyld cache holds). Homebrew's node loads its libraries from /opt/homebrew. None on Windows.
   */
  linkedLibraries(program: string): Promise<string[]>
  /**
   * The files nebula loads from beside its executable, found there, each with its path relative
   * to nebula's directory: wintun.dll from dist\windows\wintun\bin\<arch>\ on Windows; none on POSIX.
   */
  nebulaCompanions(nebulaPath: string): Promise<{path: string; relative: string}[]>
  /**
   * Whether the system service writes the system copy of the overlay itself before every start and
   * reload (Linux, macOS: it runs `vidsync nebula service` as root). False on Windows: the SCM runs
   * nebula.exe itself and only the elevated step writes the copy, so it can be older than the project's files.
   */
  readonly serviceRendersOverlay: boolean
  /** Why a file is readable by others, undefined when private. */
  privacyProblem(path: string): Promise<string | undefined>
  /** The identity of a running process, undefined when none runs with that PID (zombies count as gone). */
  processIdentity(pid: number): Promise<ProcessIdentity | undefined>
  /** Whether `identity` still runs: same PID, same start time. */
  isRunning(identity: ProcessIdentity): Promise<boolean>
  /** Probes a PID without identity (for lock files): true when some process has it. */
  pidExists(pid: number): boolean
  /** Asks a process to end (SIGTERM), or ends it at once (SIGKILL / TerminateProcess). */
  terminate(pid: number, force: boolean): Promise<void>
  /** Makes nebula reload its config: SIGHUP on POSIX, a service restart on Windows. False when it could not. */
  reloadNebula(target: {pid?: number; service?: string}): Promise<boolean>
  /**
   * Lets a long-running process end on Ctrl-C or its service manager's stop (SIGINT, SIGTERM;
   * Ctrl-Break too on Windows), and, when it takes reloads, reload on the service manager's reload
   * request (SIGHUP on POSIX, as `systemctl reload` sends; Windows reloads by restarting the
   * service, so it has none). Returns the function that stops listening.
   */
  onServiceRequests(handlers: ServiceRequestHandlers): () => void
  /** Where a control socket lives: a Unix socket in `dir`, a named pipe on Windows. */
  controlAddress(dir: string, name: string): string
  /** The command that runs `argv` elevated (sudo; -n when nobody can answer a prompt); undefined where vidsync cannot ask (Windows: UAC needs an elevated prompt). */
  elevate(argv: string[], interactive: boolean): string[] | undefined
  /**
   * Why no service manager can take `scope` services here (no systemd as PID 1, no user manager
   * for `user`), or undefined when one can. Where none can, vidsync supervises nebula and the
   * agent itself and `status`/`down` ask their control sockets.
   */
  serviceManagerProblem(scope: ServiceScope, user?: User): Promise<string | undefined>
  /** The per-project system service that runs nebula as root/SYSTEM (async: macOS loads its plist builder only here). */
  nebulaService(spec: ServiceSpec): Promise<ServiceDefinition>
  /**
   * A per-user service that starts at login and again after a failure: the agent (Syncthing and
   * the reconcile loop) or the signer, each with a name of its own per project.
   */
  userService(spec: UserServiceSpec): Promise<ServiceDefinition>
  /** The names the services get for `project`, without building them. */
  serviceNames(project: string): {nebula: string} & Record<UserServiceRole, string>
  /** What the service manager says about `definition` now (systemctl show, launchctl print, sc.exe queryex/qc, schtasks /Query /V). */
  serviceState(definition: ServiceDefinition, user?: User): Promise<ServiceState>
  /** Runs a service manager's program (systemctl, launchctl, sc.exe, schtasks) as `install`/`uninstall` name them. */
  manage(argv: string[]): Promise<ProgramResult>
  /** Where service definitions are written: '' (the real /), or a directory tests write below instead. */
  readonly serviceRoot: string
}
