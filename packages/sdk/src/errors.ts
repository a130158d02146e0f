/**
 * Every failure a user can cause surfaces as a TwinferError with a stable `code` (safe to switch on; never
 * renamed) and a one-line message that says what was wrong and with what.
 */
export type TwinferErrorCode =
  | 'E_FILE_NOT_FOUND'
  | 'E_NOT_GGUF'
  | 'E_GGUF_VERSION'
  | 'E_TRUNCATED'
  | 'E_TENSOR_OUT_OF_BOUNDS'
  | 'E_BAD_METADATA'
  | 'E_UNSUPPORTED_ARCH'
  | 'E_UNSUPPORTED_TYPE'
  | 'E_MISSING_TENSOR'
  | 'E_SHAPE_MISMATCH'
  | 'E_BLOCK_SIZE'
  | 'E_TOKENIZER'
  | 'E_CONTEXT_OVERFLOW'
  | 'E_INVALID_ARGUMENT'
  | 'E_BACKEND_UNAVAILABLE'
  | 'E_OUT_OF_MEMORY'
  | 'E_KV_CACHE_FULL'
  | 'E_ABORTED'
  | 'E_DISPOSED'
  | 'E_INTERNAL';

export class TwinferError extends Error {
  readonly code: TwinferErrorCode;
  readonly details?: Record<string, unknown>;
  constructor(code: TwinferErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TwinferError';
    this.code = code;
    this.details = details;
  }
}

export function isTwinferError(e: unknown): e is TwinferError {
  return e instanceof TwinferError;
}
