import {basename} from 'node:path'

import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {defaultBundlePath, renewDevice, type RenewResult} from '../../lib/devices/issue.js'
import {parseDuration} from '../../lib/duration.js'
import {formatWhen} from '../../lib/output/time.js'

export default class DeviceRenew extends ControlPlaneCommand<typeof DeviceRenew> {
  static override summary = 'Issue a new certificate for the same key and address.'
  static override description = `Signs the device's registered public key again, with the same overlay IP and groups, and writes a fresh bundle (which also carries the current lighthouses and blocklist). A certificate never outlives the CA: a longer --duration is shortened to the CA's expiry, and the output says so.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio laptop --duration 90d --out laptop-renewed.zip',
  ]

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
    name: Args.string({description: 'Device name.', required: true}),
  }

  static override flags = {
    duration: Flags.string({summary: 'Certificate lifetime (e.g. 90d) [default: until the CA expires].'}),
    out: Flags.string({summary: 'Bundle path [default: ./<project>-<name>.zip].'}),
  }

  async run(): Promise<RenewResult> {
    const result = await this.withControlPlane((controlPlane) =>
      this.progress(`Renewing ${this.args.name}: certificate, bundle`, () => renewDevice({
        home: this.home,
        controlPlane,
        project: this.args.project,
        name: this.args.name,
        durationSeconds: this.flags.duration === undefined ? undefined : parseDuration(this.flags.duration, 'duration'),
        outPath: this.flags.out ?? defaultBundlePath(this.args.project, this.args.name),
      })),
    )
    this.log(`Renewed ${result.device.name}: new certificate ${result.device.fingerprint} valid until ${formatWhen(result.device.notAfter)}.`)
    if (result.cappedAtCaExpiry) this.log(`The certificate ends with the CA (${result.caNotAfter}): renew the CA to go further.`)
    this.log(`Bundle: ${result.bundle}`)
    this.log(`Next: on the device, vidsync join ${basename(result.bundle)}`)
    return result
  }
}
