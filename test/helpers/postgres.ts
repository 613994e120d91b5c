import {randomBytes} from 'node:crypto'

import pg from 'pg'

/** The machine's PostgreSQL (trust auth); tests only ever create and drop their own databases in it. */
export const adminUrl = process.env.VIDSYNC_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

export interface ThrowawayDatabase {
  url: string
  drop(): Promise<void>
}

async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({connectionString: adminUrl})
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end()
  }
}

/** A fresh database for one test run, dropped (with its connections) by drop(). */
export async function createThrowawayDatabase(label = 'test'): Promise<ThrowawayDatabase> {
  const name = `vidsync_${label}_${process.pid}_${randomBytes(4).toString('hex')}`
  await admin((client) => client.query(`CREATE DATABASE ${name}`))
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  return {
    url: url.toString(),
    drop: () => admin((client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => {}),
  }
}

/**
 * The same database through the server's Unix socket: network namespaces cannot reach the host's
 * loopback, but a socket is a file and the namespaces share the file system.
 */
export async function socketUrl(url: string): Promise<string> {
  const client = new pg.Client({connectionString: url})
  await client.connect()
  try {
    const [{setting: dirs}] = (await client.query("SELECT setting FROM pg_settings WHERE name = 'unix_socket_directories'")).rows
    const [{setting: port}] = (await client.query("SELECT setting FROM pg_settings WHERE name = 'port'")).rows
    const dir = String(dirs).split(',')[0]?.trim()
    if (!dir) throw new Error('the test PostgreSQL listens on no Unix socket: start it with -k DIR (scripts/test does)')
    const socket = new URL(url)
    socket.hostname = 'localhost'
    socket.port = String(port)
    socket.searchParams.set('host', dir)
    return socket.toString()
  } finally {
    await client.end()
  }
}
