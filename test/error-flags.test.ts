import {readdir, readFile} from 'node:fs/promises'
import {dirname, join, relative, resolve} from 'node:path'

import {Flags} from '@oclif/core'
import {captureOutput} from '@oclif/test'
import {expect} from 'chai'

import {BaseCommand} from '../src/base-command.js'
import {ConflictError} from '../src/lib/errors.js'
import {root} from './helpers/cli.js'

/** A command with --name only, failing with the hint it is given. */
class Failing extends BaseCommand<typeof Failing> {
  static hint = ''
  static override flags = {name: Flags.string()}

  async run(): Promise<void> {
    throw new ConflictError('taken', {hint: Failing.hint})
  }
}

async function failWith(hint: string, json: boolean) {
  Failing.hint = hint
  return captureOutput(() => Failing.run(json ? ['--json'] : [], root))
}

/**
 * Every error a command can throw names only flags that command has: a message or hint that says
 * "pass --listen" to a command without --listen sends people in circles. This walks the imports
 * from each command file and reads the messages of the errors thrown along the way.
 */
async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, {withFileTypes: true, recursive: true})
  return entries.filter((entry) => entry.isFile() && entry.name.endsWith('.ts')).map((entry) => join(entry.parentPath, entry.name))
}

/**
 * The flags named in the messages (first argument) of `new ...Error(...)` in a source file, leaving
 * out quoted commands (`vidsync db migrate --database-url`). Hints may name flags: the base command
 * prints a hint only where the command has every flag it names (tested below).
 */
function flagsInErrors(source: string): Set<string> {
  const flags = new Set<string>()
  const literal = String.raw`(\`(?:[^\`\\]|\\.)*\`|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")`
  for (const [, message] of source.matchAll(new RegExp(String.raw`new \w*Error\(\s*` + literal, 'g'))) {
    const text = (message ?? '').replace(/\\?`vidsync[^`]*?\\?`/g, '')
    for (const [, flag] of text.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)) flags.add(flag!)
  }
  return flags
}

/** Flags named outside quoted vidsync commands (`vidsync db migrate --database-url` names another command's flag). */
function flagsIn(text: string): string[] {
  const own = text.replace(/\\?`vidsync[^`]*?\\?`/g, '').replace(/(?:sudo )?vidsync [a-z].*$/s, '')
  return [...own.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)].map((match) => match[1] ?? '')
}

const literal = String.raw`(\`(?:[^\`\\]|\\.)*\`|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")`

/** The hints (`hint: '...'`) in a source file, each with the flags it names. */
function hintsIn(source: string): {hint: string; flags: string[]}[] {
  return [...source.matchAll(new RegExp(String.raw`\bhint: ` + literal, 'g'))].map(([, hint]) => ({hint: hint ?? '', flags: flagsIn(hint ?? '')}))
}

/** The flags that a command's own warnings and lines for people (`this.warn(...)`, `this.log(...)`) name. */
function flagsInOutput(source: string): Set<string> {
  const flags = new Set<string>()
  for (const [, text] of source.matchAll(new RegExp(String.raw`this\.(?:warn|log|logToStderr|progressLine)\(\s*` + literal, 'g'))) {
    for (const flag of flagsIn(text ?? '')) flags.add(flag)
  }
  return flags
}

/** Each vidsync command of the built manifest: its id, source file, flags (with --no- forms) and the sources it reaches. */
async function commandsWithSources(): Promise<{id: string; file: string; known: Set<string>; reachable: Set<string>; sources: Map<string, string>}[]> {
  const manifest = JSON.parse(await readFile(join(root, 'oclif.manifest.json'), 'utf8')) as {
    commands: Record<string, {flags: Record<string, {allowNo?: boolean}>; relativePath?: string[]}>
  }
  const files = await sourceFiles(join(root, 'src'))
  const sources = new Map(await Promise.all(files.map(async (file) => [file, await readFile(file, 'utf8')] as const)))
  const imports = (file: string) =>
    [...(sources.get(file) ?? '').matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)\.js'/g)].map((match) => resolve(dirname(file), `${match[1]}.ts`))
  // Plugins' commands have no relativePath: only vidsync's own are checked.
  return Object.entries(manifest.commands).flatMap(([id, command]) => {
    if (!command.relativePath) return []
    const file = join(root, 'src', ...command.relativePath.slice(1)).replace(/\.js$/, '.ts')
    const known = new Set(Object.entries(command.flags).flatMap(([name, flag]) => (flag.allowNo ? [name, `no-${name}`] : [name])))
    const reachable = new Set<string>([file])
    for (const current of reachable) for (const next of imports(current)) if (sources.has(next)) reachable.add(next)
    return [{id: id.replaceAll(':', ' '), file, known, reachable, sources}]
  })
}

describe('error messages name only flags the failing command has', () => {
  it('holds for every command and every error reachable from it', async () => {
    const problems: string[] = []
    let checked = 0
    for (const {id, file, known, reachable, sources} of await commandsWithSources()) {
      expect(sources.has(file), file).to.equal(true)
      for (const reached of reachable) {
        for (const flag of flagsInErrors(sources.get(reached)!)) {
          checked++
          if (!known.has(flag)) problems.push(`${id}: --${flag} in ${relative(root, reached)}`)
        }
      }
    }
    expect(checked, 'no error message named a flag at all: the scan found nothing').to.be.greaterThan(5)
    expect(problems, problems.join("\n")).to.deep.equal([])
  })

  it("holds for the commands' own warnings and Next: lines, and every hint reaches a command that shows it", async () => {
    const problems: string[] = []
    // Per hint: whether some command that can throw it has every flag it names (else it is never shown).
    const shown = new Map<string, boolean>()
    let outputFlags = 0
    for (const {id, file, known: own, reachable, sources} of await commandsWithSources()) {
      const known = new Set(['json', ...own])
      for (const flag of flagsInOutput(sources.get(file) ?? '')) {
        outputFlags++
        if (!known.has(flag)) problems.push(`${id} prints --${flag}, which it does not have`)
      }
      for (const reached of reachable) {
        for (const {hint, flags} of hintsIn(sources.get(reached) ?? '')) {
          const key = `${relative(root, reached)}: ${hint}`
          shown.set(key, (shown.get(key) ?? false) || flags.every((flag) => known.has(flag)))
        }
      }
    }
    for (const [hint, anywhere] of shown) if (!anywhere) problems.push(`never shown (no command that throws it has its flags): ${hint}`)
    expect(outputFlags, 'no warning or Next: line named a flag: the scan found nothing').to.be.greaterThan(0)
    expect(shown.size, 'no hint found: the scan found nothing').to.be.greaterThan(10)
    expect(problems, problems.join('\n')).to.deep.equal([])
  })
})

describe('hints', () => {
  it('are printed on their own line and as error.hint when the command has every flag they name', async () => {
    const human = await failWith('choose another --name', false)
    expect(human.stderr).to.equal('Error: taken\nHint: choose another --name\n')
    expect(human.error?.oclif?.exit).to.equal(4)
    const json = await failWith('choose another --name or --home', true)
    expect(JSON.parse(json.stdout)).to.deep.equal({error: {code: 'conflict', exitCode: 4, message: 'taken', hint: 'choose another --name or --home'}})
  })

  it('are left out where the command lacks a flag they name', async () => {
    const human = await failWith('pass --listen tcp://IP:PORT', false)
    expect(human.stderr).to.equal('Error: taken\n')
    const json = await failWith('choose another --name or --out', true)
    expect(JSON.parse(json.stdout).error).to.not.have.property('hint')
  })
})
