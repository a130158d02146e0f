/**
 * GGUF reader/quantizer/writer against real files: the stories260K fixtures (read, and re-quantized byte for byte
 * as llama-quantize did), and synthetic models written by scripts/make-synthetic-model.ts loaded by llama.cpp
 * (node-llama-cpp 3.21.1) as the reference consumer.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readGGUF, readTensorData, typeName } from '../packages/sdk/src/gguf/reader.js';
import { dequantize, quantize } from '../packages/sdk/src/gguf/quantize.js';
import { GGMLType } from '../packages/sdk/src/gguf/types.js';
import { makeSyntheticModel, PRESETS, type SyntheticType } from '../scripts/make-synthetic-model.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(repoRoot, '..', 'shared');
const models = path.join(shared, 'fixtures', 'models');
const haveShared = fs.existsSync(path.join(models, 'stories260K.gguf'));
if (!haveShared) console.warn(`gguf.test.ts: skipping fixture tests, ${models} not found (expected ../shared beside the checkout)`);

const FIXTURES = {
  f32: 'stories260K.gguf',
  q8_0: 'stories260K-Q8_0.gguf',
  q4_0: 'stories260K-Q4_0.gguf',
} as const;

/** Expected type of a stories260K tensor in each encoding (per shared/README.md and llama-quantize's rules). */
function expectedType(file: keyof typeof FIXTURES, name: string, nDims: number): GGMLType {
  if (file === 'f32' || nDims === 1) return GGMLType.F32;
  if (name.endsWith('ffn_down.weight')) return GGMLType.F16; // row length 172 is not a multiple of 32
  if (file === 'q4_0' && name === 'output.weight') return GGMLType.Q8_0;
  return file === 'q8_0' ? GGMLType.Q8_0 : GGMLType.Q4_0;
}

describe.skipIf(!haveShared)('stories260K fixtures', () => {
  for (const [key, file] of Object.entries(FIXTURES) as Array<[keyof typeof FIXTURES, string]>) {
    it(`reads ${file}`, async () => {
      const g = await readGGUF(path.join(models, file));
      expect(g.version).toBe(3);
      expect(g.metadata['general.architecture']).toBe('llama');
      expect(g.metadata['llama.block_count']).toBe(5);
      expect(g.metadata['llama.embedding_length']).toBe(64);
      expect(g.metadata['llama.feed_forward_length']).toBe(172);
      expect(g.metadata['llama.attention.head_count']).toBe(8);
      expect(g.metadata['llama.attention.head_count_kv']).toBe(4);
      // the F32 conversion declares 2048 (the llama.cpp test file); llama-quantize's outputs declare the trained 512
      expect(g.metadata['llama.context_length']).toBe(key === 'f32' ? 2048 : 512);
      expect(g.metadata['tokenizer.ggml.model']).toBe('llama');
      expect((g.metadata['tokenizer.ggml.tokens'] as string[]).length).toBe(512);
      expect(g.tensors.length).toBe(3 + 5 * 9);

      const byName = new Map(g.tensors.map((t) => [t.name, t]));
      const dims = (n: string) => byName.get(n)?.dims;
      expect(dims('token_embd.weight')).toEqual([64, 512]);
      expect(dims('output.weight')).toEqual([64, 512]);
      expect(dims('output_norm.weight')).toEqual([64]);
      for (let l = 0; l < 5; l++) {
        expect(dims(`blk.${l}.attn_norm.weight`)).toEqual([64]);
        expect(dims(`blk.${l}.attn_q.weight`)).toEqual([64, 64]);
        expect(dims(`blk.${l}.attn_k.weight`)).toEqual([64, 32]);
        expect(dims(`blk.${l}.attn_v.weight`)).toEqual([64, 32]);
        expect(dims(`blk.${l}.attn_output.weight`)).toEqual([64, 64]);
        expect(dims(`blk.${l}.ffn_norm.weight`)).toEqual([64]);
        expect(dims(`blk.${l}.ffn_gate.weight`)).toEqual([64, 172]);
        expect(dims(`blk.${l}.ffn_up.weight`)).toEqual([64, 172]);
        expect(dims(`blk.${l}.ffn_down.weight`)).toEqual([172, 64]);
      }
      for (const t of g.tensors) {
        expect([t.name, typeName(t.type)]).toEqual([t.name, typeName(expectedType(key, t.name, t.dims.length))]);
        expect(t.offset).toBeGreaterThanOrEqual(g.dataOffset);
        expect(t.offset % g.alignment).toBe(0);
        expect(t.offset + t.size).toBeLessThanOrEqual(g.fileSize);
      }
      // tensors do not overlap
      const sorted = [...g.tensors].sort((a, b) => a.offset - b.offset);
      for (let i = 1; i < sorted.length; i++) expect(sorted[i].offset).toBeGreaterThanOrEqual(sorted[i - 1].offset + sorted[i - 1].size);
    });
  }

  it('re-quantizing the F32 model reproduces llama-quantize output byte for byte', async () => {
    const src = await readGGUF(path.join(models, FIXTURES.f32));
    for (const file of [FIXTURES.q8_0, FIXTURES.q4_0]) {
      const q = await readGGUF(path.join(models, file));
      let identical = 0;
      for (const t of q.tensors) {
        const s = src.tensors.find((x) => x.name === t.name)!;
        const x = dequantize(GGMLType.F32, await readTensorData(src, s), s.nElements);
        const ours = Buffer.from(quantize(t.type, x));
        const theirs = Buffer.from(await readTensorData(q, t));
        if (ours.equals(theirs)) identical++;
        else expect.fail(`${file} ${t.name} (${typeName(t.type)}) differs from our quantization`);
      }
      expect(identical).toBe(48);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Synthetic models through llama.cpp

/** Element-wise equality of two metadata values (scalars, typed arrays, string arrays). */
function sameValue(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) || ArrayBuffer.isView(a)) {
    const x = a as ArrayLike<unknown>;
    const y = b as ArrayLike<unknown>;
    if (!(Array.isArray(b) || ArrayBuffer.isView(b)) || x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (!Object.is(x[i], y[i])) return false;
    return true;
  }
  return Object.is(a, b);
}

const vocabDir = path.join(shared, 'fixtures', 'vocab');
const haveVocab = fs.existsSync(path.join(vocabDir, 'ggml-vocab-llama-spm.gguf')) && fs.existsSync(path.join(vocabDir, 'ggml-vocab-qwen2.gguf'));
const TYPES: SyntheticType[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'];

/** llama.cpp's tokenizer test cases: inputs split by `__ggml_vocab_test__` lines, expected ids one line each. */
function vocabCases(vocabFile: string, max: number): Array<{ text: string; ids: number[] }> {
  const inp = fs.readFileSync(`${vocabFile}.inp`, 'utf8').split('\n__ggml_vocab_test__\n');
  const out = fs.readFileSync(`${vocabFile}.out`, 'utf8').split('\n');
  const cases: Array<{ text: string; ids: number[] }> = [];
  for (let i = 0; i < Math.min(max, inp.length, out.length); i++) {
    const ids = out[i].trim() === '' ? [] : out[i].trim().split(/\s+/).map(Number);
    cases.push({ text: inp[i], ids });
  }
  return cases;
}

describe.skipIf(!haveVocab)('make-synthetic-model', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinfer-synth-cli-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const small = { ...PRESETS['tiny-llama'], dim: 64, layers: 1, heads: 4, kvHeads: 2, ffn: 96, type: 'q8_0' as const };

  it('is deterministic per seed and differs across seeds', async () => {
    const a = path.join(dir, 'a.gguf');
    const b = path.join(dir, 'b.gguf');
    const c = path.join(dir, 'c.gguf');
    await makeSyntheticModel({ ...small, seed: 7, out: a });
    await makeSyntheticModel({ ...small, seed: 7, out: b });
    await makeSyntheticModel({ ...small, seed: 8, out: c });
    expect(fs.readFileSync(a).equals(fs.readFileSync(b))).toBe(true);
    const g = await readGGUF(a);
    const h = await readGGUF(c);
    const t = g.tensors.find((x) => x.name === 'blk.0.attn_q.weight')!;
    expect(Buffer.from(await readTensorData(g, t)).equals(Buffer.from(await readTensorData(h, t)))).toBe(false);
    // ffn 96 is a multiple of 32, so ffn_down is Q8_0; weights have the intended scale ±sqrt(3/fan_in)
    const w = dequantize(GGMLType.Q8_0, await readTensorData(g, t), t.nElements);
    const bound = Math.sqrt(3 / 64);
    let sumSq = 0;
    for (const v of w) {
      expect(Math.abs(v)).toBeLessThanOrEqual(bound * 1.001);
      sumSq += v * v;
    }
    expect(Math.sqrt(sumSq / w.length)).toBeCloseTo(1 / Math.sqrt(64), 2);
    expect(g.metadata['general.file_type']).toBe(7);
    expect(g.metadata['llama.rope.dimension_count']).toBe(16);
  });

  it('runs as a CLI', () => {
    const out = path.join(dir, 'cli.gguf');
    const tsx = path.join(repoRoot, 'test', 'node_modules', '.bin', 'tsx');
    const script = path.join(repoRoot, 'scripts', 'make-synthetic-model.ts');
    const ok = spawnSync(tsx, [script, '--preset', 'tiny-llama', '--layers', '1', '--dim', '64', '--heads', '4', '--kv-heads', '1',
      '--ffn', '128', '--type', 'q4_0', '--seed', '5', '--out', out], { encoding: 'utf8' });
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/^wrote .*cli\.gguf: llama dim 64, 1 layers, 4\/1 heads, ffn 128, vocab 32000, q4_0/);
    expect(fs.statSync(out).size).toBeGreaterThan(0);
    const bad = spawnSync(tsx, [script, '--preset', 'tiny-llama', '--type', 'q5_k', '--out', out], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/E_INVALID_ARGUMENT: --type must be one of/);
  });

  // llama-quantize is not shipped by node-llama-cpp; build it from node_modules/node-llama-cpp/llama/gitRelease.bundle
  // (cmake --build build --target llama-quantize) and point LLAMA_QUANTIZE at it to run this check.
  const llamaQuantize = process.env.LLAMA_QUANTIZE;
  it.skipIf(!llamaQuantize)('q8_0/q4_0 files equal `llama-quantize --pure` of the f32 file, byte for byte', async () => {
    const f32 = path.join(dir, 'lq-f32.gguf');
    await makeSyntheticModel({ ...PRESETS['tiny-qwen2'], type: 'f32', seed: 11, out: f32 });
    for (const type of ['q8_0', 'q4_0'] as const) {
      const ours = path.join(dir, `lq-${type}.gguf`);
      const theirs = path.join(dir, `lq-ref-${type}.gguf`);
      await makeSyntheticModel({ ...PRESETS['tiny-qwen2'], type, seed: 11, out: ours });
      const r = spawnSync(llamaQuantize!, ['--pure', f32, theirs, type.toUpperCase(), '1'], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(fs.readFileSync(ours).equals(fs.readFileSync(theirs))).toBe(true);
    }
  });

  it('rejects bad options with stable codes', async () => {
    const out = path.join(dir, 'x.gguf');
    const code = (o: object) => makeSyntheticModel({ ...small, seed: 1, out, ...o }).then(() => 'ok', (e) => e.code);
    expect(await code({ type: 'q5_k' })).toBe('E_INVALID_ARGUMENT');
    expect(await code({ heads: 5 })).toBe('E_INVALID_ARGUMENT');
    expect(await code({ kvHeads: 3 })).toBe('E_INVALID_ARGUMENT');
    expect(await code({ arch: 'gpt2' })).toBe('E_UNSUPPORTED_ARCH');
    expect(await code({ vocabFrom: path.join(dir, 'missing.gguf') })).toBe('E_FILE_NOT_FOUND');
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe.skipIf(!haveVocab)('synthetic models load in llama.cpp', () => {
  let dir: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let llama: any;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinfer-synth-'));
    const { getLlama } = await import('node-llama-cpp');
    llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  });
  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const preset of ['tiny-llama', 'tiny-qwen2'] as const) {
    const firstNext = new Map<SyntheticType, { token: number; probs: Map<number, number> }>();
    for (const type of TYPES) {
      it(`${preset} ${type}: twinfer reads it back, llama.cpp loads, tokenizes and evaluates it`, async () => {
        const p = PRESETS[preset];
        const out = path.join(dir, `${preset}-${type}.gguf`);
        const t0 = performance.now();
        const res = await makeSyntheticModel({ ...p, type, seed: 42, out });
        const genMs = performance.now() - t0;
        expect(genMs).toBeLessThan(60_000);

        const g = await readGGUF(out);
        expect(g.fileSize).toBe(res.fileSize);
        expect(g.metadata['general.architecture']).toBe(p.arch);
        expect(g.metadata[`${p.arch}.block_count`]).toBe(p.layers);
        expect(g.tensors.length).toBe(3 + p.layers * (p.arch === 'qwen2' ? 12 : 9));
        const vocab = await readGGUF(p.vocabFrom);
        for (const [k, v] of Object.entries(vocab.metadata)) {
          if (k.startsWith('tokenizer.')) {
            expect(g.metadataTypes![k]).toEqual(vocab.metadataTypes![k]);
            expect(sameValue(g.metadata[k], v)).toBe(true); // (toEqual on 150k-entry arrays is very slow)
          }
        }
        const wantType = { f32: GGMLType.F32, f16: GGMLType.F16, bf16: GGMLType.BF16, q8_0: GGMLType.Q8_0, q4_0: GGMLType.Q4_0 }[type];
        for (const t of g.tensors) expect([t.name, t.type]).toEqual([t.name, t.dims.length === 1 ? GGMLType.F32 : wantType]);

        const model = await llama.loadModel({ modelPath: out });
        try {
          expect(model.fileInfo.metadata.general.architecture).toBe(p.arch);
          for (const c of vocabCases(p.vocabFrom, 24)) {
            expect([c.text, Array.from(model.tokenize(c.text, false))]).toEqual([c.text, c.ids]);
          }
          // one thread: llama.cpp's spinning thread pool is very slow when the test runner shares the cores
          const ctx = await model.createContext({ contextSize: 128, flashAttention: false, threads: 1 });
          try {
            const seq = ctx.getSequence();
            const prompt: number[] = Array.from(model.tokenize('Once upon a time, there was', false));
            const last = prompt.length - 1;
            const results = await seq.controlledEvaluate(
              prompt.map((tok, i) => (i === last ? [tok, { generateNext: { token: true, probabilities: true } }] : tok)),
            );
            const next = results[last]!.next as { token: number; probabilities: Map<number, number> };
            expect(next.token).toBeGreaterThanOrEqual(0);
            expect(next.token).toBeLessThan(res.nVocab);
            expect(next.probabilities.size).toBe(res.nVocab);
            const total = [...next.probabilities.values()].reduce((a, b) => a + b, 0);
            expect(total).toBeGreaterThan(0.99);
            expect(total).toBeLessThan(1.01);
            firstNext.set(type, { token: next.token, probs: next.probabilities });
          } finally {
            await ctx.dispose();
          }
        } finally {
          await model.dispose();
        }
        fs.rmSync(out, { force: true });

        // Same seed -> same underlying weights: the higher-precision encodings must agree with f32 on the
        // distribution of the first generated token.
        const ref = firstNext.get('f32');
        const mine = firstNext.get(type);
        if (ref && mine && type !== 'f32') {
          let l1 = 0;
          for (const [tok, pr] of ref.probs) l1 += Math.abs(pr - (mine.probs.get(tok) ?? 0));
          const tol = { f16: 0.02, bf16: 0.1, q8_0: 0.1, q4_0: 0.5 }[type];
          expect(l1).toBeLessThan(tol);
          if (type !== 'q4_0') expect(mine.token).toBe(ref.token);
        }
      });
    }
  }
});
