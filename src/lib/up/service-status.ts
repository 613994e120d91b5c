import {askNebulaService, nebulaControlAddress} from '../nebula/process.js'
import {nebulaServiceProbe} from '../nebula/service.js'
import {systemOverlayFix, systemOverlayProblem} from '../nebula/system-overlay.js'
import {currentPlatform, type Platform} from '../platform/index.js'
import {JoinedProject} from '../project/joined-project.js'
import type {Tools} from '../exec.js'
import {type DeviceStatus, deviceStatus, type DoctorCheck, doctor} from './status.js'
import {agentServiceDefinition, reportService, type ServiceReport} from './services.js'
import {askAgent} from './up.js'

/**
 * The project's two services as the service manager sees them (systemctl show, launchctl print,
 * sc.exe queryex, schtasks /Query), or, where no manager can keep them, as vidsync's own
 * supervisors answer on nebula.sock and agent.sock.
 */
export async function serviceReports(options: {home: string; project?: string; tools?: Tools; platform?: Platform}): Promise<ServiceReport[]> {
  const platform = options.platform ?? currentPlatform()
  const project = await JoinedProject.find({home: options.home, project: options.project, platform})
  const user = platform.invokingUser()
  const [nebula, agent] = await Promise.all([askNebulaService(project.dir, 'status', platform), askAgent(project.dir, 'status', platform)])
  const nebulaDefinition = await nebulaServiceProbe({home: options.home, projectDir: project.dir, user, tools: options.tools, platform})
  const agentDefinition = await agentServiceDefinition({home: options.home, project, user, platform})
  const nebulaReport = async () => {
    const report = await reportService('nebula', nebulaDefinition, {
      platform,
      supervisor: {running: nebula !== undefined, ...(nebula?.pid ? {pid: nebula.pid} : {}), address: nebulaControlAddress(project.dir, platform)},
    })
    const staleOverlay = report.installed ? await systemOverlayProblem(project, platform) : undefined
    return staleOverlay ? {...report, staleOverlay} : report
  }
  return Promise.all([
    nebulaReport(),
    reportService('agent', agentDefinition, {
      platform,
      user,
      // The agent's command carries --interval and --gui-port: another value is a choice, not an older install.
      staleCheck: false,
      supervisor: {running: agent !== undefined, ...(agent ? {pid: agent.pid} : {}), address: platform.controlAddress(project.dir, 'agent')},
    }).then((report) => (agent?.push ? {...report, push: agent.push} : report)),
  ])
}

export type StatusWithServices = DeviceStatus & {services: ServiceReport[]}

/** `vidsync status`: overlay, peers and sync, and who keeps nebula and the agent running. */
export async function statusWithServices(options: {home: string; project?: string; previous?: DeviceStatus}): Promise<StatusWithServices> {
  const [status, services] = await Promise.all([deviceStatus(options), serviceReports(options)])
  return {...status, services}
}

/** One doctor check per service: installed, running and current, or supervised by vidsync where no manager runs. */
export function serviceChecks(reports: ServiceReport[]): DoctorCheck[] {
  return reports.map((report) => {
    const name = `${report.role} service`
    if (report.manager === null) {
      // No service manager here is not a fault: vidsync's own supervisor keeps it running (it does not start at boot/login).
      return report.running || report.role === 'agent' ? {name: `${name} (none: ${report.fallback})`, ok: true} : {name, ok: false, fix: 'not running: start it with `vidsync up`'}
    }
    if (report.stale) return {name, ok: false, fix: `${report.name} is from an older vidsync or other settings: \`sudo vidsync down --uninstall\`, then \`vidsync up\``}
    if (report.staleOverlay) return {name, ok: false, fix: `${report.staleOverlay}: ${systemOverlayFix}`}
    if (!report.installed) return {name, ok: false, fix: `${report.name} is not installed: \`vidsync up\` installs it`}
    if (!report.running) return {name, ok: false, fix: `${report.name} is installed but ${report.state}: \`vidsync up\` starts it`}
    return {name: `${name} ${report.name} (${report.manager})`, ok: true}
  })
}

/** `vidsync doctor`: every step from joined project to syncing folders, then the services. */
export async function doctorWithServices(options: {home: string; project?: string; tools?: Tools}): Promise<DoctorCheck[]> {
  const checks = await doctor(options)
  if (!checks[0]?.ok) return checks
  return [...checks, ...serviceChecks(await serviceReports(options))]
}
