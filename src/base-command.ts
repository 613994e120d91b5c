import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'

import {Command, Flags, type Interfaces} from '@oclif/core'

import {InvalidInputError, VidsyncError} from './lib/errors.js'
import {resolveHome} from './lib/home.js'
import {colorEnabled, type Progress, progressShown, withProgress} from './lib/output/progress.js'
import type {ControlPlane} from './lib/store/control-plane.js'
import {openStore, selectedBackend, type StoreOptions} from './lib/store/open.js'
import type {ServiceSettings} from './lib/up/services.js'

export type CommandFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof BaseCommand)['baseFlags'] & T['flags']>
export type ControlPlaneFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof ControlPlaneCommand)['baseFlags'] & T['flags']>
export type CommandArgs<T extends typeof Command> = Interfaces.InferredArgs<T['args']>

/** Exit code of a command cancelled by Ctrl-C: 128 + SIGINT, as shells report it. */
export const cancelledExitCode = 130

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
      summary: 'Directory for vidsync state: keys, certificates and the embedded database [default: ~/.vidsync if it exists, else $XDG_STATE_HOME/vidsync; other OSes: docs/platforms.md].',
      env: 'VIDSYNC_HOME',
      helpGroup: 'GLOBAL',
    }),
    color: Flags.boolean({
      summary: 'Colour and spinners on a terminal; --no-color (or NO_COLOR=1) turns them off.',
      allowNo: true,
      default: true,
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
    // Set for every library that paints (chalk, ora, inquirer, oclif's own help and warnings).
    if (this.flags.color === false) process.env.NO_COLOR = '1'
  }

  /** Colour for human output: a terminal, no --json, no --no-color or NO_COLOR. */
  protected get color(): boolean {
    return !this.jsonEnabled() && colorEnabled(process.stdout)
  }

  /** Runs `work`, with a spinner on stderr when it takes longer than a moment and a person is watching. */
  protected progress<R>(text: string, work: (progress: Progress) => Promise<R>): Promise<R> {
    return withProgress(text, work, {enabled: !this.jsonEnabled()})
  }

  /**
   * One line on stderr saying what a long step does, where a spinner cannot run (a step that may
   * ask sudo for a password on the same terminal); shown only where a spinner would be.
   */
  protected progressLine(text: string): void {
    if (progressShown(!this.jsonEnabled())) this.logToStderr(text)
  }

  protected get home(): string {
    return resolveHome(this.flags.home)
  }

  /** True where a person can answer a prompt: stdin and stdout are terminals and --json is off. */
  protected get interactive(): boolean {
    return Boolean(process.stdin.isTTY && process.stdout.isTTY) && !this.jsonEnabled()
  }

  /** Asks before a destructive step; scripts must pass --yes instead. */
  protected async confirmDestructive(question: string, yes: boolean | undefined): Promise<void> {
    if (yes) return
    if (!this.interactive) throw new InvalidInputError(`${question.replace(/\?$/, '')}: not confirmed (no terminal)`, {hint: 'pass --yes to confirm'})
    const {confirm} = await import('@inquirer/prompts')
    if (!(await confirm({message: question, default: false}))) throw new InvalidInputError('cancelled: nothing was changed')
  }

  /**
   * A hint from library code may name flags; it is shown only where this command has them all
   * (the same library error reaches commands with different flags).
   */
  private usableHint(hint: string | undefined): string | undefined {
    if (!hint) return undefined
    const flags = {...this.ctor.baseFlags, ...this.ctor.flags}
    const has = (name: string) => name in flags || (name.startsWith('no-') && (flags[name.slice(3)] as {allowNo?: boolean} | undefined)?.allowNo === true)
    const named = [...hint.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)].map((match) => match[1] ?? '')
    return named.every((name) => name === 'json' || has(name)) ? hint : undefined
  }

  protected override async catch(error: OclifError): Promise<unknown> {
    // Ctrl-C at a prompt (inquirer's ExitPromptError) cancels, like Ctrl-C anywhere else.
    if (error.name === 'ExitPromptError') {
      if (this.jsonEnabled()) this.logJson({error: {code: 'cancelled', exitCode: cancelledExitCode, message: 'cancelled'}})
      else this.logToStderr('cancelled')
      this.exit(cancelledExitCode)
    }
    const parseExit = error.oclif?.exit
    if (!(error instanceof VidsyncError) && parseExit !== undefined && !this.jsonEnabled()) {
      // oclif's own errors (unknown flag, missing argument) keep oclif's rendering and help hint.
      throw error
    }
    const known = error instanceof VidsyncError
    const exitCode = known ? error.exitCode : (parseExit ?? 1)
    const code = known ? error.code : parseExit === undefined ? 'internal' : 'usage'
    const message = known || parseExit !== undefined ? error.message : `unexpected error: ${error.message}`
    const hint = known ? this.usableHint(error.hint) : undefined
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

/**
 * A command that talks to the control plane: adds --database-url and --supabase-url, which only
 * these commands show and accept.
 */
export abstract class ControlPlaneCommand<T extends typeof Command> extends BaseCommand<T> {
  static override baseFlags = {
    ...BaseCommand.baseFlags,
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

  protected declare flags: ControlPlaneFlags<T>

  /** Settings saved for this command (the agent's agent.env, the signer's signer.env), used where flags and environment give none. */
  protected savedSettings: ServiceSettings = {}

  protected get storeOptions(): StoreOptions {
    const saved = this.savedSettings
    const supabaseUrl = this.flags['supabase-url'] ?? saved.VIDSYNC_SUPABASE_URL
    return {
      home: this.home,
      databaseUrl: this.flags['database-url'] ?? secretFromFile('VIDSYNC_DATABASE_URL_FILE') ?? saved.VIDSYNC_DATABASE_URL,
      supabase: supabaseUrl
        ? {url: supabaseUrl, key: process.env.VIDSYNC_SUPABASE_KEY ?? secretFromFile('VIDSYNC_SUPABASE_KEY_FILE') ?? saved.VIDSYNC_SUPABASE_KEY}
        : undefined,
      onLockWait: (pid) => {
        if (!this.jsonEnabled()) this.logToStderr(`waiting for pid ${pid ?? 'unknown'}, which has the embedded database open...`)
      },
    }
  }

  /** Opens the control plane for the length of `work`. */
  protected async withControlPlane<R>(work: (controlPlane: ControlPlane) => Promise<R>): Promise<R> {
    const options = this.storeOptions
    // Opening (and on first use creating) the embedded database takes a moment; the others connect.
    const embedded = selectedBackend(options) === 'embedded'
    const text = existsSync(join(options.home, 'db', 'PG_VERSION')) ? 'Opening the embedded database' : 'Creating the embedded database'
    const store = embedded ? await this.progress(text, () => openStore(options)) : await openStore(options)
    try {
      return await work(store.controlPlane)
    } finally {
      await store.close()
    }
  }

  /**
   * On a device: the shared control plane (Postgres, Supabase) for `work` when one is configured,
   * else nothing: the embedded database is the operator's, never a device's.
   */
  protected async withDeviceControlPlane<R>(work: (controlPlane?: ControlPlane) => Promise<R>): Promise<R> {
    const {databaseUrl, supabase} = this.storeOptions
    if (!databaseUrl && !supabase) return work()
    return this.withControlPlane(work)
  }
}
