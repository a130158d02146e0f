import { describe, expect, it } from 'vitest';
import { createPrng, randomSeed, MAX_SEED } from './prng.js';

describe('xoshiro128** prng', () => {
  it('is reproducible per seed and differs across seeds', () => {
    const a = createPrng(42);
    const b = createPrng(42);
    const c = createPrng(43);
    const sa = Array.from({ length: 100 }, () => a.nextUint32());
    expect(Array.from({ length: 100 }, () => b.nextUint32())).toEqual(sa);
    expect(Array.from({ length: 100 }, () => c.nextUint32())).not.toEqual(sa);
  });

  it('gives uniform floats in [0, 1)', () => {
    const r = createPrng(1);
    const bins = new Array(10).fill(0);
    const n = 100000;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const x = r.nextFloat();
      expect(x >= 0 && x < 1).toBe(true);
      sum += x;
      bins[Math.floor(x * 10)]++;
    }
    expect(sum / n).toBeCloseTo(0.5, 2);
    const chi = bins.reduce((acc, c) => acc + (c - n / 10) ** 2 / (n / 10), 0);
    expect(chi).toBeLessThan(27.88); // 9 dof, p = 0.001
  });

  it('random seeds are integers in range', () => {
    for (let i = 0; i < 100; i++) {
      const s = randomSeed();
      expect(Number.isInteger(s) && s >= 0 && s <= MAX_SEED).toBe(true);
    }
  });
});
