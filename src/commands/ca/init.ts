import {Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {parseDuration} from '../../lib/duration.js'
import {type CaInfo, type CaPaths, defaultCaDurationSeconds, initCa} from '../../lib/pki/ca.js'

export default class CaInit extends BaseCommand<typeof CaInit> {
  static override summary = "Create the operator's certificate authority."
  static override description = `Creates the CA that signs every device certificate, with nebula-cert, in <home>/ca: ca.crt (public) and ca.key (mode 0600, never printed). An existing CA is never replaced: that would invalidate every certificate it issued. Keep a private backup of ca.key.`
  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --name "Studio CA" --duration 26280h',
    '<%= config.bin %> <%= command.id %> --cert-version 2',
  ]

  static override flags = {
    name: Flags.string({summary: 'Name written into the CA certificate.', default: 'vidsync'}),
    'cert-version': Flags.string({
      summary: 'Certificate version the CA signs: 1 works with nebula 1.6 and newer, 2 needs nebula 1.10 or newer on every device.',
      options: ['1', '2'],
      default: '1',
    }),
    duration: Flags.string({
      summary: 'How long the CA is valid; no device certificate can outlive it.',
      default: `${defaultCaDurationSeconds / 3600}h`,
    }),
  }

  async run(): Promise<CaInfo & CaPaths> {
    const durationSeconds = parseDuration(this.flags.duration, 'duration')
    const certVersion = this.flags['cert-version'] === '2' ? 2 : 1
    const ca = await initCa({home: this.home, name: this.flags.name, durationSeconds, certVersion})
    this.log(`Created CA "${ca.name}", valid until ${ca.notAfter}.`)
    this.log(`  fingerprint  ${ca.fingerprint}`)
    this.log(`  certificates v${ca.certVersion}: every device needs ${ca.nebulaNeeded}`)
    this.log(`  certificate  ${ca.certPath}`)
    this.log(`  key          ${ca.keyPath} (keep it private and backed up)`)
    return ca
  }
}
