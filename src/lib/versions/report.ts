import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {VidsyncError} from '../errors.js'
import type {Tools} from '../exec.js'
import {requireCertSupport} from '../pki/cert.js'
import {nebulaCapabilities, syncthingCapabilities, type VersionedTool} from './detect.js'

/** One tool as `doctor` and `status --json` show it. */
export interface ToolReport {
  tool: VersionedTool
  /** x.y.z, or null when the tool is missing or unreadable. */
  version: string | null
  path: string | null
  /** Within the releases vidsync is tested with (nebula 1.6 to 1.11, Syncthing 1.19 to 2.x). */
  tested: boolean
  /** This device can use it for the project (for nebula: reads the project's certificate version). */
  usable: boolean
  problem?: string
}

async function report(tool: VersionedTool, check: () => Promise<{version: string; path: string; tested: boolean}>): Promise<ToolReport> {
  try {
    const {version, path, tested} = await check()
    return {tool, version, path, tested, usable: true}
  } catch (error) {
    if (!(error instanceof VidsyncError)) throw error
    return {tool, version: null, path: null, tested: false, usable: false, problem: error.message}
  }
}

/** nebula and Syncthing as found on this device, and whether the joined project in `projectDir` can use them. */
export async function toolReports(options: {projectDir?: string; tools?: Tools}): Promise<ToolReport[]> {
  const nebula = await report('nebula', () => nebulaCapabilities('nebula', options.tools))
  if (nebula.usable && options.projectDir !== undefined) {
    const read = (name: string) => readFile(join(options.projectDir ?? '', name), 'utf8').catch(() => '')
    const pem = (await read('ca.crt')) + (await read('node.crt'))
    const problem = await requireCertSupport({pem, what: "the project's certificates", tool: 'nebula', tools: options.tools}).then(
      () => undefined,
      (error: Error) => error.message,
    )
    if (problem) Object.assign(nebula, {usable: false, problem})
  }
  return [nebula, await report('syncthing', () => syncthingCapabilities(options.tools))]
}
