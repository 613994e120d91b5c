import {readdir, readFile, rm, stat} from 'node:fs/promises'
import {hostname} from 'node:os'
import {join} from 'node:path'

import {formatDuration} from '../duration.js'
import {ConflictError, InvalidInputError, NotFoundError, RateLimitedError, UnavailableError, VidsyncError} from '../errors.js'
import type {Tools} from '../exec.js'
import {ensureDir, writeFileAtomic} from '../files.js'
import {newSecret, parseInviteCode, sha256Hex} from '../invites/secrets.js'
import {pollUntil} from '../poll.js'
import {createKeyPair, publicKeyHexOfPrivateKey, validatePublicKey} from '../pki/keys.js'
import type {ControlPlane} from '../store/control-plane.js'
import {projectDir} from '../project/joined-project.js'
import {installBundle, type JoinResult} from './join.js'

export interface InviteJoinOptions {
  home: string
  controlPlane: ControlPlane
  /** The invite code; absent to resume the one join that is waiting. */
  code?: string
  /** Device name [default: this machine's host name]. */
  name?: string
  /** This device's private key [default: <home>/keys/node.key, created when missing]. */
  keyPath?: string
  /** How long to wait for the operator's approval. */
  waitMs: number
  /** As for a bundle: let a bundled key replace this device's, install an older bundle. */
  replaceKey?: boolean
  force?: boolean
  pollIntervalMs?: number
  /** Called on every poll that finds the device still waiting. */
  onWaiting?: (join: {project: string; device: string}) => void
  tools?: Tools
}

/**
 * A join between redeeming and installing, kept in <home>/joins/ (0600) so that it can be resumed.
 * The token is written before the invite is redeemed: a retry after a lost answer presents the
 * same token, which the control plane recognises instead of taking a second use.
 */
interface PendingJoin {
  file: string
  token: string
  device: string
  project?: string
}

const joinsDir = (home: string) => join(home, 'joins')

/** The file a device's token is kept in once it has joined, for the `up` loop's refreshes. */
export const deviceTokenPath = (home: string, project: string) => join(projectDir(home, project), 'device.token')

export async function readDeviceToken(home: string, project: string): Promise<string> {
  const path = deviceTokenPath(home, project)
  const token = await readFile(path, 'utf8').catch(() => undefined)
  if (token === undefined) throw new NotFoundError(`no device token in ${path}: this device did not join ${project} with an invite code`)
  return token.trim()
}

/** A valid device name from the host name: lowercase letters, digits and hyphens. */
export function defaultDeviceName(host = hostname()): string {
  const name = (host.split('.')[0] ?? '')
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .slice(0, 63)
    .replace(/^-+|-+$/g, '')
  if (!name) throw new InvalidInputError(`cannot make a device name from the host name "${host}"`, {hint: 'pass --name'})
  return name
}

async function savePending(pending: PendingJoin): Promise<void> {
  const {file, ...content} = pending
  await writeFileAtomic(file, `${JSON.stringify(content)}\n`, 0o600)
}

async function loadPending(file: string): Promise<PendingJoin | undefined> {
  const text = await readFile(file, 'utf8').catch(() => undefined)
  return text === undefined ? undefined : {...(JSON.parse(text) as Omit<PendingJoin, 'file'>), file}
}

/** The one join waiting in this home, for `join --resume`. */
async function resumablePending(home: string): Promise<PendingJoin> {
  const files = (await readdir(joinsDir(home)).catch(() => [] as string[])).filter((file) => file.endsWith('.json'))
  const pending = (await Promise.all(files.map((file) => loadPending(join(joinsDir(home), file))))).filter((p) => p !== undefined)
  const [only, ...others] = pending
  if (!only) throw new NotFoundError('no join to resume: run `vidsync join CODE` with the invite code from the operator')
  if (others.length > 0) {
    const names = pending.map((p) => `${p.device} in ${p.project ?? '(not redeemed yet)'}`).join(', ')
    throw new InvalidInputError(`several joins are waiting (${names}): run \`vidsync join CODE\` with the code of the one to resume`)
  }
  return only
}

/** This device's public key: from the given private key, else from <home>/keys/node.key, made when missing. */
async function devicePublicKey(options: InviteJoinOptions): Promise<{keyPath: string; publicKeyPem: string}> {
  const keyPath = options.keyPath ?? join(options.home, 'keys', 'node.key')
  const exists = await stat(keyPath).then(
    () => true,
    () => false,
  )
  if (!exists) {
    if (options.keyPath) throw new NotFoundError(`no device key at ${keyPath}: run \`vidsync key create\``, {hint: 'or leave out --key'})
    await createKeyPair({outDir: join(options.home, 'keys'), tools: options.tools})
  }
  const hex = publicKeyHexOfPrivateKey(await readFile(keyPath))
  const base64 = Buffer.from(hex, 'hex').toString('base64')
  return {keyPath, publicKeyPem: validatePublicKey(`-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${base64}\n-----END NEBULA X25519 PUBLIC KEY-----\n`).pem}
}

/** Redeems the invite unless an earlier run did; a refused code discards the pending join. */
async function redeem(options: InviteJoinOptions, code: string, publicKeyPem: string): Promise<PendingJoin & {project: string}> {
  await ensureDir(joinsDir(options.home), {private: true})
  const file = join(joinsDir(options.home), `${sha256Hex(code).slice(0, 16)}.json`)
  const pending = (await loadPending(file)) ?? {file, token: newSecret('device'), device: options.name ?? defaultDeviceName()}
  if (pending.project) return {...pending, project: pending.project}
  await savePending(pending)
  try {
    const redeemed = await options.controlPlane.redeemInvite({code, token: pending.token, device: pending.device, publicKey: publicKeyPem})
    const saved = {...pending, project: redeemed.project}
    await savePending(saved)
    return saved
  } catch (error) {
    // Unreachable: the answer may have been lost, so keep the token for the retry. Refused or rate
    // limited (nothing was redeemed): start afresh next time, leaving no join for --resume to find.
    const mayHaveRedeemed = error instanceof UnavailableError && !(error instanceof RateLimitedError)
    if (error instanceof VidsyncError && !mayHaveRedeemed) await rm(file, {force: true})
    throw error
  }
}

/**
 * Joins a project with an invite code: makes the key pair here when missing, redeems the code,
 * waits (bounded) for the operator's approval and installs the bundle the control plane holds,
 * like `join BUNDLE.zip`. Running it again, or without a code, resumes a join that timed out.
 */
export async function joinWithInvite(options: InviteJoinOptions): Promise<JoinResult> {
  const {keyPath, publicKeyPem} = await devicePublicKey(options)
  const pending = options.code ? await redeem(options, parseInviteCode(options.code), publicKeyPem) : await resumablePending(options.home)
  let waiting: {project: string; device: string} | undefined
  const approved = async () => {
    const answer = await options.controlPlane.deviceBundle({token: pending.token})
    if (answer.status === 'active' && answer.bundle) return {...answer, bundle: answer.bundle}
    if (answer.status !== 'pending') {
      await rm(pending.file, {force: true})
      const what = answer.status === 'rejected' ? 'was rejected (its invite was revoked)' : `is ${answer.status}`
      throw new ConflictError(`device ${answer.device} ${what} in ${answer.project}: ask the operator for a new invite`)
    }
    waiting = {project: answer.project, device: answer.device}
    options.onWaiting?.(waiting)
    return undefined
  }
  const answer = await pollUntil(approved, {
    timeoutMs: options.waitMs,
    intervalMs: options.pollIntervalMs ?? 2000,
    onTimeout: () => {
      throw new UnavailableError(
        `${waiting?.device} is still waiting for approval in ${waiting?.project} after ${formatDuration(Math.round(options.waitMs / 1000))}: ` +
          `ask the operator to run \`vidsync device approve ${waiting?.project}\`, then run \`vidsync join --resume\``,
      )
    },
  })
  const files = new Map(Object.entries(answer.bundle).map(([name, content]) => [name, Buffer.from(content)]))
  const origin = `the bundle of ${answer.device} in ${answer.project}`
  // The control plane answered this device's own token: its CA is the one to pin.
  const result = await installBundle({home: options.home, files, origin, keyPath, tools: options.tools, caFromControlPlane: true, replaceKey: options.replaceKey, force: options.force})
  await writeFileAtomic(deviceTokenPath(options.home, result.project), `${pending.token}\n`, 0o600)
  await rm(pending.file, {force: true})
  return result
}
