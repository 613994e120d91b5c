import {Flags} from '@oclif/core'

import {BaseCommand} from '../../base-command.js'
import {labFlags} from '../../flags/lab.js'
import {parseDuration} from '../../lib/duration.js'
import {type DemoResult, labDemo} from '../../lib/lab/demo.js'
import {defaultLabHome, vidsyncCli} from '../../lib/lab/lab.js'
import {formatBytes} from '../../lib/output/status.js'
import {renderTable} from '../../lib/output/table.js'

export default class LabDemo extends BaseCommand<typeof LabDemo> {
  static override summary = 'See vidsync work: a lab, sample data on one device, synced to all, then cleaned up.'
  static override description = `Brings up a lab (see \`vidsync lab up\`), writes sample data into d1's shared folder (one big file and many 16 KiB files), follows it arriving on every other device over the Nebula overlay, checks every copy is identical, prints a throughput table and takes the lab down again, also on failure. Needs root on Linux with nebula and syncthing installed.`
  static override examples = ['sudo <%= config.bin %> <%= command.id %>', 'sudo <%= config.bin %> <%= command.id %> --devices 4 --big 256 --json']

  static override flags = {
    ...labFlags,
    big: Flags.integer({summary: 'Size of the big sample file in MiB.', default: 64, min: 1, max: 4096}),
    small: Flags.integer({summary: 'How many 16 KiB sample files.', default: 200, min: 0, max: 100_000}),
  }

  async run(): Promise<DemoResult> {
    const {flags} = this
    const draw = this.interactive
    const result = await labDemo({
      home: defaultLabHome(this.home),
      devices: Math.max(2, flags.devices),
      rate: flags.rate,
      delay: flags.delay,
      cli: vidsyncCli(this.config.root),
      timeoutMs: parseDuration(flags.timeout, 'timeout') * 5000,
      bigFileMiB: flags.big,
      smallFiles: flags.small,
      onProgress(progress) {
        if (!draw) return
        const bars = progress.map(({device, bytes, totalBytes}) => {
          const filled = Math.round((bytes / totalBytes) * 20)
          return `${device} [${'#'.repeat(filled)}${'-'.repeat(20 - filled)}] ${((bytes / totalBytes) * 100).toFixed(0).padStart(3)}%`
        })
        process.stdout.write(`\r${bars.join('  ')}`)
      },
    })
    if (draw) process.stdout.write('\n')
    this.log(`Synced ${result.files} files (${formatBytes(result.bytes)}) from d1 over the overlay:\n`)
    this.log(
      renderTable(result.devices, [
        {header: 'device', get: (d) => d.device},
        {header: 'identical', get: (d) => (d.identical ? 'yes' : 'NO')},
        {header: 'total s', get: (d) => d.totalSeconds.toFixed(1)},
        {header: 'transfer s', get: (d) => d.transferSeconds.toFixed(1)},
        {header: 'MiB/s', get: (d) => d.mibPerSecond.toFixed(1)},
      ]),
    )
    this.log('\n"total" runs from writing the data on d1 and includes Syncthing noticing it; "transfer" is first to last byte.')
    this.log('The lab is down again.')
    return result
  }
}
