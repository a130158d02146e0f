/**
 * How the CLI reports failure: exactly one line on stderr, `twinfer: error E_CODE: message`, and an exit code that
 * tells scripts what kind of failure it was. Stack traces only with TWINFER_DEBUG=1.
 */

export const EXIT_OK = 0;
/** something went wrong while doing the work (bad model file, context overflow, ...) */
export const EXIT_RUNTIME = 1;
/** the command line itself was wrong (unknown option, value out of range, missing argument) */
export const EXIT_USAGE = 2;
/** interrupted by Ctrl-C (128 + SIGINT) */
export const EXIT_INTERRUPTED = 130;

/** A command-line mistake. `E_USAGE` for the shape of the command line, `E_INVALID_ARGUMENT` for a bad value. */
export class UsageError extends Error {
  readonly code: string;
  constructor(code: 'E_USAGE' | 'E_INVALID_ARGUMENT', message: string) {
    super(message);
    this.name = 'UsageError';
    this.code = code;
  }
}

/** A runtime failure raised by the CLI itself (not the SDK), with an SDK-style code. */
export class CliError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'CliError';
    this.code = code;
  }
}

interface Coded {
  code: string;
  message: string;
}

/** TwinferError is matched by shape, not instanceof, so a second copy of the SDK module still counts. */
function isCoded(e: unknown): e is Error & Coded {
  return e instanceof Error && typeof (e as { code?: unknown }).code === 'string' && /^E_[A-Z0-9_]+$/.test((e as unknown as Coded).code);
}

/** Node's errno failures (ENOENT, EISDIR, ...) mapped onto the SDK's codes. */
function fromErrno(e: NodeJS.ErrnoException): Coded | undefined {
  const where = e.path ? `: ${e.path}` : '';
  switch (e.code) {
    case 'ENOENT':
      return { code: 'E_FILE_NOT_FOUND', message: `no such file${where}` };
    case 'EISDIR':
      return { code: 'E_INVALID_ARGUMENT', message: `is a directory, not a file${where}` };
    case 'EACCES':
    case 'EPERM':
      return { code: 'E_INVALID_ARGUMENT', message: `permission denied${where}` };
    case 'ENOMEM':
      return { code: 'E_OUT_OF_MEMORY', message: e.message };
    default:
      return undefined;
  }
}

export function describeError(e: unknown): Coded {
  if (isCoded(e)) return { code: e.code, message: e.message };
  if (e instanceof RangeError && /allocation|memory/i.test(e.message)) return { code: 'E_OUT_OF_MEMORY', message: e.message };
  if (e instanceof Error) {
    const errno = typeof (e as NodeJS.ErrnoException).code === 'string' ? fromErrno(e as NodeJS.ErrnoException) : undefined;
    if (errno) return errno;
    return { code: 'E_INTERNAL', message: e.message || e.name };
  }
  return { code: 'E_INTERNAL', message: String(e) };
}

/** The single stderr line for a failure (newlines folded so it really is one line). */
export function errorLine(e: unknown): string {
  const { code, message } = describeError(e);
  return `twinfer: error ${code}: ${message.replace(/\s*\n\s*/g, ' ').trim()}`;
}

export function exitCodeOf(e: unknown): number {
  return e instanceof UsageError ? EXIT_USAGE : EXIT_RUNTIME;
}
