import {constants} from 'node:fs'
import {access, stat} from 'node:fs/promises'
import {delimiter, isAbsolute, join} from 'node:path'

import {InvalidInputError, MissingDependencyError} from '../errors.js'
import {resolveTools, type Tools} from '../exec.js'
import {writeFileAtomic} from '../files.js'
import {testNebulaConfig} from './config.js'
import {loadProject} from '../project/joined-project.js'

export interface ServiceUnitOptions {
  projectDir: string
  /** Names the unit [default: the project in vidsync.json]. */
  project?: string
  /** Absolute path of nebula [default: nebula (or VIDSYNC_NEBULA) looked up on PATH]. */
  nebulaPath?: string
  platform?: NodeJS.Platform
  /** Where to write it [default: /etc/systemd/system/vidsync-nebula-<project>.service, on macOS /Library/LaunchDaemons/com.vidsync.nebula.<project>.plist]. */
  path?: string
  tools?: Tools
}

export interface ServiceUnit {
  path: string
  /** What to run (as root) to enable and start it: vidsync does not touch the service manager itself. */
  commands: string[]
}

/** The service manager runs nebula from a bare environment, so it needs the absolute path. */
async function absoluteNebula(tools?: Tools): Promise<string> {
  const name = resolveTools(tools).nebula
  if (isAbsolute(name)) return name
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    const candidate = join(dir, name)
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate
  }
  throw new MissingDependencyError(`${name} not found on PATH: install nebula, or pass its absolute path`)
}

/** One systemd ExecStart argument: quoted, with its specifier (%) and variable ($) characters escaped. */
const systemdArg = (arg: string) => `"${arg.replace(/[\\"]/g, '\\$&').replaceAll('%', '%%').replaceAll('$', '$$$$')}"`

const xml = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

function systemdUnit(project: string, nebula: string, configPath: string, uid: number): string {
  return `# Written by vidsync for project ${project}.
[Unit]
Description=vidsync: Nebula overlay for project ${project}
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=${systemdArg(nebula)} -config ${systemdArg(configPath)}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5
# The owner of the project's files, with only the capability that creating the tun device needs.
User=${uid}
AmbientCapabilities=CAP_NET_ADMIN
CapabilityBoundingSet=CAP_NET_ADMIN
NoNewPrivileges=true

[Install]
WantedBy=multi-user.target
`
}

function launchdPlist(label: string, nebula: string, configPath: string, logPath: string): string {
  const strings = (values: string[]) => values.map((value) => `<string>${xml(value)}</string>`).join('')
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key>${strings([label])}
  <key>ProgramArguments</key><array>${strings([nebula, '-config', configPath])}</array>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>
  <key>StandardOutPath</key>${strings([logPath])}
  <key>StandardErrorPath</key>${strings([logPath])}
</dict>
</plist>
`
}

/**
 * Writes a system service that runs the project's nebula at boot and restarts it on failure: a
 * systemd unit, or a launchd daemon on macOS. The config must pass `nebula -test` first.
 */
export async function writeServiceUnit(options: ServiceUnitOptions): Promise<ServiceUnit> {
  const joined = await loadProject(options.projectDir)
  const project = options.project ?? joined.name
  const platform = options.platform ?? process.platform
  await testNebulaConfig({configPath: joined.configPath, tools: options.tools})
  const nebula = options.nebulaPath ?? (await absoluteNebula(options.tools))
  if (platform === 'linux') {
    const name = `vidsync-nebula-${project}.service`
    const path = options.path ?? join('/etc/systemd/system', name)
    const {uid} = await stat(joined.dir)
    await writeFileAtomic(path, systemdUnit(project, nebula, joined.configPath, uid), 0o644)
    // systemctl links a unit outside its search path when given the file's path.
    return {path, commands: ['systemctl daemon-reload', `systemctl enable --now ${options.path ? path : name}`]}
  }
  if (platform === 'darwin') {
    const label = `com.vidsync.nebula.${project}`
    const path = options.path ?? join('/Library/LaunchDaemons', `${label}.plist`)
    await writeFileAtomic(path, launchdPlist(label, nebula, joined.configPath, joined.logPath), 0o644)
    return {path, commands: [`launchctl bootstrap system ${path}`]}
  }
  throw new InvalidInputError(`no system service support on ${platform}: run \`vidsync nebula up --detach\` instead`)
}
