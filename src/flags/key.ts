import {Flags} from '@oclif/core'

import {readUserFile} from '../lib/input.js'

/** `device register` and `lighthouse add`: the node's public key, or a key pair made here. */
export const publicKeyFlags = {
  'public-key': Flags.string({
    summary: 'File with the public key from `vidsync key create` on that machine, or - for stdin.',
    exactlyOne: ['public-key', 'generate-key'],
  }),
  'generate-key': Flags.boolean({
    summary: 'Generate the key pair here and put the private key into the bundle (the bundle says so).',
    exactlyOne: ['public-key', 'generate-key'],
  }),
}

export const readPublicKeyFlag = (flags: {'public-key'?: string}) =>
  flags['public-key'] === undefined ? undefined : readUserFile(flags['public-key'], 'public key')
