import {Flags} from '@oclif/core'

/** For commands whose lists grow long: pick columns, drop the header. */
export const tableFlags = {
  columns: Flags.string({summary: 'Only these columns, comma-separated, in this order (e.g. name,ip).'}),
  'no-header': Flags.boolean({summary: 'Leave out the header line.'}),
}
