import {Args} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {renderTable} from '../../lib/output/table.js'
import {tableFlags} from '../../flags/table.js'
import type {Invite} from '../../lib/store/control-plane.js'
import {relativeTime} from '../../lib/output/time.js'

export default class InviteList extends ControlPlaneCommand<typeof InviteList> {
  static override summary = "List a project's invites."
  static override description = 'Every invite with its state (active, expired, revoked, used), uses and the devices waiting for approval. Codes are not stored and cannot be shown again.'
  static override examples = ['<%= config.bin %> <%= command.id %> studio', '<%= config.bin %> <%= command.id %> studio --json']

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {...tableFlags}

  async run(): Promise<{project: string; invites: Invite[]}> {
    const invites = await this.withControlPlane((controlPlane) => controlPlane.listInvites({project: this.args.project}))
    this.log(
      renderTable(invites, [
        {header: 'id', get: (i) => i.id},
        {header: 'state', get: (i) => i.state},
        {header: 'uses', get: (i) => `${i.uses}/${i.maxUses}`},
        {header: 'pending', get: (i) => i.pending},
        {header: 'expires', get: (i) => relativeTime(i.expiresAt)},
        {header: 'groups', get: (i) => i.groups.join(',') || null},
      ], {columns: this.flags.columns, noHeader: this.flags['no-header']}),
    )
    return {project: this.args.project, invites}
  }
}
