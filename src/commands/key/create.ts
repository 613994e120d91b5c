import {join} from 'node:path'

import {Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {createKeyPair, type KeyPair} from '../../lib/pki/keys.js'

export default class KeyCreate extends BaseCommand<typeof KeyCreate> {
  static override summary = "Create this device's Nebula key pair."
  static override description = `Generates <name>.key (mode 0600; it never leaves this device) and <name>.pub with nebula-cert. Send the public key to the operator, who registers the device with it. Existing keys are never overwritten.`
  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --out ./keys --name laptop --json',
  ]

  static override flags = {
    out: Flags.string({summary: 'Directory for the key files [default: <home>/keys].'}),
    name: Flags.string({summary: 'Base name of the key files.', default: 'node'}),
  }

  async run(): Promise<KeyPair> {
    const outDir = this.flags.out ?? join(this.home, 'keys')
    const keys = await createKeyPair({outDir, name: this.flags.name})
    this.log(keys.publicKey.trimEnd())
    this.log(`Public key:  ${keys.publicKeyPath} (send this one to the operator)`)
    this.log(`Private key: ${keys.privateKeyPath} (keep it on this device)`)
    this.log('Next: vidsync sync id')
    return keys
  }
}
