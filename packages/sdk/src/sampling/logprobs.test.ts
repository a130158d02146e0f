import { describe, expect, it } from 'vitest';
import { logprobOf, logSoftmaxTopK, logSumExp } from './logprobs.js';
import { createPrng } from './prng.js';

describe('log-softmax', () => {
  it('matches the naive formula and normalizes', () => {
    const rng = createPrng(5);
    const logits = Float32Array.from({ length: 512 }, () => rng.nextFloat() * 10 - 5);
    const z = Array.from(logits).reduce((a, x) => a + Math.exp(x), 0);
    const all = logSoftmaxTopK(logits, 512);
    expect(all.reduce((a, t) => a + Math.exp(t.logprob), 0)).toBeCloseTo(1, 12);
    for (const t of all) expect(t.logprob).toBeCloseTo(logits[t.id]! - Math.log(z), 12);
    for (let i = 1; i < all.length; i++) expect(all[i - 1]!.logprob).toBeGreaterThanOrEqual(all[i]!.logprob);
    expect(logprobOf(logits, 17)).toBeCloseTo(logits[17]! - Math.log(z), 12);
  });

  it('returns the top k, best first, ties to the lower id', () => {
    const logits = new Float32Array([0, 2, 5, 2, -1, 5]);
    const top = logSoftmaxTopK(logits, 4);
    expect(top.map((t) => t.id)).toEqual([2, 5, 1, 3]);
    expect(logSoftmaxTopK(logits, 0)).toEqual([]);
    expect(logSoftmaxTopK(logits, 100)).toHaveLength(6);
  });

  it('is stable for large logits', () => {
    const logits = new Float32Array([1000, 999, -1000]);
    const lz = logSumExp(logits);
    expect(Number.isFinite(lz)).toBe(true);
    expect(logprobOf(logits, 0, lz)).toBeCloseTo(-Math.log1p(Math.exp(-1)), 12);
    expect(logprobOf(logits, 1)).toBeCloseTo(-1 - Math.log1p(Math.exp(-1)), 12);
  });

  it('treats -Infinity and NaN as impossible', () => {
    const logits = new Float32Array([0, -Infinity, NaN]);
    expect(logprobOf(logits, 0)).toBe(0);
    expect(logprobOf(logits, 1)).toBe(-Infinity);
    expect(logprobOf(logits, 2)).toBe(-Infinity);
    expect(logSoftmaxTopK(logits, 3).map((t) => t.id)).toEqual([0, 1, 2]);
  });

  it('rejects out-of-range ids and bad k', () => {
    expect(() => logprobOf(new Float32Array(3), 3)).toThrow(/outside the vocabulary/);
    expect(() => logSoftmaxTopK(new Float32Array(3), -1)).toThrow(/logprobs/);
  });
});
