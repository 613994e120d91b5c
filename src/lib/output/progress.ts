/** Whether to paint: a terminal, and neither NO_COLOR (https://no-color.org) nor --no-color (which sets it). */
export function colorEnabled(stream: NodeJS.WriteStream): boolean {
  return Boolean(stream.isTTY) && !process.env.NO_COLOR && process.env.TERM !== 'dumb'
}

/** How long work runs before a spinner appears: quicker steps print nothing extra. */
const spinnerDelayMs = 400

/** What a long step may do with its spinner. */
export interface Progress {
  /** Says what the step does now. */
  update(text: string): void
  /** Hides the spinner while `interaction` runs (a prompt on the same terminal), then shows it again. */
  pause<T>(interaction: () => Promise<T>): Promise<T>
}

const silent: Progress = {update() {}, pause: (interaction) => interaction()}

/** Whether a spinner may show: a person watches stderr (a terminal, colour allowed) and this is not CI. */
export function progressShown(enabled: boolean): boolean {
  // A terminal that reports no width (0 columns) would make the spinner clear lines forever.
  return enabled && colorEnabled(process.stderr) && (process.stderr.columns ?? 0) > 0 && !process.env.CI
}

/**
 * Runs `work` with a spinner on stderr if it is still running after a moment, and only when a
 * person watches (stderr is a terminal, colour allowed, enabled by the caller: never under --json).
 */
export async function withProgress<R>(text: string, work: (progress: Progress) => Promise<R>, options: {enabled: boolean}): Promise<R> {
  if (!progressShown(options.enabled)) return work(silent)
  const {default: ora} = await import('ora')
  const spinner = ora({text, stream: process.stderr, discardStdin: false})
  let timer: NodeJS.Timeout | undefined
  const arm = () => {
    timer = setTimeout(() => spinner.start(), spinnerDelayMs)
  }
  const disarm = () => {
    clearTimeout(timer)
    if (spinner.isSpinning) spinner.stop()
  }
  const progress: Progress = {
    update(next) {
      spinner.text = next
    },
    async pause(interaction) {
      disarm()
      try {
        return await interaction()
      } finally {
        arm()
      }
    },
  }
  arm()
  try {
    return await work(progress)
  } finally {
    disarm()
  }
}
