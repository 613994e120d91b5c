import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {formatDuration, parseDuration} from '../../lib/duration.js'
import {InvalidInputError} from '../../lib/errors.js'
import {selectedBackend} from '../../lib/store/open.js'
import {createInvite, type CreatedInvite} from '../../lib/invites/invites.js'
import {formatWhen} from '../../lib/output/time.js'

export default class InviteCreate extends ControlPlaneCommand<typeof InviteCreate> {
  static override summary = 'Create an invite code for devices to join a project.'
  static override description = `Prints the code once: only its hash is stored. A device runs \`vidsync join <code>\` with the control plane configured (VIDSYNC_SUPABASE_URL and the anon key in VIDSYNC_SUPABASE_KEY); it then waits until you sign its key with \`vidsync device approve\`. Every device joining with the code gets the invite's groups.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio',
    '<%= config.bin %> <%= command.id %> studio --uses 10 --expires 7d --groups editors --json',
  ]

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {
    uses: Flags.integer({summary: 'How many devices may join with the code.', default: 1, min: 1, max: 10_000}),
    expires: Flags.string({summary: 'How long the code stays valid (e.g. 30m, 24h, 7d).', default: '24h'}),
    groups: Flags.string({summary: 'Comma-separated Nebula groups for the devices.', delimiter: ',', multiple: true}),
  }

  async run(): Promise<CreatedInvite> {
    const {flags} = this
    const expiresSeconds = parseDuration(flags.expires, 'expiry')
    if (selectedBackend(this.storeOptions) === 'embedded') {
      throw new InvalidInputError('invites need a control plane that devices can reach, and the embedded database is on this machine only', {
        hint: 'use Postgres (--database-url) or Supabase (--supabase-url with VIDSYNC_SUPABASE_KEY); on the embedded database, register devices with `vidsync device register`',
      })
    }
    const invite = await this.withControlPlane((controlPlane) =>
      createInvite({controlPlane, project: this.args.project, maxUses: flags.uses, expiresSeconds, groups: flags.groups}),
    )
    this.log(`Invite ${invite.id} for ${invite.project}: ${invite.maxUses} use(s), expires in ${formatDuration(expiresSeconds)} (${formatWhen(invite.expiresAt)}).`)
    this.log('Code (shown only now, hand it over privately):')
    this.log(`  ${invite.code}`)
    this.log(`On the device: vidsync join ${invite.code}`)
    return invite
  }
}
