import {stat} from 'node:fs/promises'

import {Args} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {resolveProjectDir} from '../../lib/project/joined-project.js'
import {runNebulaService} from '../../lib/nebula/service.js'
import {currentPlatform} from '../../lib/platform/index.js'

export default class NebulaService extends BaseCommand<typeof NebulaService> {
  static override hidden = true
  static override summary = 'What the nebula system service runs: nebula, restarted after a crash, controlled over a socket.'
  static override description =
    "Runs as root (started by systemd, launchd, or by `vidsync up` where no service manager runs). Keeps nebula running for the project, restarting it with a bounded backoff, and answers status, reload and stop on <home>/projects/<project>/nebula.sock, which only the project's owner can open."

  static override args = {
    project: Args.string({description: 'Joined project [default: the only one].'}),
  }

  async run(): Promise<{stopped: true}> {
    const projectDir = await resolveProjectDir({home: this.home, project: this.args.project})
    // The socket belongs to whoever owns the project's files: the user who joined.
    const {uid, gid} = await stat(projectDir)
    const stop = new AbortController()
    let reloadRequested = () => undefined as void
    // The service manager's stop ends the service; its reload (`systemctl reload`) reloads nebula.
    const stopListening = currentPlatform().onServiceRequests({stop: () => stop.abort(), reload: () => reloadRequested()})
    try {
      await runNebulaService({
        projectDir,
        owner: {uid, gid},
        signal: stop.signal,
        log: (line) => this.log(`${new Date().toISOString()} ${line}`),
        onReloadRequest: (reload) => {
          reloadRequested = reload
        },
      })
    } finally {
      stopListening()
    }
    return {stopped: true}
  }
}
