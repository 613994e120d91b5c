import {readdir, readFile} from 'node:fs/promises'
import {join} from 'node:path'

import YAML from 'yaml'

import {InvalidInputError, NotFoundError} from '../errors.js'

/** A joined project as nebula runs it: what `vidsync join` installed in `<home>/projects/<name>/`. */
export interface JoinedProject {
  name: string
  dir: string
  configPath: string
  pidPath: string
  logPath: string
  /** From nebula.yml's tun.dev: join always sets it, so we know which interface to watch. */
  tunDev: string
  overlayIp: string
  amLighthouse: boolean
  /** Overlay IPs of the lighthouses this node reports to (none on a lighthouse). */
  lighthouseIps: string[]
}

export const projectsDir = (home: string) => join(home, 'projects')

/** Where `vidsync join` installs a project's files. */
export const projectDir = (home: string, project: string) => join(projectsDir(home), project)

/** Nebula's tun device for a project: interface names have at most 15 characters. */
export const tunDeviceName = (project: string) => `vs-${project}`.slice(0, 15)

/** Where nebula's files for the project in `dir` are; vidsync adds nebula.pid and nebula.log. */
export function projectPaths(dir: string): Pick<JoinedProject, 'dir' | 'configPath' | 'pidPath' | 'logPath'> {
  return {dir, configPath: join(dir, 'nebula.yml'), pidPath: join(dir, 'nebula.pid'), logPath: join(dir, 'nebula.log')}
}

/** The directory of PROJECT, or of the only joined project when none is named. */
export async function resolveProjectDir(options: {home: string; project?: string}): Promise<string> {
  const joined = await readdir(projectsDir(options.home), {withFileTypes: true}).then(
    (entries) => entries.filter((entry) => entry.isDirectory() && !entry.name.startsWith('.')).map((entry) => entry.name),
    (): string[] => [],
  )
  const name = options.project ?? (joined.length === 1 ? joined[0] : undefined)
  if (name !== undefined && joined.includes(name)) return projectDir(options.home, name)
  if (options.project !== undefined) {
    throw new NotFoundError(`project "${options.project}" is not joined in ${options.home}: run \`vidsync join <bundle>\` first`)
  }
  if (joined.length === 0) throw new NotFoundError(`no project is joined in ${options.home}: run \`vidsync join <bundle>\` first`)
  throw new InvalidInputError(`several projects are joined (${joined.sort().join(', ')}): name the one you mean`)
}

async function readProjectFile(dir: string, name: string): Promise<string> {
  return readFile(join(dir, name), 'utf8').catch(() => {
    throw new NotFoundError(`${join(dir, name)} is missing: run \`vidsync join <bundle>\` again`)
  })
}

export async function loadProject(dir: string): Promise<JoinedProject> {
  const paths = projectPaths(dir)
  let manifest: {project?: unknown; ip?: unknown}
  let config: {tun?: {dev?: unknown}; lighthouse?: {am_lighthouse?: unknown; hosts?: unknown}}
  try {
    manifest = JSON.parse(await readProjectFile(dir, 'vidsync.json')) ?? {}
    config = YAML.parse(await readProjectFile(dir, 'nebula.yml'), {version: '1.1'}) ?? {}
  } catch (error) {
    if (error instanceof NotFoundError) throw error
    throw new InvalidInputError(`unreadable project files in ${dir} (${(error as Error).message}): run \`vidsync join <bundle>\` again`)
  }
  const {tun, lighthouse} = config
  if (typeof manifest.project !== 'string' || typeof manifest.ip !== 'string') {
    throw new InvalidInputError(`${join(dir, 'vidsync.json')} names no project or ip: run \`vidsync join <bundle>\` again`)
  }
  if (typeof tun?.dev !== 'string' || tun.dev === '') {
    throw new InvalidInputError(`${paths.configPath} sets no tun.dev: run \`vidsync join <bundle>\` again`)
  }
  return {
    ...paths,
    name: manifest.project,
    tunDev: tun.dev,
    overlayIp: manifest.ip,
    amLighthouse: lighthouse?.am_lighthouse === true,
    lighthouseIps: Array.isArray(lighthouse?.hosts) ? lighthouse.hosts.map(String) : [],
  }
}
