/**
 * CPU kernels against their scalar references, on random blocks of every supported type: the SIMD integer dot
 * products (8-bit activations) against the scalar integer reference (same quantized activations, so they must
 * agree to float rounding), the float-activation kernels against an exact double-precision dot of the dequantized
 * row, and the backend's matmul (threads, row chunks, token tiles of 1..4) against the per-row results. Row lengths
 * include odd numbers of blocks, and every row is placed at the very end of its allocation (the tail of a tensor).
 *
 * Calls the test-only exports of the WASM module (kernels/cpu/test_exports.cpp) directly.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = path.dirname(fileURLToPath(import.meta.url));
const wasmDir = path.resolve(here, '..', 'packages', 'core-wasm', 'dist', 'wasm');

interface TestModule {
  _malloc(n: number): number;
  _free(p: number): void;
  _tw_test_dot(type: number, row: number, x: number, nLo: number, nHi: number, out: number): number;
  _tw_test_matmul(type: number, w: number, kLo: number, kHi: number, rLo: number, rHi: number, x: number, n: number, threads: number, flags: number, y: number): number;
  _tw_type_row_size(type: number, nLo: number, nHi: number): number;
  wasmMemory: WebAssembly.Memory;
  PThread?: { runningWorkers: Array<{ terminate(): void }>; unusedWorkers: Array<{ terminate(): void; unref?(): void }> };
}

/** type id, name, block size, and where the fp16 scales sit in a block (set to sane values: random bytes could be inf/NaN) */
const TYPES: Array<{ id: number; name: string; qk: number; bytes: number; halfs: number[] }> = [
  { id: 8, name: 'Q8_0', qk: 32, bytes: 34, halfs: [0] },
  { id: 2, name: 'Q4_0', qk: 32, bytes: 18, halfs: [0] },
  { id: 3, name: 'Q4_1', qk: 32, bytes: 20, halfs: [0, 2] },
  { id: 6, name: 'Q5_0', qk: 32, bytes: 22, halfs: [0] },
  { id: 7, name: 'Q5_1', qk: 32, bytes: 24, halfs: [0, 2] },
  { id: 12, name: 'Q4_K', qk: 256, bytes: 144, halfs: [0, 2] },
  { id: 13, name: 'Q5_K', qk: 256, bytes: 176, halfs: [0, 2] },
  { id: 14, name: 'Q6_K', qk: 256, bytes: 210, halfs: [208] },
];
const FLOAT_TYPES = [
  { id: 0, name: 'F32', elem: 4 },
  { id: 1, name: 'F16', elem: 2 },
  { id: 30, name: 'BF16', elem: 2 },
];

/** xorshift32: deterministic random bytes */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s / 2 ** 32;
  };
}

/** f32 -> IEEE half bits (round to nearest; inputs here are normal numbers) */
function toHalf(v: number): number {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  const mant = u & 0x7fffff;
  if (exp <= 0) return sign;
  return sign | (exp << 10) | Math.round(mant / 8192);
}

function randomRow(type: (typeof TYPES)[number], n: number, rand: () => number): Uint8Array {
  const nb = n / type.qk;
  const row = new Uint8Array(nb * type.bytes);
  for (let i = 0; i < row.length; i++) row[i] = Math.floor(rand() * 256);
  const dv = new DataView(row.buffer);
  for (let b = 0; b < nb; b++) {
    for (const off of type.halfs) dv.setUint16(b * type.bytes + off, toHalf((rand() * 2 - 1) * 0.05 + 0.001), true);
  }
  return row;
}

function randomFloatRow(type: (typeof FLOAT_TYPES)[number], n: number, rand: () => number): Uint8Array {
  const row = new Uint8Array(n * type.elem);
  const dv = new DataView(row.buffer);
  for (let i = 0; i < n; i++) {
    const v = rand() * 2 - 1;
    if (type.id === 0) dv.setFloat32(i * 4, v, true);
    else if (type.id === 1) dv.setUint16(i * 2, toHalf(v), true);
    else dv.setUint16(i * 2, new Uint32Array(new Float32Array([v]).buffer)[0] >>> 16, true);
  }
  return row;
}

function activations(n: number, rand: () => number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (rand() * 2 - 1) * (i % 7 === 0 ? 4 : 1);
  return x;
}

let mod: TestModule;

beforeAll(async () => {
  const factory = ((await import(pathToFileURL(path.join(wasmDir, 'twinfer-wasm.mjs')).href)) as { default: (o: object) => Promise<TestModule> }).default;
  mod = await factory({ wasmBinary: readFileSync(path.join(wasmDir, 'twinfer-wasm.wasm')), twinferPoolSize: 2 });
  for (const w of mod.PThread?.unusedWorkers ?? []) w.unref?.();
});
afterAll(() => {
  for (const w of [...(mod?.PThread?.runningWorkers ?? []), ...(mod?.PThread?.unusedWorkers ?? [])]) w.terminate();
});

/** Copies bytes to the end of a fresh allocation (the row is the tail of its buffer) and returns the pointer. */
function place(bytes: Uint8Array, slack = 64): { ptr: number; base: number } {
  const base = mod._malloc(bytes.length + slack);
  const ptr = base + slack;
  new Uint8Array(mod.wasmMemory.buffer, ptr, bytes.length).set(bytes);
  return { ptr, base };
}

function testDot(type: number, row: Uint8Array, x: Float32Array): Float32Array {
  const r = place(row);
  const xp = mod._malloc(x.length * 4);
  const out = mod._malloc(6 * 4);
  new Float32Array(mod.wasmMemory.buffer, xp, x.length).set(x);
  const rc = mod._tw_test_dot(type, r.ptr, xp, x.length, 0, out);
  const res = new Float32Array(mod.wasmMemory.buffer, out, 6).slice();
  mod._free(r.base); mod._free(xp); mod._free(out);
  expect(rc).toBe(0);
  return res;
}

const close = (a: number, b: number, rel: number, abs: number) => Math.abs(a - b) <= abs + rel * Math.abs(b);

describe('SIMD dot kernels against scalar references', () => {
  for (const t of TYPES) {
    it(`${t.name}: integer-activation SIMD == scalar, float path == exact dequantized dot`, () => {
      const rand = rng(t.id * 7919);
      // odd block counts and a single block; 2048 / 5632 are the real TinyLlama row lengths
      const lengths = t.qk === 32 ? [32, 96, 32 * 7, 2048, 5632] : [256, 256 * 3, 2048, 5632 - (5632 % 256)];
      for (const n of lengths) {
        for (let rep = 0; rep < 4; rep++) {
          const row = randomRow(t, n, rand);
          const x = activations(n, rand);
          const [simd, scalar, floatPath, exact, qMismatch, bound] = testDot(t.id, row, x);
          expect(qMismatch, `${t.name} n=${n}: SIMD and scalar activation quantizers differ`).toBe(0);
          // same integers, different float summation order only
          expect(close(simd, scalar, 1e-5, 1e-5 * n), `${t.name} n=${n}: simd ${simd} vs scalar ${scalar}`).toBe(true);
          // float activations: only f32 rounding of the dot
          expect(close(floatPath, exact, 1e-4, 1e-5 * n), `${t.name} n=${n}: float ${floatPath} vs exact ${exact}`).toBe(true);
          // 8-bit activations: within the worst-case activation rounding error (<= d/2 per value)
          expect(Math.abs(simd - exact), `${t.name} n=${n}: int8 ${simd} vs exact ${exact}`).toBeLessThanOrEqual(bound);
        }
      }
    });
  }
  for (const t of FLOAT_TYPES) {
    it(`${t.name}: SIMD dot == exact`, () => {
      const rand = rng(t.id + 11);
      for (const n of [1, 3, 7, 8, 17, 64, 2048, 2051]) {
        const row = randomFloatRow(t, n, rand);
        const x = activations(n, rand);
        const [, , floatPath, exact] = testDot(t.id, row, x);
        expect(close(floatPath, exact, 1e-5, 1e-6 * n), `${t.name} n=${n}: ${floatPath} vs ${exact}`).toBe(true);
      }
    });
  }
  it('rejects a row length that is not a multiple of the block, and an unknown type', () => {
    const row = new Uint8Array(64);
    const x = new Float32Array(48);
    const r = place(row);
    const xp = mod._malloc(48 * 4);
    const out = mod._malloc(24);
    expect(mod._tw_test_dot(2, r.ptr, xp, 48, 0, out)).toBe(5); // TW_ERR_SHAPE_MISMATCH
    expect(mod._tw_test_dot(19, r.ptr, xp, 32, 0, out)).toBe(2); // TW_ERR_UNSUPPORTED_TYPE (IQ1_S)
    mod._free(r.base); mod._free(xp); mod._free(out);
    void x;
  });
});

describe('matmul (row chunks, token tiles, x4 repacking read back exactly; one thread: the engine tests cover the pool) against per-row dots', () => {
  for (const t of TYPES) {
    for (const flags of [0, 2]) {
      it(`${t.name} ${flags ? 'float' : 'int8'} activations, 1..6, 33 and 37 tokens; short rows and rows in column chunks`, () => {
        const rand = rng(t.id * 31 + flags);
        // rows longer than 2048 values are stored and multiplied in column chunks (repack.h); 2080 / 2560: a last
        // chunk of one block / two super-blocks
        for (const K of t.qk === 32 ? [32 * 9, 32 * 65] : [256 * 3, 256 * 10]) {
        // 37: not a multiple of the row chunk nor of 4 (GGUF layout); 44: whole quads, an odd number of them
        // (Q4_0 / Q8_0 are repacked four rows at a time; decode takes quads in pairs)
        for (const R of [37, 44]) {
          const rows = Array.from({ length: R }, () => randomRow(t, K, rand));
          const w = new Uint8Array(R * rows[0].length);
          rows.forEach((r, i) => w.set(r, i * r.length));
          // 33 and 37 tokens: prompts take row-pair panels for Q4_0 / Q8_0 / Q4_K / Q6_K (kPanelMinTokens = 16 in panel.h), in
          // tiles of 4 token pairs with a shorter last tile and an odd last token
          for (const n of [1, 2, 3, 4, 5, 6, 33, 37]) {
            const x = activations(n * K, rand);
            const wp = place(w);
            const xp = mod._malloc(x.length * 4);
            const yp = mod._malloc(n * R * 4);
            new Float32Array(mod.wasmMemory.buffer, xp, x.length).set(x);
            expect(mod._tw_test_matmul(t.id, wp.ptr, K, 0, R, 0, xp, n, 1, flags, yp)).toBe(0);
            const y = new Float32Array(mod.wasmMemory.buffer, yp, n * R).slice();
            mod._free(wp.base); mod._free(xp); mod._free(yp);
            for (let tok = 0; tok < n; tok++) {
              for (let r = 0; r < R; r++) {
                const [simd, , floatPath] = testDot(t.id, rows[r], x.subarray(tok * K, (tok + 1) * K));
                const want = flags ? floatPath : simd;
                // same integer sums; the x4 kernels order the float scale products differently
                expect(close(y[tok * R + r], want, 1e-5, 1e-5 * K), `${t.name} K=${K} R=${R} tok ${tok} row ${r}: ${y[tok * R + r]} vs ${want}`).toBe(true);
              }
            }
          }
        }
        }
      });
    }
  }
});

describe('F16 / BF16 matmul (row path for short inputs, float panels for prompts of 16+ tokens) against exact dots', () => {
  /** f32 -> bf16 -> f32, round to nearest even (what the backend does to activations before BF16 products) */
  const roundBf16 = (v: number) => {
    const u = new Uint32Array(new Float32Array([v]).buffer)[0];
    return new Float32Array(new Uint32Array([((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) << 16]).buffer)[0];
  };
  for (const t of FLOAT_TYPES.filter((ty) => ty.id !== 0)) {
    it(`${t.name}: 1, 5, 17, 33 tokens; whole quads and a tail row; odd row length`, () => {
      const rand = rng(t.id * 131 + 5);
      for (const K of [67, 2048]) {
        for (const R of [37, 44]) {
          const rows = Array.from({ length: R }, () => randomFloatRow(t, K, rand));
          const w = new Uint8Array(R * K * t.elem);
          rows.forEach((r, i) => w.set(r, i * r.length));
          for (const n of [1, 5, 17, 33]) {
            const x = activations(n * K, rand);
            const wp = place(w);
            const xp = mod._malloc(x.length * 4);
            const yp = mod._malloc(n * R * 4);
            new Float32Array(mod.wasmMemory.buffer, xp, x.length).set(x);
            // flags 2: float activations (F16 products on unrounded activations; BF16 rounds them always)
            expect(mod._tw_test_matmul(t.id, wp.ptr, K, 0, R, 0, xp, n, 1, 2, yp)).toBe(0);
            const y = new Float32Array(mod.wasmMemory.buffer, yp, n * R).slice();
            mod._free(wp.base); mod._free(xp); mod._free(yp);
            for (let tok = 0; tok < n; tok++) {
              const xt = x.slice(tok * K, (tok + 1) * K).map((v) => (t.name === 'BF16' ? roundBf16(v) : v));
              for (let r = 0; r < R; r++) {
                const exact = testDot(t.id, rows[r], xt)[3];
                expect(close(y[tok * R + r], exact, 1e-5, 1e-6 * K), `${t.name} K=${K} R=${R} n=${n} tok ${tok} row ${r}: ${y[tok * R + r]} vs ${exact}`).toBe(true);
              }
            }
          }
        }
      }
    });
  }
});

describe('x4 repacking keeps every block scale bit for bit', () => {
  // The CPU backend widens block scales (Q4_0 / Q8_0 d, Q4_K d and dmin, Q6_K d) to f32 in its x4 records and narrows
  // them back when a weight is read (dequantization, get_rows): every fp16 bit pattern — subnormals, infinities, NaN
  // payloads — must survive.
  for (const t of TYPES.filter((ty) => ['Q4_0', 'Q8_0', 'Q4_K', 'Q6_K'].includes(ty.name))) {
    it(`${t.name}: all 65536 fp16 scales read back exactly`, () => {
      const R = 4, blocksPerRow = 65536 / R, K = blocksPerRow * t.qk;
      const rand = rng(7 + t.id);
      const w = new Uint8Array(R * blocksPerRow * t.bytes);
      for (let i = 0; i < w.length; i++) w[i] = Math.floor(rand() * 256);
      const dv = new DataView(w.buffer);
      for (let b = 0; b < 65536; b++) for (const o of t.halfs) dv.setUint16(b * t.bytes + o, b, true);
      const wp = place(w);
      const xp = mod._malloc(K * 4);
      const yp = mod._malloc(R * 4);
      new Float32Array(mod.wasmMemory.buffer, xp, K).fill(0.5);
      // 0: multiplied and read back byte-identical; the products themselves may be inf/NaN here
      const rc = mod._tw_test_matmul(t.id, wp.ptr, K, 0, R, 0, xp, 1, 1, 0, yp);
      mod._free(wp.base); mod._free(xp); mod._free(yp);
      expect(rc).toBe(0);
    });
  }
});
