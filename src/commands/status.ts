import {setTimeout as sleep} from 'node:timers/promises'

import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../base-command.js'
import {parseDuration} from '../lib/duration.js'
import {InvalidInputError} from '../lib/errors.js'
import {renderStatus} from '../lib/output/status.js'
import {renderServices} from '../lib/output/services.js'
import {type StatusWithServices, statusWithServices} from '../lib/up/service-status.js'
import {stopOnRequest} from '../lib/platform/index.js'

export default class Status extends BaseCommand<typeof Status> {
  static override summary = "Show this device's overlay, peers and sync progress."
  static override description = 'Overlay: whether Nebula runs, the overlay IP and whether a lighthouse answered. Services: what the service manager (systemd, launchd, the Windows SCM and Task Scheduler) says about the nebula service and the agent, or, where none runs, that vidsync supervises them itself. Sync: connected peers, and per folder how complete it is here and on each connected peer, with bytes and transfer rate. --watch redraws until Ctrl-C.'
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --watch', '<%= config.bin %> <%= command.id %> --json']

  static override args = {
    project: Args.string({description: 'Joined project [default: the only one joined].'}),
  }

  static override flags = {
    watch: Flags.boolean({summary: 'Keep refreshing until Ctrl-C.'}),
    interval: Flags.string({summary: 'Refresh interval with --watch.', default: '2s'}),
  }

  async run(): Promise<StatusWithServices> {
    if (this.flags.watch && this.jsonEnabled()) throw new InvalidInputError('--watch draws for people: use --json alone and poll it in scripts')
    const options = {home: this.home, project: this.args.project}
    let status = await statusWithServices(options)
    if (!this.flags.watch) {
      this.log(`${renderStatus(status, {color: this.color})}\n${renderServices(status.services)}`)
      return status
    }
    const intervalMs = parseDuration(this.flags.interval, 'interval') * 1000
    const stop = stopOnRequest()
    try {
      while (!stop.signal.aborted) {
        // Clear and redraw on a terminal; elsewhere append one snapshot per interval.
        if (this.interactive) process.stdout.write('\u001B[2J\u001B[H')
        this.log(`${renderStatus(status, {color: this.color})}\n${renderServices(status.services)}`)
        await sleep(intervalMs, undefined, {signal: stop.signal}).catch(() => {})
        if (!stop.signal.aborted) status = await statusWithServices({...options, previous: status})
      }
    } finally {
      stop.dispose()
    }
    return status
  }
}
