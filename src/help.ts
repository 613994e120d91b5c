import {Help} from '@oclif/core'

/** Root help in the order people meet vidsync: the operator's topics, then a device's, then the rest. */
const groups: {title: string; names: string[]}[] = [
  {title: 'OPERATOR (holds the CA, runs the control plane)', names: ['ca', 'project', 'pool', 'lighthouse', 'device', 'invite', 'db']},
  {title: 'DEVICE (every machine that syncs)', names: ['key', 'join', 'up', 'status', 'sync', 'down', 'nebula', 'doctor']},
]

export default class VidsyncHelp extends Help {
  protected override async showRootHelp(): Promise<void> {
    const entries = new Map<string, string | undefined>()
    for (const topic of this.sortedTopics) {
      if (!topic.name.includes(':')) entries.set(topic.name, topic.description?.split('\n')[0])
    }
    for (const command of this.sortedCommands) {
      if (command.id && !command.id.includes(':') && !command.hidden) entries.set(command.id, this.summary(command))
    }
    const other = [...entries.keys()].filter((name) => !groups.some((group) => group.names.includes(name)))
    this.log(this.formatRoot())
    this.log('')
    for (const {title, names} of [...groups, {title: 'MORE', names: other}]) {
      const rows = names.filter((name) => entries.has(name)).map((name) => [name, entries.get(name)])
      if (rows.length === 0) continue
      this.log(this.section(title, this.renderList(rows, {indentation: 2, spacer: '\n', stripAnsi: this.opts.stripAnsi})))
      this.log('')
    }
  }
}
