import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'

export default class DeviceRevoke extends ControlPlaneCommand<typeof DeviceRevoke> {
  static override summary = "Revoke a device's certificates and quarantine its address."
  static override description = `The device's certificate fingerprints go on the project's blocklist: every bundle issued from now on carries it, and Nebula disconnects the device from peers that have it. Its address is quarantined; \`device release\` frees the name.`
  static override examples = ['<%= config.bin %> <%= command.id %> studio laptop', '<%= config.bin %> <%= command.id %> studio laptop --yes --json']

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
    name: Args.string({description: 'Device name.', required: true}),
  }

  static override flags = {
    yes: Flags.boolean({char: 'y', summary: 'Do not ask for confirmation.'}),
  }

  async run(): Promise<{project: string; device: {name: string; ip: string}; fingerprints: string[]; quarantinedUntil: string}> {
    await this.confirmDestructive(`Revoke ${this.args.name} in ${this.args.project}?`, this.flags.yes)
    const revocation = await this.withControlPlane((controlPlane) =>
      controlPlane.revokeDevice({project: this.args.project, device: this.args.name}),
    )
    this.log(`Revoked ${revocation.device}: ${revocation.fingerprints.length} certificate(s) blocklisted.`)
    this.log(`Address ${revocation.ip} is quarantined until ${revocation.quarantinedUntil}.`)
    this.log('Issue new bundles (device renew) or run `vidsync up` on devices so they learn the blocklist.')
    const {device, ip, ...rest} = revocation
    return {project: this.args.project, device: {name: device, ip}, ...rest}
  }
}
