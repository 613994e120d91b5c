import {Args} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import type {DeviceRecord, RevocationAcks} from '../../lib/store/control-plane.js'
import {formatWhen} from '../../lib/output/time.js'

export default class DeviceShow extends ControlPlaneCommand<typeof DeviceShow> {
  static override summary = 'Show one device: address, certificate, key.'
  static override description = 'Details of a registered device or lighthouse, including its certificate fingerprint and expiry and its public key; for a revoked device, how many active devices have applied the revocation (their refresh reports the blocklist version they applied).'
  static override examples = ['<%= config.bin %> <%= command.id %> studio laptop', '<%= config.bin %> <%= command.id %> studio laptop --json']

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
    name: Args.string({description: 'Device name.', required: true}),
  }

  async run(): Promise<{project: string; device: DeviceRecord; revocation: RevocationAcks | null}> {
    const {device, revocation} = await this.withControlPlane(async (controlPlane) => {
      const found = await controlPlane.device({project: this.args.project, device: this.args.name})
      return {device: found, revocation: found.revokedAt ? await controlPlane.revocation({project: this.args.project, device: this.args.name}) : null}
    })
    const rows: [string, unknown][] = [
      ['name', device.name],
      ['overlay ip', device.ip],
      ['status', device.status],
      ['role', device.lighthouse ? `lighthouse at ${device.endpoint}${device.relay ? ', relay' : ''}` : 'device'],
      ['groups', device.groups.join(', ') || '-'],
      ['syncthing id', device.syncthingId ?? '-'],
      ['fingerprint', device.fingerprint],
      ['expires', formatWhen(device.notAfter)],
      ['key made by', device.operatorKey ? 'the operator (--generate-key)' : 'the device'],
      ['registered', formatWhen(device.createdAt)],
    ]
    if (device.revokedAt) rows.push(['revoked', formatWhen(device.revokedAt)])
    if (revocation) {
      const total = revocation.acknowledged + revocation.pending
      rows.push(['acknowledged', `${revocation.acknowledged} of ${total} active devices${revocation.pending ? ` (pending: ${revocation.pendingDevices.join(', ')})` : ''}`])
    }
    for (const [label, value] of rows) this.log(`${label.padEnd(13)} ${value ?? '-'}`)
    return {project: this.args.project, device, revocation}
  }
}
