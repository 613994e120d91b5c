import {createRequire} from 'node:module'
import {dirname, join} from 'node:path'
import {pathToFileURL} from 'node:url'

import type {Hook} from '@oclif/core'

/** Whether the check is off: VIDSYNC_SKIP_NEW_VERSION_CHECK=1 (or true), or CI set as every CI service sets it. */
export function updateCheckOff(env: NodeJS.ProcessEnv = process.env): boolean {
  const skip = env.VIDSYNC_SKIP_NEW_VERSION_CHECK
  if (skip === '1' || skip === 'true') return true
  return env.CI !== undefined && env.CI !== '' && env.CI !== 'false' && env.CI !== '0'
}

/**
 * @oclif/plugin-warn-if-update-available's init hook (it says when the registry has a newer
 * `vidsync`, the package name in package.json, and reads the `warn-if-update-available` settings
 * there), loaded only when the check is on: tests and pipelines never ask the registry, and no
 * command pays for loading the check when it is off. The package exports only its (empty) index,
 * so the hook is found next to it.
 */
const hook: Hook.Init = async function (options) {
  if (updateCheckOff()) return
  const index = createRequire(import.meta.url).resolve('@oclif/plugin-warn-if-update-available')
  const {default: check} = (await import(pathToFileURL(join(dirname(index), 'hooks', 'init', 'check-update.js')).href)) as {default: Hook.Init}
  await check.call(this, options)
}

export default hook
