import {Flags} from '@oclif/core'

import {InvalidInputError} from '../lib/errors.js'
import {readUserFile} from '../lib/input.js'
import {connectSyncthing, type SyncthingConnection} from '../lib/syncthing/managed.js'

/** Flags of every command that talks to Syncthing: the managed instance unless --syncthing-url names the user's own. */
export const connectionFlags = {
  'syncthing-url': Flags.string({
    summary: "API address of your own Syncthing (e.g. http://127.0.0.1:8384) instead of the one vidsync manages.",
    env: 'VIDSYNC_SYNCTHING_URL',
  }),
  'api-key': Flags.string({
    summary: "That Syncthing's API key [default: $VIDSYNC_SYNCTHING_API_KEY, else read from --syncthing-config].",
    dependsOn: ['syncthing-url'],
  }),
  'api-key-file': Flags.string({
    summary: "Read that Syncthing's API key from this file (- for standard input): unlike --api-key, it stays out of the process list.",
    dependsOn: ['syncthing-url'],
    exclusive: ['api-key'],
  }),
  'syncthing-config': Flags.string({
    summary: "That Syncthing's config.xml, to read its API key from.",
    dependsOn: ['syncthing-url'],
  }),
}

function isHttpUrl(text: string): boolean {
  try {
    return /^https?:$/.test(new URL(text).protocol)
  } catch {
    return false
  }
}

export async function connectFromFlags(
  vidsyncHome: string,
  flags: {'syncthing-url'?: string; 'api-key'?: string; 'api-key-file'?: string; 'syncthing-config'?: string},
): Promise<SyncthingConnection> {
  const url = flags['syncthing-url']
  if (url !== undefined && !isHttpUrl(url)) {
    throw new InvalidInputError(`invalid --syncthing-url "${url.slice(0, 80)}": expected an address such as http://127.0.0.1:8384`)
  }
  const keyFile = flags['api-key-file']
  const apiKey = keyFile === undefined ? flags['api-key'] : (await readUserFile(keyFile, 'API key file')).toString().trim()
  return connectSyncthing({vidsyncHome, url, apiKey, configXmlPath: flags['syncthing-config']})
}
