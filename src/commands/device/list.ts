import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {renderTable} from '../../lib/output/table.js'
import {tableFlags} from '../../flags/table.js'
import type {DeviceRecord} from '../../lib/store/control-plane.js'
import {relativeTime} from '../../lib/output/time.js'
import {parseDuration} from '../../lib/duration.js'
import {expiresWithin} from '../../lib/pki/expiry.js'

export default class DeviceList extends ControlPlaneCommand<typeof DeviceList> {
  static override summary = "List a project's devices and lighthouses."
  static override description = 'Every device that holds an address: its overlay IP, status, groups, certificate expiry and last heartbeat (a device running `vidsync up` sends one at most every 5 minutes). Released devices are not shown. --expiring 30d lists only the active devices whose certificate ends within 30 days (or has ended): the ones to renew with `vidsync device renew`.'
  static override examples = ['<%= config.bin %> <%= command.id %> studio', '<%= config.bin %> <%= command.id %> studio --expiring 30d', '<%= config.bin %> <%= command.id %> studio --json']

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {
    ...tableFlags,
    expiring: Flags.string({summary: 'Only active devices whose certificate expires within this duration (e.g. 30d).'}),
  }

  async run(): Promise<{project: string; devices: DeviceRecord[]}> {
    const within = this.flags.expiring === undefined ? undefined : parseDuration(this.flags.expiring, 'expiring')
    const all = await this.withControlPlane((controlPlane) => controlPlane.listDevices({project: this.args.project}))
    const devices = within === undefined ? all : all.filter((d) => d.status === 'active' && expiresWithin(d.notAfter, within))
    this.log(
      renderTable(devices, [
        {header: 'name', get: (d) => d.name},
        {header: 'ip', get: (d) => d.ip},
        {header: 'role', get: (d) => (d.lighthouse ? `lighthouse ${d.endpoint}` : 'device')},
        {header: 'status', get: (d) => d.status},
        {header: 'groups', get: (d) => d.groups.join(',') || '-'},
        {header: 'expires', get: (d) => (d.notAfter ? relativeTime(d.notAfter) : '-')},
        {header: 'last seen', get: (d) => (d.lastSeenAt ? relativeTime(d.lastSeenAt) : d.lighthouse ? '-' : 'never')},
      ], {columns: this.flags.columns, noHeader: this.flags['no-header']}),
    )
    return {project: this.args.project, devices}
  }
}
