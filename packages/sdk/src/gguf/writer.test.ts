import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readGGUF, readInto, readTensorData, streamTensor } from './reader.js';
import { metadataFromFile, writeGGUF, type GGUFMetadataEntry } from './writer.js';
import { dequantize, quantize } from './quantize.js';
import { GGMLType, GGUFValueType } from './types.js';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinfer-gguf-writer-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const V = GGUFValueType;
const METADATA: GGUFMetadataEntry[] = [
  { key: 'general.architecture', type: V.STRING, value: 'llama' },
  { key: 'u8', type: V.UINT8, value: 255 },
  { key: 'i8', type: V.INT8, value: -128 },
  { key: 'u16', type: V.UINT16, value: 65535 },
  { key: 'i16', type: V.INT16, value: -32768 },
  { key: 'u32', type: V.UINT32, value: 4294967295 },
  { key: 'i32', type: V.INT32, value: -2147483648 },
  { key: 'f32', type: V.FLOAT32, value: 0.1 },
  { key: 'f64', type: V.FLOAT64, value: 0.1 },
  { key: 'bool', type: V.BOOL, value: true },
  { key: 'u64.small', type: V.UINT64, value: 2 ** 53 - 1 },
  { key: 'u64.big', type: V.UINT64, value: 2n ** 64n - 1n },
  { key: 'i64.neg', type: V.INT64, value: -(2n ** 63n) },
  { key: 'unicode', type: V.STRING, value: 'héllo ▁wörld 🦙' },
  { key: 'empty', type: V.STRING, value: '' },
  { key: 'arr.str', type: V.ARRAY, value: ['<s>', '', '▁a', '🦙'] },
  { key: 'arr.f32', type: V.ARRAY, value: new Float32Array([1.5, -2, 0.25]) },
  { key: 'arr.i32', type: V.ARRAY, value: new Int32Array([1, -1, 6]) },
  { key: 'arr.u8', type: V.ARRAY, value: new Uint8Array([0, 7, 255]) },
  { key: 'arr.u64', type: V.ARRAY, value: new BigUint64Array([1n, 2n ** 64n - 1n]) },
  { key: 'arr.bool', type: V.ARRAY, value: [true, false, true] },
  { key: 'arr.empty', type: V.ARRAY, arrayType: V.INT32, value: new Int32Array(0) },
  { key: 'arr.nested', type: V.ARRAY, arrayType: V.ARRAY, value: [new Int16Array([1, 2]), new Int16Array([3])] },
  { key: 'arr.f64-from-numbers', type: V.ARRAY, arrayType: V.FLOAT64, value: [1.25, -3] },
];

function ramp(n: number, scale = 1): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sin(i * 0.37) * scale;
  return x;
}

describe('writeGGUF -> readGGUF round trip', () => {
  it('preserves every metadata type, tensor shape, type and byte', async () => {
    const file = path.join(dir, 'rt.gguf');
    const a = ramp(64 * 3);
    const q8 = quantize(GGMLType.Q8_0, ramp(64 * 4, 2));
    const q4 = quantize(GGMLType.Q4_0, ramp(32 * 5, 3));
    const f16 = quantize(GGMLType.F16, ramp(7));
    const res = await writeGGUF(file, {
      metadata: METADATA,
      tensors: [
        { name: 'a.f32', dims: [64, 3], type: GGMLType.F32, data: new Uint8Array(a.buffer) },
        // chunked generator data, split at an odd place
        { name: 'b.q8', dims: [64, 4], type: GGMLType.Q8_0, data: () => [q8.subarray(0, 100), q8.subarray(100)] },
        { name: 'c.q4', dims: [32, 5, 1], type: GGMLType.Q4_0, data: async () => q4 },
        { name: 'd.f16', dims: [7], type: GGMLType.F16, data: f16 },
      ],
    });
    const g = await readGGUF(file);
    expect(g.version).toBe(3);
    expect(g.fileSize).toBe(res.fileSize);
    expect(fs.statSync(file).size).toBe(res.fileSize);
    expect(g.alignment).toBe(32);
    expect(g.dataOffset).toBe(res.dataOffset);
    expect(g.dataOffset % 32).toBe(0);

    const m = g.metadata;
    expect(m['general.architecture']).toBe('llama');
    expect([m.u8, m.i8, m.u16, m.i16, m.u32, m.i32]).toEqual([255, -128, 65535, -32768, 4294967295, -2147483648]);
    expect(m.f32).toBe(Math.fround(0.1));
    expect(m.f64).toBe(0.1);
    expect(m.bool).toBe(true);
    expect(m['u64.small']).toBe(2 ** 53 - 1); // safe -> number
    expect(m['u64.big']).toBe(2n ** 64n - 1n); // unsafe -> bigint
    expect(m['i64.neg']).toBe(-(2n ** 63n));
    expect(m.unicode).toBe('héllo ▁wörld 🦙');
    expect(m.empty).toBe('');
    expect(m['arr.str']).toEqual(['<s>', '', '▁a', '🦙']);
    expect(m['arr.f32']).toBeInstanceOf(Float32Array);
    expect(Array.from(m['arr.f32'] as Float32Array)).toEqual([1.5, -2, 0.25]);
    expect(m['arr.i32']).toBeInstanceOf(Int32Array);
    expect(Array.from(m['arr.i32'] as Int32Array)).toEqual([1, -1, 6]);
    expect(Array.from(m['arr.u8'] as Uint8Array)).toEqual([0, 7, 255]);
    expect(Array.from(m['arr.u64'] as BigUint64Array)).toEqual([1n, 2n ** 64n - 1n]);
    expect(m['arr.bool']).toEqual([true, false, true]);
    expect((m['arr.empty'] as Int32Array).length).toBe(0);
    expect((m['arr.nested'] as Int16Array[]).map((x) => Array.from(x))).toEqual([[1, 2], [3]]);
    expect(Array.from(m['arr.f64-from-numbers'] as Float64Array)).toEqual([1.25, -3]);
    expect(g.metadataTypes!['u16']).toEqual({ type: V.UINT16 });
    expect(g.metadataTypes!['arr.str']).toEqual({ type: V.ARRAY, arrayType: V.STRING });

    expect(g.tensors.map((t) => [t.name, t.dims, t.type, t.nElements, t.size])).toEqual([
      ['a.f32', [64, 3], GGMLType.F32, 192, 768],
      ['b.q8', [64, 4], GGMLType.Q8_0, 256, 8 * 34],
      ['c.q4', [32, 5, 1], GGMLType.Q4_0, 160, 5 * 18],
      ['d.f16', [7], GGMLType.F16, 7, 14],
    ]);
    for (const t of g.tensors) {
      expect(t.offset % 32).toBe(0);
      expect(t.offset + t.size).toBeLessThanOrEqual(g.fileSize);
    }
    expect(Array.from(dequantize(GGMLType.F32, await readTensorData(g, g.tensors[0]), 192))).toEqual(Array.from(a));
    expect(await readTensorData(g, g.tensors[1])).toEqual(q8);
    expect(await readTensorData(g, g.tensors[2])).toEqual(q4);
    expect(await readTensorData(g, g.tensors[3])).toEqual(f16);

    // sync chunked paths used by the loader
    const fd = fs.openSync(file, 'r');
    try {
      const into = new Uint8Array(q8.length);
      readInto(fd, g.tensors[1].offset, into);
      expect(into).toEqual(q8);
      const parts: number[] = [];
      const joined = new Uint8Array(q8.length);
      streamTensor(fd, g.tensors[1], 50, (chunk, off) => {
        parts.push(chunk.length);
        joined.set(chunk, off);
      });
      expect(parts).toEqual([50, 50, 50, 50, 50, 22]);
      expect(joined).toEqual(q8);
      let calls = 0;
      streamTensor(fd, g.tensors[1], 50, () => ++calls < 2);
      expect(calls).toBe(2);
    } finally {
      fs.closeSync(fd);
    }

    // metadataFromFile + writeGGUF reproduce the header byte for byte
    const copy = path.join(dir, 'copy.gguf');
    await writeGGUF(copy, {
      metadata: metadataFromFile(g),
      tensors: await Promise.all(g.tensors.map(async (t) => ({ name: t.name, dims: t.dims, type: t.type, data: await readTensorData(g, t) }))),
    });
    expect(fs.readFileSync(copy)).toEqual(fs.readFileSync(file));
  });

  it('honours a custom alignment and records it', async () => {
    const file = path.join(dir, 'align.gguf');
    await writeGGUF(file, {
      alignment: 256,
      metadata: [{ key: 'general.architecture', type: V.STRING, value: 'llama' }],
      tensors: [
        { name: 'x', dims: [3], type: GGMLType.F32, data: new Uint8Array(12) },
        { name: 'y', dims: [5], type: GGMLType.F32, data: new Uint8Array(20) },
      ],
    });
    const g = await readGGUF(file);
    expect(g.alignment).toBe(256);
    expect(g.metadata['general.alignment']).toBe(256);
    expect(g.tensors.map((t) => t.offset % 256)).toEqual([0, 0]);
    expect(g.tensors[1].offset - g.tensors[0].offset).toBe(256);
  });

  it('writes a file with no tensors (vocab-only style)', async () => {
    const file = path.join(dir, 'vocab-only.gguf');
    await writeGGUF(file, { metadata: [{ key: 'tokenizer.ggml.tokens', type: V.ARRAY, value: ['a', 'b'] }], tensors: [] });
    const g = await readGGUF(file);
    expect(g.tensors).toEqual([]);
    expect(g.metadata['tokenizer.ggml.tokens']).toEqual(['a', 'b']);
  });

  it('rejects invalid input without leaving a partial file', async () => {
    const file = path.join(dir, 'bad.gguf');
    const code = (p: Promise<unknown>) => p.then(() => 'resolved', (e) => (e as { code: string }).code);
    const t = (o: object) => ({ name: 't', dims: [32], type: GGMLType.F32, data: new Uint8Array(128), ...o });
    expect(await code(writeGGUF(file, { metadata: [], tensors: [t({ data: new Uint8Array(127) })] }))).toBe('E_INVALID_ARGUMENT');
    expect(await code(writeGGUF(file, { metadata: [], tensors: [t({ data: () => [new Uint8Array(100), new Uint8Array(100)] })] }))).toBe('E_INVALID_ARGUMENT');
    expect(await code(writeGGUF(file, { metadata: [], tensors: [t({ type: GGMLType.Q8_0, dims: [33] })] }))).toBe('E_BLOCK_SIZE');
    expect(await code(writeGGUF(file, { metadata: [], tensors: [t({ type: 99 })] }))).toBe('E_UNSUPPORTED_TYPE');
    expect(await code(writeGGUF(file, { metadata: [], tensors: [t({}), t({})] }))).toBe('E_INVALID_ARGUMENT');
    expect(await code(writeGGUF(file, { metadata: [], tensors: [t({ dims: [1, 1, 1, 1, 32] })] }))).toBe('E_INVALID_ARGUMENT');
    expect(await code(writeGGUF(file, { metadata: [{ key: 'k', type: V.UINT8, value: 256 }], tensors: [] }))).toBe('E_INVALID_ARGUMENT');
    expect(await code(writeGGUF(file, { metadata: [{ key: 'k', type: V.INT32, value: 1.5 }], tensors: [] }))).toBe('E_INVALID_ARGUMENT');
    expect(await code(writeGGUF(file, { metadata: [{ key: 'k', type: V.STRING, value: 3 }], tensors: [] }))).toBe('E_INVALID_ARGUMENT');
    expect(await code(writeGGUF(file, { metadata: [{ key: 'k', type: V.ARRAY, value: [] }], tensors: [] }))).toBe('E_INVALID_ARGUMENT');
    expect(await code(writeGGUF(file, { metadata: [{ key: 'k', type: V.UINT32, value: 1 }, { key: 'k', type: V.UINT32, value: 2 }], tensors: [] }))).toBe('E_INVALID_ARGUMENT');
    expect(await code(writeGGUF(file, { metadata: [], tensors: [], alignment: 24 }))).toBe('E_INVALID_ARGUMENT');
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('bad.gguf'))).toEqual([]);
  });
});
