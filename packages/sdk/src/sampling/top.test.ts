/**
 * Sampling from a row's best logits (what the CUDA core's forwardTop returns) must choose exactly the token that
 * sampling from the whole row chooses: same ids, same random draws, for every config topNeeded accepts.
 */
import { describe, expect, it } from 'vitest';
import { createSampler, MAX_TOP_CANDIDATES } from './sampler.js';
import { createPrng } from './prng.js';
import { topLogits } from './select.js';
import type { SamplerConfig } from './validate.js';

const N = 2000;

/** Rows with what makes selection hard: coarse values (many exact ties), NaN, -Infinity, a few very large logits. */
function row(seed: number): Float32Array {
  const rng = createPrng(seed);
  return Float32Array.from({ length: N }, () => {
    const u = rng.nextFloat();
    if (u < 0.01) return NaN;
    if (u < 0.02) return -Infinity;
    if (u < 0.025) return 8 + rng.nextFloat();
    return Math.round((rng.nextFloat() * 2 - 1) * 40) / 8; // steps of 1/8: ties everywhere
  });
}

/** A history that repeats ids, so the penalty hits some of the best logits. */
function history(seed: number, len: number, best: Int32Array): number[] {
  const rng = createPrng(seed + 99);
  return Array.from({ length: len }, () => (rng.nextFloat() < 0.5 ? best[Math.floor(rng.nextFloat() * 8)]! : Math.floor(rng.nextFloat() * N)));
}

const configs: SamplerConfig[] = [
  {},
  { repetitionPenalty: 1.3 },
  { repetitionPenalty: 1.1, repetitionLastN: -1 },
  { repetitionPenalty: 5, repetitionLastN: 8 },
  { temperature: 0.8, topK: 40 },
  { temperature: 1.2, topK: 5, topP: 0.9 },
  { temperature: 0.7, topK: 50, topP: 0.95, minP: 0.05, repetitionPenalty: 1.2 },
  { temperature: 2, topK: 1 },
  { doSample: true, topK: 100, minP: 0.2, repetitionPenalty: 3, repetitionLastN: -1 },
];

describe('sampling from the best logits (forwardTop) equals sampling from the whole row', () => {
  for (const [ci, cfg] of configs.entries()) {
    it(`config ${ci}: ${JSON.stringify(cfg)}`, () => {
      for (let seed = 0; seed < 12; seed++) {
        const full = createSampler({ ...cfg, seed }, N);
        const top = createSampler({ ...cfg, seed }, N);
        for (let step = 0; step < 25; step++) {
          const logits = row(seed * 1000 + step);
          const h = history(seed * 1000 + step, step * 3, topLogits(logits, 8).ids);
          const k = top.topNeeded(h);
          expect(k).toBeGreaterThan(0);
          expect(k).toBeLessThanOrEqual(MAX_TOP_CANDIDATES);
          const want = full.sample(logits, h);
          // exactly k candidates, and also more (a shared step hands every request the largest k asked)
          expect(top.sampleTop(topLogits(logits, k), h)).toBe(want);
          if (step % 5 === 0) {
            const again = createSampler({ ...cfg, seed }, N);
            const ref = createSampler({ ...cfg, seed }, N);
            expect(again.sampleTop(topLogits(logits, Math.min(N - 1, k + 17)), h)).toBe(ref.sample(logits, h));
          }
        }
      }
    });
  }

  it('asks for the whole row where the best logits cannot decide', () => {
    expect(createSampler({ temperature: 0.8 }, N).topNeeded([])).toBe(0); // plain temperature
    expect(createSampler({ temperature: 0.8, topP: 0.9 }, N).topNeeded([])).toBe(0); // top-p over the whole row
    expect(createSampler({ temperature: 0.8, minP: 0.1 }, N).topNeeded([])).toBe(0);
    expect(createSampler({ repetitionPenalty: 0.8 }, N).topNeeded([1, 2])).toBe(0); // a penalty < 1 raises logits
    expect(createSampler({ temperature: 1, topK: MAX_TOP_CANDIDATES + 1 }, N).topNeeded([])).toBe(0);
    // greedy with a penalty: one more candidate per distinct penalized id
    expect(createSampler({ repetitionPenalty: 1.5, repetitionLastN: 4 }, N).topNeeded([7, 7, 1, 2, 3, 3])).toBe(1 + 3);
  });

  it('refuses fewer candidates than it needs', () => {
    const s = createSampler({ repetitionPenalty: 1.5 }, N);
    const logits = row(5);
    const h = Array.from(topLogits(logits, 3).ids);
    expect(() => s.sampleTop(topLogits(logits, 3), h)).toThrow(/candidates/);
  });

  it('without the penalized ids a greedy pick from the best logits would go wrong', () => {
    // The test above can fail: the best logit is penalized below the runner-up only when both are fetched.
    const logits = new Float32Array(N).fill(-1);
    logits[10] = 5;
    logits[20] = 4;
    const h = [10];
    const s = createSampler({ repetitionPenalty: 2 }, N);
    expect(s.topNeeded(h)).toBe(2);
    expect(s.sampleTop(topLogits(logits, 2), h)).toBe(20);
    expect(createSampler({ repetitionPenalty: 2 }, N).sample(logits, h)).toBe(20);
  });
});
