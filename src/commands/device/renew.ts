import {basename} from 'node:path'

import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {defaultBundlePath, renewDevice, renewExpiring, type RenewExpiringResult, type RenewResult} from '../../lib/devices/issue.js'
import {formatDuration, parseDuration} from '../../lib/duration.js'
import {InvalidInputError} from '../../lib/errors.js'
import {formatWhen} from '../../lib/output/time.js'

export default class DeviceRenew extends ControlPlaneCommand<typeof DeviceRenew> {
  static override summary = 'Issue a new certificate for the same key and address.'
  static override description = `Signs the device's registered public key again, with the same overlay IP and groups, and writes a fresh bundle (which also carries the current lighthouses and blocklist). A certificate never outlives the CA: a longer --duration is shortened to the CA's expiry, and the output says so.

With --expiring-within instead of a device name, renews every active device whose certificate ends within that duration (or has ended) and writes one bundle per device into --out-dir, named <project>-<device>.zip: all or nothing, no bundle appears unless every one was made. Devices install theirs with \`vidsync join BUNDLE\` while running; nebula reloads the certificate without a restart.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio laptop --duration 90d --out laptop-renewed.zip',
    '<%= config.bin %> <%= command.id %> studio --expiring-within 30d --out-dir renewed/',
  ]

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
    name: Args.string({description: 'Device name (omit with --expiring-within).'}),
  }

  static override flags = {
    duration: Flags.string({summary: 'Certificate lifetime (e.g. 90d) [default: until the CA expires].'}),
    out: Flags.string({summary: 'Bundle path [default: ./<project>-<name>.zip].', exclusive: ['expiring-within']}),
    'expiring-within': Flags.string({summary: 'Renew every active device whose certificate ends within this duration (e.g. 30d).', dependsOn: ['out-dir']}),
    'out-dir': Flags.string({summary: 'Directory for the bundles of --expiring-within (created when missing).', dependsOn: ['expiring-within']}),
  }

  async run(): Promise<RenewResult | RenewExpiringResult> {
    const {flags, args} = this
    const durationSeconds = flags.duration === undefined ? undefined : parseDuration(flags.duration, 'duration')
    if ((args.name === undefined) === (flags['expiring-within'] === undefined)) {
      throw new InvalidInputError('name one device, or renew in bulk with --expiring-within and --out-dir (not both)')
    }
    if (flags['expiring-within'] !== undefined && flags['out-dir'] !== undefined) {
      const withinSeconds = parseDuration(flags['expiring-within'], 'expiring-within')
      const outDir = flags['out-dir']
      const bulk = await this.withControlPlane((controlPlane) => renewExpiring({home: this.home, controlPlane, project: args.project, withinSeconds, durationSeconds, outDir}))
      this.log(`${bulk.renewed.length} device(s) of ${bulk.project} expiring within ${formatDuration(withinSeconds)} renewed${bulk.renewed.length > 0 ? ':' : '.'}`)
      for (const result of bulk.renewed) this.log(`  ${result.device.name}  valid until ${formatWhen(result.device.notAfter)}  ${result.bundle}`)
      return bulk
    }
    const name = args.name ?? ''
    const result = await this.withControlPlane((controlPlane) =>
      this.progress(`Renewing ${name}: certificate, bundle`, () =>
        renewDevice({home: this.home, controlPlane, project: args.project, name, durationSeconds, outPath: flags.out ?? defaultBundlePath(args.project, name)}),
      ),
    )
    this.log(`Renewed ${result.device.name}: new certificate ${result.device.fingerprint} valid until ${formatWhen(result.device.notAfter)}.`)
    if (result.cappedAtCaExpiry) this.log(`The certificate ends with the CA (${result.caNotAfter}): renew the CA to go further.`)
    this.log(`Bundle: ${result.bundle}`)
    this.log(`Next: on the device, vidsync join ${basename(result.bundle)}`)
    return result
  }
}
