/**
 * Self-check of the llama.cpp oracle (test/oracle/*) against the shared fixtures only: if these fail, every test that
 * compares twinfer with the oracle is meaningless. Skips when ../shared is absent; the parts that need llama.cpp's
 * own tools skip when scripts/build-llama-tools.sh has not been run.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { GgmlType, readGgufFileInfo, type GgufTensorInfo } from 'node-llama-cpp';
import { afterAll, describe, expect, it } from 'vitest';
import { llamaDequantizeToF32 } from './oracle/dequant.js';
import { llamaRawLastLogits } from './oracle/rawlogits.js';
import {
  disposeOracle,
  oracleDetokenize,
  oracleGreedy,
  oraclePerplexity,
  oracleTeacherForcedTopK,
  oracleTokenize,
  oracleVocabInfo,
} from './oracle/llamacpp.js';
import { findLlamaTool, hasFixtures, missingFixturesMessage, missingToolMessage, modelsDir, vocabDir } from './oracle/paths.js';

const execFileAsync = promisify(execFile);
const STORIES = path.join(modelsDir, 'stories260K.gguf');
const STORIES_Q8 = path.join(modelsDir, 'stories260K-Q8_0.gguf');
const STORIES_Q4 = path.join(modelsDir, 'stories260K-Q4_0.gguf');

if (!hasFixtures) console.warn(`oracle.test.ts: ${missingFixturesMessage}`);

describe.skipIf(!hasFixtures)('llama.cpp oracle (node-llama-cpp 3.21.1) on the shared fixtures', () => {
  afterAll(async () => {
    await disposeOracle();
  });

  it('tokenizes "Once upon a time" as llama.cpp does, with and without BOS', async () => {
    expect(await oracleTokenize(STORIES, 'Once upon a time', { addBos: true })).toEqual([1, 403, 407, 261, 378]);
    expect(await oracleTokenize(STORIES, 'Once upon a time', { addBos: false })).toEqual([403, 407, 261, 378]);
    // the model's own add_bos flag is the default
    expect(await oracleVocabInfo(STORIES)).toMatchObject({ bos: 1, eos: 2, addBos: true });
    expect(await oracleTokenize(STORIES, 'Once upon a time')).toEqual([1, 403, 407, 261, 378]);
  });

  it('tokenizes a vocab-only GGUF like llama.cpp test-tokenizer-0 (first cases of llama-spm)', async () => {
    const file = path.join(vocabDir, 'ggml-vocab-llama-spm.gguf');
    const inputs = readFileSync(`${file}.inp`, 'utf8').split('\n__ggml_vocab_test__\n');
    const outputs = readFileSync(`${file}.out`, 'utf8').split('\n');
    for (let i = 0; i < 12; i++) {
      const expected = outputs[i].trim() === '' ? [] : outputs[i].trim().split(/\s+/).map(Number);
      expect(await oracleTokenize(file, inputs[i], { addBos: false }), `case ${i}: ${JSON.stringify(inputs[i])}`).toEqual(expected);
    }
  });

  it('greedy 200 steps from BOS reproduce llama2.c run.c byte for byte (F32 KV cache)', async () => {
    const ids = await oracleGreedy(STORIES, [1], 200);
    expect(ids).toHaveLength(200);
    const expected = readFileSync(path.join(modelsDir, 'stories260K.expected.txt'), 'utf8');
    expect(await oracleDetokenize(STORIES, ids)).toBe(expected);
  });

  it('greedy continuation of "Once upon a time"', async () => {
    const prompt = await oracleTokenize(STORIES, 'Once upon a time', { addBos: true });
    const ids = await oracleGreedy(STORIES, prompt, 24);
    expect(await oracleDetokenize(STORIES, ids)).toMatch(/^, there was a little girl named Lily\. She loved to play outside/);
  });

  it('teacher-forced top-k agrees with greedy and is a normalised distribution', async () => {
    const gen = await oracleGreedy(STORIES, [1], 64);
    const ids = [1, ...gen];
    const k = 8;
    const r = await oracleTeacherForcedTopK(STORIES, ids, k);
    expect(r.topk).toHaveLength(ids.length);
    expect(r.targetLogprobs).toHaveLength(ids.length - 1);
    for (let i = 0; i < ids.length; i++) {
      const { ids: top, logprobs } = r.topk[i];
      expect(top).toHaveLength(k);
      for (let j = 1; j < k; j++) expect(logprobs[j]).toBeLessThanOrEqual(logprobs[j - 1]);
      expect(logprobs[0]).toBeLessThanOrEqual(0);
      // teacher forcing the greedy chain: the argmax at position i is the token greedy produced next
      if (i < gen.length) {
        expect(top[0], `position ${i}`).toBe(gen[i]);
        expect(r.targetLogprobs[i]).toBe(logprobs[0]);
      }
    }
    // last position: full distribution over the 512-token vocabulary, logsumexp = 0 to float32 accuracy
    expect(r.lastLogprobs).toHaveLength(512);
    let s = 0;
    for (const lp of r.lastLogprobs) s += Math.exp(lp);
    expect(Math.abs(s - 1)).toBeLessThan(1e-5);
    expect(Math.max(...r.lastLogits)).toBe(0);
    const best = r.lastLogits.indexOf(0);
    expect(best).toBe(r.topk[ids.length - 1].ids[0]);
    for (let t = 0; t < 512; t++) expect(r.lastLogits[t]).toBeCloseTo(r.lastLogprobs[t] - r.lastLogprobs[best], 12);
  });

  it('the KV cache is cleared between calls (same input, same output)', async () => {
    const ids = [1, 403, 407, 261, 378];
    const a = await oracleTeacherForcedTopK(STORIES, ids, 4);
    await oracleGreedy(STORIES, [1, 500, 17], 5);
    const b = await oracleTeacherForcedTopK(STORIES, ids, 4);
    expect(b.topk).toEqual(a.topk);
  });

  it('perplexity follows llama-perplexity: chunks, BOS per chunk, scoring from ctx/2', async () => {
    const text = readFileSync(path.join(modelsDir, 'stories260K.expected.txt'), 'utf8');
    const ids = await oracleTokenize(STORIES, text, { addBos: true });
    const ctx = 64;
    expect(ids.length).toBeGreaterThanOrEqual(2 * ctx);
    const r = await oraclePerplexity(STORIES, ids, ctx);
    const chunks = Math.floor(ids.length / ctx);
    expect(r.chunks).toBe(chunks);
    expect(r.tokens).toBe(chunks * (ctx - ctx / 2 - 1));
    expect(r.ppl).toBeGreaterThan(1);
    expect(r.ppl).toBeLessThan(512);
    expect(r.ppl).toBeCloseTo(Math.exp(r.nll / r.tokens), 12);
    // independent path: the same windows through teacher forcing
    let nll = 0;
    for (let c = 0; c < chunks; c++) {
      const window = ids.slice(c * ctx, (c + 1) * ctx);
      window[0] = 1;
      const tf = await oracleTeacherForcedTopK(STORIES, window, 1);
      for (let j = ctx / 2; j <= ctx - 2; j++) nll -= tf.targetLogprobs[j];
    }
    expect(r.nll).toBeCloseTo(nll, 9);
  });

  it('rejects bad input with TwinferError codes', async () => {
    await expect(oracleTokenize(path.join(modelsDir, 'nope.gguf'), 'x')).rejects.toMatchObject({ code: 'E_FILE_NOT_FOUND' });
    await expect(oracleGreedy(STORIES, [], 3)).rejects.toMatchObject({ code: 'E_INVALID_ARGUMENT' });
    await expect(oracleTeacherForcedTopK(STORIES, [1, 2.5], 3)).rejects.toMatchObject({ code: 'E_INVALID_ARGUMENT' });
    await expect(oraclePerplexity(STORIES, [1, 2, 3], 64)).rejects.toMatchObject({ code: 'E_INVALID_ARGUMENT' });
  });

  describe('llama.cpp tools built from the node-llama-cpp source bundle', () => {
    const perplexityTool = findLlamaTool('llama-perplexity');
    const quantizeTool = findLlamaTool('llama-quantize');
    const debugTool = findLlamaTool('llama-debug');
    if (!debugTool) console.warn(`oracle.test.ts: ${missingToolMessage('llama-debug')}`);
    if (!perplexityTool) console.warn(`oracle.test.ts: ${missingToolMessage('llama-perplexity')}`);
    if (!quantizeTool) console.warn(`oracle.test.ts: ${missingToolMessage('llama-quantize')}`);

    it.skipIf(!perplexityTool)('oraclePerplexity matches the llama-perplexity binary (F32 KV, no flash attention)', async () => {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'oracle-ppl-'));
      try {
        const text = readFileSync(path.join(modelsDir, 'stories260K.expected.txt'), 'utf8');
        const file = path.join(dir, 'text.txt');
        writeFileSync(file, text);
        const ctx = 64;
        const args = ['-m', STORIES, '-f', file, '-c', String(ctx), '-b', String(ctx), '-ctk', 'f32', '-ctv', 'f32', '-fa', 'off', '-t', '1', '-ngl', '0'];
        const { stdout, stderr } = await execFileAsync(perplexityTool!, args, { maxBuffer: 64 << 20 });
        const m = /Final estimate: PPL = ([0-9.]+)/.exec(`${stdout}${stderr}`);
        expect(m, `${stdout}${stderr}`.slice(-2000)).not.toBeNull();
        const ids = await oracleTokenize(STORIES, text, { addBos: true });
        const r = await oraclePerplexity(STORIES, ids, ctx);
        expect(Math.abs(r.ppl - Number(m![1]))).toBeLessThan(1e-4 * r.ppl + 5e-5); // the tool prints 4 decimals
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it.skipIf(!debugTool)('node-llama-cpp probabilities match llama-debug raw logits to float32 precision', async () => {
      for (const model of [STORIES, STORIES_Q8]) {
        const prompt = 'Once upon a time, there was a little girl named Lily. She';
        const raw = await llamaRawLastLogits(model, prompt);
        const ids = await oracleTokenize(model, prompt, { addBos: true });
        expect(raw.tokens).toEqual(ids);
        expect(raw.logits).toHaveLength(512);
        const r = await oracleTeacherForcedTopK(model, ids, 5);
        let max = -Infinity;
        for (const v of raw.logits) max = Math.max(max, v);
        let sum = 0;
        for (const v of raw.logits) sum += Math.exp(v - max);
        const lse = max + Math.log(sum);
        let dLogit = 0;
        let dLogprob = 0;
        for (let t = 0; t < 512; t++) {
          dLogit = Math.max(dLogit, Math.abs(r.lastLogits[t] - (raw.logits[t] - max)));
          dLogprob = Math.max(dLogprob, Math.abs(r.lastLogprobs[t] - (raw.logits[t] - lse)));
        }
        // Two float32 error sources: node-llama-cpp's float32 softmax (~1e-7 relative on p) and the logits themselves,
        // which differ by a few ulp between the prebuilt CPU-variant library and this native build (F32 dot products
        // summed in another order): measured 4.2e-6 (F32 model) and 1.3e-6 (Q8_0) on logits of magnitude ~15-30.
        expect(dLogit, `${path.basename(model)} max |Δ shifted logit|`).toBeLessThan(2e-5);
        expect(dLogprob, `${path.basename(model)} max |Δ logprob|`).toBeLessThan(2e-5);
        console.info(`oracle vs llama-debug (${path.basename(model)}): max |Δ logit-max| ${dLogit.toExponential(2)}, max |Δ logprob| ${dLogprob.toExponential(2)}`);
      }
    });

    it.skipIf(!quantizeTool)('llama-quantize F32: Q8_0 tensors dequantized exactly, norms copied, output converted', async () => {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'oracle-dequant-'));
      try {
        for (const src of [STORIES_Q8, STORIES_Q4]) {
          const out = path.join(dir, `${path.basename(src, '.gguf')}-F32.gguf`);
          await llamaDequantizeToF32(src, out);
          const inInfo = await readGgufFileInfo(src, { sourceType: 'filesystem' });
          const outInfo = await readGgufFileInfo(out, { sourceType: 'filesystem' });
          const byName = new Map(outInfo.fullTensorInfo!.map((t) => [t.name, t]));
          const inBuf = readFileSync(src);
          const outBuf = readFileSync(out);
          for (const t of inInfo.fullTensorInfo!) {
            const o = byName.get(t.name)!;
            expect(o, t.name).toBeDefined();
            expect(o.dimensions.map(Number)).toEqual(t.dimensions.map(Number));
            const is2d = t.dimensions.length >= 2 && t.dimensions.slice(1).some((d) => Number(d) > 1);
            if (!is2d) {
              // 1-D tensors (norms) are never touched: same type, same bytes
              expect(o.ggmlType, t.name).toBe(t.ggmlType);
              expect(Buffer.compare(slice(inBuf, t, nbytes(t)), slice(outBuf, o, nbytes(o))), t.name).toBe(0);
              continue;
            }
            expect(o.ggmlType, t.name).toBe(GgmlType.F32); // including token_embd.weight and output.weight
            const got = toF32(slice(outBuf, o, nbytes(o)));
            const raw = slice(inBuf, t, nbytes(t));
            const want =
              t.ggmlType === GgmlType.Q8_0 ? dequantQ8_0(raw)
              : t.ggmlType === GgmlType.Q4_0 ? dequantQ4_0(raw)
              : t.ggmlType === GgmlType.F16 ? f16ToF32(raw)
              : t.ggmlType === GgmlType.F32 ? toF32(raw)
              : undefined;
            expect(want, `${t.name}: unexpected input type ${GgmlType[t.ggmlType]}`).toBeDefined();
            expect(bitsEqual(got, want!), `${t.name} (${GgmlType[t.ggmlType]})`).toBe(true);
          }
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});

function count(t: GgufTensorInfo): number {
  return t.dimensions.reduce<number>((a, d) => a * Number(d), 1);
}

function nbytes(t: GgufTensorInfo): number {
  const n = count(t);
  switch (t.ggmlType) {
    case GgmlType.F32: return n * 4;
    case GgmlType.F16: return n * 2;
    case GgmlType.Q8_0: return (n / 32) * 34;
    case GgmlType.Q4_0: return (n / 32) * 18;
    default: throw new Error(`unexpected type ${t.ggmlType} in ${t.name}`);
  }
}

function slice(buf: Buffer, t: GgufTensorInfo, len: number): Buffer {
  const off = Number(t.fileOffset);
  return buf.subarray(off, off + len);
}

/** IEEE half -> float, exact (every half is a float). */
function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function f16ToF32(b: Buffer): Float32Array {
  const out = new Float32Array(b.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = halfToFloat(b.readUInt16LE(2 * i));
  return out;
}

/** Q8_0 reference: block of 32 = f16 scale d + 32 int8 q; x = q * d, computed in float32 as ggml does. */
function dequantQ8_0(b: Buffer): Float32Array {
  const nb = b.length / 34;
  const out = new Float32Array(nb * 32);
  for (let i = 0; i < nb; i++) {
    const d = Math.fround(halfToFloat(b.readUInt16LE(i * 34)));
    for (let j = 0; j < 32; j++) out[i * 32 + j] = Math.fround(b.readInt8(i * 34 + 2 + j) * d);
  }
  return out;
}

/** Q4_0 reference: block of 32 = f16 scale d + 16 bytes; low nibbles are x[0..15], high nibbles x[16..31], (q - 8) * d. */
function dequantQ4_0(b: Buffer): Float32Array {
  const nb = b.length / 18;
  const out = new Float32Array(nb * 32);
  for (let i = 0; i < nb; i++) {
    const d = Math.fround(halfToFloat(b.readUInt16LE(i * 18)));
    for (let j = 0; j < 16; j++) {
      const q = b[i * 18 + 2 + j];
      out[i * 32 + j] = Math.fround(((q & 0x0f) - 8) * d);
      out[i * 32 + j + 16] = Math.fround(((q >> 4) - 8) * d);
    }
  }
  return out;
}

function toF32(b: Buffer): Float32Array {
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}

function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return false;
  return true;
}
