import {join} from 'node:path'

import {listenForServiceRequests} from './host.js'
import type {HostDeps, User} from './types.js'

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
export const posixServiceRequests = (handlers: {stop(): void; reload(): void}) => listenForServiceRequests(handlers, 'SIGHUP')

export const posixControlAddress = (dir: string, name: string) => join(dir, `${name}.sock`)

export function sighup(deps: HostDeps, pid: number | undefined): boolean {
  return pid !== undefined && deps.signal(pid, 'SIGHUP') === 'sent'
}

export const posixElevate = (argv: string[], interactive: boolean) => ['sudo', ...(interactive ? [] : ['-n']), ...argv]
