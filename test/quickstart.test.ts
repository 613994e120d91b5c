import {copyFile, readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'

import {cli, type CliResult, root} from './helpers/cli.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

/** The commands of the README's Quickstart, block by block, comments left out. */
async function quickstartBlocks(): Promise<{text: string; blocks: string[][]}> {
  const readme = await readFile(join(root, 'README.md'), 'utf8')
  const start = readme.indexOf('## Quickstart')
  const text = readme.slice(start, readme.indexOf('\n## ', start + 1))
  const blocks = [...text.matchAll(/```sh\n([^]*?)```/g)].map(([, body]) =>
    (body ?? '')
      .split('\n')
      .map((line) => line.replace(/\s+#.*$/, '').trim())
      .filter((line) => line !== ''),
  )
  return {text, blocks}
}

/** The command a "Next:" line names, from `vidsync` (or `sudo vidsync`) on. */
function nextCommand(output: string): string | undefined {
  const line = output.split('\n').find((candidate) => candidate.startsWith('Next: '))
  return line && /((?:sudo )?vidsync .*)$/.exec(line)?.[1]
}

/**
 * Whether the README says `next`: some quickstart command reads the same, where a word in capitals
 * (NAME, PROJECT, HOST:4242, a Syncthing ID, which may start with a digit) stands for any word, or the prose quotes it literally.
 */
function readmeSays(next: string, commands: string[], text: string): boolean {
  const escape = (word: string) => word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  const words = next.split(/\s+/).map((word) => (/^(?=[A-Z0-9_-]*[A-Z])[A-Z0-9][A-Z0-9_-]*(?::\d+)?$/.test(word) ? String.raw`\S+` : escape(word)))
  const pattern = new RegExp(`^${words.join(String.raw`\s+`)}(?:\\s|$)`)
  return commands.some((command) => pattern.test(command)) || text.includes(`\`${next}\``)
}

describe('the README quickstart', function () {
  this.timeout(900_000)
  after(removeTempDirs)

  it('runs as written, operator and device apart, each step printing the next one the README gives', async () => {
    const {text, blocks} = await quickstartBlocks()
    const [onDevice = [], onOperator = [], onDeviceAgain = []] = blocks
    const commands = blocks.flat()
    const device = await tempDir()
    const operator = await tempDir()
    const deviceHome = join(device, '.vidsync')
    const outputs = new Map<string, CliResult>()

    /** One README line, run as vidsync: its words after `vidsync`, with the replacements a person makes. */
    const run = async (line: string, home: string, cwd: string, replace: Record<string, string> = {}) => {
      expect(line, line).to.match(/^vidsync /)
      const args = line.split(/\s+/).slice(1).map((word) => replace[word] ?? word.replace(/^~\/\.vidsync/, deviceHome))
      const result = await cli(args, {VIDSYNC_HOME: home}, {cwd, timeoutMs: 240_000})
      expect(result.exitCode, `${line}\n${result.stdout}\n${result.stderr}`).to.equal(0)
      outputs.set(args.slice(0, 2).join(' '), result)
      return result
    }

    // 1. The device: key pair and Syncthing ID.
    for (const line of onDevice) await run(line, deviceHome, device)
    const syncthingId = outputs.get('sync id')?.stdout.split('\n')[0] ?? ''
    expect(syncthingId).to.match(/^[A-Z0-9]{7}(?:-[A-Z0-9]{7}){7}$/)

    // 2. The operator, with node.pub and the ID as the device sent them.
    await copyFile(join(deviceHome, 'keys', 'node.pub'), join(operator, 'node.pub'))
    for (const line of onOperator) await run(line, join(operator, '.vidsync'), operator, {'SYNCTHING-ID': syncthingId})
    const fingerprint = JSON.parse((await cli(['ca', 'show', '--json'], {VIDSYNC_HOME: join(operator, '.vidsync')})).stdout).fingerprint as string

    // 3. The device joins with the bundle and the fingerprint (no terminal here to confirm it on);
    // `up` needs root and a tun device, so the run stops after join.
    await copyFile(join(operator, 'laptop.zip'), join(device, 'laptop.zip'))
    const join_ = onDeviceAgain.find((line) => line.startsWith('vidsync join '))
    expect(join_).to.equal('vidsync join laptop.zip')
    await run(`${join_} --ca-fingerprint ${fingerprint}`, deviceHome, device)

    // Every step of the chain says what comes next, and it is what the README does next.
    const chain = ['key create', 'sync id', 'ca init', 'project create', 'pool populate', 'lighthouse add', 'device register', 'join laptop.zip']
    for (const id of chain) {
      const next = nextCommand(outputs.get(id)?.stdout ?? '')
      expect(next, `${id} prints no Next: line`).to.be.a('string')
      expect(readmeSays(next ?? '', commands, text), `${id} says "${next}", which the README quickstart does not`).to.equal(true)
    }
    expect(nextCommand(outputs.get('join laptop.zip')?.stdout ?? '')).to.equal(onDeviceAgain[1])
  })
})
