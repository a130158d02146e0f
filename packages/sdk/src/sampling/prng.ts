/**
 * A small seeded PRNG for reproducible sampling: xoshiro128** (Blackman & Vigna), state seeded by splitmix32 so
 * that nearby seeds (0, 1, 2, ...) give unrelated streams. 32-bit arithmetic only, so it is exact in JS numbers.
 */

/** splitmix32: turns any 32-bit value into a well-mixed one; used only to expand a seed into the 128-bit state. */
function splitmix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  let z = x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

export interface Prng {
  /** the seed this generator started from */
  readonly seed: number;
  /** uniform 32-bit unsigned integer */
  nextUint32(): number;
  /** uniform float in [0, 1) with 53 random bits */
  nextFloat(): number;
}

/** Largest seed accepted: seeds are integers in [0, 2^53). */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;

export function createPrng(seed: number): Prng {
  // A seed is up to 53 bits: mix the low and high 32-bit halves separately so every bit matters.
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 0x1_0000_0000) >>> 0;
  let a = splitmix32(lo ^ 0x6a09e667);
  let b = splitmix32(hi ^ 0xbb67ae85);
  let c = splitmix32((a + hi) ^ 0x3c6ef372);
  let d = splitmix32((b + lo) ^ 0xa54ff53a);
  if ((a | b | c | d) === 0) a = 1; // the all-zero state is the one fixed point of xoshiro

  const nextUint32 = (): number => {
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return result;
  };
  return {
    seed,
    nextUint32,
    nextFloat(): number {
      const hi27 = nextUint32() >>> 5;
      const lo26 = nextUint32() >>> 6;
      return (hi27 * 67108864 + lo26) / 9007199254740992; // (hi * 2^26 + lo) / 2^53
    },
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** A fresh unpredictable seed (from the OS CSPRNG), for when the caller gave none. */
export function randomSeed(): number {
  const words = new Uint32Array(2);
  globalThis.crypto.getRandomValues(words);
  return (words[0]! & 0x1f_ffff) * 0x1_0000_0000 + words[1]!; // 21 + 32 = 53 bits
}
