/**
 * Synthetic GGUF models: random weights at real shapes, with a real tokenizer copied verbatim from one of
 * llama.cpp's vocab-only GGUF files. They load in llama.cpp and in twinfer, exercise every code path of a real model
 * (GQA, biases, quantized types) and, at the 1.1B / 8B presets, give honest memory and throughput numbers without
 * shipping pretrained weights.
 *
 * Run with tsx (a devDependency of the `test` and `bench` packages), from the repository root:
 *   test/node_modules/.bin/tsx scripts/make-synthetic-model.ts --preset tiny-llama --type q8_0 --out /tmp/tiny.gguf
 *   test/node_modules/.bin/tsx scripts/make-synthetic-model.ts --arch llama --dim 512 --layers 2 --heads 8 \
 *     --kv-heads 4 --ffn 1024 --vocab-from ../shared/fixtures/vocab/ggml-vocab-llama-spm.gguf --type f16 --out m.gguf
 * Tests import `makeSyntheticModel` directly.
 *
 * Weights are uniform in ±sqrt(3/fan_in) (standard deviation 1/sqrt(fan_in), so activations keep unit scale through
 * every matmul); norm weights are 1 ± 0.1, biases ±0.02. Every tensor draws from its own PRNG stream seeded by
 * (seed, tensor name), so output is deterministic per seed and independent of chunking.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { TwinferError } from '../packages/sdk/src/errors.js';
import { readGGUF } from '../packages/sdk/src/gguf/reader.js';
import { writeGGUF, metadataFromFile, type GGUFMetadataEntry, type GGUFWriteTensor } from '../packages/sdk/src/gguf/writer.js';
import { quantizeInto, quantizedSize } from '../packages/sdk/src/gguf/quantize.js';
import { GGMLType, GGUFValueType } from '../packages/sdk/src/gguf/types.js';

export type SyntheticArch = 'llama' | 'qwen2';
export type SyntheticType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';

export interface SyntheticModelOptions {
  arch: SyntheticArch;
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ffn: number;
  /** path of a ggml-vocab-*.gguf whose tokenizer.* metadata is copied verbatim */
  vocabFrom: string;
  type: SyntheticType;
  ctx: number;
  seed: number;
  out: string;
  name?: string;
  ropeFreqBase?: number;
  rmsEps?: number;
  onProgress?: (writtenBytes: number, totalBytes: number, tensor: string) => void;
}

export const SHARED_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'shared');
const vocab = (name: string) => path.join(SHARED_DIR, 'fixtures', 'vocab', `ggml-vocab-${name}.gguf`);

export const PRESETS: Record<string, Omit<SyntheticModelOptions, 'type' | 'seed' | 'out'>> = {
  'tiny-llama': { arch: 'llama', dim: 256, layers: 4, heads: 8, kvHeads: 2, ffn: 512, vocabFrom: vocab('llama-spm'), ctx: 2048, name: 'tiny-llama' },
  'tiny-qwen2': { arch: 'qwen2', dim: 128, layers: 2, heads: 4, kvHeads: 2, ffn: 256, vocabFrom: vocab('qwen2'), ctx: 2048, name: 'tiny-qwen2' },
  'tinyllama-1.1b': { arch: 'llama', dim: 2048, layers: 22, heads: 32, kvHeads: 4, ffn: 5632, vocabFrom: vocab('llama-spm'), ctx: 2048, name: 'tinyllama-1.1b' },
  // Real layer shapes with 2 layers: the tests' "real shape" models (full-size matrices and vocabularies, small files).
  'tinyllama-2l': { arch: 'llama', dim: 2048, layers: 2, heads: 32, kvHeads: 4, ffn: 5632, vocabFrom: vocab('llama-spm'), ctx: 2048, name: 'tinyllama-2l' },
  'qwen2-0.5b-2l': {
    arch: 'qwen2', dim: 896, layers: 2, heads: 14, kvHeads: 2, ffn: 4864, vocabFrom: vocab('qwen2'), ctx: 32768, name: 'qwen2-0.5b-2l',
    ropeFreqBase: 1000000, rmsEps: 1e-6,
  },
  'llama3-8b': {
    arch: 'llama', dim: 4096, layers: 32, heads: 32, kvHeads: 8, ffn: 14336, vocabFrom: vocab('llama-bpe'), ctx: 8192, name: 'llama3-8b',
    ropeFreqBase: 500000,
  },
};

const TENSOR_TYPE: Record<SyntheticType, GGMLType> = {
  f32: GGMLType.F32, f16: GGMLType.F16, bf16: GGMLType.BF16, q8_0: GGMLType.Q8_0, q4_0: GGMLType.Q4_0,
};
/** llama_ftype values written as general.file_type */
const FILE_TYPE: Record<SyntheticType, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 };

/** FNV-1a of a string mixed with the seed: the per-tensor PRNG seed. */
function streamSeed(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * Fill `out` with uniform values in [center - a, center + a) from a mulberry32 stream whose state is carried in
 * `state[0]`. One tight loop, no per-element closures.
 */
function fillUniform(out: Float32Array, state: Uint32Array, center: number, a: number): void {
  let s = state[0];
  const scale = (2 * a) / 4294967296;
  const lo = center - a;
  for (let i = 0; i < out.length; i++) {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    out[i] = lo + ((t ^ (t >>> 14)) >>> 0) * scale;
  }
  state[0] = s;
}

interface TensorSpec {
  name: string;
  dims: number[];
  type: GGMLType;
  center: number;
  amplitude: number;
}

/** Rows per generated chunk: about 1M elements, whole rows (quantization blocks never straddle rows). */
const CHUNK_ELEMENTS = 1 << 20;

function tensorData(spec: TensorSpec, seed: number): () => Generator<Uint8Array> {
  return function* () {
    const rowLen = spec.dims[0];
    const rows = spec.dims.slice(1).reduce((p, d) => p * d, 1);
    const rowsPerChunk = Math.max(1, Math.floor(CHUNK_ELEMENTS / rowLen));
    const f32 = new Float32Array(rowsPerChunk * rowLen);
    const bytes = new Uint8Array(quantizedSize(spec.type as never, rowsPerChunk * rowLen));
    const state = new Uint32Array([streamSeed(seed, spec.name)]);
    // The writer finishes writing each chunk before it asks for the next, so both buffers are reused.
    for (let r = 0; r < rows; r += rowsPerChunk) {
      const n = Math.min(rowsPerChunk, rows - r) * rowLen;
      const src = f32.subarray(0, n);
      fillUniform(src, state, spec.center, spec.amplitude);
      const size = quantizeInto(spec.type, src, bytes, 0);
      yield bytes.subarray(0, size);
    }
  };
}

function checkOptions(o: SyntheticModelOptions): void {
  const ints: Array<[string, number]> = [['dim', o.dim], ['layers', o.layers], ['heads', o.heads], ['kv-heads', o.kvHeads], ['ffn', o.ffn], ['ctx', o.ctx]];
  for (const [k, v] of ints) {
    if (!Number.isSafeInteger(v) || v <= 0) throw new TwinferError('E_INVALID_ARGUMENT', `--${k} must be a positive integer, got ${v}`);
  }
  if (o.arch !== 'llama' && o.arch !== 'qwen2') throw new TwinferError('E_UNSUPPORTED_ARCH', `--arch must be llama or qwen2, got ${o.arch}`);
  if (!(o.type in TENSOR_TYPE)) throw new TwinferError('E_INVALID_ARGUMENT', `--type must be one of ${Object.keys(TENSOR_TYPE).join(', ')}, got ${o.type}`);
  if (o.dim % o.heads !== 0) throw new TwinferError('E_INVALID_ARGUMENT', `--dim ${o.dim} is not a multiple of --heads ${o.heads}`);
  if (o.heads % o.kvHeads !== 0) throw new TwinferError('E_INVALID_ARGUMENT', `--heads ${o.heads} is not a multiple of --kv-heads ${o.kvHeads}`);
  if (!Number.isSafeInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff) throw new TwinferError('E_INVALID_ARGUMENT', `--seed must be an integer in [0, 2^32), got ${o.seed}`);
}

/** Write a synthetic model; resolves to the file's size and the number of tensors. */
export async function makeSyntheticModel(o: SyntheticModelOptions): Promise<{ path: string; fileSize: number; nTensors: number; nVocab: number; nParams: number }> {
  checkOptions(o);
  const vocabFile = await readGGUF(o.vocabFrom);
  const tokens = vocabFile.metadata['tokenizer.ggml.tokens'];
  if (!Array.isArray(tokens) || tokens.length === 0) {
    throw new TwinferError('E_TOKENIZER', `${o.vocabFrom} has no tokenizer.ggml.tokens array`, { path: o.vocabFrom });
  }
  const nVocab = tokens.length;
  const headDim = o.dim / o.heads;
  const kvDim = headDim * o.kvHeads;
  const wtype = TENSOR_TYPE[o.type];
  const quantized = wtype === GGMLType.Q8_0 || wtype === GGMLType.Q4_0;

  const specs: TensorSpec[] = [];
  const matrix = (name: string, inDim: number, outDim: number) => {
    // A row length that the block type cannot hold falls back to F16, as llama-quantize does for these types.
    const type = quantized && inDim % 32 !== 0 ? GGMLType.F16 : wtype;
    specs.push({ name, dims: [inDim, outDim], type, center: 0, amplitude: Math.sqrt(3 / inDim) });
  };
  const vector = (name: string, n: number, center: number, amplitude: number) => {
    specs.push({ name, dims: [n], type: GGMLType.F32, center, amplitude });
  };
  matrix('token_embd.weight', o.dim, nVocab);
  for (let l = 0; l < o.layers; l++) {
    const b = `blk.${l}`;
    vector(`${b}.attn_norm.weight`, o.dim, 1, 0.1);
    matrix(`${b}.attn_q.weight`, o.dim, o.dim);
    matrix(`${b}.attn_k.weight`, o.dim, kvDim);
    matrix(`${b}.attn_v.weight`, o.dim, kvDim);
    if (o.arch === 'qwen2') {
      vector(`${b}.attn_q.bias`, o.dim, 0, 0.02);
      vector(`${b}.attn_k.bias`, kvDim, 0, 0.02);
      vector(`${b}.attn_v.bias`, kvDim, 0, 0.02);
    }
    matrix(`${b}.attn_output.weight`, o.dim, o.dim);
    vector(`${b}.ffn_norm.weight`, o.dim, 1, 0.1);
    matrix(`${b}.ffn_gate.weight`, o.dim, o.ffn);
    matrix(`${b}.ffn_up.weight`, o.dim, o.ffn);
    matrix(`${b}.ffn_down.weight`, o.ffn, o.dim);
  }
  vector('output_norm.weight', o.dim, 1, 0.1);
  matrix('output.weight', o.dim, nVocab);

  const a = o.arch;
  const ropeBase = o.ropeFreqBase ?? (a === 'qwen2' ? 1_000_000 : 10_000);
  const rmsEps = o.rmsEps ?? (a === 'qwen2' ? 1e-6 : 1e-5);
  const u32 = (key: string, value: number): GGUFMetadataEntry => ({ key, type: GGUFValueType.UINT32, value });
  const f32 = (key: string, value: number): GGUFMetadataEntry => ({ key, type: GGUFValueType.FLOAT32, value });
  const metadata: GGUFMetadataEntry[] = [
    { key: 'general.architecture', type: GGUFValueType.STRING, value: a },
    { key: 'general.name', type: GGUFValueType.STRING, value: o.name ?? `synthetic-${a}` },
    u32(`${a}.context_length`, o.ctx),
    u32(`${a}.embedding_length`, o.dim),
    u32(`${a}.block_count`, o.layers),
    u32(`${a}.feed_forward_length`, o.ffn),
    u32(`${a}.attention.head_count`, o.heads),
    u32(`${a}.attention.head_count_kv`, o.kvHeads),
    u32(`${a}.rope.dimension_count`, headDim),
    u32(`${a}.vocab_size`, nVocab),
    f32(`${a}.attention.layer_norm_rms_epsilon`, rmsEps),
    f32(`${a}.rope.freq_base`, ropeBase),
    ...metadataFromFile(vocabFile, (k) => k.startsWith('tokenizer.')),
    // Last, and tensors in llama.cpp's loader order (layer, then name): this is the layout llama-quantize writes,
    // so `llama-quantize --pure` of the f32 model reproduces the q8_0/q4_0 file byte for byte.
    ...(quantized ? [u32('general.quantization_version', 2)] : []),
    u32('general.file_type', FILE_TYPE[o.type]),
  ];
  const layerOf = (name: string) => (name.startsWith('blk.') ? parseInt(name.slice(4), 10) : -1);
  specs.sort((x, y) => layerOf(x.name) - layerOf(y.name) || (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));

  const tensors: GGUFWriteTensor[] = specs.map((s) => ({ name: s.name, dims: s.dims, type: s.type, data: tensorData(s, o.seed) }));
  const res = await writeGGUF(o.out, { metadata, tensors, onProgress: o.onProgress });
  const nParams = specs.reduce((p, s) => p + s.dims.reduce((q, d) => q * d, 1), 0);
  return { path: res.path, fileSize: res.fileSize, nTensors: specs.length, nVocab, nParams };
}

const USAGE = `usage: tsx scripts/make-synthetic-model.ts (--preset tiny-llama|tiny-qwen2|tinyllama-1.1b|llama3-8b |
  --arch llama|qwen2 --dim N --layers N --heads N --kv-heads N --ffn N --vocab-from FILE)
  [--type f32|f16|bf16|q8_0|q4_0 (default f32)] [--ctx N] [--seed N (default 1)] --out FILE
  Options given with --preset override the preset's values.`;

async function main(argv: string[]): Promise<void> {
  const OPTIONS = {
    preset: { type: 'string' }, arch: { type: 'string' }, dim: { type: 'string' }, layers: { type: 'string' },
    heads: { type: 'string' }, 'kv-heads': { type: 'string' }, ffn: { type: 'string' }, 'vocab-from': { type: 'string' },
    type: { type: 'string' }, ctx: { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean' },
  } as const;
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, strict: true });
  } catch (e) {
    throw new TwinferError('E_INVALID_ARGUMENT', `${(e as Error).message}\n${USAGE}`);
  }
  const { values } = parsed;
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const base = values.preset !== undefined ? PRESETS[values.preset] : undefined;
  if (values.preset !== undefined && !base) throw new TwinferError('E_INVALID_ARGUMENT', `unknown preset ${values.preset}; known: ${Object.keys(PRESETS).join(', ')}`);
  const num = (v: string | undefined, fallback: number | undefined, flag: string): number => {
    if (v === undefined) {
      if (fallback === undefined) throw new TwinferError('E_INVALID_ARGUMENT', `--${flag} is required without --preset\n${USAGE}`);
      return fallback;
    }
    const n = Number(v);
    if (!Number.isSafeInteger(n)) throw new TwinferError('E_INVALID_ARGUMENT', `--${flag} must be an integer, got ${v}`);
    return n;
  };
  if (!values.out) throw new TwinferError('E_INVALID_ARGUMENT', `--out is required\n${USAGE}`);
  const vocabFrom = values['vocab-from'] ?? base?.vocabFrom;
  if (!vocabFrom) throw new TwinferError('E_INVALID_ARGUMENT', `--vocab-from is required without --preset\n${USAGE}`);
  const opts: SyntheticModelOptions = {
    ...base,
    arch: (values.arch ?? base?.arch ?? 'llama') as SyntheticArch,
    dim: num(values.dim, base?.dim, 'dim'),
    layers: num(values.layers, base?.layers, 'layers'),
    heads: num(values.heads, base?.heads, 'heads'),
    kvHeads: num(values['kv-heads'], base?.kvHeads ?? num(values.heads, base?.heads, 'heads'), 'kv-heads'),
    ffn: num(values.ffn, base?.ffn, 'ffn'),
    vocabFrom,
    type: (values.type ?? 'f32') as SyntheticType,
    ctx: num(values.ctx, base?.ctx ?? 2048, 'ctx'),
    seed: num(values.seed, 1, 'seed'),
    out: values.out,
  };
  const t0 = performance.now();
  let lastPct = -1;
  const res = await makeSyntheticModel({
    ...opts,
    onProgress: (w, total) => {
      const pct = Math.floor((100 * w) / total);
      if (process.stderr.isTTY && pct !== lastPct) process.stderr.write(`\r${pct}%`);
      lastPct = pct;
    },
  });
  if (process.stderr.isTTY) process.stderr.write('\r');
  const secs = (performance.now() - t0) / 1000;
  console.log(
    `wrote ${res.path}: ${opts.arch} dim ${opts.dim}, ${opts.layers} layers, ${opts.heads}/${opts.kvHeads} heads, ffn ${opts.ffn}, ` +
      `vocab ${res.nVocab}, ${opts.type}, ${(res.nParams / 1e6).toFixed(1)}M params, ${res.nTensors} tensors, ` +
      `${(res.fileSize / 2 ** 20).toFixed(1)} MiB in ${secs.toFixed(1)} s`,
  );
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e) => {
    console.error(e instanceof TwinferError ? `error ${e.code}: ${e.message}` : e);
    process.exit(1);
  });
}
