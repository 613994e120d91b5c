import {InvalidInputError, NotFoundError} from '../errors.js'
import type {Tools} from '../exec.js'
import {readDeviceToken} from '../join/invite.js'
import {createKeyPair, validatePublicKey} from '../pki/keys.js'
import {JoinedProject} from '../project/joined-project.js'
import type {ControlPlane} from '../store/control-plane.js'
import {renewFromControlPlane, type RenewalResult} from './renew.js'

export interface KeyRotation extends RenewalResult {
  project: string
  device: string
  /** sha256 of the new public key's raw bytes: what the operator sees when approving. */
  publicKeySha256: string
  /** The key pair was made in this call (else it was waiting from an earlier one). */
  created: boolean
}

/** Names the backend's other way to a new key, for a device that joined from a bundle file. */
const bundleOnly = (project: string) =>
  new InvalidInputError(`${project} was joined from a bundle file: its control plane does not know this device's token`, {
    hint: 'make a key with `vidsync key create` and ask the operator for a new bundle for it (`vidsync device register --public-key`)',
  })

/**
 * Gives this device a new key: makes a key pair beside the current one (node.next.key, 0600; the
 * private key never leaves the device) unless one is already waiting, and asks the control plane
 * for a certificate for it, which the operator approves (`device approve --key-change`) and the
 * signer then signs. Installs it with the key as soon as it is signed: here when called again,
 * or in the `up` loop, which asks and installs the same way.
 */
export async function rotateDeviceKey(options: {home: string; project?: string; controlPlane: ControlPlane; tools?: Tools}): Promise<KeyRotation> {
  const project = await JoinedProject.find({home: options.home, project: options.project})
  await readDeviceToken(options.home, project.name).catch((error: unknown) => {
    throw error instanceof NotFoundError ? bundleOnly(project.name) : error
  })
  const waiting = await project.nextPublicKey()
  const publicKey = waiting ?? (await createKeyPair({outDir: project.dir, name: 'node.next', tools: options.tools})).publicKey
  const renewal = await renewFromControlPlane({home: options.home, project: project.name, controlPlane: options.controlPlane, tools: options.tools})
  if (!renewal) throw bundleOnly(project.name)
  return {project: project.name, device: project.manifest.device, publicKeySha256: validatePublicKey(publicKey).fingerprint, created: waiting === undefined, ...renewal}
}
