import {ControlPlaneCommand} from '../../base-command.js'
import {formatWhen} from '../../lib/output/time.js'
import {type ListedCa, listCas} from '../../lib/pki/rotation.js'

export default class CaShow extends ControlPlaneCommand<typeof CaShow> {
  static override summary = "Show the CA certificate's name, fingerprint and validity, and the CAs it replaced."
  static override description = `Reads <home>/ca/ca.crt with nebula-cert. The key is neither read nor shown. From 90 days before the CA expires, a warning says so (\`warning\` in --json, null otherwise). The CAs that \`ca rotate\` replaced (<home>/ca/previous) follow, newest first, each \`trusted\` while a project still trusts it or \`retired\` once \`ca retire-old\` removed it (the control plane says which); --json lists them under \`previous\`, in the same shape as the current CA.`
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  async run(): Promise<ListedCa & {previous: ListedCa[]}> {
    const {current: ca, previous} = await listCas({home: this.home, withControlPlane: (work) => this.withControlPlane(work)})
    this.log(`name         ${ca.name}`)
    this.log(`fingerprint  ${ca.fingerprint}`)
    this.log(`not before   ${formatWhen(ca.notBefore)}`)
    this.log(`not after    ${formatWhen(ca.notAfter)}`)
    this.log(`certificates v${ca.certVersion}: every device needs ${ca.nebulaNeeded}`)
    if (ca.warning) this.logToStderr(`Warning: ${ca.warning}`)
    for (const old of previous) {
      this.log(`previous     ${old.fingerprint} "${old.name}" ${old.state}, ${formatWhen(old.notBefore)} to ${formatWhen(old.notAfter)}`)
      if (old.warning) this.logToStderr(`Warning: ${old.warning}`)
    }
    this.log(`Next: tell each device this fingerprint over another channel; its first vidsync join asks to confirm it (scripts pass --ca-fingerprint ${ca.fingerprint}).`)
    return {...ca, previous}
  }
}
