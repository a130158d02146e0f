/**
 * GGUF v3 writer (little-endian). The header (metadata and tensor infos) is built in memory — it is small — and the
 * tensor data is streamed: each tensor's bytes come from a callback that may return one buffer or a (sync or async)
 * iterable of chunks, so a multi-GB model never has to be resident. The file is written to a temporary name beside
 * the target and renamed into place only when complete.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { TwinferError } from '../errors.js';
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_MAX_DIMS } from './reader.js';
import { typeInfo, typeByteSize } from './type-info.js';
import { GGUFValueType, type GGUFFile, type GGUFValue } from './types.js';

export interface GGUFMetadataEntry {
  key: string;
  type: GGUFValueType;
  /** element type when type is ARRAY (inferred from typed arrays / string[] / boolean[] when omitted) */
  arrayType?: GGUFValueType;
  value: GGUFValue;
}

export type TensorChunks = Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

export interface GGUFWriteTensor {
  name: string;
  /** ggml order: dims[0] is the row length */
  dims: number[];
  type: number;
  /**
   * The tensor's bytes, or a callback producing them (called once, in file order, when they are written). A chunk
   * iterator may reuse one buffer: each chunk is fully written before the next is requested.
   */
  data: Uint8Array | (() => TensorChunks | Promise<TensorChunks>);
}

export interface GGUFWriteOptions {
  metadata: GGUFMetadataEntry[];
  tensors: GGUFWriteTensor[];
  /** data alignment (power of two, default 32); written as general.alignment when not 32 */
  alignment?: number;
  /** called after each tensor is written */
  onProgress?: (writtenBytes: number, totalBytes: number, tensor: string) => void;
}

export interface GGUFWriteResult {
  path: string;
  fileSize: number;
  dataOffset: number;
}

const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';

function invalid(message: string, details?: Record<string, unknown>): TwinferError {
  return new TwinferError('E_INVALID_ARGUMENT', `writeGGUF: ${message}`, details);
}

/** Growable little-endian byte sink for the header. */
class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;
  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.length + n) cap *= 2;
    const next = Buffer.alloc(cap);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u8(v: number) { this.ensure(1); this.buf.writeUInt8(v, this.length); this.length += 1; }
  i8(v: number) { this.ensure(1); this.buf.writeInt8(v, this.length); this.length += 1; }
  u16(v: number) { this.ensure(2); this.buf.writeUInt16LE(v, this.length); this.length += 2; }
  i16(v: number) { this.ensure(2); this.buf.writeInt16LE(v, this.length); this.length += 2; }
  u32(v: number) { this.ensure(4); this.buf.writeUInt32LE(v, this.length); this.length += 4; }
  i32(v: number) { this.ensure(4); this.buf.writeInt32LE(v, this.length); this.length += 4; }
  f32(v: number) { this.ensure(4); this.buf.writeFloatLE(v, this.length); this.length += 4; }
  f64(v: number) { this.ensure(8); this.buf.writeDoubleLE(v, this.length); this.length += 8; }
  u64(v: bigint) { this.ensure(8); this.buf.writeBigUInt64LE(v, this.length); this.length += 8; }
  i64(v: bigint) { this.ensure(8); this.buf.writeBigInt64LE(v, this.length); this.length += 8; }
  bytes(b: Uint8Array) { this.ensure(b.length); this.buf.set(b, this.length); this.length += b.length; }
  str(s: string) {
    const b = Buffer.from(s, 'utf8');
    this.u64(BigInt(b.length));
    this.bytes(b);
  }
  pad(alignment: number) {
    const n = (alignment - (this.length % alignment)) % alignment;
    this.ensure(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  result(): Buffer { return this.buf.subarray(0, this.length); }
}

const INT_RANGE: Partial<Record<GGUFValueType, [number, number]>> = {
  [GGUFValueType.UINT8]: [0, 0xff], [GGUFValueType.INT8]: [-0x80, 0x7f],
  [GGUFValueType.UINT16]: [0, 0xffff], [GGUFValueType.INT16]: [-0x8000, 0x7fff],
  [GGUFValueType.UINT32]: [0, 0xffffffff], [GGUFValueType.INT32]: [-0x80000000, 0x7fffffff],
};

function writeScalar(s: ByteSink, type: GGUFValueType, v: unknown, key: string): void {
  const range = INT_RANGE[type];
  if (range) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < range[0] || v > range[1]) {
      throw invalid(`metadata "${key}": ${String(v)} is not a valid ${GGUFValueType[type]}`, { key });
    }
  }
  switch (type) {
    case GGUFValueType.UINT8: return s.u8(v as number);
    case GGUFValueType.INT8: return s.i8(v as number);
    case GGUFValueType.UINT16: return s.u16(v as number);
    case GGUFValueType.INT16: return s.i16(v as number);
    case GGUFValueType.UINT32: return s.u32(v as number);
    case GGUFValueType.INT32: return s.i32(v as number);
    case GGUFValueType.FLOAT32:
    case GGUFValueType.FLOAT64:
      if (typeof v !== 'number') throw invalid(`metadata "${key}": ${String(v)} is not a number`, { key });
      return type === GGUFValueType.FLOAT32 ? s.f32(v) : s.f64(v);
    case GGUFValueType.UINT64:
    case GGUFValueType.INT64: {
      if (typeof v !== 'bigint' && !(typeof v === 'number' && Number.isInteger(v))) {
        throw invalid(`metadata "${key}": ${String(v)} is not an integer`, { key });
      }
      const b = BigInt(v);
      const ok = type === GGUFValueType.UINT64 ? b >= 0n && b < 1n << 64n : b >= -(1n << 63n) && b < 1n << 63n;
      if (!ok) throw invalid(`metadata "${key}": ${b} is out of range for ${GGUFValueType[type]}`, { key });
      return type === GGUFValueType.UINT64 ? s.u64(b) : s.i64(b);
    }
    case GGUFValueType.BOOL:
      if (typeof v !== 'boolean') throw invalid(`metadata "${key}": ${String(v)} is not a boolean`, { key });
      return s.u8(v ? 1 : 0);
    case GGUFValueType.STRING:
      if (typeof v !== 'string') throw invalid(`metadata "${key}": value is not a string`, { key });
      return s.str(v);
    default:
      throw invalid(`metadata "${key}": unknown value type ${type}`, { key, type });
  }
}

/** Element type implied by an array value when the entry does not say. */
function inferArrayType(v: unknown): GGUFValueType | undefined {
  if (v instanceof Uint8Array) return GGUFValueType.UINT8;
  if (v instanceof Int8Array) return GGUFValueType.INT8;
  if (v instanceof Uint16Array) return GGUFValueType.UINT16;
  if (v instanceof Int16Array) return GGUFValueType.INT16;
  if (v instanceof Uint32Array) return GGUFValueType.UINT32;
  if (v instanceof Int32Array) return GGUFValueType.INT32;
  if (v instanceof Float32Array) return GGUFValueType.FLOAT32;
  if (v instanceof Float64Array) return GGUFValueType.FLOAT64;
  if (v instanceof BigUint64Array) return GGUFValueType.UINT64;
  if (v instanceof BigInt64Array) return GGUFValueType.INT64;
  if (Array.isArray(v) && v.length > 0) {
    if (typeof v[0] === 'string') return GGUFValueType.STRING;
    if (typeof v[0] === 'boolean') return GGUFValueType.BOOL;
  }
  return undefined;
}

function writeValue(s: ByteSink, type: GGUFValueType, arrayType: GGUFValueType | undefined, v: unknown, key: string, depth: number): void {
  if (type !== GGUFValueType.ARRAY) return writeScalar(s, type, v, key);
  if (depth > 8) throw invalid(`metadata "${key}": arrays nested too deep`, { key });
  const et = arrayType ?? inferArrayType(v);
  if (et === undefined) throw invalid(`metadata "${key}": cannot tell the element type of the array; set arrayType`, { key });
  if (!Array.isArray(v) && !ArrayBuffer.isView(v)) throw invalid(`metadata "${key}": value is not an array`, { key });
  const arr = v as ArrayLike<unknown>;
  s.u32(et);
  s.u64(BigInt(arr.length));
  if (et === GGUFValueType.STRING) {
    // Fast path for vocabularies (100k+ strings): no per-element key formatting.
    for (let i = 0; i < arr.length; i++) {
      const e = arr[i];
      if (typeof e !== 'string') throw invalid(`metadata "${key}[${i}]": value is not a string`, { key });
      s.str(e);
    }
    return;
  }
  if (ArrayBuffer.isView(v) && inferArrayType(v) === et && LITTLE_ENDIAN_HOST) {
    // A typed array of exactly the element type: its bytes are the encoding.
    const tv = v as unknown as ArrayBufferView;
    s.bytes(new Uint8Array(tv.buffer, tv.byteOffset, tv.byteLength));
    return;
  }
  for (let i = 0; i < arr.length; i++) writeValue(s, et, undefined, arr[i], `${key}[${i}]`, depth + 1);
}

/**
 * Metadata entries for (a subset of) a file read by readGGUF, with their stored types, for copying values verbatim
 * (e.g. a tokenizer). `keys` filters by predicate.
 */
export function metadataFromFile(file: GGUFFile, keys: (key: string) => boolean = () => true): GGUFMetadataEntry[] {
  const out: GGUFMetadataEntry[] = [];
  for (const [key, value] of Object.entries(file.metadata)) {
    if (!keys(key)) continue;
    const t = file.metadataTypes?.[key];
    if (!t) throw invalid(`metadata "${key}" has no recorded type (file not produced by readGGUF?)`, { key });
    out.push({ key, type: t.type, arrayType: t.arrayType, value });
  }
  return out;
}

async function* chunksOf(src: TensorChunks): AsyncGenerator<Uint8Array> {
  if (src instanceof Uint8Array) {
    yield src;
    return;
  }
  if (Symbol.asyncIterator in (src as object)) {
    for await (const c of src as AsyncIterable<Uint8Array>) yield c;
    return;
  }
  for (const c of src as Iterable<Uint8Array>) yield c;
}

/** Write a GGUF v3 file. Tensor data is laid out in the order given, each tensor aligned. */
export async function writeGGUF(path: string, options: GGUFWriteOptions): Promise<GGUFWriteResult> {
  const alignment = options.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0 || alignment > 0x80000000) {
    throw invalid(`alignment must be a power of two, got ${alignment}`);
  }

  const metadata = [...options.metadata];
  const keys = new Set<string>();
  for (const m of metadata) {
    if (typeof m.key !== 'string' || m.key.length === 0) throw invalid('metadata key must be a non-empty string');
    if (keys.has(m.key)) throw invalid(`duplicate metadata key "${m.key}"`, { key: m.key });
    keys.add(m.key);
  }
  const alignEntry = metadata.find((m) => m.key === 'general.alignment');
  if (alignEntry) {
    if (alignEntry.type !== GGUFValueType.UINT32 || alignEntry.value !== alignment) {
      throw invalid(`general.alignment (${String(alignEntry.value)}) disagrees with the alignment option (${alignment})`);
    }
  } else if (alignment !== GGUF_DEFAULT_ALIGNMENT) {
    metadata.push({ key: 'general.alignment', type: GGUFValueType.UINT32, value: alignment });
  }

  // Tensor layout.
  const names = new Set<string>();
  let rel = 0;
  const layout = options.tensors.map((t) => {
    if (typeof t.name !== 'string' || t.name.length === 0) throw invalid('tensor name must be a non-empty string');
    if (names.has(t.name)) throw invalid(`duplicate tensor name "${t.name}"`, { tensor: t.name });
    names.add(t.name);
    const info = typeInfo(t.type);
    if (!info) throw new TwinferError('E_UNSUPPORTED_TYPE', `writeGGUF: tensor "${t.name}" has unknown ggml type id ${t.type}`, { tensor: t.name, type: t.type });
    if (t.dims.length < 1 || t.dims.length > GGUF_MAX_DIMS) throw invalid(`tensor "${t.name}" must have 1..${GGUF_MAX_DIMS} dims, got ${t.dims.length}`);
    let n = 1;
    for (const d of t.dims) {
      if (!Number.isSafeInteger(d) || d < 0) throw invalid(`tensor "${t.name}" has invalid dim ${d}`, { tensor: t.name });
      n *= d;
    }
    if (!Number.isSafeInteger(n)) throw invalid(`tensor "${t.name}" has too many elements`, { tensor: t.name });
    if (t.dims[0] % info.blockSize !== 0) {
      throw new TwinferError('E_BLOCK_SIZE', `writeGGUF: tensor "${t.name}" row length ${t.dims[0]} is not a multiple of the ${info.name} block size ${info.blockSize}`, {
        tensor: t.name, rowLength: t.dims[0], blockSize: info.blockSize,
      });
    }
    const size = typeByteSize(info, n);
    const entry = { t, size, rel };
    rel += Math.ceil(size / alignment) * alignment;
    return entry;
  });
  const dataBytes = rel;

  const s = new ByteSink();
  s.u32(GGUF_MAGIC);
  s.u32(3);
  s.u64(BigInt(layout.length));
  s.u64(BigInt(metadata.length));
  for (const m of metadata) {
    s.str(m.key);
    s.u32(m.type);
    writeValue(s, m.type, m.arrayType, m.value, m.key, 0);
  }
  for (const { t, rel: r } of layout) {
    s.str(t.name);
    s.u32(t.dims.length);
    for (const d of t.dims) s.u64(BigInt(d));
    s.u32(t.type);
    s.u64(BigInt(r));
  }
  s.pad(alignment);
  const header = s.result();
  const dataOffset = header.length;
  const fileSize = dataOffset + dataBytes;

  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(tmp, 'w');
  } catch (e) {
    throw invalid(`cannot create ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { path });
  }
  let ok = false;
  try {
    let pos = 0;
    const writeAll = async (b: Uint8Array) => {
      let done = 0;
      while (done < b.length) {
        const { bytesWritten } = await fh.write(b, done, b.length - done, pos + done);
        done += bytesWritten;
      }
      pos += b.length;
    };
    await writeAll(header);
    const zeros = new Uint8Array(alignment);
    for (const { t, size } of layout) {
      const src = typeof t.data === 'function' ? await t.data() : t.data;
      let got = 0;
      for await (const chunk of chunksOf(src)) {
        got += chunk.length;
        if (got > size) break;
        await writeAll(chunk);
      }
      if (got !== size) {
        throw invalid(`tensor "${t.name}" data is ${got > size ? 'longer' : 'shorter'} than the ${size} bytes its shape and type need`, {
          tensor: t.name, expected: size,
        });
      }
      const padding = (alignment - (size % alignment)) % alignment;
      if (padding) await writeAll(zeros.subarray(0, padding));
      options.onProgress?.(pos - dataOffset, dataBytes, t.name);
    }
    await fh.close();
    await fs.promises.rename(tmp, path);
    ok = true;
  } finally {
    if (!ok) {
      await fh.close().catch(() => undefined);
      await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
    }
  }
  return { path, fileSize, dataOffset };
}
