import Table from 'cli-table3'

import {InvalidInputError} from '../errors.js'

export interface Column<Row> {
  header: string
  get: (row: Row) => unknown
}

export interface TableOptions {
  /** Comma-separated headers to show, in that order (`--columns name,ip`). */
  columns?: string
  /** Leave out the header line (`--no-header`), for scripts that read the rows. */
  noHeader?: boolean
}

// No borders: columns two spaces apart, like `ls -l` or `kubectl get`.
const borderless = Object.fromEntries(
  ['top', 'top-mid', 'top-left', 'top-right', 'bottom', 'bottom-mid', 'bottom-left', 'bottom-right', 'left', 'left-mid', 'mid', 'mid-mid', 'right', 'right-mid'].map(
    (name) => [name, ''],
  ),
)

function selectColumns<Row>(columns: Column<Row>[], wanted: string | undefined): Column<Row>[] {
  if (wanted === undefined) return columns
  const names = wanted.split(',').map((name) => name.trim().toLowerCase()).filter(Boolean)
  return names.map((name) => {
    const column = columns.find((candidate) => candidate.header.toLowerCase() === name)
    if (!column) throw new InvalidInputError(`unknown column "${name}": choose from ${columns.map((c) => c.header).join(', ')}`)
    return column
  })
}

/** Renders rows as an aligned plain-text table, with a header line unless told otherwise. */
export function renderTable<Row>(rows: Row[], columns: Column<Row>[], options: TableOptions = {}): string {
  const selected = selectColumns(columns, options.columns)
  const table = new Table({
    head: options.noHeader ? [] : selected.map((column) => column.header.toUpperCase()),
    chars: {...borderless, middle: '  '},
    style: {head: [], border: [], 'padding-left': 0, 'padding-right': 0},
  })
  for (const row of rows) table.push(selected.map((column) => String(column.get(row) ?? '-')))
  return table
    .toString()
    .split('\n')
    .map((line) => line.trimEnd())
    .join('\n')
}
