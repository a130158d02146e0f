/**
 * The public model object: load a GGUF file into a backend, then tokenize, generate (whole or streamed),
 * evaluate and score text.
 */
import { closeSync, openSync } from 'node:fs';

import { TwinferError } from '../errors.js';
import { readGGUF, readInto, streamTensor } from '../gguf/reader.js';
import { typeName } from '../gguf/type-info.js';
import type { GGUFFile } from '../gguf/types.js';
import { Tokenizer } from '../tokenizer/index.js';
import { createSampler, logprobOf, logSoftmaxTopK, logSumExp, validateGenerationConfig } from '../sampling/index.js';
import { CoreError, type CoreEngine, type CoreHParams } from '../backend/core.js';
import { requestedBackend, selectCore } from '../backend/select.js';
import { InferenceEngine, type Sequence } from '../engine/engine.js';
import { SequenceSlots, StepScheduler } from '../engine/scheduler.js';
import { architectureOf, hparamsOf, placeTensors } from './architecture.js';
import { StopMatcher } from './stop-matcher.js';
import { parseQuantization, quantizeTensorFromFile, targetType } from './requantize.js';
import type {
  BackendInfo, FinishReason, GenerationConfig, GenerationResult, LoadOptions, ModelInfo, StepLogprobs, StreamChunk, Timings,
} from '../types.js';

const KV_BLOCK_SIZE = 16;
const DEFAULT_MAX_BATCH_TOKENS = 512;
/** Logit rows one step may return are capped so the logits buffer stays near this size. */
const LOGITS_BUFFER_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_NEW_TOKENS = 256;

export type GenerateOptions = GenerationConfig & {
  /** Keep generating past end-of-generation tokens (benchmarks). */
  ignoreEos?: boolean;
};

const CORE_CODES: Record<number, TwinferError['code']> = {
  1: 'E_INVALID_ARGUMENT',
  2: 'E_UNSUPPORTED_TYPE',
  3: 'E_OUT_OF_MEMORY',
  4: 'E_MISSING_TENSOR',
  5: 'E_SHAPE_MISMATCH',
  6: 'E_KV_CACHE_FULL',
  7: 'E_BACKEND_UNAVAILABLE',
};

/** Converts a native core failure into the SDK's typed error. */
export function fromCoreError(e: unknown): unknown {
  // Each core package has its own CoreError class (they must not depend on the SDK): match by shape.
  if (e instanceof CoreError || (e instanceof Error && e.name === 'CoreError' && typeof (e as CoreError).coreCode === 'number')) {
    const c = e as CoreError;
    return new TwinferError(CORE_CODES[c.coreCode] ?? 'E_INTERNAL', c.message, { coreCode: c.coreCode }, { cause: e });
  }
  return e;
}

function countParameters(file: GGUFFile): number {
  return file.tensors.reduce((s, t) => s + t.nElements, 0);
}

function tensorTypes(file: GGUFFile): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of file.tensors) out[typeName(t.type)] = (out[typeName(t.type)] ?? 0) + 1;
  return out;
}

function describe(path: string, file: GGUFFile, hp: CoreHParams, contextSize: number, weightBytes: number, kvBytes: number, kvElementBytes = 2): ModelInfo {
  const name = file.metadata['general.name'];
  return {
    kvBytesPerToken: 2 * hp.nLayer * hp.nHeadKv * hp.headDim * kvElementBytes,
    kvCacheType: kvElementBytes === 4 ? 'f32' : 'f16',
    path,
    architecture: architectureOf(file),
    name: typeof name === 'string' ? name : undefined,
    parameters: countParameters(file),
    fileBytes: file.fileSize,
    weightBytes,
    kvCacheBytes: kvBytes,
    contextSize,
    trainedContext: hp.nCtxTrain,
    vocabSize: hp.nVocab,
    embeddingLength: hp.nEmbd,
    layers: hp.nLayer,
    heads: hp.nHead,
    kvHeads: hp.nHeadKv,
    feedForwardLength: hp.nFf,
    tensorTypes: tensorTypes(file),
  };
}

/** Reads a model's header (no weights) and describes it. */
export async function inspectModel(path: string): Promise<ModelInfo> {
  const file = await readGGUF(path);
  const hp = hparamsOf(file);
  placeTensors(file, hp.nLayer);
  const weightBytes = file.tensors.reduce((s, t) => s + t.size, 0);
  return describe(path, file, hp, Math.min(hp.nCtxTrain, 4096), weightBytes, 0);
}

/** Loads only the tokenizer of a GGUF file. */
export async function loadTokenizer(path: string): Promise<Tokenizer> {
  const file = await readGGUF(path);
  return Tokenizer.fromGGUF(file.metadata);
}

function positiveInt(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (!Number.isInteger(v) || v <= 0) throw new TwinferError('E_INVALID_ARGUMENT', `${name} must be a positive integer, got ${v}`, { [name]: v });
  return v;
}

export async function loadModel(path: string, opts: LoadOptions = {}): Promise<Model> {
  const file = await readGGUF(path);
  const hp = hparamsOf(file);
  const placements = placeTensors(file, hp.nLayer);
  const tokenizer = Tokenizer.fromGGUF(file.metadata);
  const selected = await selectCore(requestedBackend(opts.backend));
  const quantize = parseQuantization(opts.quantize);
  const storage = placements.map((p) => targetType(p.tensor, p.role, quantize));
  placements.forEach((p, i) => {
    if (!selected.core.typeSupported(storage[i])) {
      throw new TwinferError('E_UNSUPPORTED_TYPE', `tensor ${p.tensor.name} has type ${typeName(p.tensor.type)}, which the ${selected.name} backend does not support`, {
        tensor: p.tensor.name, type: p.tensor.type,
      });
    }
  });
  const contextSize = positiveInt('contextSize', opts.contextSize, Math.min(hp.nCtxTrain, 4096));
  const maxSequences = positiveInt('maxSequences', opts.maxSequences, 1);
  const threads = opts.threads === undefined ? undefined : positiveInt('threads', opts.threads, 1);
  const maxBatchTokens = Math.min(positiveInt('maxBatchTokens', opts.maxBatchTokens, DEFAULT_MAX_BATCH_TOKENS), contextSize * maxSequences);
  const maxOutputs = Math.max(1, Math.min(maxBatchTokens, Math.floor(LOGITS_BUFFER_BYTES / (hp.nVocab * 4))));
  const kvType = opts.kvCacheType ?? 'f16';
  if (kvType !== 'f32' && kvType !== 'f16') throw new TwinferError('E_INVALID_ARGUMENT', `kvCacheType must be f32 or f16, got ${String(kvType)}`);
  const nBlocks = maxSequences * Math.ceil(contextSize / KV_BLOCK_SIZE);

  if (selected.name === 'cuda') {
    // Fail before allocating anything, with the whole model's needs (weights + KV cache) against what is free.
    const free = selected.core.probe().devices?.[0]?.freeBytes;
    const weightBytes = placements.reduce((s, p, i) => s + selected.core.typeRowSize(storage[i], p.tensor.dims[0]) * (p.tensor.nElements / p.tensor.dims[0]), 0);
    const kvBytes = nBlocks * KV_BLOCK_SIZE * 2 * hp.nLayer * hp.nHeadKv * hp.headDim * (kvType === 'f32' ? 4 : 2);
    if (free !== undefined && weightBytes + kvBytes > free) {
      throw new TwinferError('E_OUT_OF_MEMORY', `model needs ${weightBytes + kvBytes} bytes on the GPU (weights ${weightBytes}, KV cache ${kvBytes}) but ${free} bytes are free`, {
        neededBytes: weightBytes + kvBytes, freeBytes: free,
      });
    }
  }

  let core: CoreEngine;
  try {
    core = await selected.core.createEngine(hp, {
      nThreads: threads ?? 0,
      kvType: kvType === 'f32' ? 0 : 1,
      kvBlockSize: KV_BLOCK_SIZE,
      kvBlocks: nBlocks,
      maxBatchTokens,
      maxOutputs,
      device: 0,
      flags: opts.exactActivations ? 2 /* TW_FLAG_FLOAT_ACTIVATIONS */ : 0,
    });
  } catch (e) {
    throw fromCoreError(e);
  }

  const fd = openSync(path, 'r');
  try {
    const total = placements.reduce((s, p) => s + p.tensor.size, 0);
    let loaded = 0;
    for (const [i, p] of placements.entries()) {
      opts.signal?.throwIfAborted?.();
      const t = p.tensor;
      const type = storage[i];
      const view = core.allocTensor(p.role, p.layer, type, t.dims[0], t.dims.slice(1).reduce((a, b) => a * b, 1));
      if (type !== t.type) quantizeTensorFromFile(fd, t, type, view ?? ((off, bytes) => core.writeTensor(p.role, p.layer, off, bytes)));
      else if (view) readInto(fd, t.offset, view); // straight from the file into backend memory: no JS copy
      else streamTensor(fd, t, 8 << 20, (chunk, off) => core.writeTensor(p.role, p.layer, off, chunk));
      core.finalizeTensor(p.role, p.layer);
      loaded += t.size;
      opts.onProgress?.(loaded, total);
    }
    core.ready();
  } catch (e) {
    core.dispose();
    if ((e as Error)?.name === 'AbortError') throw new TwinferError('E_ABORTED', 'model load was aborted', undefined, { cause: e });
    throw fromCoreError(e);
  } finally {
    closeSync(fd);
  }

  const mem = core.memory();
  const engine = new InferenceEngine(core, hp, {
    blockSize: KV_BLOCK_SIZE, nBlocks, maxBatchTokens, maxOutputs, contextSize, pipeline: opts.pipelineDecode,
  });
  const backend: BackendInfo = {
    name: selected.name,
    reason: selected.reason,
    threads: selected.name === 'wasm' ? (threads ?? (await import('@twinfer/core-wasm')).defaultThreads()) : undefined,
    device: selected.device,
  };
  const info = describe(path, file, hp, contextSize, mem.weights, mem.kvCache, kvType === 'f32' ? 4 : 2);
  if (quantize) {
    const fileWeightBytes = placements.reduce((s, p) => s + p.tensor.size, 0);
    info.quantization = { type: quantize, fileWeightBytes, loadedWeightBytes: mem.weights, savedBytes: fileWeightBytes - mem.weights };
  }
  return new Model(info, backend, tokenizer, engine, maxSequences);
}

const yieldToEventLoop = () => new Promise<void>((r) => setImmediate(r));

function emptyTimings(promptTokens: number): Timings {
  return { promptTokens, promptMs: 0, generatedTokens: 0, generateMs: 0, prefillTokensPerSecond: 0, decodeTokensPerSecond: 0 };
}

export class Model {
  private disposed = false;
  /** at most maxSequences requests hold KV-cache space; others queue (FIFO) */
  private readonly slots: SequenceSlots;
  /** merges the forward steps of concurrent requests (continuous batching) */
  private readonly scheduler: StepScheduler;

  constructor(
    readonly info: ModelInfo,
    readonly backend: BackendInfo,
    readonly tokenizer: Tokenizer,
    private readonly engine: InferenceEngine,
    maxSequences = 1,
  ) {
    this.slots = new SequenceSlots(maxSequences);
    this.scheduler = new StepScheduler(engine);
  }

  private live(): void {
    if (this.disposed) throw new TwinferError('E_DISPOSED', 'model was disposed');
  }

  tokenize(text: string, opts: { bos?: boolean; special?: boolean } = {}): number[] {
    if (typeof text !== 'string') throw new TwinferError('E_INVALID_ARGUMENT', 'text must be a string');
    return this.tokenizer.encode(text, { addBos: opts.bos ?? false, parseSpecial: opts.special ?? false });
  }

  detokenize(ids: number[]): string {
    return this.tokenizer.decode(ids);
  }

  private promptIds(prompt: string | number[] | undefined, addBos: boolean | undefined): number[] {
    const bos = addBos ?? this.tokenizer.addBosDefault;
    if (prompt === undefined || prompt === '') {
      if (this.tokenizer.bosId === undefined) throw new TwinferError('E_INVALID_ARGUMENT', 'empty prompt and the model has no BOS token');
      return [this.tokenizer.bosId];
    }
    if (Array.isArray(prompt)) {
      for (const id of prompt) {
        if (!Number.isInteger(id) || id < 0 || id >= this.info.vocabSize) {
          throw new TwinferError('E_INVALID_ARGUMENT', `prompt token id ${id} is outside the vocabulary (0..${this.info.vocabSize - 1})`);
        }
      }
      return [...prompt];
    }
    if (typeof prompt !== 'string') throw new TwinferError('E_INVALID_ARGUMENT', 'prompt must be a string or an array of token ids');
    return this.tokenizer.encode(prompt, { addBos: bos, parseSpecial: true });
  }

  /** Teacher forcing: logits after each prefix ids[0..i], for every i. */
  async evaluate(ids: number[]): Promise<Float32Array[]> {
    this.live();
    const prompt = this.promptIds(ids, false);
    await this.slots.acquire();
    const seq = this.engine.createSequence();
    try {
      return this.engine.evaluate(seq, prompt, 'all');
    } catch (e) {
      throw fromCoreError(e);
    } finally {
      this.engine.releaseSequence(seq);
      this.slots.release();
    }
  }

  /**
   * Perplexity as llama.cpp's perplexity tool computes it: non-overlapping windows of `ctx` tokens, the first token
   * of each window replaced by BOS when the model adds one, scoring each window's second half.
   */
  async perplexity(ids: number[], opts: { ctx: number }): Promise<{ ppl: number; tokens: number; nll: number }> {
    this.live();
    const ctx = opts.ctx;
    if (!Number.isInteger(ctx) || ctx < 4) throw new TwinferError('E_INVALID_ARGUMENT', `ctx must be an integer >= 4, got ${ctx}`);
    if (ctx > this.info.contextSize) {
      throw new TwinferError('E_CONTEXT_OVERFLOW', `ctx ${ctx} exceeds the model's context size ${this.info.contextSize}`);
    }
    // Like llama.cpp's perplexity tool: at least two windows' worth of tokens.
    if (ids.length < 2 * ctx) {
      throw new TwinferError('E_INVALID_ARGUMENT', `text has ${ids.length} tokens; perplexity with ctx ${ctx} needs at least ${2 * ctx}`);
    }
    const nChunks = Math.floor(ids.length / ctx);
    const first = Math.floor(ctx / 2);
    let nll = 0;
    let count = 0;
    for (let c = 0; c < nChunks; c++) {
      const window = ids.slice(c * ctx, (c + 1) * ctx);
      if (this.tokenizer.addBosDefault && this.tokenizer.bosId !== undefined) window[0] = this.tokenizer.bosId;
      const logits = await this.evaluate(window);
      for (let j = first; j < ctx - 1; j++) {
        nll -= logprobOf(logits[j], window[j + 1]);
        count++;
      }
      await yieldToEventLoop();
    }
    return { ppl: Math.exp(nll / count), tokens: count, nll };
  }

  async generate(prompt?: string | number[], cfg: GenerateOptions = {}): Promise<GenerationResult> {
    let result: GenerationResult | undefined;
    for await (const _ of this.run(prompt, cfg, (r) => (result = r))) {
      // the result is assembled by run(); chunks matter only to stream()
    }
    return result!;
  }

  stream(prompt?: string | number[], cfg: GenerateOptions = {}): AsyncIterable<StreamChunk> {
    return this.run(prompt, cfg, () => {});
  }

  private async *run(prompt: string | number[] | undefined, cfg: GenerateOptions, done: (r: GenerationResult) => void): AsyncGenerator<StreamChunk> {
    this.live();
    validateGenerationConfig(cfg);
    const maxNew = cfg.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
    const topLogprobs = cfg.logprobs ?? 0;
    if (!Number.isInteger(topLogprobs) || topLogprobs < 0) {
      throw new TwinferError('E_INVALID_ARGUMENT', `logprobs must be an integer >= 0, got ${cfg.logprobs}`);
    }
    const promptIds = this.promptIds(prompt, cfg.addBos);
    if (promptIds.length > this.info.contextSize) {
      throw new TwinferError('E_CONTEXT_OVERFLOW', `prompt of ${promptIds.length} tokens exceeds the context size of ${this.info.contextSize}`, {
        promptTokens: promptIds.length, contextSize: this.info.contextSize,
      });
    }
    const sampler = createSampler(cfg, this.info.vocabSize);
    const stop = new StopMatcher(cfg.stop ?? []);
    // Text continues the prompt, so the first generated token keeps its leading space — unless there is no prompt
    // text at all (BOS alone), where llama.cpp/llama2.c drop the SentencePiece space prefix.
    const bosOnly = promptIds.length === 1 && promptIds[0] === this.tokenizer.bosId;
    const decoder = this.tokenizer.createStreamDecoder({ stripLeadingSpace: bosOnly });

    const t0 = performance.now();
    try {
      await this.slots.acquire(cfg.signal);
    } catch (e) {
      if ((e as TwinferError).code !== 'E_ABORTED') throw e;
      done({ text: '', promptIds, ids: [], finishReason: 'abort', timings: emptyTimings(promptIds.length) });
      return;
    }
    const seq: Sequence = this.engine.createSequence();
    const ids: number[] = [];
    const steps: StepLogprobs[] = [];
    let text = '';
    let finishReason: FinishReason = 'length';
    let tPrompt = t0;
    try {
      // Ask for the best k logits instead of whole rows where the sampler can choose from them exactly (greedy,
      // top-k) and no log-probabilities are wanted: on the CUDA backend only k values per sequence leave the GPU.
      const topFor = (h: readonly number[]) => (topLogprobs > 0 ? 0 : sampler.topNeeded(h));
      // Pipelined decode (device cores): the token after each step is its best logit, so the device can feed it
      // into the next step itself — unless log-probabilities are wanted (whole rows) or the sampler does more.
      const chain = sampler.takesBest && topLogprobs === 0;
      let logits = await this.scheduler.forward(seq, promptIds, topFor(promptIds), { chain, more: maxNew > 1 });
      tPrompt = performance.now();
      const history = [...promptIds];
      while (ids.length < maxNew && promptIds.length < this.info.contextSize) {
        if (cfg.signal?.aborted) {
          finishReason = 'abort';
          break;
        }
        const id = logits instanceof Float32Array ? sampler.sample(logits, history) : sampler.sampleTop(logits, history);
        if (!cfg.ignoreEos && this.tokenizer.isEog(id)) {
          finishReason = 'eos';
          break;
        }
        let step: StepLogprobs | undefined;
        if (topLogprobs > 0 && logits instanceof Float32Array) {
          const logZ = logSumExp(logits); // one pass over the vocabulary serves both
          const top = logSoftmaxTopK(logits, topLogprobs, logZ).map((t) => ({ id: t.id, token: this.tokenizer.tokenToPiece(t.id), logprob: t.logprob }));
          step = { id, logprob: logprobOf(logits, id, logZ), top };
          steps.push(step);
        }
        ids.push(id);
        history.push(id);
        const piece = decoder.push(id);
        const { emit, stopped } = stop.push(piece);
        text += emit;
        if (emit.length > 0 || step) yield { id, text: emit, logprobs: step };
        else yield { id, text: '' };
        if (stopped) {
          finishReason = 'stop';
          break;
        }
        // prompt + generated never exceeds the context: every returned token had (or could have had) a KV slot.
        if (ids.length >= maxNew || seq.length + 1 >= this.info.contextSize) break;
        logits = await this.scheduler.forward(seq, [id], topFor(history), { chain, more: ids.length + 1 < maxNew });
      }
      if (finishReason !== 'stop') {
        const tail = stop.flush(decoder.flush());
        if (tail.length > 0) {
          text += tail;
          yield { id: -1, text: tail };
        }
      }
    } catch (e) {
      throw fromCoreError(e);
    } finally {
      this.engine.releaseSequence(seq);
      this.slots.release();
    }
    const t1 = performance.now();
    const timings: Timings = {
      promptTokens: promptIds.length,
      promptMs: tPrompt - t0,
      generatedTokens: ids.length,
      generateMs: t1 - tPrompt,
      prefillTokensPerSecond: promptIds.length / Math.max(1e-9, (tPrompt - t0) / 1000),
      decodeTokensPerSecond: ids.length > 1 ? (ids.length - 1) / Math.max(1e-9, (t1 - tPrompt) / 1000) : 0,
    };
    done({ text, promptIds, ids, finishReason, logprobs: topLogprobs > 0 ? steps : undefined, timings });
  }

  /** Requests waiting for a KV-cache slot, and the batching scheduler's counters. */
  stats(): { queued: number; steps: number; tokens: number } {
    return { queued: this.slots.waiting, steps: this.scheduler.steps, tokens: this.scheduler.tokens };
  }

  /** Bytes held by the backend: weights, KV cache, scratch. */
  memory(): { weights: number; kvCache: number; scratch: number } {
    this.live();
    return this.engine.core.memory();
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.engine.core.dispose();
  }
}
