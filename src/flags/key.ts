import {Flags} from '@oclif/core'

import {defaultBundlePath} from '../lib/devices/issue.js'
import {readUserFile} from '../lib/input.js'

/** `device register` and `lighthouse add`: the node's public key, or a key pair made here, and where its bundle goes. */
export const bundleFlags = {
  'public-key': Flags.string({
    summary: 'File with the public key from `vidsync key create` on that machine, or - for stdin.',
    exactlyOne: ['public-key', 'generate-key'],
  }),
  'generate-key': Flags.boolean({
    summary: 'Generate the key pair here and put the private key into the bundle (the bundle says so).',
    exactlyOne: ['public-key', 'generate-key'],
  }),
  out: Flags.string({summary: 'Bundle path [default: ./<project>-<name>.zip].'}),
}

/** What registerDevice takes from bundleFlags for node `name` of `project`. */
export async function bundleOptions(flags: {'public-key'?: string; 'generate-key'?: boolean; out?: string}, project: string, name: string) {
  return {
    publicKeyPem: flags['public-key'] === undefined ? undefined : await readUserFile(flags['public-key'], 'public key'),
    generateKey: flags['generate-key'],
    outPath: flags.out ?? defaultBundlePath(project, name),
  }
}
