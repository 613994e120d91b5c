import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {InvalidInputError} from '../../lib/errors.js'

export default class InviteRevoke extends ControlPlaneCommand<typeof InviteRevoke> {
  static override summary = 'Revoke an invite and reject the devices still waiting with it.'
  static override description = 'The code stops working at once. Devices that redeemed it but are not approved yet are rejected; approved devices stay (revoke them with `vidsync device revoke`).'
  static override examples = ['<%= config.bin %> <%= command.id %> studio 3', '<%= config.bin %> <%= command.id %> studio 3 --yes --json']

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
    id: Args.string({description: 'Invite ID from `vidsync invite list`.', required: true}),
  }

  static override flags = {
    yes: Flags.boolean({char: 'y', summary: 'Do not ask for confirmation.'}),
  }

  async run(): Promise<{id: number; revokedAt: string; rejected: number}> {
    const {project} = this.args
    // Checked here rather than by oclif's integer arg, whose range error is not a usage error.
    const id = Number(this.args.id)
    if (!/^\d{1,10}$/.test(this.args.id) || id < 1 || id > 2_147_483_647) {
      throw new InvalidInputError(`invalid invite ID "${this.args.id.slice(0, 40)}": expected a number from \`vidsync invite list\``)
    }
    await this.confirmDestructive(`Revoke invite ${id} of ${project} and reject its waiting devices?`, this.flags.yes)
    const revoked = await this.withControlPlane((controlPlane) => controlPlane.revokeInvite({project, id}))
    this.log(`Revoked invite ${revoked.id}; ${revoked.rejected} waiting device(s) rejected.`)
    return revoked
  }
}
