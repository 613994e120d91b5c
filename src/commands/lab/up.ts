import {BaseCommand} from '../../base-command.js'
import {labFlags} from '../../flags/lab.js'
import {parseDuration} from '../../lib/duration.js'
import {defaultLabHome, labUp, type LabState, vidsyncCli} from '../../lib/lab/lab.js'
import {renderTable} from '../../lib/output/table.js'

export default class LabUp extends BaseCommand<typeof LabUp> {
  static override summary = 'Bring up a lab on this machine: a lighthouse and N devices in network namespaces, joined with vidsync.'
  static override description = `Needs root on Linux, plus ip and tc (iproute2), nebula and syncthing. Creates a network namespace per node on a private bridge (underlay 192.0.2.0/24, no route anywhere else; the host's network is not touched), then builds the overlay only with vidsync's own commands on the embedded backend: ca init, project create, pool populate, lighthouse add, and per device key create, sync id, device register, join, up --detach (nebula, Syncthing on the overlay address, reconcile loop) and sync add of a shared folder (<home>/lab/d<N>/shared). The lab lives in <home>/lab; its state file lets \`vidsync lab down\` remove everything, also after a crash. Each step's output is in <home>/lab/logs until the next lab up.

--rate and --delay shape every node's link: each node gets RATE in each direction, and DELAY on what it sends, so the round trip between two nodes is twice DELAY. A rate alone is a token bucket (tbf, in every common kernel); a delay needs netem (sch_netem), and the lab says so when the kernel lacks it.`
  static override examples = [
    '<%= config.bin %> <%= command.id %> --devices 3',
    '<%= config.bin %> <%= command.id %> --devices 2 --rate 1gbit --delay 10ms --json',
  ]

  static override flags = labFlags

  async run(): Promise<LabState> {
    const {flags} = this
    const lab = await labUp({
      home: defaultLabHome(this.home),
      devices: flags.devices,
      rate: flags.rate,
      delay: flags.delay,
      cli: vidsyncCli(this.config.root),
      timeoutMs: parseDuration(flags.timeout, 'timeout') * 1000,
    })
    this.log(
      renderTable(
        [lab.lighthouse, ...lab.devices],
        [
          {header: 'node', get: (node) => node.name},
          {header: 'namespace', get: (node) => node.ns},
          {header: 'underlay', get: (node) => node.underlayIp},
          {header: 'overlay', get: (node) => node.overlayIp},
        ],
      ),
    )
    this.log('')
    this.log(renderTable(lab.timings, [{header: 'step', get: (step) => step.step}, {header: 'ms', get: (step) => step.ms}]))
    const total = lab.timings.reduce((sum, step) => sum + step.ms, 0)
    this.log(`\nThe lab is up (${(total / 1000).toFixed(1)}s). Run commands on a node with \`ip netns exec <namespace> ...\`; remove it with \`vidsync lab down\`.`)
    return lab
  }
}
