import {Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {writeFileAtomic} from '../../lib/files.js'
import {exportCa} from '../../lib/pki/ca.js'

export default class CaExport extends BaseCommand<typeof CaExport> {
  static override summary = 'Print the public CA certificate (PEM).'
  static override description = 'The certificate devices trust, safe to share. The CA key is never exported.'
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --out ca.crt']

  static override flags = {
    out: Flags.string({summary: 'Write the certificate to this file instead of printing it.'}),
  }

  async run(): Promise<{certificate: string; path?: string}> {
    const certificate = await exportCa({home: this.home})
    if (this.flags.out === undefined) {
      this.log(certificate.trimEnd())
      return {certificate}
    }
    await writeFileAtomic(this.flags.out, certificate, 0o644)
    this.log(`Wrote the CA certificate to ${this.flags.out}.`)
    return {certificate, path: this.flags.out}
  }
}
