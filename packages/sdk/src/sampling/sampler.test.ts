import { describe, expect, it } from 'vitest';
import { TwinferError } from '../errors.js';
import { applyRepetitionPenalty, createSampler } from './sampler.js';
import { createPrng } from './prng.js';

/** deterministic pseudo-random logits for tests */
function randomLogits(n: number, seed: number, scale = 3): Float32Array {
  const rng = createPrng(seed);
  return Float32Array.from({ length: n }, () => (rng.nextFloat() * 2 - 1) * scale);
}

function softmax(logits: ArrayLike<number>, t = 1): number[] {
  const xs = Array.from(logits, (x) => x / t);
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

function draw(cfg: Parameters<typeof createSampler>[0], logits: Float32Array, times: number, history: number[] = []): number[] {
  const s = createSampler(cfg, logits.length);
  return Array.from({ length: times }, () => s.sample(logits, history));
}

function naiveArgmax(l: ArrayLike<number>): number {
  let b = 0;
  for (let i = 1; i < l.length; i++) if (l[i]! > l[b]!) b = i;
  return b;
}

describe('greedy', () => {
  it('takes the argmax when doSample is unset, false, or temperature is 0', () => {
    for (let seed = 0; seed < 20; seed++) {
      const logits = randomLogits(1000, seed);
      const want = naiveArgmax(logits);
      expect(createSampler({}, 1000).sample(logits, [])).toBe(want);
      expect(createSampler({ doSample: false, temperature: 1.5, topK: 40 }, 1000).sample(logits, [])).toBe(want);
      expect(createSampler({ doSample: true, temperature: 0 }, 1000).sample(logits, [])).toBe(want);
      expect(createSampler({ temperature: 0, seed: 5 }, 1000).greedy).toBe(true);
    }
  });

  it('breaks ties toward the lowest id', () => {
    const logits = new Float32Array([0, 3, 1, 3, 3]);
    expect(createSampler({}, 5).sample(logits, [])).toBe(1);
  });

  it('never picks a NaN logit and fails cleanly when nothing is pickable', () => {
    expect(createSampler({}, 3).sample(new Float32Array([NaN, 1, 2]), [])).toBe(2);
    const s = createSampler({}, 2);
    expect(() => s.sample(new Float32Array([-Infinity, NaN]), [])).toThrowError(TwinferError);
  });

  it('rejects logits shorter than the vocabulary', () => {
    expect(() => createSampler({}, 10).sample(new Float32Array(5), [])).toThrow(/expected 10/);
  });
});

describe('top-k', () => {
  it('topK = 1 equals greedy for any temperature and seed', () => {
    for (let seed = 0; seed < 30; seed++) {
      const logits = randomLogits(500, 100 + seed, 0.5); // flat-ish, so only top-k could force the argmax
      const s = createSampler({ doSample: true, temperature: 2, topK: 1, seed }, 500);
      for (let i = 0; i < 10; i++) expect(s.sample(logits, [])).toBe(naiveArgmax(logits));
    }
  });

  it('only ever draws among the k most likely', () => {
    const logits = randomLogits(300, 7, 1);
    const top = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]!).slice(0, 5);
    const got = new Set(draw({ temperature: 1, topK: 5, seed: 1 }, logits, 3000));
    expect([...got].sort()).toEqual([...top].sort());
  });
});

describe('top-p', () => {
  const probs = [0.5, 0.3, 0.15, 0.05];
  const logits = Float32Array.from(probs, Math.log);

  it('keeps the smallest set reaching p', () => {
    expect(new Set(draw({ temperature: 1, topP: 0.7, seed: 3 }, logits, 2000))).toEqual(new Set([0, 1]));
    expect(new Set(draw({ temperature: 1, topP: 0.85, seed: 3 }, logits, 2000))).toEqual(new Set([0, 1, 2]));
    expect(new Set(draw({ temperature: 1, topP: 0.4, seed: 3 }, logits, 200))).toEqual(new Set([0]));
    expect(new Set(draw({ temperature: 1, topP: 1, seed: 3 }, logits, 2000))).toEqual(new Set([0, 1, 2, 3]));
  });

  it('renormalizes inside the nucleus', () => {
    const n = 20000;
    const got = draw({ temperature: 1, topP: 0.7, seed: 11 }, logits, n);
    const frac0 = got.filter((x) => x === 0).length / n;
    expect(frac0).toBeCloseTo(0.5 / 0.8, 1.5);
  });

  it('on a large vocabulary draws exactly within the brute-force nucleus', () => {
    for (const [scale, p] of [[8, 0.9], [2, 0.5], [0.01, 0.95], [20, 0.999]] as const) {
      const logits = randomLogits(32000, 42 + scale, scale);
      const pr = softmax(logits);
      const order = Array.from(pr.keys()).sort((a, b) => pr[b]! - pr[a]! || a - b);
      const nucleus = new Set<number>();
      let acc = 0;
      for (const id of order) {
        nucleus.add(id);
        acc += pr[id]!;
        if (acc >= p) break;
      }
      const got = draw({ temperature: 1, topP: p, seed: 9 }, logits, 300);
      expect(got.filter((id) => !nucleus.has(id))).toEqual([]);
      // the draws spread over the nucleus: at least min(|nucleus|, 300) / 4 distinct tokens
      expect(new Set(got).size).toBeGreaterThanOrEqual(Math.min(nucleus.size, 300) / 4);
      if (pr[order[0]!]! > 0.05) expect(got).toContain(order[0]);
    }
  });

  it('applies after top-k, over the renormalized top-k probabilities (llama.cpp order)', () => {
    // top-k 2 leaves [0.5, 0.3] -> renormalized [0.625, 0.375]; top-p 0.6 then keeps only id 0
    expect(new Set(draw({ temperature: 1, topK: 2, topP: 0.6, seed: 2 }, logits, 500))).toEqual(new Set([0]));
  });
});

describe('min-p', () => {
  const logits = Float32Array.from([0.5, 0.3, 0.15, 0.05], Math.log);
  it('keeps tokens with p >= minP * max p', () => {
    expect(new Set(draw({ temperature: 1, minP: 0.2, seed: 4 }, logits, 3000))).toEqual(new Set([0, 1, 2]));
    expect(new Set(draw({ temperature: 1, minP: 0.5, seed: 4 }, logits, 3000))).toEqual(new Set([0, 1]));
    expect(new Set(draw({ temperature: 1, minP: 1, seed: 4 }, logits, 300))).toEqual(new Set([0]));
  });
  it('is judged before temperature (a high temperature does not let filtered tokens back in)', () => {
    expect(new Set(draw({ temperature: 5, minP: 0.5, seed: 4 }, logits, 3000))).toEqual(new Set([0, 1]));
  });
});

describe('seeding', () => {
  const logits = randomLogits(64, 1, 0.3);
  it('the same seed gives the same draws', () => {
    const a = draw({ temperature: 1, seed: 1234 }, logits, 500);
    const b = draw({ temperature: 1, seed: 1234 }, logits, 500);
    expect(a).toEqual(b);
  });
  it('different seeds give different draws', () => {
    const seqs = new Set<string>();
    for (let seed = 0; seed < 50; seed++) seqs.add(draw({ temperature: 1, seed }, logits, 50).join(','));
    expect(seqs.size).toBe(50);
    // seeds above 2^32 use their high bits too
    expect(draw({ temperature: 1, seed: 2 ** 32 + 7 }, logits, 50)).not.toEqual(draw({ temperature: 1, seed: 7 }, logits, 50));
  });
  it('no seed means a random one', () => {
    const a = createSampler({ temperature: 1 }, 64);
    const b = createSampler({ temperature: 1 }, 64);
    expect(a.seed).not.toBe(b.seed);
    const sa = Array.from({ length: 50 }, () => a.sample(logits, []));
    const sb = Array.from({ length: 50 }, () => b.sample(logits, []));
    expect(sa).not.toEqual(sb);
  });
});

describe('distribution', () => {
  function chiSquare(counts: number[], expected: number[], n: number): number {
    return counts.reduce((acc, c, i) => acc + (c - n * expected[i]!) ** 2 / (n * expected[i]!), 0);
  }
  for (const t of [1, 0.5, 1.7]) {
    it(`matches softmax(logits / ${t}) (chi-square, 7 dof, p > 0.001)`, () => {
      const logits = Float32Array.from([1.2, 0.1, -0.5, 2.0, 0.7, -1.3, 0.0, 1.5]);
      const n = 40000;
      const counts = new Array(8).fill(0);
      for (const id of draw({ temperature: t, seed: 2024 }, logits, n)) counts[id]++;
      const chi = chiSquare(counts, softmax(logits, t), n);
      expect(chi).toBeLessThan(24.32); // chi-square 0.999 quantile, 7 degrees of freedom
    });
  }
  it('a wrong distribution fails the same bound (the test can fail)', () => {
    const logits = Float32Array.from([1.2, 0.1, -0.5, 2.0, 0.7, -1.3, 0.0, 1.5]);
    const n = 40000;
    const counts = new Array(8).fill(0);
    for (const id of draw({ temperature: 1, seed: 2024 }, logits, n)) counts[id]++;
    expect(chiSquare(counts, softmax(logits, 1.2), n)).toBeGreaterThan(24.32);
  });
});

describe('repetition penalty', () => {
  it('divides positive logits and multiplies negative ones, once per distinct token', () => {
    const l = new Float64Array([2, -2, 1, 0.5, 0]);
    applyRepetitionPenalty(l, 5, [0, 1, 0, 0, 4], 2, 64);
    expect(Array.from(l)).toEqual([1, -4, 1, 0.5, 0]);
  });
  it('looks only at the last N tokens', () => {
    const l = new Float64Array([2, 2, 2]);
    applyRepetitionPenalty(l, 3, [0, 1, 2, 2], 2, 2);
    expect(Array.from(l)).toEqual([2, 2, 1]);
    const all = new Float64Array([2, 2, 2]);
    applyRepetitionPenalty(all, 3, [0, 1, 2, 2], 2, -1);
    expect(Array.from(all)).toEqual([1, 1, 1]);
  });
  it('defaults to the last 64 tokens and steers greedy decoding', () => {
    const logits = new Float32Array([3, 2, 0]);
    expect(createSampler({ repetitionPenalty: 2 }, 3).sample(logits, [0])).toBe(1); // 3/2 < 2
    expect(createSampler({ repetitionPenalty: 1 }, 3).sample(logits, [0])).toBe(0);
    const old = [0, ...new Array(64).fill(2)]; // token 0 is 65 tokens back: not penalized
    expect(createSampler({ repetitionPenalty: 2 }, 3).sample(logits, old)).toBe(0);
    expect(createSampler({ repetitionPenalty: 2, repetitionLastN: 65 }, 3).sample(logits, old)).toBe(1);
  });
  it('does not modify the caller\'s logits', () => {
    const logits = new Float32Array([3, 2, 0]);
    createSampler({ repetitionPenalty: 2, temperature: 1, seed: 1 }, 3).sample(logits, [0, 1]);
    expect(Array.from(logits)).toEqual([3, 2, 0]);
  });
});
