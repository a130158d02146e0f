import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allTypeInfos, readGGUF, readInto, typeInfo } from './reader.js';
import { writeGGUF } from './writer.js';
import { GGMLType, GGUFValueType } from './types.js';
import { TwinferError } from '../errors.js';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinfer-gguf-reader-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/**
 * Hand-assembles GGUF bytes, independent of writeGGUF, so malformed files can be made field by field.
 */
class Raw {
  parts: Buffer[] = [];
  u32(v: number) { const b = Buffer.alloc(4); b.writeUInt32LE(v); this.parts.push(b); return this; }
  u64(v: bigint | number) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.parts.push(b); return this; }
  bytes(b: Uint8Array) { this.parts.push(Buffer.from(b)); return this; }
  str(s: string) { const b = Buffer.from(s); return this.u64(b.length).bytes(b); }
  kvU32(key: string, v: number) { return this.str(key).u32(GGUFValueType.UINT32).u32(v); }
  tensor(name: string, dims: Array<number | bigint>, type: number, offset: number | bigint) {
    this.str(name).u32(dims.length);
    for (const d of dims) this.u64(d);
    return this.u32(type).u64(offset);
  }
  padTo(alignment: number) {
    const len = this.length;
    return this.bytes(new Uint8Array((alignment - (len % alignment)) % alignment));
  }
  get length() { return this.parts.reduce((n, p) => n + p.length, 0); }
  buffer() { return Buffer.concat(this.parts); }
}

function header(nTensors: number | bigint, nKv: number | bigint, version = 3): Raw {
  return new Raw().bytes(Buffer.from('GGUF')).u32(version).u64(nTensors).u64(nKv);
}

let counter = 0;
function put(bytes: Uint8Array): string {
  const p = path.join(dir, `f${counter++}.gguf`);
  fs.writeFileSync(p, bytes);
  return p;
}

async function errorOf(p: string): Promise<TwinferError> {
  try {
    await readGGUF(p);
  } catch (e) {
    expect(e).toBeInstanceOf(TwinferError);
    return e as TwinferError;
  }
  throw new Error(`readGGUF(${p}) did not throw`);
}

/** One F32 tensor of 4 elements plus a Q8_0 tensor of 64, with real data. */
function validFile(): Buffer {
  return validParts().buf;
}
function validParts(): { buf: Buffer; metaEnd: number; infoEnd: number } {
  const r = header(2, 2).kvU32('general.alignment', 32).str('general.architecture').u32(GGUFValueType.STRING).str('llama');
  const metaEnd = r.length;
  r.tensor('a', [4], GGMLType.F32, 0).tensor('b', [32, 2], GGMLType.Q8_0, 32);
  const infoEnd = r.length;
  r.padTo(32).bytes(new Uint8Array(32)).bytes(new Uint8Array(68));
  return { buf: r.buffer(), metaEnd, infoEnd };
}

describe('readGGUF on valid input', () => {
  it('parses a hand-made file', async () => {
    const buf = validFile();
    const g = await readGGUF(put(buf));
    expect(g.version).toBe(3);
    expect(g.tensors.map((t) => [t.name, t.size, t.offset - g.dataOffset])).toEqual([['a', 16, 0], ['b', 68, 32]]);
    expect(g.fileSize).toBe(buf.length);
  });

  it('accepts GGUF v2', async () => {
    const buf = validFile();
    buf.writeUInt32LE(2, 4);
    expect((await readGGUF(put(buf))).version).toBe(2);
  });

  it('knows the block geometry of the common types', () => {
    const g = (t: number) => { const i = typeInfo(t)!; return [i.name, i.blockSize, i.typeSize]; };
    expect(g(GGMLType.F32)).toEqual(['F32', 1, 4]);
    expect(g(GGMLType.F16)).toEqual(['F16', 1, 2]);
    expect(g(GGMLType.BF16)).toEqual(['BF16', 1, 2]);
    expect(g(GGMLType.Q4_0)).toEqual(['Q4_0', 32, 18]);
    expect(g(GGMLType.Q4_1)).toEqual(['Q4_1', 32, 20]);
    expect(g(GGMLType.Q5_0)).toEqual(['Q5_0', 32, 22]);
    expect(g(GGMLType.Q5_1)).toEqual(['Q5_1', 32, 24]);
    expect(g(GGMLType.Q8_0)).toEqual(['Q8_0', 32, 34]);
    expect(g(GGMLType.Q2_K)).toEqual(['Q2_K', 256, 84]);
    expect(g(GGMLType.Q3_K)).toEqual(['Q3_K', 256, 110]);
    expect(g(GGMLType.Q4_K)).toEqual(['Q4_K', 256, 144]);
    expect(g(GGMLType.Q5_K)).toEqual(['Q5_K', 256, 176]);
    expect(g(GGMLType.Q6_K)).toEqual(['Q6_K', 256, 210]);
    expect(g(GGMLType.Q8_K)).toEqual(['Q8_K', 256, 292]);
    expect(typeInfo(4)).toBeUndefined(); // removed Q4_2
    expect([typeInfo(GGMLType.Q8_1)?.typeSize, typeInfo(23)?.name, typeInfo(39)?.typeSize]).toEqual([36, 'IQ4_XS', 17]);
    expect(new Set(allTypeInfos().map((t) => t.id)).size).toBe(allTypeInfos().length);
  });
});

describe('readGGUF errors', () => {
  it('E_FILE_NOT_FOUND for a missing path or a directory', async () => {
    expect((await errorOf(path.join(dir, 'nope.gguf'))).code).toBe('E_FILE_NOT_FOUND');
    expect((await errorOf(dir)).code).toBe('E_FILE_NOT_FOUND');
  });

  it('E_NOT_GGUF for other files, empty files and short files', async () => {
    expect((await errorOf(put(Buffer.from('{"not": "gguf"} and some more text')))).code).toBe('E_NOT_GGUF');
    expect((await errorOf(put(new Uint8Array(0)))).code).toBe('E_NOT_GGUF');
    expect((await errorOf(put(Buffer.from('GG')))).code).toBe('E_NOT_GGUF');
  });

  it('E_GGUF_VERSION for v1, future versions and big-endian files', async () => {
    for (const v of [1, 4, 0x03000000]) {
      const buf = validFile();
      buf.writeUInt32LE(v, 4);
      const e = await errorOf(put(buf));
      expect(e.code).toBe('E_GGUF_VERSION');
      if (v === 0x03000000) expect(e.message).toMatch(/big-endian/);
    }
  });

  it('E_TRUNCATED when cut anywhere in the header, metadata or tensor infos', async () => {
    const { buf, metaEnd, infoEnd } = validParts();
    const cuts = [4, 6, 8, 15, 23, 24, 30, 40, 50, 60, 70, metaEnd - 1, metaEnd, metaEnd + 5, metaEnd + 12, infoEnd - 20, infoEnd - 8, infoEnd - 1];
    for (const cut of cuts) {
      const e = await errorOf(put(buf.subarray(0, cut)));
      expect([cut, e.code]).toEqual([cut, 'E_TRUNCATED']);
    }
  });

  it('E_TENSOR_OUT_OF_BOUNDS when data runs past the end, naming tensor and numbers', async () => {
    const buf = validFile();
    const e = await errorOf(put(buf.subarray(0, buf.length - 1)));
    expect(e.code).toBe('E_TENSOR_OUT_OF_BOUNDS');
    expect(e.message).toContain('"b"');
    expect(e.message).toContain(String(buf.length - 1));
    expect(e.details).toMatchObject({ tensor: 'b', size: 68, fileSize: buf.length - 1 });

    // a huge offset (but aligned) is out of bounds, not an allocation
    const r = header(1, 0).tensor('w', [32], GGMLType.F32, 2n ** 60n).padTo(32).bytes(new Uint8Array(128));
    const e2 = await errorOf(put(r.buffer()));
    expect(e2.code).toBe('E_TENSOR_OUT_OF_BOUNDS');
    expect(e2.message).toContain('"w"');
  });

  it('E_UNSUPPORTED_TYPE names the tensor and the type id', async () => {
    const r = header(1, 0).tensor('mystery', [32], 99, 0).padTo(32).bytes(new Uint8Array(128));
    const e = await errorOf(put(r.buffer()));
    expect(e.code).toBe('E_UNSUPPORTED_TYPE');
    expect(e.message).toContain('"mystery"');
    expect(e.message).toContain('99');
  });

  it('E_BLOCK_SIZE when a row is not a multiple of the block', async () => {
    const r = header(1, 0).tensor('odd', [48, 2], GGMLType.Q4_0, 0).padTo(32).bytes(new Uint8Array(256));
    const e = await errorOf(put(r.buffer()));
    expect(e.code).toBe('E_BLOCK_SIZE');
    expect(e.message).toContain('"odd"');
    expect(e.message).toContain('48');
  });

  it('rejects absurd counts quickly without allocating', async () => {
    const cases: Array<[string, Buffer, string]> = [
      ['n_tensors 2^63', header(2n ** 63n, 0).buffer(), 'E_BAD_METADATA'],
      ['n_kv 2^64-1', header(0, 2n ** 64n - 1n).buffer(), 'E_BAD_METADATA'],
      ['n_kv slightly more than fits', header(0, 3).kvU32('a', 1).buffer(), 'E_TRUNCATED'],
      ['key length 2^62', header(0, 1).u64(2n ** 62n).bytes(new Uint8Array(64)).buffer(), 'E_BAD_METADATA'],
      ['string value length 2^40', header(0, 1).str('k').u32(GGUFValueType.STRING).u64(2n ** 40n).bytes(new Uint8Array(64)).buffer(), 'E_BAD_METADATA'],
      ['array length 2^61 of u32',
        header(0, 1).str('k').u32(GGUFValueType.ARRAY).u32(GGUFValueType.UINT32).u64(2n ** 61n).bytes(new Uint8Array(64)).buffer(), 'E_BAD_METADATA'],
      ['array length 2^40 of strings',
        header(0, 1).str('k').u32(GGUFValueType.ARRAY).u32(GGUFValueType.STRING).u64(2n ** 40n).bytes(new Uint8Array(64)).buffer(), 'E_BAD_METADATA'],
      ['array of 1000 u32 in a short file',
        header(0, 1).str('k').u32(GGUFValueType.ARRAY).u32(GGUFValueType.UINT32).u64(1000).bytes(new Uint8Array(3000)).buffer(), 'E_TRUNCATED'],
      ['string value length 2^30 in a short file', header(0, 1).str('k').u32(GGUFValueType.STRING).u64(2n ** 30n).bytes(new Uint8Array(64)).buffer(), 'E_TRUNCATED'],
      ['n_tensors 10^9 in a short file', header(1e9, 0).buffer(), 'E_TRUNCATED'],
      ['dims product over 2^53', header(1, 0).tensor('big', [2n ** 30n, 2n ** 30n], GGMLType.F32, 0).padTo(32).buffer(), 'E_BAD_METADATA'],
      ['single dim 2^63', header(1, 0).tensor('big', [2n ** 63n], GGMLType.F32, 0).padTo(32).buffer(), 'E_BAD_METADATA'],
      ['5 dims', header(1, 0).tensor('t', [1, 1, 1, 1, 32], GGMLType.F32, 0).padTo(32).bytes(new Uint8Array(128)).buffer(), 'E_BAD_METADATA'],
      ['unknown value type', header(0, 1).str('k').u32(77).u32(0).buffer(), 'E_BAD_METADATA'],
      ['bool byte 2', header(0, 1).str('k').u32(GGUFValueType.BOOL).bytes(new Uint8Array([2])).buffer(), 'E_BAD_METADATA'],
      ['duplicate key', header(0, 2).kvU32('k', 1).kvU32('k', 2).buffer(), 'E_BAD_METADATA'],
      ['duplicate tensor', header(2, 0).tensor('t', [8], 0, 0).tensor('t', [8], 0, 32).padTo(32).bytes(new Uint8Array(64)).buffer(), 'E_BAD_METADATA'],
      ['misaligned tensor offset', header(1, 0).tensor('t', [8], 0, 4).padTo(32).bytes(new Uint8Array(64)).buffer(), 'E_BAD_METADATA'],
      ['alignment 0', header(0, 1).kvU32('general.alignment', 0).buffer(), 'E_BAD_METADATA'],
      ['alignment 48', header(0, 1).kvU32('general.alignment', 48).buffer(), 'E_BAD_METADATA'],
    ];
    for (const [what, bytes, code] of cases) {
      const t0 = performance.now();
      const e = await errorOf(put(bytes));
      expect([what, e.code]).toEqual([what, code]);
      expect(performance.now() - t0).toBeLessThan(1000);
    }
  });

  it('stays bounded on a deeply nested array', async () => {
    const r = header(0, 1).str('k').u32(GGUFValueType.ARRAY);
    for (let i = 0; i < 20; i++) r.u32(GGUFValueType.ARRAY).u64(1);
    r.u32(GGUFValueType.UINT8).u64(1).bytes(new Uint8Array([1]));
    expect((await errorOf(put(r.buffer()))).code).toBe('E_BAD_METADATA');
  });
});

describe('readInto', () => {
  it('fills the buffer across partial reads and reports a short file', async () => {
    const p = path.join(dir, 'big.gguf');
    await writeGGUF(p, { metadata: [], tensors: [{ name: 'x', dims: [1 << 20], type: GGMLType.F32, data: () => {
      const b = new Uint8Array(4 << 20);
      for (let i = 0; i < b.length; i++) b[i] = i & 0xff;
      return b;
    } }] });
    const g = await readGGUF(p);
    const fd = fs.openSync(p, 'r');
    try {
      const t = new Uint8Array(4 << 20);
      readInto(fd, g.tensors[0].offset, t);
      expect(t[12345]).toBe(12345 & 0xff);
      expect(t[t.length - 1]).toBe(0xff);
      expect(() => readInto(fd, g.fileSize - 10, new Uint8Array(20))).toThrow(expect.objectContaining({ code: 'E_TRUNCATED' }));
    } finally {
      fs.closeSync(fd);
    }
  });
});
