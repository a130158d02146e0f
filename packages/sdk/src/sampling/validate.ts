/**
 * Checks a GenerationConfig before any work starts, so a bad value fails fast with a message that names the
 * field and the value instead of silently producing odd text.
 */
import { TwinferError } from '../errors.js';
import type { GenerationConfig } from '../types.js';
import { MAX_SEED } from './prng.js';

/** Sampler-only options on top of GenerationConfig. */
export interface SamplerOptions {
  /**
   * How many of the most recent tokens the repetition penalty looks at (llama.cpp's `penalty_last_n`).
   * Default 64; 0 disables the penalty; -1 means the whole history.
   */
  repetitionLastN?: number;
}

export type SamplerConfig = GenerationConfig & SamplerOptions;

function fail(field: string, value: unknown, rule: string): never {
  throw new TwinferError('E_INVALID_ARGUMENT', `${field} must be ${rule}, got ${show(value)}`, { field, value });
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (value === null) return 'null';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function isNum(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

/** Throws TwinferError('E_INVALID_ARGUMENT') naming the first bad field; returns the config unchanged otherwise. */
export function validateGenerationConfig<T extends SamplerConfig>(cfg: T | undefined): T | undefined {
  if (cfg === undefined) return cfg;
  if (cfg === null || typeof cfg !== 'object') fail('generation config', cfg, 'an object');
  const c = cfg as SamplerConfig;
  if (c.maxNewTokens !== undefined && !(isNum(c.maxNewTokens) && Number.isInteger(c.maxNewTokens) && c.maxNewTokens >= 0)) {
    fail('maxNewTokens', c.maxNewTokens, 'an integer >= 0');
  }
  if (c.temperature !== undefined && !(isNum(c.temperature) && c.temperature >= 0)) {
    fail('temperature', c.temperature, 'a number >= 0');
  }
  if (c.topK !== undefined && !(isNum(c.topK) && Number.isInteger(c.topK) && c.topK >= 0)) {
    fail('topK', c.topK, 'an integer >= 0 (0 = off)');
  }
  if (c.topP !== undefined && !(isNum(c.topP) && c.topP > 0 && c.topP <= 1)) {
    fail('topP', c.topP, 'in (0, 1] (1 = off)');
  }
  if (c.minP !== undefined && !(isNum(c.minP) && c.minP >= 0 && c.minP <= 1)) {
    fail('minP', c.minP, 'in [0, 1] (0 = off)');
  }
  if (c.repetitionPenalty !== undefined && !(isNum(c.repetitionPenalty) && c.repetitionPenalty > 0)) {
    fail('repetitionPenalty', c.repetitionPenalty, 'a number > 0 (1 = off)');
  }
  if (c.repetitionLastN !== undefined && !(isNum(c.repetitionLastN) && Number.isInteger(c.repetitionLastN) && c.repetitionLastN >= -1)) {
    fail('repetitionLastN', c.repetitionLastN, 'an integer >= -1 (-1 = whole history, 0 = off)');
  }
  if (c.doSample !== undefined && typeof c.doSample !== 'boolean') fail('doSample', c.doSample, 'a boolean');
  if (c.seed !== undefined && !(isNum(c.seed) && Number.isInteger(c.seed) && c.seed >= 0 && c.seed <= MAX_SEED)) {
    fail('seed', c.seed, `an integer in [0, ${MAX_SEED}]`);
  }
  if (c.logprobs !== undefined && !(isNum(c.logprobs) && Number.isInteger(c.logprobs) && c.logprobs >= 0)) {
    fail('logprobs', c.logprobs, 'an integer >= 0');
  }
  if (c.addBos !== undefined && typeof c.addBos !== 'boolean') fail('addBos', c.addBos, 'a boolean');
  if (c.stop !== undefined) {
    if (!Array.isArray(c.stop)) fail('stop', c.stop, 'an array of strings');
    c.stop.forEach((s, i) => {
      if (typeof s !== 'string' || s.length === 0) fail(`stop[${i}]`, s, 'a non-empty string');
    });
  }
  return cfg;
}
