/**
 * GGUF reader: parses the header, the metadata key/values and the tensor infos of a GGUF v2/v3 file (little-endian)
 * with bounded, buffered reads. The data section is never read here; `readInto` / `streamTensor` /
 * `readTensorData` read tensor bytes on demand.
 *
 * 64-bit integers: a scalar UINT64/INT64 value is returned as a `number` when it is a safe integer
 * (|v| <= 2^53 - 1) and as a `bigint` otherwise; arrays of them are always BigUint64Array/BigInt64Array.
 * `file.metadataTypes[key]` keeps the stored GGUF type of every value so that it can be written back verbatim.
 *
 * Every count in the file is checked against the bytes the file could still hold before anything is allocated, so
 * a corrupt or hostile file fails with a TwinferError instead of allocating gigabytes or looping for ever.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { TwinferError } from '../errors.js';
import { typeByteSize, typeInfo, typeName } from './type-info.js';
import { GGUFValueType, type GGUFFile, type GGUFMetadataType, type GGUFTensorInfo, type GGUFValue } from './types.js';

export { typeInfo, typeName, allTypeInfos, typeByteSize, type GGMLTypeInfo } from './type-info.js';

/** "GGUF" read as a little-endian uint32. */
export const GGUF_MAGIC = 0x46554747;
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS */
export const GGUF_MAX_DIMS = 4;

const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';
const CHUNK = 1 << 20;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Bytes of one scalar of each fixed-size value type (strings and arrays are variable). */
const SCALAR_SIZE: Partial<Record<GGUFValueType, number>> = {
  [GGUFValueType.UINT8]: 1, [GGUFValueType.INT8]: 1, [GGUFValueType.BOOL]: 1,
  [GGUFValueType.UINT16]: 2, [GGUFValueType.INT16]: 2,
  [GGUFValueType.UINT32]: 4, [GGUFValueType.INT32]: 4, [GGUFValueType.FLOAT32]: 4,
  [GGUFValueType.UINT64]: 8, [GGUFValueType.INT64]: 8, [GGUFValueType.FLOAT64]: 8,
};

/**
 * A forward-only cursor over a file handle that keeps a window of bytes in memory. `need(n)` guarantees n readable
 * bytes at `pos` or throws E_TRUNCATED naming what was being read.
 */
class Cursor {
  private buf = Buffer.alloc(0);
  /** file offset of buf[0] */
  private bufStart = 0;
  /** file offset of the next byte to consume */
  pos = 0;

  constructor(private readonly fh: fs.promises.FileHandle, readonly fileSize: number, readonly path: string) {}

  get remaining(): number {
    return this.fileSize - this.pos;
  }

  private truncated(what: string, n: number): TwinferError {
    return new TwinferError(
      'E_TRUNCATED',
      `GGUF file ${this.path} is cut short: reading ${what} needs ${n} bytes at offset ${this.pos} but the file has ${this.fileSize} bytes`,
      { path: this.path, offset: this.pos, needed: n, fileSize: this.fileSize, what },
    );
  }

  /** Make sure n bytes from pos are in the window. */
  async need(n: number, what: string): Promise<void> {
    if (n > this.remaining) throw this.truncated(what, n);
    const have = this.bufStart + this.buf.length - this.pos;
    if (have >= n) return;
    // Refill: keep the unread tail and read at least a chunk (or exactly what is needed for large strings/arrays,
    // which is bounded by the file size checked above).
    const want = Math.min(Math.max(n, CHUNK), this.remaining);
    const next = Buffer.allocUnsafe(want);
    const keep = Math.max(0, have);
    if (keep > 0) this.buf.copy(next, 0, this.pos - this.bufStart, this.pos - this.bufStart + keep);
    let filled = keep;
    while (filled < want) {
      const { bytesRead } = await this.fh.read(next, filled, want - filled, this.pos + filled);
      if (bytesRead === 0) throw this.truncated(what, n); // the file shrank while we read it
      filled += bytesRead;
    }
    this.buf = next;
    this.bufStart = this.pos;
  }

  private at(): number {
    return this.pos - this.bufStart;
  }

  async u8(what: string): Promise<number> {
    await this.need(1, what);
    const v = this.buf.readUInt8(this.at());
    this.pos += 1;
    return v;
  }
  async i8(what: string): Promise<number> {
    await this.need(1, what);
    const v = this.buf.readInt8(this.at());
    this.pos += 1;
    return v;
  }
  async u16(what: string): Promise<number> {
    await this.need(2, what);
    const v = this.buf.readUInt16LE(this.at());
    this.pos += 2;
    return v;
  }
  async i16(what: string): Promise<number> {
    await this.need(2, what);
    const v = this.buf.readInt16LE(this.at());
    this.pos += 2;
    return v;
  }
  async u32(what: string): Promise<number> {
    await this.need(4, what);
    const v = this.buf.readUInt32LE(this.at());
    this.pos += 4;
    return v;
  }
  async i32(what: string): Promise<number> {
    await this.need(4, what);
    const v = this.buf.readInt32LE(this.at());
    this.pos += 4;
    return v;
  }
  async f32(what: string): Promise<number> {
    await this.need(4, what);
    const v = this.buf.readFloatLE(this.at());
    this.pos += 4;
    return v;
  }
  async f64(what: string): Promise<number> {
    await this.need(8, what);
    const v = this.buf.readDoubleLE(this.at());
    this.pos += 8;
    return v;
  }
  async u64(what: string): Promise<bigint> {
    await this.need(8, what);
    const v = this.buf.readBigUInt64LE(this.at());
    this.pos += 8;
    return v;
  }
  async i64(what: string): Promise<bigint> {
    await this.need(8, what);
    const v = this.buf.readBigInt64LE(this.at());
    this.pos += 8;
    return v;
  }
  /** Copy n bytes (n already validated against the file size) into a fresh, aligned ArrayBuffer. */
  async bytes(n: number, what: string): Promise<Uint8Array> {
    await this.need(n, what);
    const out = new Uint8Array(n);
    out.set(this.buf.subarray(this.at(), this.at() + n));
    this.pos += n;
    return out;
  }
  /**
   * Synchronous fast path for the common case of a short string already in the window (vocabularies hold 100k+
   * of them): returns undefined when the length prefix or the bytes are not buffered or the length is suspect,
   * and the caller falls back to the checked async path.
   */
  strSync(): string | undefined {
    const at = this.pos - this.bufStart;
    if (at + 8 > this.buf.length) return undefined;
    const hi = this.buf.readUInt32LE(at + 4);
    const len = this.buf.readUInt32LE(at);
    if (hi !== 0 || at + 8 + len > this.buf.length) return undefined;
    const s = this.buf.toString('utf8', at + 8, at + 8 + len);
    this.pos += 8 + len;
    return s;
  }
  async utf8(n: number, what: string): Promise<string> {
    await this.need(n, what);
    const s = this.buf.toString('utf8', this.at(), this.at() + n);
    this.pos += n;
    return s;
  }
}

function badMetadata(path: string, message: string, details: Record<string, unknown> = {}): TwinferError {
  return new TwinferError('E_BAD_METADATA', `GGUF file ${path}: ${message}`, { path, ...details });
}

/** No GGUF file (or shard) comes near 1 TiB: a count implying more is garbage, not a cut-off download. */
const IMPLAUSIBLE_BYTES = 2n ** 40n;

/**
 * Validate a 64-bit count read from the file: `count * minBytesEach` must fit in what is left of the file.
 * A count implying a terabyte or more is bad metadata; a plausible one that runs past the end means the file was
 * cut short (the usual case for an interrupted download), so it is reported as truncation.
 */
function checkCount(c: Cursor, count: bigint, minBytesEach: number, what: string): number {
  const need = count * BigInt(minBytesEach);
  if (need >= IMPLAUSIBLE_BYTES) {
    throw badMetadata(c.path, `${what} is ${count}, implausibly large (the file has ${c.fileSize} bytes)`, { what, count: count.toString() });
  }
  if (need > BigInt(c.remaining)) {
    throw new TwinferError(
      'E_TRUNCATED',
      `GGUF file ${c.path} is cut short: ${what} is ${count} (at least ${need} bytes) but only ${c.remaining} bytes remain after offset ${c.pos}`,
      { path: c.path, offset: c.pos, what, count: count.toString(), fileSize: c.fileSize },
    );
  }
  return Number(count);
}

async function readString(c: Cursor, what: string): Promise<string> {
  const len = checkCount(c, await c.u64(`${what} length`), 1, `${what} length`);
  return c.utf8(len, what);
}

function u64ToValue(v: bigint): number | bigint {
  return v <= MAX_SAFE ? Number(v) : v;
}
function i64ToValue(v: bigint): number | bigint {
  return v <= MAX_SAFE && v >= -MAX_SAFE ? Number(v) : v;
}

async function readScalar(c: Cursor, type: GGUFValueType, what: string): Promise<GGUFValue> {
  switch (type) {
    case GGUFValueType.UINT8: return c.u8(what);
    case GGUFValueType.INT8: return c.i8(what);
    case GGUFValueType.UINT16: return c.u16(what);
    case GGUFValueType.INT16: return c.i16(what);
    case GGUFValueType.UINT32: return c.u32(what);
    case GGUFValueType.INT32: return c.i32(what);
    case GGUFValueType.FLOAT32: return c.f32(what);
    case GGUFValueType.FLOAT64: return c.f64(what);
    case GGUFValueType.UINT64: return u64ToValue(await c.u64(what));
    case GGUFValueType.INT64: return i64ToValue(await c.i64(what));
    case GGUFValueType.BOOL: {
      const b = await c.u8(what);
      if (b > 1) throw badMetadata(c.path, `${what} is a bool with byte value ${b}`, { what });
      return b === 1;
    }
    case GGUFValueType.STRING: return readString(c, what);
    default:
      throw badMetadata(c.path, `${what} has unknown value type ${type}`, { what, type });
  }
}

/** Build a typed array of `type` from raw little-endian bytes. */
function typedFromBytes(type: GGUFValueType, raw: Uint8Array, n: number): GGUFValue {
  const b = raw.buffer;
  if (LITTLE_ENDIAN_HOST) {
    switch (type) {
      case GGUFValueType.UINT8: return new Uint8Array(b, 0, n);
      case GGUFValueType.INT8: return new Int8Array(b, 0, n);
      case GGUFValueType.UINT16: return new Uint16Array(b, 0, n);
      case GGUFValueType.INT16: return new Int16Array(b, 0, n);
      case GGUFValueType.UINT32: return new Uint32Array(b, 0, n);
      case GGUFValueType.INT32: return new Int32Array(b, 0, n);
      case GGUFValueType.FLOAT32: return new Float32Array(b, 0, n);
      case GGUFValueType.FLOAT64: return new Float64Array(b, 0, n);
      case GGUFValueType.UINT64: return new BigUint64Array(b, 0, n);
      case GGUFValueType.INT64: return new BigInt64Array(b, 0, n);
    }
  }
  // Big-endian host: decode element by element.
  const dv = new DataView(b, 0, raw.byteLength);
  const fill = <T extends { [i: number]: number | bigint }>(arr: T, size: number, get: (o: number) => number | bigint): T => {
    for (let i = 0; i < n; i++) arr[i] = get(i * size) as never;
    return arr;
  };
  switch (type) {
    case GGUFValueType.UINT8: return raw;
    case GGUFValueType.INT8: return new Int8Array(b, 0, n);
    case GGUFValueType.UINT16: return fill(new Uint16Array(n), 2, (o) => dv.getUint16(o, true));
    case GGUFValueType.INT16: return fill(new Int16Array(n), 2, (o) => dv.getInt16(o, true));
    case GGUFValueType.UINT32: return fill(new Uint32Array(n), 4, (o) => dv.getUint32(o, true));
    case GGUFValueType.INT32: return fill(new Int32Array(n), 4, (o) => dv.getInt32(o, true));
    case GGUFValueType.FLOAT32: return fill(new Float32Array(n), 4, (o) => dv.getFloat32(o, true));
    case GGUFValueType.FLOAT64: return fill(new Float64Array(n), 8, (o) => dv.getFloat64(o, true));
    case GGUFValueType.UINT64: return fill(new BigUint64Array(n), 8, (o) => dv.getBigUint64(o, true));
    case GGUFValueType.INT64: return fill(new BigInt64Array(n), 8, (o) => dv.getBigInt64(o, true));
  }
  throw new Error(`unreachable: typedFromBytes(${type})`);
}

/** Nested arrays are allowed by the format but never used by real models; bound the recursion anyway. */
const MAX_ARRAY_NESTING = 8;

async function readValue(c: Cursor, type: GGUFValueType, what: string, depth: number): Promise<{ value: GGUFValue; meta: GGUFMetadataType }> {
  if (type !== GGUFValueType.ARRAY) return { value: await readScalar(c, type, what), meta: { type } };
  if (depth >= MAX_ARRAY_NESTING) throw badMetadata(c.path, `${what} nests arrays more than ${MAX_ARRAY_NESTING} deep`, { what });
  const elemType = (await c.u32(`${what} array type`)) as GGUFValueType;
  const countRaw = await c.u64(`${what} array length`);
  const scalarSize = SCALAR_SIZE[elemType];
  if (scalarSize !== undefined) {
    const n = checkCount(c, countRaw, scalarSize, `${what} array length`);
    if (elemType === GGUFValueType.BOOL) {
      const raw = await c.bytes(n, what);
      const out: boolean[] = new Array(n);
      for (let i = 0; i < n; i++) {
        if (raw[i] > 1) throw badMetadata(c.path, `${what}[${i}] is a bool with byte value ${raw[i]}`, { what });
        out[i] = raw[i] === 1;
      }
      return { value: out, meta: { type, arrayType: elemType } };
    }
    const raw = await c.bytes(n * scalarSize, what);
    return { value: typedFromBytes(elemType, raw, n), meta: { type, arrayType: elemType } };
  }
  if (elemType === GGUFValueType.STRING) {
    // Each string takes at least its 8-byte length.
    const n = checkCount(c, countRaw, 8, `${what} array length`);
    const out: string[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = c.strSync() ?? (await readString(c, `${what}[${i}]`));
    return { value: out, meta: { type, arrayType: elemType } };
  }
  if (elemType === GGUFValueType.ARRAY) {
    // Each inner array takes at least its 4-byte type and 8-byte length.
    const n = checkCount(c, countRaw, 12, `${what} array length`);
    const out: unknown[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = (await readValue(c, GGUFValueType.ARRAY, `${what}[${i}]`, depth + 1)).value;
    return { value: out, meta: { type, arrayType: elemType } };
  }
  throw badMetadata(c.path, `${what} is an array of unknown value type ${elemType}`, { what, type: elemType });
}

async function openForRead(path: string): Promise<fs.promises.FileHandle> {
  try {
    const fh = await fs.promises.open(path, 'r');
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw new TwinferError('E_FILE_NOT_FOUND', `${path} is not a regular file`, { path });
    }
    return fh;
  } catch (e) {
    if (e instanceof TwinferError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new TwinferError('E_FILE_NOT_FOUND', `cannot open GGUF file ${path}: ${code ?? String(e)}`, { path, errno: code }, { cause: e });
  }
}

/** Parse a GGUF file's header, metadata and tensor infos. */
export async function readGGUF(path: string): Promise<GGUFFile> {
  const fh = await openForRead(path);
  try {
    const fileSize = (await fh.stat()).size;
    const c = new Cursor(fh, fileSize, path);

    if (fileSize < 4) {
      throw new TwinferError('E_NOT_GGUF', `${path} is not a GGUF file (${fileSize} bytes, no magic)`, { path, fileSize });
    }
    const magic = await c.u32('magic');
    if (magic !== GGUF_MAGIC) {
      throw new TwinferError('E_NOT_GGUF', `${path} is not a GGUF file (magic 0x${magic.toString(16).padStart(8, '0')}, expected "GGUF")`, { path, magic });
    }
    const version = await c.u32('version');
    if (version !== 2 && version !== 3) {
      // A big-endian file reads its version byte-swapped (e.g. 0x03000000).
      const swapped = ((version & 0xff) << 24 | (version & 0xff00) << 8 | (version >>> 8) & 0xff00 | version >>> 24) >>> 0;
      const hint = swapped === 2 || swapped === 3 ? ' (a big-endian GGUF file; only little-endian is supported)'
        : version === 1 ? ' (GGUF v1 is obsolete; re-convert the model)' : '';
      throw new TwinferError('E_GGUF_VERSION', `${path}: unsupported GGUF version ${version}${hint}; supported: 2, 3`, { path, version });
    }

    const nTensorsRaw = await c.u64('tensor count');
    const nKvRaw = await c.u64('metadata count');
    // Minimum encodings: a kv is key length(8) + type(4) + 1-byte value; a tensor info is name length(8) +
    // n_dims(4) + type(4) + offset(8).
    const nKv = checkCount(c, nKvRaw, 13, 'metadata key/value count');
    const nTensors = checkCount(c, nTensorsRaw, 24, 'tensor count');

    const metadata: Record<string, GGUFValue> = Object.create(null);
    const metadataTypes: Record<string, GGUFMetadataType> = Object.create(null);
    for (let i = 0; i < nKv; i++) {
      const key = await readString(c, `metadata key #${i}`);
      if (key in metadata) throw badMetadata(path, `duplicate metadata key "${key}"`, { key });
      const type = (await c.u32(`type of "${key}"`)) as GGUFValueType;
      const { value, meta } = await readValue(c, type, `"${key}"`, 0);
      metadata[key] = value;
      metadataTypes[key] = meta;
    }

    let alignment = GGUF_DEFAULT_ALIGNMENT;
    if ('general.alignment' in metadata) {
      const a = metadata['general.alignment'];
      if (metadataTypes['general.alignment'].type !== GGUFValueType.UINT32 || typeof a !== 'number' || a === 0 || (a & (a - 1)) !== 0) {
        throw badMetadata(path, `general.alignment must be a power-of-two UINT32, got ${String(a)}`, { alignment: a });
      }
      alignment = a;
    }

    type Pending = { name: string; dims: number[]; type: number; rel: bigint; nElements: number; size: number };
    const pending: Pending[] = [];
    const names = new Set<string>();
    for (let i = 0; i < nTensors; i++) {
      const name = await readString(c, `tensor #${i} name`);
      if (names.has(name)) throw badMetadata(path, `duplicate tensor name "${name}"`, { tensor: name });
      names.add(name);
      const nDims = await c.u32(`tensor "${name}" n_dims`);
      if (nDims > GGUF_MAX_DIMS) throw badMetadata(path, `tensor "${name}" has ${nDims} dimensions (max ${GGUF_MAX_DIMS})`, { tensor: name, nDims });
      const dims: number[] = [];
      let product = 1n;
      for (let d = 0; d < nDims; d++) {
        const v = await c.u64(`tensor "${name}" dim ${d}`);
        product *= v;
        if (v > MAX_SAFE || product > MAX_SAFE) {
          throw badMetadata(path, `tensor "${name}" dims overflow 2^53 elements (dim ${d} = ${v})`, { tensor: name });
        }
        dims.push(Number(v));
      }
      const type = await c.u32(`tensor "${name}" type`);
      const rel = await c.u64(`tensor "${name}" offset`);
      const info = typeInfo(type);
      if (!info) {
        throw new TwinferError('E_UNSUPPORTED_TYPE', `tensor "${name}" in ${path} has unknown ggml type id ${type}`, { path, tensor: name, type });
      }
      const rowLen = nDims > 0 ? dims[0] : 1;
      if (rowLen % info.blockSize !== 0) {
        throw new TwinferError(
          'E_BLOCK_SIZE',
          `tensor "${name}" in ${path}: row length ${rowLen} is not a multiple of the ${info.name} block size ${info.blockSize}`,
          { path, tensor: name, rowLength: rowLen, blockSize: info.blockSize, type: info.name },
        );
      }
      if (rel % BigInt(alignment) !== 0n) {
        throw badMetadata(path, `tensor "${name}" offset ${rel} is not a multiple of the alignment ${alignment}`, { tensor: name, offset: rel.toString(), alignment });
      }
      const nElements = Number(product);
      pending.push({ name, dims, type, rel, nElements, size: typeByteSize(info, nElements) });
    }

    const dataOffset = Math.ceil(c.pos / alignment) * alignment;
    const tensors: GGUFTensorInfo[] = pending.map((p) => {
      const end = BigInt(dataOffset) + p.rel + BigInt(p.size);
      if (end > BigInt(fileSize)) {
        throw new TwinferError(
          'E_TENSOR_OUT_OF_BOUNDS',
          `tensor "${p.name}" (${typeName(p.type)} [${p.dims.join(', ')}], ${p.size} bytes at offset ${BigInt(dataOffset) + p.rel}) ends at byte ${end}, past the end of ${path} (${fileSize} bytes)`,
          { path, tensor: p.name, offset: (BigInt(dataOffset) + p.rel).toString(), size: p.size, end: end.toString(), fileSize },
        );
      }
      return { name: p.name, dims: p.dims, type: p.type, offset: dataOffset + Number(p.rel), size: p.size, nElements: p.nElements };
    });

    return { path, version, fileSize, alignment, dataOffset, metadata, metadataTypes, tensors };
  } finally {
    await fh.close();
  }
}

/**
 * Fill `target` with the bytes of an open file starting at `position`, looping over partial reads. This is what a
 * loader uses to read tensor data straight into (WASM) memory. Throws E_TRUNCATED if the file ends first.
 */
export function readInto(fd: number, position: number, target: Uint8Array): void {
  let done = 0;
  while (done < target.length) {
    const n = fs.readSync(fd, target, done, target.length - done, position + done);
    if (n === 0) {
      throw new TwinferError('E_TRUNCATED', `file ended after ${position + done} bytes while reading ${target.length} bytes at offset ${position}`, {
        position, length: target.length, read: done,
      });
    }
    done += n;
  }
}

/**
 * Read a tensor's bytes in chunks of at most `chunkBytes` (the chunk buffer is reused: copy it if you keep it).
 * `onChunk(chunk, offsetInTensor)` may return false to stop early.
 */
export function streamTensor(
  fd: number,
  tensor: GGUFTensorInfo,
  chunkBytes: number,
  onChunk: (chunk: Uint8Array, offsetInTensor: number) => void | boolean,
): void {
  if (!(chunkBytes > 0)) throw new TwinferError('E_INVALID_ARGUMENT', `chunkBytes must be positive, got ${chunkBytes}`);
  const buf = new Uint8Array(Math.min(chunkBytes, Math.max(1, tensor.size)));
  for (let off = 0; off < tensor.size; off += buf.length) {
    const chunk = buf.subarray(0, Math.min(buf.length, tensor.size - off));
    readInto(fd, tensor.offset + off, chunk);
    if (onChunk(chunk, off) === false) return;
  }
}

/** Read a whole tensor's bytes (for tests and small tensors). `into` must hold at least tensor.size bytes. */
export async function readTensorData(file: GGUFFile, tensor: GGUFTensorInfo, into?: Uint8Array): Promise<Uint8Array> {
  if (into && into.length < tensor.size) {
    throw new TwinferError('E_INVALID_ARGUMENT', `buffer of ${into.length} bytes is too small for tensor "${tensor.name}" (${tensor.size} bytes)`);
  }
  const out = into ? into.subarray(0, tensor.size) : new Uint8Array(tensor.size);
  const fh = await openForRead(file.path);
  try {
    let done = 0;
    while (done < out.length) {
      const { bytesRead } = await fh.read(out, done, out.length - done, tensor.offset + done);
      if (bytesRead === 0) {
        throw new TwinferError('E_TRUNCATED', `${file.path} ended while reading tensor "${tensor.name}"`, { path: file.path, tensor: tensor.name });
      }
      done += bytesRead;
    }
    return out;
  } finally {
    await fh.close();
  }
}
