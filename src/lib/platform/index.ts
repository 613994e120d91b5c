import {darwinPlatform} from './darwin.js'
import {hostDeps} from './host.js'
import {linuxPlatform} from './linux.js'
import type {HostDeps, OsName, Platform} from './types.js'
import {win32Platform} from './win32.js'

export {freeSpace} from './disk.js'
export {hostDeps} from './host.js'
export type {HostDeps, OsName, Platform, ProcessIdentity, ServiceDefinition, ServiceManagerName, ServiceRequestHandlers, ServiceScope, ServiceSpec, ServiceState, User, UserServiceRole, UserServiceSpec} from './types.js'

/**
 * Everything that differs by OS lives behind `Platform` (see DESIGN.md, "Devices on every OS").
 * Chosen once at start with `currentPlatform()`; tests build another with `platformFor`.
 */
export function platformFor(os: OsName, deps: HostDeps = hostDeps()): Platform {
  if (os === 'linux') return linuxPlatform(deps)
  if (os === 'darwin') return darwinPlatform(deps)
  return win32Platform(deps)
}

function osName(): OsName {
  const name = process.platform
  if (name === 'linux' || name === 'darwin' || name === 'win32') return name
  throw new Error(`vidsync does not support ${name}: it runs on Linux, macOS and Windows`)
}

let chosen: Platform | undefined

/** The platform this process runs on, chosen once. */
export function currentPlatform(): Platform {
  chosen ??= platformFor(osName())
  return chosen
}

/** A signal that aborts on Ctrl-C or a request to end this process; `dispose` stops listening. */
export function stopOnRequest(platform: Platform = currentPlatform()): {signal: AbortSignal; dispose: () => void} {
  const controller = new AbortController()
  const dispose = platform.onServiceRequests({stop: () => controller.abort()})
  return {signal: controller.signal, dispose}
}
