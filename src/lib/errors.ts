/**
 * The errors vidsync reports to users. Each class has one exit code, documented in the README;
 * the base command maps them to output. Library code throws these and never exits the process.
 */
export const ExitCode = {
  ok: 0,
  internal: 1,
  usage: 2,
  notFound: 3,
  conflict: 4,
  exhausted: 5,
  unavailable: 6,
  incompatible: 7,
  missingDependency: 8,
  permission: 9,
} as const

export type ErrorCode = keyof typeof ExitCode

/** What an error may carry besides its message: a hint, printed on its own line and as `error.hint` in JSON. */
export interface ErrorDetails {
  /** What to do about it, naming only flags the failing command has (Shopify CLI's tryMessage). */
  hint?: string
}

export class VidsyncError extends Error {
  readonly hint?: string

  constructor(
    message: string,
    readonly code: ErrorCode,
    details: ErrorDetails = {},
  ) {
    super(message)
    this.name = new.target.name
    this.hint = details.hint
  }

  get exitCode(): number {
    return ExitCode[this.code]
  }
}

/** The input is malformed or out of range: nothing was written. */
export class InvalidInputError extends VidsyncError {
  constructor(message: string, details?: ErrorDetails) {
    super(message, 'usage', details)
  }
}

export class NotFoundError extends VidsyncError {
  constructor(message: string, details?: ErrorDetails) {
    super(message, 'notFound', details)
  }
}

/** The request clashes with existing state (duplicate name, overlapping range, existing file). */
export class ConflictError extends VidsyncError {
  constructor(message: string, details?: ErrorDetails) {
    super(message, 'conflict', details)
  }
}

export class ExhaustedError extends VidsyncError {
  constructor(message: string, details?: ErrorDetails) {
    super(message, 'exhausted', details)
  }
}

/** A backend or service could not be reached. */
export class UnavailableError extends VidsyncError {
  constructor(message: string, details?: ErrorDetails) {
    super(message, 'unavailable', details)
  }
}

/** The control plane refused more attempts from this source for now: nothing was recorded. */
export class RateLimitedError extends UnavailableError {}

/** The database was migrated by a newer vidsync, or needs `db migrate`. */
export class IncompatibleSchemaError extends VidsyncError {
  constructor(message: string, details?: ErrorDetails) {
    super(message, 'incompatible', details)
  }
}

/** A required program (nebula-cert, nebula, syncthing) is not installed. */
export class MissingDependencyError extends VidsyncError {
  constructor(message: string, details?: ErrorDetails) {
    super(message, 'missingDependency', details)
  }
}

/** Privileges or file modes are wrong (CA key readable by others, no CAP_NET_ADMIN, ...). */
export class PermissionError extends VidsyncError {
  constructor(message: string, details?: ErrorDetails) {
    super(message, 'permission', details)
  }
}

/** An external program (nebula-cert, nebula, syncthing) ran but failed; the message carries its own reason. */
export class ToolFailedError extends VidsyncError {
  constructor(
    message: string,
    readonly reason: string,
    details?: ErrorDetails,
  ) {
    super(message, 'internal', details)
  }
}
