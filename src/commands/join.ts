import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../base-command.js'
import {joinBundle, type JoinResult} from '../lib/join/join.js'

export default class Join extends BaseCommand<typeof Join> {
  static override summary = 'Join a project with the bundle the operator sent.'
  static override description = `Checks the bundle (certificate signed by its CA, valid now, issued for this device's key from \`vidsync key create\`, config accepted by nebula) and installs it under <home>/projects/<project>/. Running it again with the same bundle changes nothing; a renewed bundle replaces the old files. Then bring the overlay up with \`vidsync nebula up\`, or everything with \`vidsync up\`.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> studio-laptop.zip',
    '<%= config.bin %> <%= command.id %> studio-laptop.zip --key ~/keys/laptop.key --json',
  ]

  static override args = {
    bundle: Args.string({description: 'The bundle zip from `vidsync device register`.', required: true}),
  }

  static override flags = {
    key: Flags.string({summary: "This device's private key [default: <home>/keys/node.key].", env: 'VIDSYNC_KEY'}),
  }

  async run(): Promise<JoinResult> {
    const result = await joinBundle({home: this.home, bundlePath: this.args.bundle, keyPath: this.flags.key})
    for (const warning of result.warnings) this.warn(warning)
    this.log(
      result.changed
        ? `Joined ${result.project} as ${result.device} (${result.ip}); certificate valid until ${result.notAfter}.`
        : `Already joined ${result.project} as ${result.device} with this bundle; nothing changed.`,
    )
    this.log(`Files: ${result.projectDir}`)
    this.log('Next: vidsync nebula up')
    return result
  }
}
