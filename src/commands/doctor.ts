import {Args} from '@oclif/core'

import {BaseCommand} from '../base-command.js'
import {doctorWithServices} from '../lib/up/service-status.js'
import type {DoctorCheck} from '../lib/up/status.js'

export default class Doctor extends BaseCommand<typeof Doctor> {
  static override summary = 'Check every step from joined project to syncing folders.'
  static override description = 'Checks the joined project, its certificate and CA, nebula (binary, privileges, /dev/net/tun, config, running, overlay address, lighthouse), Syncthing (installed, configured, answering), folders and peers, and the nebula and agent services (installed, running, not from an older install, on Windows the system copy of the overlay current; or supervised by vidsync where no service manager runs), and says what to fix; warns (WARN) from 7 days before the device certificate expires and 90 days before the CA does. Exits 1 when a check fails.'
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  static override args = {
    project: Args.string({description: 'Joined project [default: the only one joined].'}),
  }

  async run(): Promise<{ok: boolean; checks: DoctorCheck[]}> {
    const checks = await doctorWithServices({home: this.home, project: this.args.project})
    for (const check of checks) {
      const label = check.ok ? (check.warning ? 'WARN' : 'ok  ') : 'FAIL'
      this.log(`${label}  ${check.name}${check.fix || check.warning ? `: ${check.fix ?? check.warning}` : ''}`)
    }
    const ok = checks.every((check) => check.ok)
    if (!ok) process.exitCode = 1
    return {ok, checks}
  }
}
