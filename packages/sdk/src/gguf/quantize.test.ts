import { describe, expect, it } from 'vitest';
import {
  bf16BitsToF32, dequantize, f16BitsToF32, f32BitsToBf16Bits, f32BitsToF16Bits, f32ToBf16Bits, f32ToF16Bits, quantize,
} from './quantize.js';
import { GGMLType } from './types.js';

/**
 * Reference vectors produced by ggml itself (ggml_quantize_chunk from the llama.cpp source bundled with
 * node-llama-cpp 3.21.1, built natively), for the 96 inputs built by `vectorInput()`.
 */
const GGML_F16 =
  '662e00b4553500bf0038002c33bbcd3c1fa1293a0ab7df2f003e00be6632000066aa003055b1003b00b400a83337cdb81f1d29b60a33dfab00ba003a66ae0080' +
  '00c680c500c580c400c400c300c200c100c000be00bc00b800000038003c003e004000410042004300448044004580450046804600478047004840488048604a' +
  'ff7bff7b007c00fc0004010000000100013c003c023c0080f7011914004100c718541854185419d401000000000000001a1419141a140080010011001f192b9f';
const GGML_BF16 =
  'cd3d80beab3ee0bf003f803d66bf9a3f24bc453fe1befc3dc03fc0bf4d3e00004dbd003e2bbe603f80be00bde63e1abfa43bc5be613e7cbd40bf403fcdbd0080' +
  'c0c0b0c0a0c090c080c060c040c020c000c0c0bf80bf00bf0000003f803fc03f004020404040604080409040a040b040c040d040e040f0400041084110414c41' +
  '80478047804780c78038803300330033803f803f803f0080fc37833a2040e0c083428342834283c28333832e032e032e833a833a833a008001338635243be5bb';
/** first 64 inputs */
const GGML_Q8_0 =
  '0e2307ee18812405bf57ff38e0096d930f00fc09f440eefe21d400e410fcca36f900' +
  '6d2ec4c9ced3d8dde2e7ecf1f6fb00050a0f14191e23282d32373c41464b50555a7f';
const GGML_Q4_0 = '003388977ac07a88a45d886c96895fb18988' + '60be7c6b6b6b5b5a5a5a4949493838382707';

function vectorInput(): Float32Array {
  const x = new Float32Array(96);
  const b0 = [0.1, -0.25, 0.3333, -1.75, 0.5, 0.0625, -0.9, 1.2, -0.01, 0.77, -0.44, 0.123, 1.5, -1.5, 0.2, 0.0];
  for (let i = 0; i < 32; i++) x[i] = b0[i % 16] * (i < 16 ? 1 : -0.5);
  for (let i = 0; i < 32; i++) x[32 + i] = (i - 12) * 0.5 + (i === 31 ? 3.25 : 0);
  const b2 = [65504, 65519, 65520, -65536, 6.1035156e-5, 5.9604645e-8, 2.9802322e-8, 2.9802326e-8, 1.0009765625, 1.00048828125,
    1.00146484375, -0.0, 3.0e-5, 1e-3, 2.5, -7];
  for (let i = 0; i < 32; i++) x[64 + i] = b2[i % 16] * (i < 16 ? 1 : 1e-3);
  return x;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** A literal port of ggml_compute_fp32_to_fp16 (the float-arithmetic trick), used as the specification. */
function ggmlFp32ToFp16(w: number): number {
  const f = new Float32Array(new Uint32Array([w]).buffer)[0];
  const bits = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0];
  const fromBits = (u: number) => new Float32Array(new Uint32Array([u >>> 0]).buffer)[0];
  let base = Math.fround(Math.fround(Math.abs(f) * 2 ** 112) * 2 ** -110);
  const shl1w = (w + w) >>> 0;
  const sign = w & 0x80000000;
  let bias = (shl1w & 0xff000000) >>> 0;
  if (bias < 0x71000000) bias = 0x71000000;
  base = Math.fround(fromBits((bias >>> 1) + 0x07800000) + base);
  const b = bits(base);
  const expBits = (b >>> 13) & 0x7c00;
  const mantissaBits = b & 0x0fff;
  const nonsign = expBits + mantissaBits;
  return ((sign >>> 16) | (shl1w > 0xff000000 ? 0x7e00 : nonsign)) & 0xffff;
}

describe('F16 / BF16 conversion', () => {
  it('matches ggml reference vectors', () => {
    const x = vectorInput();
    expect(hex(quantize(GGMLType.F16, x))).toBe(GGML_F16);
    expect(hex(quantize(GGMLType.BF16, x))).toBe(GGML_BF16);
  });

  it('integer F16 rounding equals the ggml float trick over a sweep of all bit patterns and every rounding boundary', () => {
    let mismatches = 0;
    let first = '';
    const test = (w: number) => {
      w >>>= 0;
      const a = f32BitsToF16Bits(w);
      const b = ggmlFp32ToFp16(w);
      if (a !== b) {
        if (!mismatches) first = `0x${w.toString(16)}: ${a.toString(16)} vs ${b.toString(16)}`;
        mismatches++;
      }
    };
    for (let w = 0; w < 2 ** 32; w += 65521) test(w); // ~65k patterns incl. NaN/inf/subnormal ranges
    for (let e = 0x32800000; e <= 0x47800000; e += 0x00800000) {
      for (const m of [0, 0x1000, 0x3000, 0x7fe000, 0x7ff000]) {
        for (const d of [-1, 0, 1]) {
          test(e + m + d);
          test((e + m + d) | 0x80000000);
        }
      }
    }
    expect(first).toBe('');
    expect(mismatches).toBe(0);
  });

  it('rounds to nearest even and handles specials', () => {
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(-2)).toBe(0xc000);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // tie above max rounds to inf
    expect(f32ToF16Bits(Infinity)).toBe(0x7c00);
    expect(f32ToF16Bits(-Infinity)).toBe(0xfc00);
    expect(f32ToF16Bits(NaN) & 0x7fff).toBe(0x7e00);
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie -> even (down)
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie -> even (up)
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // tie -> even zero
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    for (let h = 0; h < 0x7c00; h += 7) expect(f32ToF16Bits(f16BitsToF32(h))).toBe(h); // exact round trip
  });

  it('BF16 rounds to nearest even and quiets NaN like ggml_compute_fp32_to_bf16', () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32BitsToBf16Bits(0x3f808000)).toBe(0x3f80); // tie, even stays
    expect(f32BitsToBf16Bits(0x3f818000)).toBe(0x3f82); // tie, odd rounds up
    expect(f32BitsToBf16Bits(0x3f808001)).toBe(0x3f81);
    expect(f32BitsToBf16Bits(0x7f800001)).toBe(0x7fc0); // signalling NaN forced quiet
    expect(f32BitsToBf16Bits(0xff800000)).toBe(0xff80); // -inf
    expect(bf16BitsToF32(0x4049)).toBeCloseTo(3.140625, 10);
  });
});

describe('Q8_0 / Q4_0', () => {
  it('match ggml quantize_row_q8_0_ref / quantize_row_q4_0_ref byte for byte', () => {
    const x = vectorInput().subarray(0, 64);
    expect(hex(quantize(GGMLType.Q8_0, x))).toBe(GGML_Q8_0);
    expect(hex(quantize(GGMLType.Q4_0, x))).toBe(GGML_Q4_0);
  });

  it('Q8_0 rounds exact ties away from zero (roundf) and Q4_0 clamps at 15', () => {
    // amax 127 gives d = 1 exactly, so x/d is the input itself
    const x = new Float32Array(32);
    const vals = [127, -2.5, 2.5, -0.5, 0.5, -126.5, 1.49, -1.51, -0, 3];
    vals.forEach((v, i) => (x[i] = v));
    const q = quantize(GGMLType.Q8_0, x);
    expect([q[0], q[1]]).toEqual([0x00, 0x3c]); // f16 1.0
    expect(Array.from(new Int8Array(q.buffer, 2, vals.length))).toEqual([127, -3, 3, -1, 1, -127, 1, -2, 0, 3]);
    // Q4_0: the first largest magnitude is -8, so d = -8 / -8 = 1 and the nibble is min(15, trunc(x + 8.5));
    // byte j holds element j (low nibble) and element j + 16 (high nibble)
    const y = new Float32Array(32);
    y[0] = -8; // 0
    y[1] = 8; // 16 -> clamped to 15
    y[16] = 7.49; // 15
    y[17] = -0.5; // 8
    const q4 = quantize(GGMLType.Q4_0, y);
    expect([q4[0], q4[1]]).toEqual([0x00, 0x3c]);
    expect([q4[2], q4[3], q4[4]]).toEqual([0xf0, 0x8f, 0x88]);
  });

  it('dequantize within half a step of the input', () => {
    const x = new Float32Array(32 * 64);
    let s = 7;
    for (let i = 0; i < x.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      x[i] = (s / 2 ** 32 - 0.5) * (1 + (i >> 5));
    }
    for (const [type, levels] of [[GGMLType.Q8_0, 127], [GGMLType.Q4_0, 8]] as const) {
      const y = dequantize(type, quantize(type, x), x.length);
      for (let b = 0; b < x.length / 32; b++) {
        let amax = 0;
        for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
        const step = amax / levels;
        for (let j = 0; j < 32; j++) {
          const i = b * 32 + j;
          // Half a step of rounding plus the scale's own f16 rounding (relative 2^-11) times the largest level;
          // Q4_0 clamps +8 to +7, so on the side opposite the extreme value the error reaches one step.
          const bound = type === GGMLType.Q4_0 ? 1 + 8 * 2 ** -11 : 0.5 + 127 * 2 ** -11;
          expect(Math.abs(y[i] - x[i])).toBeLessThanOrEqual(step * bound + 1e-7);
        }
      }
    }
  });

  it('all-zero blocks quantize to zero scale and dequantize to zero', () => {
    const x = new Float32Array(64);
    for (const type of [GGMLType.Q8_0, GGMLType.Q4_0]) {
      expect(Array.from(dequantize(type, quantize(type, x), 64)).every((v) => v === 0)).toBe(true);
    }
  });

  it('F32/F16/BF16 dequantize back', () => {
    const x = vectorInput();
    expect(Array.from(dequantize(GGMLType.F32, quantize(GGMLType.F32, x), 96))).toEqual(Array.from(x));
    const h = dequantize(GGMLType.F16, quantize(GGMLType.F16, x), 96);
    expect(h[32]).toBe(-6);
    expect(h[66]).toBe(Infinity);
  });

  it('rejects bad inputs with stable codes', () => {
    expect(() => quantize(GGMLType.Q8_0, new Float32Array(33))).toThrow(expect.objectContaining({ code: 'E_BLOCK_SIZE' }));
    expect(() => quantize(GGMLType.Q4_K, new Float32Array(256))).toThrow(expect.objectContaining({ code: 'E_UNSUPPORTED_TYPE' }));
    expect(() => dequantize(GGMLType.Q8_0, new Uint8Array(33), 32)).toThrow(expect.objectContaining({ code: 'E_TRUNCATED' }));
  });
});
