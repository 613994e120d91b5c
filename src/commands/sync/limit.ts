import {Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {connectFromFlags, connectionFlags} from '../../flags/syncthing.js'
import {InvalidInputError, PermissionError} from '../../lib/errors.js'
import {type BandwidthLimits, formatRate, setBandwidth} from '../../lib/folders/bandwidth.js'

export default class SyncLimit extends BaseCommand<typeof SyncLimit> {
  static override summary = "Limit this device's upload and download rates."
  static override description = `Rates in kbit, mbit or gbit per second (none: no limit). Syncthing exempts peers at private (LAN) addresses from limits unless told otherwise, and the overlay's addresses are private: vidsync sets limitBandwidthInLan so that the limit holds between the project's devices. Only on the Syncthing vidsync manages: these are Syncthing-wide options, which vidsync never changes on your own Syncthing.`
  static override examples = ['<%= config.bin %> <%= command.id %> --up 50mbit --down 200mbit', '<%= config.bin %> <%= command.id %> --up none']

  static override flags = {
    ...connectionFlags,
    up: Flags.string({summary: 'Upload limit, e.g. 50mbit (none: no limit).'}),
    down: Flags.string({summary: 'Download limit, e.g. 200mbit (none: no limit).'}),
  }

  async run(): Promise<BandwidthLimits> {
    const {flags} = this
    if (flags.up === undefined && flags.down === undefined) throw new InvalidInputError('nothing to set: pass --up, --down or both')
    const {client, managed} = await connectFromFlags(this.home, flags)
    if (!managed) throw new PermissionError('bandwidth limits are options of the whole Syncthing: vidsync sets them only on the Syncthing it manages')
    const limits = await setBandwidth({client, up: flags.up, down: flags.down})
    this.log(`Upload ${formatRate(limits.upKiBps)}, download ${formatRate(limits.downKiBps)}, between the project's devices too (limitBandwidthInLan).`)
    return limits
  }
}
