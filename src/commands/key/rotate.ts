import {Args} from '@oclif/core'

import {ControlPlaneCommand} from '../../base-command.js'
import {InvalidInputError} from '../../lib/errors.js'
import {resolveProjectDir} from '../../lib/project/joined-project.js'
import {type KeyRotation, rotateDeviceKey} from '../../lib/up/key-change.js'
import {agentEnvPath, readServiceSettings} from '../../lib/up/services.js'
import {formatWhen} from '../../lib/output/time.js'

export default class KeyRotate extends ControlPlaneCommand<typeof KeyRotate> {
  static override summary = "Give this device a new key: a certificate for it once the operator approves."
  static override description = `For a device that joined with an invite (Postgres or Supabase control plane). Makes a new key pair beside the current one (node.next.key, mode 0600: the private key never leaves this device) and asks for a certificate for its public key. The operator approves the new key with \`vidsync device approve PROJECT --key-change DEVICE --key-sha256 SHA256\` (the sha256 printed here, passed on over another channel), and \`vidsync signer PROJECT\` signs it; an unapproved new key is never signed. The certificate and the key are installed together, and nebula reloads them, by the \`up\` loop or by running this command again. Until then the current key and certificate stay in use.`
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> studio --json']

  static override args = {
    project: Args.string({description: 'Joined project [default: the only one joined].'}),
  }

  async run(): Promise<KeyRotation> {
    // The control plane the `up` agent uses, where flags and environment name none.
    this.savedSettings = await readServiceSettings(agentEnvPath(await resolveProjectDir({home: this.home, project: this.args.project})))
    const rotation = await this.withDeviceControlPlane((controlPlane) => {
      if (!controlPlane) {
        throw new InvalidInputError('no shared control plane is configured: a new key needs the Postgres or Supabase control plane this device joined with', {
          hint: 'pass --database-url or --supabase-url (key in $VIDSYNC_SUPABASE_KEY), or run `vidsync up` first',
        })
      }
      return rotateDeviceKey({home: this.home, project: this.args.project, controlPlane})
    })
    const {project, device} = rotation
    if (rotation.installed) {
      this.log(`${device} in ${project} now uses its new key: certificate ${rotation.fingerprint}, valid until ${formatWhen(rotation.notAfter)}${rotation.nebulaReloaded ? '; nebula reloaded' : ''}.`)
      return rotation
    }
    this.log(`${rotation.created ? 'Made a new key' : 'The new key is waiting'} for ${device} in ${project}: public key sha256 ${rotation.publicKeySha256}.`)
    this.log(rotation.keyChange === 'approved'
      ? 'The operator approved it: the signer signs it next, and `vidsync up` (or this command again) installs it.'
      : `Next: the operator compares that sha256 and runs \`vidsync device approve ${project} --key-change ${device} --key-sha256 ${rotation.publicKeySha256}\`; the signer then signs it.`)
    return rotation
  }
}
