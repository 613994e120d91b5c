import {Args} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {stopNebula, type StoppedNebula} from '../../lib/nebula/process.js'
import {resolveProjectDir} from '../../lib/project/joined-project.js'

export default class NebulaDown extends BaseCommand<typeof NebulaDown> {
  static override summary = 'Stop the nebula that `vidsync nebula up` started.'
  static override description =
    "Asks the project's nebula service to stop over its control socket (no administrator rights needed), or stops the nebula of `nebula up --detach` by the PID and start time in <home>/projects/<project>/nebula.pid. Nothing to do when it is not running; a stale pid file is removed. PROJECT may be left out when only one project is joined."
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> studio --json']

  static override args = {
    project: Args.string({description: 'Joined project [default: the only one].'}),
  }

  async run(): Promise<StoppedNebula> {
    const result = await stopNebula({projectDir: await resolveProjectDir({home: this.home, project: this.args.project})})
    this.log(result.stopped ? `Stopped nebula for ${result.project} (pid ${result.pid}).` : `nebula was not running for ${result.project}.`)
    return result
  }
}
