import {readFileSync} from 'node:fs'

import {Command, Flags, type Interfaces} from '@oclif/core'

import {confirm} from '@inquirer/prompts'

import {InvalidInputError, VidsyncError} from './lib/errors.js'
import {resolveHome} from './lib/home.js'
import type {ControlPlane} from './lib/store/control-plane.js'
import {openStore, type StoreOptions} from './lib/store/open.js'

export type CommandFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof BaseCommand)['baseFlags'] & T['flags']>
export type CommandArgs<T extends typeof Command> = Interfaces.InferredArgs<T['args']>

interface OclifError extends Error {
  oclif?: {exit?: number}
}

/**
 * A secret kept in a file that an environment variable names (as container secrets are), so that
 * neither argv nor the environment holds it: the database URL with its password, the Supabase key.
 */
function secretFromFile(variable: string): string | undefined {
  const path = process.env[variable]
  if (!path) return undefined
  try {
    return readFileSync(path, 'utf8').trim()
  } catch (error) {
    throw new InvalidInputError(`cannot read ${variable} (${path}): ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
  }
}

/**
 * Every vidsync command: global flags, `--json`, and the one place where errors become output
 * and exit codes (see the README's table).
 */
export abstract class BaseCommand<T extends typeof Command> extends Command {
  static override enableJsonFlag = true

  static override baseFlags = {
    home: Flags.string({
      summary: 'Directory for vidsync state: keys, certificates and the embedded database [default: ~/.vidsync].',
      env: 'VIDSYNC_HOME',
      helpGroup: 'GLOBAL',
    }),
    'database-url': Flags.string({
      summary: 'Postgres URL of the control plane; without it the embedded database in the home is used.',
      env: 'VIDSYNC_DATABASE_URL',
      helpGroup: 'GLOBAL',
    }),
    'supabase-url': Flags.string({
      summary: "Supabase project URL of the control plane, with the key in $VIDSYNC_SUPABASE_KEY (never a flag: it would show in the process list).",
      env: 'VIDSYNC_SUPABASE_URL',
      helpGroup: 'GLOBAL',
    }),
  }

  protected flags!: CommandFlags<T>
  protected args!: CommandArgs<T>

  override async init(): Promise<void> {
    await super.init()
    const {args, flags} = await this.parse({
      flags: this.ctor.flags,
      baseFlags: (super.ctor as typeof BaseCommand).baseFlags,
      enableJsonFlag: this.ctor.enableJsonFlag,
      args: this.ctor.args,
      strict: this.ctor.strict,
    })
    this.flags = flags as CommandFlags<T>
    this.args = args as CommandArgs<T>
  }

  protected get home(): string {
    return resolveHome(this.flags.home)
  }

  protected get storeOptions(): StoreOptions {
    const supabaseUrl = this.flags['supabase-url']
    return {
      home: this.home,
      databaseUrl: this.flags['database-url'] ?? secretFromFile('VIDSYNC_DATABASE_URL_FILE'),
      supabase: supabaseUrl ? {url: supabaseUrl, key: process.env.VIDSYNC_SUPABASE_KEY ?? secretFromFile('VIDSYNC_SUPABASE_KEY_FILE')} : undefined,
      onLockWait: (pid) => {
        if (!this.jsonEnabled()) this.logToStderr(`waiting for pid ${pid ?? 'unknown'}, which has the embedded database open...`)
      },
    }
  }

  /** Opens the control plane for the length of `work`. */
  protected async withControlPlane<R>(work: (controlPlane: ControlPlane) => Promise<R>): Promise<R> {
    const store = await openStore(this.storeOptions)
    try {
      return await work(store.controlPlane)
    } finally {
      await store.close()
    }
  }

  /** True where a person can answer a prompt: stdin and stdout are terminals and --json is off. */
  protected get interactive(): boolean {
    return Boolean(process.stdin.isTTY && process.stdout.isTTY) && !this.jsonEnabled()
  }

  /** Asks before a destructive step; scripts must pass --yes instead. */
  protected async confirmDestructive(question: string, yes: boolean | undefined): Promise<void> {
    if (yes) return
    if (!this.interactive) throw new InvalidInputError(`${question.replace(/\?$/, '')}: pass --yes to confirm when not interactive`)
    if (!(await confirm({message: question, default: false}))) throw new InvalidInputError('cancelled: nothing was changed')
  }

  protected override async catch(error: OclifError): Promise<unknown> {
    const parseExit = error.oclif?.exit
    if (!(error instanceof VidsyncError) && parseExit !== undefined && !this.jsonEnabled()) {
      // oclif's own errors (unknown flag, missing argument) keep oclif's rendering and help hint.
      throw error
    }
    const known = error instanceof VidsyncError
    const exitCode = known ? error.exitCode : (parseExit ?? 1)
    const code = known ? error.code : parseExit === undefined ? 'internal' : 'usage'
    const message = known || parseExit !== undefined ? error.message : `unexpected error: ${error.message}`
    const hint = known ? error.hint : undefined
    if (this.jsonEnabled()) {
      this.logJson({error: {code, exitCode, message, ...(hint ? {hint} : {})}})
    } else {
      this.logToStderr(`Error: ${message}`)
      if (hint) this.logToStderr(`Hint: ${hint}`)
      if (!known && process.env.VIDSYNC_DEBUG) this.logToStderr(error.stack ?? '')
      else if (!known) this.logToStderr('Set VIDSYNC_DEBUG=1 to see where it happened.')
    }
    this.exit(exitCode)
  }
}
