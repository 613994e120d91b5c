import {Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {connectFromFlags, connectionFlags} from '../../flags/syncthing.js'
import {InvalidInputError, PermissionError} from '../../lib/errors.js'
import {describeLimit, type EffectiveLimits, setDeviceLimits} from '../../lib/folders/bandwidth.js'

export default class SyncLimit extends BaseCommand<typeof SyncLimit> {
  static override summary = "Limit this device's upload and download rates."
  static override description = `Rates in kbit, mbit or gbit per second (none: no limit); default (or --reset for both) gives a direction back to the project's default, which the operator sets with \`vidsync project set PROJECT --sync-up RATE --sync-down RATE\` and which applies wherever a device set no limit of its own. This device's own limits are kept with the joined project. Syncthing exempts peers at private (LAN) addresses from limits unless told otherwise, and the overlay's addresses are private: vidsync sets limitBandwidthInLan so that the limit holds between the project's devices. Only on the Syncthing vidsync manages: these are Syncthing-wide options, which vidsync never changes on your own Syncthing. With several projects joined, their one Syncthing applies per direction the smallest of the projects' limits (\`vidsync sync list\` and \`vidsync status\` say which project it comes from).`
  static override examples = ['<%= config.bin %> <%= command.id %> --up 50mbit --down 200mbit', '<%= config.bin %> <%= command.id %> --up none']

  static override flags = {
    ...connectionFlags,
    up: Flags.string({summary: "Upload limit, e.g. 50mbit (none: no limit; default: the project's)."}),
    down: Flags.string({summary: "Download limit, e.g. 200mbit (none: no limit; default: the project's)."}),
    reset: Flags.boolean({summary: "Both directions back to the project's default.", exclusive: ['up', 'down']}),
    project: Flags.string({summary: 'Joined project [default: the only one joined].'}),
  }

  async run(): Promise<EffectiveLimits> {
    const {flags} = this
    if (flags.up === undefined && flags.down === undefined && !flags.reset) throw new InvalidInputError('nothing to set: pass --up, --down, both, or --reset')
    const {client, managed} = await connectFromFlags(this.home, flags)
    if (!managed) throw new PermissionError('bandwidth limits are options of the whole Syncthing: vidsync sets them only on the Syncthing it manages')
    const limits = await setDeviceLimits({client, home: this.home, project: flags.project, up: flags.up, down: flags.down, reset: flags.reset})
    this.log(`Upload ${describeLimit(limits, 'up')}, download ${describeLimit(limits, 'down')}, between the project's devices too (limitBandwidthInLan).`)
    return limits
  }
}
