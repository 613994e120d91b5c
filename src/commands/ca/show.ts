import {BaseCommand} from '../../base-command.js'
import {type CaInfo, caInfo} from '../../lib/pki/ca.js'
import {formatWhen} from '../../lib/output/time.js'

export default class CaShow extends BaseCommand<typeof CaShow> {
  static override summary = "Show the CA certificate's name, fingerprint and validity."
  static override description = 'Reads <home>/ca/ca.crt with nebula-cert. The key is neither read nor shown. From 90 days before the CA expires, a warning says so (`warning` in --json, null otherwise).'
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  async run(): Promise<CaInfo & {warning: string | null}> {
    const ca = await caInfo({home: this.home})
    this.log(`name         ${ca.name}`)
    this.log(`fingerprint  ${ca.fingerprint}`)
    this.log(`not before   ${formatWhen(ca.notBefore)}`)
    this.log(`not after    ${formatWhen(ca.notAfter)}`)
    this.log(`certificates v${ca.certVersion}: every device needs ${ca.nebulaNeeded}`)
    if (ca.warning) this.logToStderr(`Warning: ${ca.warning}`)
    this.log(`Next: tell each device this fingerprint over another channel; its first vidsync join asks to confirm it (scripts pass --ca-fingerprint ${ca.fingerprint}).`)
    return ca
  }
}
