import {Args, Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {formatDuration, parseDuration} from '../../lib/duration.js'
import {createProject, type CreatedProject} from '../../lib/devices/lifetime.js'

export default class ProjectCreate extends ControlPlaneCommand<typeof ProjectCreate> {
  static override summary = 'Create a project with its own overlay network.'
  static override description = `A project is a team's overlay network: an IPv4 range (/16 to /30) that does not overlap any other project's, from which every device gets its overlay address. Fill its address pool afterwards with \`pool populate\`.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio --cidr 10.99.1.0/24',
    '<%= config.bin %> <%= command.id %> lab --cidr 10.98.0.0/16 --quarantine 1h --json',
    '<%= config.bin %> <%= command.id %> edit --cidr 10.97.0.0/24 --cert-lifetime 90d',
  ]

  static override args = {
    name: Args.string({description: 'Project name: lowercase letters, digits and hyphens.', required: true}),
  }

  static override flags = {
    cidr: Flags.string({summary: 'Overlay network of the project, e.g. 10.99.1.0/24.', required: true}),
    quarantine: Flags.string({
      summary: 'How long a released address rests before it is handed out again (30m, 24h, 7d).',
      default: '24h',
    }),
    'cert-lifetime': Flags.string({
      summary: 'Lifetime of device certificates (e.g. 30d, 365d) [default: 1 year; 30 days once `vidsync signer` serves the project].',
    }),
  }

  async run(): Promise<CreatedProject> {
    const quarantineSeconds = parseDuration(this.flags.quarantine, 'quarantine')
    const lifetime = this.flags['cert-lifetime']
    const certLifetimeSeconds = lifetime === undefined ? undefined : parseDuration(lifetime, 'cert-lifetime')
    const project = await this.withControlPlane((controlPlane) =>
      createProject({controlPlane, name: this.args.name, cidr: this.flags.cidr, quarantineSeconds, certLifetimeSeconds}),
    )
    this.log(`Created project ${project.name} (${project.cidr}, quarantine ${formatDuration(project.quarantineSeconds)}).`)
    const {certLifetime} = project
    this.log(`Device certificates live ${formatDuration(certLifetime.deviceCertSeconds)}${certLifetime.configured ? '' : ' (the default; change it with `vidsync project set`)'}.`)
    this.log(`Next: vidsync pool populate ${project.name}`)
    return project
  }
}
