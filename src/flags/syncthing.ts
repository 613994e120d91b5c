import {Flags} from '@oclif/core'

import {InvalidInputError} from '../lib/errors.js'
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

export function connectFromFlags(
  vidsyncHome: string,
  flags: {'syncthing-url'?: string; 'api-key'?: string; 'syncthing-config'?: string},
): Promise<SyncthingConnection> {
  const url = flags['syncthing-url']
  if (url !== undefined && !isHttpUrl(url)) {
    return Promise.reject(new InvalidInputError(`invalid --syncthing-url "${url.slice(0, 80)}": expected an address such as http://127.0.0.1:8384`))
  }
  return connectSyncthing({vidsyncHome, url: flags['syncthing-url'], apiKey: flags['api-key'], configXmlPath: flags['syncthing-config']})
}
