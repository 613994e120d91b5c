import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'

export default class DeviceRelease extends ControlPlaneCommand<typeof DeviceRelease> {
  static override summary = "Give a device's address back to the pool and free its name."
  static override description = `The address returns to the pool after the project's quarantine period. A revoked device's certificates stay blocklisted until they expire; an active device's certificate stays valid until it expires, so revoke first if the device should lose access now.`
  static override examples = ['<%= config.bin %> <%= command.id %> studio old-laptop --yes']

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
    name: Args.string({description: 'Device name.', required: true}),
  }

  static override flags = {
    yes: Flags.boolean({char: 'y', summary: 'Do not ask for confirmation.'}),
  }

  async run(): Promise<{project: string; device: {name: string; ip: string}; quarantinedUntil: string}> {
    await this.confirmDestructive(`Release ${this.args.name} in ${this.args.project}?`, this.flags.yes)
    const release = await this.withControlPlane((controlPlane) =>
      controlPlane.releaseDevice({project: this.args.project, device: this.args.name}),
    )
    this.log(`Released ${release.device}; ${release.ip} returns to the pool after ${release.quarantinedUntil}.`)
    return {project: this.args.project, device: {name: release.device, ip: release.ip}, quarantinedUntil: release.quarantinedUntil}
  }
}
