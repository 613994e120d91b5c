import {dirname, join} from 'node:path'

import {listenForServiceRequests} from './host.js'
import type {HostDeps, ServiceRequestHandlers, User} from './types.js'

/** What Linux and macOS share: signals, chmod, Unix sockets, sudo. */

/** The invoking user: SUDO_USER's name, uid and gid when root runs on their behalf, else this process's user. */
export function posixInvokingUser(deps: HostDeps, homeOf: (name: string) => string | undefined): User {
  const sudoUser = deps.env.SUDO_USER
  if (deps.uid === 0 && sudoUser && sudoUser !== 'root') {
    const home = homeOf(sudoUser)
    const uid = Number(deps.env.SUDO_UID)
    const gid = Number(deps.env.SUDO_GID)
    if (home && Number.isInteger(uid) && Number.isInteger(gid)) return {name: sudoUser, home, uid, gid, viaSudo: true}
  }
  return {name: deps.userName(), home: deps.homedir(), uid: deps.uid, gid: deps.gid, viaSudo: false}
}

export async function posixPrivacyProblem(deps: HostDeps, path: string): Promise<string | undefined> {
  const mode = await deps.fileMode(path)
  if (mode === undefined || (mode & 0o077) === 0) return undefined
  return `${path} is readable by others (mode ${mode.toString(8).padStart(4, '0')}): run chmod 600 ${path}`
}

export async function posixTerminate(deps: HostDeps, pid: number, force: boolean): Promise<void> {
  deps.signal(pid, force ? 'SIGKILL' : 'SIGTERM')
}

// `systemctl reload` and launchd send SIGHUP.
export const posixServiceRequests = (handlers: ServiceRequestHandlers) => listenForServiceRequests(handlers, ['SIGINT', 'SIGTERM'], 'SIGHUP')

export const posixControlAddress = (dir: string, name: string) => join(dir, `${name}.sock`)

export function sighup(deps: HostDeps, pid: number | undefined): boolean {
  return pid !== undefined && deps.signal(pid, 'SIGHUP') === 'sent'
}

export const posixElevate = (argv: string[], interactive: boolean) => ['sudo', ...(interactive ? [] : ['-n']), ...argv]

/**
 * Why a program root's service runs could be replaced by someone other than root: the file (links
 * resolved) or a directory above it is owned by another user, or writable by a group other than
 * root's (gid 0) or by everyone. A sticky directory (/tmp) lets nobody but root replace what root
 * owns in it, so its write bits do not count for the root-owned entry below it.
 */
export async function posixExecutableProblem(deps: HostDeps, program: string): Promise<string | undefined> {
  const real = await deps.realPath(program)
  const shown = real === program ? program : `${program} (${real})`
  for (let path = real, below = true; ; path = dirname(path), below = false) {
    const info = await deps.fileOwner(path)
    if (!info) return `${shown} cannot be checked: ${path} is missing`
    const writers =
      info.uid !== 0
        ? `belongs to uid ${info.uid}, not root`
        : !below && (info.mode & 0o1000) !== 0
          ? undefined
          : (info.mode & 0o002) !== 0
            ? `is writable by everyone (mode ${info.mode.toString(8).padStart(4, '0')})`
            : (info.mode & 0o020) !== 0 && info.gid !== 0
              ? `is writable by group ${info.gid} (mode ${info.mode.toString(8).padStart(4, '0')})`
              : undefined
    if (writers) return `${shown} would run as root in the nebula service, but ${path === real ? 'the file' : `the directory ${path}`} ${writers}`
    if (dirname(path) === path) return undefined
  }
}
