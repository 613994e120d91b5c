import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {parseDuration} from '../../lib/duration.js'
import {ToolFailedError} from '../../lib/errors.js'
import type {Daemon} from '../../lib/exec.js'
import {type DaemonExit, exitReason, type NebulaStatus, startNebula, stopNebula} from '../../lib/nebula/process.js'
import {resolveProjectDir} from '../../lib/project/joined-project.js'
import {type InstalledService, installNebulaService} from '../../lib/nebula/service.js'
import {startSelf} from '../../lib/exec.js'
import {join} from 'node:path'
import {currentPlatform} from '../../lib/platform/index.js'

export type NebulaUpResult = (NebulaStatus & {startupMs: number; detached: boolean}) | {service: InstalledService}

/** Resolves on Ctrl-C or a request to end, or when nebula ends by itself (stopped elsewhere, or crashed). */
function untilStopped(daemon: Daemon): Promise<{exit?: DaemonExit}> {
  return new Promise((resolve) => {
    const finish = (result: {exit?: DaemonExit}) => {
      stopListening()
      resolve(result)
    }
    const stopListening = currentPlatform().onServiceRequests({stop: () => finish({})})
    void daemon.exited.then((exit) => finish({exit}))
  })
}

export default class NebulaUp extends BaseCommand<typeof NebulaUp> {
  static override summary = "Bring up this device's overlay: start nebula and wait until it is connected."
  static override description = `Checks that nebula can run (binary, root or CAP_NET_ADMIN, /dev/net/tun, \`nebula -test\`), starts it with the project's nebula.yml, and waits until the tun device has the overlay IP and a lighthouse answered. Without --detach it stays in the foreground until Ctrl-C and then stops nebula. PROJECT may be left out when only one project is joined. nebula logs to <home>/projects/<project>/nebula.log.`
  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> studio --detach --json',
    '<%= config.bin %> <%= command.id %> studio --service',
  ]

  static override args = {
    project: Args.string({description: 'Joined project [default: the only one].'}),
  }

  static override flags = {
    detach: Flags.boolean({summary: 'Return once nebula is up and leave it running; stop it with `vidsync nebula down`.', exclusive: ['service']}),
    service: Flags.boolean({
      summary: "Install and start the project's nebula system service (systemd, launchd, Windows SCM; needs administrator rights), the step `vidsync up` asks for.",
      exclusive: ['detach'],
    }),
    timeout: Flags.string({summary: 'How long to wait for the tun device and a lighthouse.', default: '20s'}),
  }

  async run(): Promise<NebulaUpResult> {
    const {flags} = this
    const projectDir = await resolveProjectDir({home: this.home, project: this.args.project})
    if (flags.service) {
      const user = currentPlatform().invokingUser()
      const owner = user.viaSudo ? user : undefined
      const name = projectDir.split(/[\\/]/).at(-1) ?? ''
      const startDetached = () =>
        startSelf(['nebula', 'service', name, '--home', this.home], {
          detached: true,
          logPath: join(projectDir, 'nebula-service.log'),
          logOwner: owner,
        })
      const service = await installNebulaService({home: this.home, projectDir, user, startDetached})
      for (const line of service.installed) this.log(`Installed: ${line}`)
      return {service}
    }
    const timeoutMs = parseDuration(flags.timeout, 'timeout') * 1000
    const {daemon, ...started} = await this.progress('Starting nebula: waiting for the overlay and a lighthouse', () => startNebula({projectDir, detach: flags.detach, timeoutMs}))
    const lighthouse = started.lighthouseReachable ? ', a lighthouse answered' : ''
    this.log(`nebula is up for ${started.project}: ${started.overlayIp} on ${started.tunDev ?? 'its overlay interface'}${lighthouse} (${(started.startupMs / 1000).toFixed(1)}s).`)
    if (flags.detach) {
      this.log(`Stop it with \`vidsync nebula down ${started.project}\`. Log: ${started.logPath}`)
      return {...started, detached: true}
    }
    this.log(`Running in the foreground: Ctrl-C stops it. Log: ${started.logPath}`)
    const {exit} = await untilStopped(daemon)
    await stopNebula({projectDir})
    if (exit && exit.exitCode !== 0) {
      const reason = await exitReason(started.logPath, exit)
      throw new ToolFailedError(`nebula stopped: ${reason}`, reason)
    }
    this.log('nebula stopped.')
    return {...started, detached: false}
  }
}
