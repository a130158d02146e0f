/**
 * Typed access to the tokenizer keys of GGUF metadata. Values come from the GGUF reader (scalars as
 * number | bigint | boolean | string, string arrays as string[], numeric arrays as typed arrays); anything of the
 * wrong shape is a TwinferError('E_BAD_METADATA') that names the key, so a damaged file never crashes the loader.
 */
import { TwinferError } from '../errors.js';
import type { GGUFValue } from '../gguf/types.js';

export type Metadata = Record<string, GGUFValue>;

function bad(key: string, want: string, got: unknown): TwinferError {
  const what = Array.isArray(got) ? 'array' : ArrayBuffer.isView(got) ? got.constructor.name : typeof got;
  return new TwinferError('E_BAD_METADATA', `GGUF metadata ${key} must be ${want}, got ${what}`, { key, want, got: what });
}

export function optString(md: Metadata, key: string): string | undefined {
  const v = md[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw bad(key, 'a string', v);
  return v;
}

export function optBool(md: Metadata, key: string): boolean | undefined {
  const v = md[key];
  if (v === undefined) return undefined;
  if (typeof v === 'boolean') return v;
  // some converters wrote flags as integers
  if (typeof v === 'number' && Number.isInteger(v)) return v !== 0;
  throw bad(key, 'a boolean', v);
}

/** A non-negative integer scalar (GGUF stores token ids as UINT32, but any integer type is accepted). */
export function optUint(md: Metadata, key: string): number | undefined {
  const v = md[key];
  if (v === undefined) return undefined;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
  if (typeof v === 'bigint' && v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  throw bad(key, 'a non-negative integer', v);
}

export function optStringArray(md: Metadata, key: string): string[] | undefined {
  const v = md[key];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw bad(key, 'an array of strings', v);
  return v as string[];
}

/** A numeric array of at least `minLength` elements, as float64 values (for scores and token types). */
export function optNumberArray(md: Metadata, key: string, minLength: number): ArrayLike<number> | undefined {
  const v = md[key];
  if (v === undefined) return undefined;
  const ok =
    v instanceof Float32Array || v instanceof Float64Array || v instanceof Int32Array || v instanceof Uint32Array ||
    v instanceof Int16Array || v instanceof Uint16Array || v instanceof Int8Array || v instanceof Uint8Array;
  if (!ok) throw bad(key, 'a numeric array', v);
  if (v.length < minLength) {
    throw new TwinferError('E_BAD_METADATA', `GGUF metadata ${key} has ${v.length} entries, fewer than the ${minLength} tokens`, {
      key, length: v.length, tokens: minLength,
    });
  }
  return v;
}
