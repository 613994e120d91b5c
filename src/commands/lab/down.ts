import {BaseCommand} from '../../base-command.js'
import {defaultLabHome, labDown, type LabDownResult, vidsyncCli} from '../../lib/lab/lab.js'

export default class LabDown extends BaseCommand<typeof LabDown> {
  static override summary = 'Remove the lab: its processes, network namespaces and files.'
  static override description = `Stops each node's daemons with vidsync's own commands, ends by PID whatever still runs in the lab's namespaces, deletes the namespaces by name and removes the lab's files from <home>/lab (its step logs stay until the next lab up). Safe to run again, and after a crash: the namespaces are found by the lab's name prefix even without its state file. Needs root.`
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --json']

  async run(): Promise<LabDownResult> {
    const result = await labDown({home: defaultLabHome(this.home), cli: vidsyncCli(this.config.root)})
    if (!result.found) this.log(`No lab in ${result.home}: nothing to do.`)
    else this.log(`Removed the lab in ${result.home}: ${result.namespaces.length} namespaces${result.killed.length > 0 ? `, ended ${result.killed.length} processes by PID` : ''}.`)
    return result
  }
}
