import {Flags} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {parseDuration} from '../../lib/duration.js'
import {defaultCaDurationSeconds} from '../../lib/pki/ca.js'
import {type RotatedCa, rotateCa} from '../../lib/pki/rotation.js'
import {formatWhen} from '../../lib/output/time.js'

export default class CaRotate extends ControlPlaneCommand<typeof CaRotate> {
  static override summary = 'Create the next CA, trusted alongside the current one, without an outage.'
  static override description = `Creates a new CA in <home>/ca and moves the current one to <home>/ca/previous. The current CA's key endorses the new CA (signs its fingerprint), and every project of the control plane then lists both CAs: bundles carry both, and devices running \`vidsync up\` add the new CA at their next refresh once they checked the endorsement with the CA they pinned. From now on the new CA signs registrations and renewals; devices running \`vidsync up\` ask for a new-CA certificate at their next pass, which \`vidsync signer\` signs, and bundle-joined devices move to it as they are renewed. When every active device holds a certificate from the new CA, run \`vidsync ca retire-old\`.`
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --name "Studio CA 2027" --json']

  static override flags = {
    name: Flags.string({summary: "Name written into the new CA certificate [default: the current CA's name]."}),
    duration: Flags.string({summary: 'How long the new CA is valid.', default: `${defaultCaDurationSeconds / 3600}h`}),
  }

  async run(): Promise<RotatedCa> {
    const durationSeconds = parseDuration(this.flags.duration, 'duration')
    const rotated = await this.withControlPlane((controlPlane) => rotateCa({home: this.home, controlPlane, name: this.flags.name, durationSeconds}))
    this.log(`Created CA "${rotated.ca.name}", valid until ${formatWhen(rotated.ca.notAfter)}, endorsed by the previous CA.`)
    this.log(`  fingerprint  ${rotated.ca.fingerprint}`)
    this.log(`  previous     ${rotated.previous.fingerprint} (kept in ${rotated.previous.path})`)
    this.log(`  projects     ${rotated.projects.length === 0 ? 'none yet' : rotated.projects.join(', ')}: their devices trust both CAs from their next refresh`)
    this.log('Next: devices move to the new CA as they renew (the signer, or `vidsync device renew --expiring-within`); then run `vidsync ca retire-old`.')
    return rotated
  }
}
