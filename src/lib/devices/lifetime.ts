import {maxCertDurationSeconds} from '../pki/sign.js'
import type {CertLifetime, ControlPlane, Project} from '../store/control-plane.js'

export interface CreatedProject extends Project {
  /** Lifetime of the project's device certificates (default: 1 year, 30 days once a signer serves it). */
  certLifetime: CertLifetime
}

/** Creates a project and, when given, sets its device certificate lifetime, in one transaction. */
export async function createProject(options: {
  controlPlane: ControlPlane
  name: string
  cidr: string
  quarantineSeconds?: number
  certLifetimeSeconds?: number
}): Promise<CreatedProject> {
  return options.controlPlane.transaction(async (controlPlane) => {
    const project = await controlPlane.createProject({name: options.name, cidr: options.cidr, quarantineSeconds: options.quarantineSeconds})
    const certLifetime =
      options.certLifetimeSeconds === undefined
        ? await controlPlane.certLifetime({project: project.name})
        : await controlPlane.setCertLifetime({project: project.name, seconds: options.certLifetimeSeconds})
    return {...project, certLifetime}
  })
}

/**
 * How long a new certificate of the project lives: `requested`, else the project's lifetime
 * (`project create --cert-lifetime`); undefined (until the CA expires) where that would outlive the CA.
 */
export async function certDuration(options: {controlPlane: ControlPlane; project: string; caNotAfter: string; requestedSeconds?: number}): Promise<number | undefined> {
  if (options.requestedSeconds !== undefined) return options.requestedSeconds
  const {deviceCertSeconds} = await options.controlPlane.certLifetime({project: options.project})
  return deviceCertSeconds < maxCertDurationSeconds(options.caNotAfter) ? deviceCertSeconds : undefined
}
