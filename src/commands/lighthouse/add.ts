import {basename} from 'node:path'

import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {bundleFlags, bundleOptions} from '../../flags/key.js'
import {endpointResolveProblem} from '../../lib/devices/endpoint.js'
import {type BundleResult, registerDevice} from '../../lib/devices/issue.js'

export default class LighthouseAdd extends ControlPlaneCommand<typeof LighthouseAdd> {
  static override summary = 'Add a lighthouse to a project and write its bundle.'
  static override description = `A lighthouse is a node with a fixed public address that tells devices where their peers are and helps them punch through NAT (and, with --relay, relays traffic when they cannot). It gets an overlay address and a certificate like a device; bundles issued afterwards list it. Several lighthouses are allowed.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio --name lh1 --endpoint lh1.example.org:4242 --public-key lh1.pub',
    '<%= config.bin %> <%= command.id %> studio --name lh2 --endpoint 192.0.2.10:4242 --generate-key --relay --out lh2.zip',
  ]

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {
    name: Flags.string({summary: 'Lighthouse name.', required: true}),
    endpoint: Flags.string({summary: 'Public HOST:PORT where devices reach it over UDP.', required: true}),
    ...bundleFlags,
    relay: Flags.boolean({summary: 'Also relay traffic for devices that cannot reach each other directly.'}),
    'resolve-check': Flags.boolean({summary: 'Warn when the endpoint\'s host name does not resolve here.', allowNo: true, default: true}),
  }

  async run(): Promise<BundleResult> {
    const {flags} = this
    // Standard input (--public-key -) is read before the store opens: waiting on it must not hold the embedded database.
    const bundle = await bundleOptions(flags, this.args.project, flags.name)
    const result = await this.withControlPlane(async (controlPlane) =>
      this.progress(`Registering lighthouse ${flags.name}: address, certificate, bundle`, () =>
        registerDevice({
          home: this.home,
          controlPlane,
          project: this.args.project,
          name: flags.name,
          ...bundle,
          groups: ['lighthouse'],
          lighthouse: {endpoint: flags.endpoint, relay: flags.relay},
        }),
      ),
    )
    this.log(`Added lighthouse ${result.device.name} at ${result.device.endpoint} (overlay ${result.device.ip}).`)
    this.log(`Bundle: ${result.bundle}`)
    if (result.operatorGeneratedKey) this.warn('the bundle holds the private key generated here: hand it over privately and delete copies.')
    const problem = flags['resolve-check'] ? await endpointResolveProblem(flags.endpoint) : undefined
    if (problem) this.warn(`${problem} (--no-resolve-check skips this check)`)
    this.log(`Next: on the lighthouse machine (${flags.endpoint}), vidsync join ${basename(result.bundle)} && sudo vidsync up --detach`)
    return result
  }
}
