import {basename} from 'node:path'

import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {bundleFlags, bundleOptions} from '../../flags/key.js'
import {type BundleResult, registerDevice} from '../../lib/devices/issue.js'
import {parseDuration} from '../../lib/duration.js'
import {formatWhen} from '../../lib/output/time.js'

export default class DeviceRegister extends ControlPlaneCommand<typeof DeviceRegister> {
  static override summary = 'Register a device and write its bundle.'
  static override description = `Allocates the next free overlay address, signs the device's public key with the local CA (nebula-cert) and writes a bundle zip with ca.crt, node.crt, nebula.yml, README.md and vidsync.json. All or nothing: if signing or writing fails, no address stays allocated. The user then runs \`vidsync join <bundle>\` on the device.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio --name laptop --public-key laptop.pub',
    'cat node.pub | <%= config.bin %> <%= command.id %> studio --name ci-runner --public-key - --groups ci --json',
    '<%= config.bin %> <%= command.id %> studio --name kiosk --generate-key --out kiosk.zip',
  ]

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {
    name: Flags.string({summary: 'Device name: lowercase letters, digits and hyphens.', required: true}),
    ...bundleFlags,
    groups: Flags.string({summary: 'Comma-separated Nebula groups for firewall rules.', delimiter: ',', multiple: true}),
    'syncthing-id': Flags.string({summary: "The device's Syncthing ID, shared with its peers."}),
    duration: Flags.string({summary: 'Certificate lifetime (e.g. 8760h, 365d) [default: until the CA expires].'}),
  }

  async run(): Promise<BundleResult> {
    const {flags} = this
    // Standard input (--public-key -) is read before the store opens: waiting on it must not hold the embedded database.
    const bundle = await bundleOptions(flags, this.args.project, flags.name)
    const durationSeconds = flags.duration === undefined ? undefined : parseDuration(flags.duration, 'duration')
    const result = await this.withControlPlane(async (controlPlane) =>
      this.progress(`Registering ${flags.name}: address, certificate, bundle`, async () => registerDevice({
        home: this.home,
        controlPlane,
        project: this.args.project,
        name: flags.name,
        ...bundle,
        groups: flags.groups,
        syncthingId: flags['syncthing-id'],
        durationSeconds,
      })),
    )
    this.log(`Registered ${result.device.name} in ${result.project} at ${result.device.ip}; certificate valid until ${formatWhen(result.device.notAfter)}.`)
    this.log(`Bundle: ${result.bundle}`)
    this.log(`Next: on the device, vidsync join ${basename(result.bundle)}`)
    if (result.operatorGeneratedKey) this.warn('the bundle holds the private key generated here: hand it over privately and delete copies.')
    return result
  }
}
