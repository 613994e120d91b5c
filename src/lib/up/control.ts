import {chown, chmod, rm} from 'node:fs/promises'
import {connect, createServer, type Server} from 'node:net'

import {ConflictError} from '../errors.js'

/**
 * The control channel of vidsync's long-running processes (the nebula service, the user's agent):
 * one JSON request line, one JSON answer line, over a Unix socket readable only by its owner (a
 * named pipe on Windows). This is how `status`, `down` and `up` ask them, instead of pid files.
 */
export type ControlHandlers = Record<string, () => Promise<unknown>>

/** Asks the process listening at `address`; undefined when nobody listens there. */
export async function askControl<T>(address: string, command: string, timeoutMs = 5000): Promise<T | undefined> {
  return new Promise((resolve) => {
    const socket = connect(address)
    let data = ''
    const done = (value: T | undefined) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(value)
    }
    const timer = setTimeout(() => done(undefined), timeoutMs)
    socket.on('connect', () => socket.write(`${JSON.stringify({command})}\n`))
    socket.on('data', (chunk) => {
      data += chunk.toString()
      const end = data.indexOf('\n')
      if (end < 0) return
      try {
        done((JSON.parse(data.slice(0, end)) as {result?: T}).result)
      } catch {
        done(undefined)
      }
    })
    socket.on('error', () => done(undefined))
    socket.on('close', () => done(undefined))
  })
}

export interface ControlServer {
  close(): Promise<void>
}

/**
 * Listens at `address` for the commands in `handlers`. A second instance is refused (someone
 * answers there already); a socket left by a crashed one is replaced. `owner` gets the socket (root
 * serving the invoking user under sudo).
 */
export async function serveControl(address: string, handlers: ControlHandlers, owner?: {uid?: number; gid?: number}): Promise<ControlServer> {
  if ((await askControl(address, 'status', 2000)) !== undefined) throw new ConflictError(`another instance already runs and answers at ${address}`)
  if (!address.startsWith('\\\\')) await rm(address, {force: true})
  const server: Server = createServer((socket) => {
    let data = ''
    socket.on('error', () => socket.destroy())
    socket.on('data', (chunk) => {
      data += chunk.toString()
      const end = data.indexOf('\n')
      if (end < 0) return
      let command = ''
      try {
        command = String((JSON.parse(data.slice(0, end)) as {command?: unknown}).command)
      } catch {
        // answered below as unknown
      }
      const handler = Object.hasOwn(handlers, command) ? handlers[command] : undefined
      const answer = handler ? handler().then((result) => ({result: result ?? null}), (error: Error) => ({error: error.message})) : Promise.resolve({error: `unknown command ${command}`})
      void answer.then((reply) => socket.end(`${JSON.stringify(reply)}\n`))
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(address, () => resolve())
  })
  if (!address.startsWith('\\\\')) {
    await chmod(address, 0o600)
    if (owner?.uid !== undefined && owner.gid !== undefined) await chown(address, owner.uid, owner.gid)
  }
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        if (!address.startsWith('\\\\')) void rm(address, {force: true})
      }),
  }
}
