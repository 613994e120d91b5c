import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {parseDuration} from '../../lib/duration.js'
import {ToolFailedError} from '../../lib/errors.js'
import type {Daemon} from '../../lib/exec.js'
import {type DaemonExit, exitReason, type NebulaStatus, startNebula, stopNebula} from '../../lib/nebula/process.js'
import {resolveProjectDir} from '../../lib/project/joined-project.js'
import {type ServiceUnit, writeServiceUnit} from '../../lib/nebula/service.js'

export type NebulaUpResult = (NebulaStatus & {startupMs: number; detached: boolean}) | {service: ServiceUnit}

/** Resolves on Ctrl-C or SIGTERM, or when nebula ends by itself (stopped elsewhere, or crashed). */
function untilStopped(daemon: Daemon): Promise<{exit?: DaemonExit}> {
  return new Promise((resolve) => {
    const finish = (result: {exit?: DaemonExit}) => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      resolve(result)
    }
    const onSignal = () => finish({})
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
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
      summary: 'Write a system service (systemd; launchd on macOS) that runs nebula at boot, instead of starting it now.',
      exclusive: ['detach'],
    }),
    'service-file': Flags.string({summary: 'Where --service writes the unit [default: /etc/systemd/system/vidsync-nebula-<project>.service].', dependsOn: ['service']}),
    timeout: Flags.string({summary: 'How long to wait for the tun device and a lighthouse.', default: '20s'}),
  }

  async run(): Promise<NebulaUpResult> {
    const {flags} = this
    const projectDir = await resolveProjectDir({home: this.home, project: this.args.project})
    if (flags.service) {
      const service = await writeServiceUnit({projectDir, path: flags['service-file']})
      this.log(`Wrote ${service.path}. Enable and start it as root with:`)
      for (const command of service.commands) this.log(`  ${command}`)
      return {service}
    }
    const timeoutMs = parseDuration(flags.timeout, 'timeout') * 1000
    const {daemon, ...started} = await startNebula({projectDir, detach: flags.detach, timeoutMs})
    const lighthouse = started.lighthouseReachable ? ', a lighthouse answered' : ''
    this.log(`nebula is up for ${started.project}: ${started.overlayIp} on ${started.tunDev}${lighthouse} (${(started.startupMs / 1000).toFixed(1)}s).`)
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
