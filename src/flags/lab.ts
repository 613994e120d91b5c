import {Flags} from '@oclif/core'

/** Flags shared by `lab up` and `lab demo`. */
export const labFlags = {
  devices: Flags.integer({summary: 'How many devices besides the lighthouse.', default: 3, min: 1, max: 249}),
  rate: Flags.string({summary: "Each node's link rate in each direction, in tc units (100mbit, 1gbit): a token bucket (tbf), or netem with --delay."}),
  delay: Flags.string({summary: 'Delay added to what each node sends (10ms): the round trip between two nodes is twice this; needs netem (sch_netem) in the kernel.'}),
  timeout: Flags.string({summary: 'Time limit for each step.', default: '60s'}),
}
