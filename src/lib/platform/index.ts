import {availableParallelism} from 'node:os'

/** The operating systems a vidsync device runs on. */
export type OsName = 'linux' | 'darwin' | 'win32'

/**
 * Everything that differs by OS lives behind this interface (see DESIGN.md, "Devices on every OS").
 * Chosen once at start with `currentPlatform()`; tests inject another one.
 */
export interface Platform {
  readonly os: OsName
  /** CPUs this process may use, for per-device tuning (nebula routines). */
  readonly cpuCount: number
}

function osName(): OsName {
  const name = process.platform
  if (name === 'linux' || name === 'darwin' || name === 'win32') return name
  throw new Error(`vidsync does not support ${name}: it runs on Linux, macOS and Windows`)
}

let chosen: Platform | undefined

/** The platform this process runs on, chosen once. */
export function currentPlatform(): Platform {
  chosen ??= {os: osName(), cpuCount: availableParallelism()}
  return chosen
}
