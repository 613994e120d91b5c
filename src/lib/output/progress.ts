/** Whether to paint: a terminal, and neither NO_COLOR (https://no-color.org) nor --no-color (which sets it). */
export function colorEnabled(stream: NodeJS.WriteStream): boolean {
  return Boolean(stream.isTTY) && !process.env.NO_COLOR && process.env.TERM !== 'dumb'
}

/** How long work runs before a spinner appears: quicker steps print nothing extra. */
const spinnerDelayMs = 400

/**
 * Runs `work` with a spinner on stderr if it is still running after a moment, and only when a
 * person watches (stderr is a terminal, colour allowed, enabled by the caller: never under --json).
 */
export async function withProgress<R>(text: string, work: () => Promise<R>, options: {enabled: boolean}): Promise<R> {
  if (!options.enabled || !colorEnabled(process.stderr) || process.env.CI) return work()
  const {default: ora} = await import('ora')
  const spinner = ora({text, stream: process.stderr, discardStdin: false})
  const timer = setTimeout(() => spinner.start(), spinnerDelayMs)
  try {
    return await work()
  } finally {
    clearTimeout(timer)
    if (spinner.isSpinning) spinner.stop()
  }
}
