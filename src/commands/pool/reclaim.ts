import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {parseDuration} from '../../lib/duration.js'
import type {StaleDevice} from '../../lib/store/control-plane.js'
import {relativeTime} from '../../lib/output/time.js'

export default class PoolReclaim extends ControlPlaneCommand<typeof PoolReclaim> {
  static override summary = 'Release the addresses of devices not seen for a while.'
  static override description = `Devices whose last heartbeat (sent by \`vidsync up\`), or registration when never seen, is older than --stale are revoked (their certificates join the blocklist) and released; their addresses come back after the project's quarantine. Lighthouses are never reclaimed. Lists the devices and asks first; scripts pass --yes, or --dry-run to only list.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio --stale 30d --dry-run',
    '<%= config.bin %> <%= command.id %> studio --stale 30d --yes --json',
  ]

  static override args = {
    project: Args.string({description: 'Project name.', required: true}),
  }

  static override flags = {
    stale: Flags.string({summary: 'Reclaim devices not seen for this long (at least 1h, e.g. 30d).', required: true}),
    'dry-run': Flags.boolean({summary: 'Only list the devices that would be reclaimed.'}),
    yes: Flags.boolean({char: 'y', summary: 'Do not ask for confirmation.'}),
  }

  async run(): Promise<{project: string; dryRun: boolean; devices: StaleDevice[]}> {
    const {project} = this.args
    const {flags} = this
    const staleSeconds = parseDuration(flags.stale, 'stale threshold')
    const dryRun = flags['dry-run'] ?? false
    const stale = await this.withControlPlane((controlPlane) => controlPlane.reclaimStale({project, staleSeconds, dryRun: true}))
    let devices = stale
    if (!dryRun && stale.length > 0) {
      const names = stale.map((d) => `${d.device} (${d.ip}, last seen ${d.lastSeenAt ? relativeTime(d.lastSeenAt) : `never, registered ${relativeTime(d.createdAt)}`})`).join(', ')
      // Asked with the store closed: a person thinking it over must not hold the embedded database.
      await this.confirmDestructive(`Revoke and release ${names}?`, flags.yes)
      devices = await this.withControlPlane((controlPlane) => controlPlane.reclaimStale({project, staleSeconds}))
    }
    if (devices.length === 0) this.log(`No device in ${project} has been silent for ${flags.stale}.`)
    for (const device of devices) {
      this.log(`${dryRun ? 'Would reclaim' : 'Reclaimed'} ${device.device} (${device.ip}), last seen ${device.lastSeenAt ?? 'never'}.`)
    }
    return {project, dryRun, devices}
  }
}
