import {Args} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {nebulaStatus, type NebulaStatus} from '../../lib/nebula/process.js'
import {resolveProjectDir} from '../../lib/project/joined-project.js'

export default class NebulaStatusCommand extends BaseCommand<typeof NebulaStatusCommand> {
  static override summary = "Show whether this device's nebula runs and reaches a lighthouse."
  static override description =
    "Asks the nebula service (or checks the PID and start time in the pid file), looks at the tun device as this network namespace sees it, and pings the lighthouses over the overlay now. PROJECT may be left out when only one project is joined."
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> studio --json']

  static override args = {
    project: Args.string({description: 'Joined project [default: the only one].'}),
  }

  async run(): Promise<NebulaStatus> {
    const status = await nebulaStatus({projectDir: await resolveProjectDir({home: this.home, project: this.args.project})})
    const lighthouse = {true: 'answered', false: status.running ? 'no answer yet' : '-', null: 'none to reach (this node is a lighthouse, or has none)'}
    this.log(`project     ${status.project}`)
    this.log(`nebula      ${status.running ? `running (pid ${status.pid})` : 'not running'}`)
    this.log(`overlay     ${status.overlayIp} on ${status.tunDev ?? 'no interface'} (${status.tunUp ? 'up' : 'down'})`)
    this.log(`lighthouse  ${lighthouse[`${status.lighthouseReachable}`]}`)
    this.log(`log         ${status.logPath}`)
    return status
  }
}
