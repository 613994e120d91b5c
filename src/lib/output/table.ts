/** Renders rows as an aligned plain-text table with a header line. */
export function renderTable<Row>(rows: Row[], columns: {header: string; get: (row: Row) => unknown}[]): string {
  const cells = rows.map((row) => columns.map((column) => String(column.get(row) ?? '-')))
  const widths = columns.map((column, index) =>
    Math.max(column.header.length, ...cells.map((line) => line[index]?.length ?? 0)),
  )
  const format = (line: string[]) =>
    line
      .map((cell, index) => cell.padEnd(widths[index] ?? 0))
      .join('  ')
      .trimEnd()
  return [format(columns.map((column) => column.header.toUpperCase())), ...cells.map(format)].join('\n')
}
