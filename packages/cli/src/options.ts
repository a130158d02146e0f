/**
 * Parsers for numeric option values. They reject anything that is not entirely a number in range, so a typo like
 * `--max-tokens 1O` or `--top-p 2` fails before a model is loaded, with a message that names the flag.
 */
import { Option } from 'commander';
import { UsageError } from './errors.js';

const INT = /^[+-]?\d+$/;
const FLOAT = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

function bad(flag: string, raw: string, rule: string): UsageError {
  return new UsageError('E_INVALID_ARGUMENT', `${flag} must be ${rule}, got ${JSON.stringify(raw)}`);
}

export function intParser(flag: string, min: number, max = Number.MAX_SAFE_INTEGER, rule?: string): (raw: string) => number {
  const desc = rule ?? (max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in [${min}, ${max}]`);
  return (raw) => {
    const s = raw.trim();
    if (!INT.test(s)) throw bad(flag, raw, desc);
    const v = Number(s);
    if (!Number.isSafeInteger(v) || v < min || v > max) throw bad(flag, raw, desc);
    return v;
  };
}

export interface FloatRange {
  min?: number;
  max?: number;
  minExclusive?: boolean;
  rule: string;
}

export function floatParser(flag: string, range: FloatRange): (raw: string) => number {
  return (raw) => {
    const s = raw.trim();
    if (!FLOAT.test(s)) throw bad(flag, raw, range.rule);
    const v = Number(s);
    if (!Number.isFinite(v)) throw bad(flag, raw, range.rule);
    if (range.min !== undefined && (range.minExclusive ? v <= range.min : v < range.min)) throw bad(flag, raw, range.rule);
    if (range.max !== undefined && v > range.max) throw bad(flag, raw, range.rule);
    return v;
  };
}

/** Collects a repeatable string option (`--stop A --stop B`). */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Options every model-loading command shares. */
export interface ModelOptions {
  model: string;
  threads?: number;
  backend?: 'auto' | 'wasm' | 'cuda';
  ctx?: number;
  verbose?: boolean;
  quantize?: 'q8_0' | 'q4_0';
  kvType?: 'f16' | 'f32';
}

export function quantizeOption(): Option {
  return new Option('--quantize <type>', 'quantize an F32/F16/BF16 model while loading').choices(['q8_0', 'q4_0']);
}

export function kvTypeOption(): Option {
  return new Option('--kv-type <type>', 'KV cache element type (default f16)').choices(['f16', 'f32']);
}

export function threadsOption(): Option {
  return new Option('--threads <n>', 'CPU threads for the WASM backend (default: all cores)').argParser(intParser('--threads', 1, 1024));
}

export function backendOption(): Option {
  return new Option('--backend <name>', 'backend to run on (default: TWINFER_BACKEND or auto)').choices(['auto', 'wasm', 'cuda']);
}

export function ctxOption(description: string, min = 1): Option {
  return new Option('--ctx <n>', description).argParser(intParser('--ctx', min, 1 << 24));
}

export function modelOption(): Option {
  return new Option('-m, --model <file>', 'GGUF model file').makeOptionMandatory();
}
