/**
 * Log-probabilities of the model's raw next-token distribution (before any sampling transform), in float64 with
 * the max subtracted before exponentiation so large logits do not overflow. Used for OpenAI-style `logprobs`.
 */
import { TwinferError } from '../errors.js';
import { topKIds } from './select.js';

export interface TokenLogprob {
  id: number;
  logprob: number;
}

/** log(sum(exp(logits))) computed stably; NaN logits count as -Infinity. */
export function logSumExp(logits: ArrayLike<number>): number {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = logits[i]!;
    if (v > max) max = v;
  }
  if (max === -Infinity) return -Infinity;
  if (max === Infinity) return Infinity;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const v = logits[i]!;
    if (v > -Infinity) sum += Math.exp(v - max);
  }
  return max + Math.log(sum);
}

/** The k most likely ids with their log-probabilities, most likely first (ties: lower id first). */
export function logSoftmaxTopK(logits: ArrayLike<number>, k: number, logZ = logSumExp(logits)): TokenLogprob[] {
  if (!Number.isInteger(k) || k < 0) {
    throw new TwinferError('E_INVALID_ARGUMENT', `logprobs count must be an integer >= 0, got ${k}`, { k });
  }
  const ids = topKIds(logits, k, logits.length);
  return Array.from(ids, (id) => ({ id, logprob: logprobValue(logits[id]!, logZ) }));
}

/** The log-probability of one id. Pass logZ (from logSumExp) when asking for several ids of the same logits. */
export function logprobOf(logits: ArrayLike<number>, id: number, logZ = logSumExp(logits)): number {
  if (!Number.isInteger(id) || id < 0 || id >= logits.length) {
    throw new TwinferError('E_INVALID_ARGUMENT', `token id ${id} is outside the vocabulary (0..${logits.length - 1})`, { id });
  }
  return logprobValue(logits[id]!, logZ);
}

function logprobValue(logit: number, logZ: number): number {
  return Number.isNaN(logit) ? -Infinity : logit - logZ;
}
