/**
 * The llama.cpp reference ("oracle") for tests and benchmarks, through node-llama-cpp 3.21.1's prebuilt CPU binaries.
 *
 * Settings chosen so that its numbers are those of a float32 implementation (see test/oracle/README.md):
 * F32 KV cache, no flash attention, one decode per prompt (batch = ubatch = context size), 2 threads (ggml computes
 * each dot product in one thread, so the thread count changes speed, not results).
 *
 * Logits: node-llama-cpp exposes no raw logits. The only per-position output is
 * `LlamaContextSequence.controlledEvaluate(..., { generateNext: { probabilities: true } })`, which returns, for every
 * requested position, the full-vocabulary softmax computed in float32 inside the addon (expf, float sum) from the
 * float32 logits (with temperature 0 the sampler chain is the greedy sampler, which leaves the logits untouched).
 * Consequences, documented in README.md: log-probabilities are exact to about 1e-6 (float32 rounding of p and of the
 * sum), logits are only known up to an additive constant (we return them shifted so the maximum is 0), and a token whose
 * probability underflows float32 (logit more than ~103 below the max) gets -Infinity.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import {
  getLlama,
  LlamaLogLevel,
  type ControlledEvaluateInputItem,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type Token,
} from 'node-llama-cpp';
import { TwinferError } from '../../packages/sdk/src/errors.js';

/** Threads for the oracle's evaluations (1 or 2 keeps it comparable and leaves the machine usable). */
const ORACLE_THREADS = Math.max(1, Number(process.env.ORACLE_THREADS ?? 1) | 0);
/** Smallest context created, so that most calls on small fixtures reuse the same one. */
const MIN_CONTEXT = 512;

let llamaPromise: Promise<Llama> | undefined;

/**
 * node-llama-cpp estimates memory in the background with a tensor-less model load, which fails harmlessly on
 * llama.cpp's vocab-only GGUFs and logs two errors; drop exactly those. Real load failures still throw from loadModel.
 */
function oracleLogger(level: LlamaLogLevel, message: string): void {
  if (/missing tensor 'token_embd\.weight'|llama_model_load_from_file_impl: failed to load model/.test(message)) return;
  console.error(`[node-llama-cpp ${level}] ${message.trimEnd()}`);
}

/** The shared node-llama-cpp instance: prebuilt CPU binaries only, never a source build, errors-only logging. */
export function getOracle(): Promise<Llama> {
  llamaPromise ??= getLlama({
    gpu: false,
    build: 'never',
    logLevel: LlamaLogLevel.error,
    logger: oracleLogger,
    maxThreads: ORACLE_THREADS,
  }).catch((e: unknown) => {
    llamaPromise = undefined; // allow a retry after a transient failure
    throw new TwinferError('E_BACKEND_UNAVAILABLE', `node-llama-cpp prebuilt CPU binaries failed to load: ${String(e)}`, undefined, { cause: e });
  });
  return llamaPromise;
}

/** One loaded model with its single reusable context; `queue` serialises every use of the one sequence. */
interface Loaded {
  model: LlamaModel;
  context?: LlamaContext;
  sequence?: LlamaContextSequence;
  queue: Promise<unknown>;
}

const fullModels = new Map<string, Promise<Loaded>>();
const vocabModels = new Map<string, Promise<LlamaModel>>();

function resolveModelPath(modelPath: string): string {
  const abs = path.resolve(modelPath);
  if (!existsSync(abs)) throw new TwinferError('E_FILE_NOT_FOUND', `oracle: model file not found: ${abs}`, { path: abs });
  return abs;
}

function loadFull(modelPath: string): Promise<Loaded> {
  const abs = resolveModelPath(modelPath);
  let p = fullModels.get(abs);
  if (!p) {
    p = (async () => {
      const llama = await getOracle();
      const model = await llama.loadModel({ modelPath: abs, gpuLayers: 0 });
      return { model, queue: Promise.resolve() };
    })();
    p.catch(() => fullModels.delete(abs));
    fullModels.set(abs, p);
  }
  return p;
}

/** Tokenizer-only load (works for llama.cpp's vocab-only GGUFs too); reuses the full model when already loaded. */
async function loadVocab(modelPath: string): Promise<LlamaModel> {
  const abs = resolveModelPath(modelPath);
  const full = fullModels.get(abs);
  if (full) return (await full).model;
  let p = vocabModels.get(abs);
  if (!p) {
    p = getOracle().then((llama) => llama.loadModel({ modelPath: abs, vocabOnly: true, gpuLayers: 0 }));
    p.catch(() => vocabModels.delete(abs));
    vocabModels.set(abs, p);
  }
  return p;
}

/**
 * Runs `fn` with a cleared sequence of a context that holds at least `nTokens` tokens, one call at a time per model.
 * The context is created once and only re-created (larger) when a call needs more room.
 */
async function withSequence<T>(modelPath: string, nTokens: number, fn: (seq: LlamaContextSequence, model: LlamaModel) => Promise<T>): Promise<T> {
  const loaded = await loadFull(modelPath);
  const run = loaded.queue.then(async () => {
    if (!loaded.context || loaded.context.contextSize < nTokens) {
      await loaded.context?.dispose();
      const size = Math.ceil(Math.max(nTokens, MIN_CONTEXT) / 256) * 256;
      loaded.context = await loaded.model.createContext({
        contextSize: size,
        batchSize: size, // the addon sets ubatch = batch: a whole prompt is one llama_decode
        sequences: 1,
        threads: ORACLE_THREADS,
        flashAttention: false,
        experimentalKvCacheKeyType: 'F32',
        experimentalKvCacheValueType: 'F32',
      });
      loaded.sequence = loaded.context.getSequence();
    }
    const seq = loaded.sequence!;
    await seq.clearHistory();
    return fn(seq, loaded.model);
  });
  loaded.queue = run.catch(() => undefined);
  return run;
}

function checkIds(ids: readonly number[], what: string, vocabSize?: number): void {
  if (!Array.isArray(ids) || ids.length === 0) throw new TwinferError('E_INVALID_ARGUMENT', `oracle: ${what} must be a non-empty array of token ids`);
  for (const t of ids) {
    if (!Number.isInteger(t) || t < 0 || (vocabSize !== undefined && t >= vocabSize)) {
      throw new TwinferError('E_INVALID_ARGUMENT', `oracle: ${what} holds an invalid token id ${t}`, { token: t, vocabSize });
    }
  }
}

/** Vocabulary size from the GGUF token list (node-llama-cpp has no n_vocab accessor); llama.cpp re-checks ids anyway. */
function vocabSizeOf(model: LlamaModel): number {
  const tokens = (model.fileInfo.metadata as unknown as { tokenizer?: { ggml?: { tokens?: unknown[] } } }).tokenizer?.ggml?.tokens;
  return Array.isArray(tokens) && tokens.length > 0 ? tokens.length : Number.MAX_SAFE_INTEGER;
}

export interface OracleVocabInfo {
  bos: number | null;
  eos: number | null;
  /** `tokenizer.ggml.add_bos_token` as llama.cpp resolves it (true when BOS must start every sequence). */
  addBos: boolean;
}

export async function oracleVocabInfo(modelPath: string): Promise<OracleVocabInfo> {
  const model = await loadVocab(modelPath);
  return { bos: model.tokens.bos, eos: model.tokens.eos, addBos: model.tokens.shouldPrependBosToken };
}

/**
 * llama.cpp's tokenizer (`common_tokenize(vocab, text, add_special=false, parse_special)`), optionally with BOS first.
 * `addBos` defaults to the model's own add_bos flag; `parseSpecial` (default false) maps texts like `<s>` to control tokens.
 */
export async function oracleTokenize(modelPath: string, text: string, opts: { addBos?: boolean; parseSpecial?: boolean } = {}): Promise<number[]> {
  if (typeof text !== 'string') throw new TwinferError('E_INVALID_ARGUMENT', 'oracle: text must be a string');
  const model = await loadVocab(modelPath);
  const addBos = opts.addBos ?? model.tokens.shouldPrependBosToken;
  const ids = model.tokenize(text, opts.parseSpecial ?? false).map(Number);
  if (!addBos) return ids;
  const bos = model.tokens.bos;
  if (bos == null) throw new TwinferError('E_TOKENIZER', `oracle: ${path.basename(modelPath)} has no BOS token but addBos was requested`);
  return [bos, ...ids];
}

/** llama.cpp's detokenizer (`llama_detokenize`, special tokens rendered as empty unless `renderSpecial`). */
export async function oracleDetokenize(modelPath: string, ids: readonly number[], opts: { renderSpecial?: boolean } = {}): Promise<string> {
  const model = await loadVocab(modelPath);
  if (ids.length === 0) return '';
  checkIds(ids, 'ids', vocabSizeOf(model));
  return model.detokenize(ids as Token[], opts.renderSpecial ?? false);
}

export interface TopK {
  ids: number[];
  /** log-softmax of the logits (float64 log of node-llama-cpp's float32 probability), descending. */
  logprobs: number[];
}

export interface TeacherForcedResult {
  /** topk[i]: the k most likely next tokens after ids[0..i] (ties ordered by ascending id). */
  topk: TopK[];
  /** targetLogprobs[i] = log p(ids[i+1] | ids[0..i]), for i < ids.length - 1. */
  targetLogprobs: number[];
  /** Every token's log-probability at the last position (vocabulary order). */
  lastLogprobs: Float64Array;
  /**
   * The last position's logits shifted so that their maximum is 0 (logit - max logit). node-llama-cpp does not expose
   * the additive constant; softmax, argmax and every difference of logits are unaffected by it.
   */
  lastLogits: Float64Array;
}

/** Float32 probability -> log-probability; node-llama-cpp's probabilities are float32 values widened to double. */
function logOf(p: number): number {
  return p > 0 ? Math.log(p) : Number.NEGATIVE_INFINITY;
}

/** Teacher-forced evaluation of `ids` in one decode: the next-token distribution at every position. */
export async function oracleTeacherForcedTopK(modelPath: string, ids: readonly number[], k: number): Promise<TeacherForcedResult> {
  if (!Number.isInteger(k) || k < 1) throw new TwinferError('E_INVALID_ARGUMENT', `oracle: k must be a positive integer, got ${k}`);
  return withSequence(modelPath, ids.length, async (seq, model) => {
    checkIds(ids, 'ids', vocabSizeOf(model));
    const want = { generateNext: { probabilities: true, options: { temperature: 0 } } };
    const out = await seq.controlledEvaluate(ids.map((t): ControlledEvaluateInputItem => [t as Token, want]));
    const topk: TopK[] = [];
    const targetLogprobs: number[] = [];
    let lastProbs: Map<Token, number> | undefined;
    for (let i = 0; i < ids.length; i++) {
      const probs = out[i]?.next.probabilities;
      if (!probs) throw new TwinferError('E_INTERNAL', `oracle: node-llama-cpp returned no probabilities for position ${i}`);
      // The map is sorted by logit, descending: the first k entries are the top k.
      const head: Array<[number, number]> = [];
      for (const [id, p] of probs) {
        if (head.length === k) break;
        head.push([id, p]);
      }
      head.sort((a, b) => b[1] - a[1] || a[0] - b[0]);
      topk.push({ ids: head.map((e) => e[0]), logprobs: head.map((e) => logOf(e[1])) });
      if (i + 1 < ids.length) targetLogprobs.push(logOf(probs.get(ids[i + 1] as Token) ?? 0));
      lastProbs = probs;
    }
    const n = lastProbs!.size;
    const lastLogprobs = new Float64Array(n).fill(Number.NEGATIVE_INFINITY);
    for (const [id, p] of lastProbs!) lastLogprobs[id] = logOf(p);
    let max = Number.NEGATIVE_INFINITY;
    for (const v of lastLogprobs) if (v > max) max = v;
    const lastLogits = lastLogprobs.map((v) => v - max);
    return { topk, targetLogprobs, lastLogprobs, lastLogits };
  });
}

/**
 * Greedy continuation (temperature 0: llama.cpp's greedy sampler, ties to the lowest id) of exactly `n` tokens after
 * `promptIds`; end-of-generation tokens do not stop it, so the result is the model's raw argmax chain.
 */
export async function oracleGreedy(modelPath: string, promptIds: readonly number[], n: number): Promise<number[]> {
  if (!Number.isInteger(n) || n < 0) throw new TwinferError('E_INVALID_ARGUMENT', `oracle: n must be a non-negative integer, got ${n}`);
  return withSequence(modelPath, promptIds.length + n, async (seq, model) => {
    checkIds(promptIds, 'promptIds', vocabSizeOf(model));
    const result: number[] = [];
    if (n === 0) return result;
    const gen = { generateNext: { token: true, options: { temperature: 0 } } };
    let input: ControlledEvaluateInputItem[] = promptIds.map((t, i) => (i === promptIds.length - 1 ? [t as Token, gen] : (t as Token)));
    while (result.length < n) {
      const out = await seq.controlledEvaluate(input);
      const next = out[input.length - 1]?.next.token;
      if (next == null) throw new TwinferError('E_INTERNAL', `oracle: node-llama-cpp sampled no token at step ${result.length}`);
      result.push(next);
      input = [[next, gen]];
    }
    return result;
  });
}

export interface PerplexityResult {
  /** exp(nll / tokens) */
  ppl: number;
  /** Number of scored tokens: chunks * (ctx - ctx/2 - 1). */
  tokens: number;
  /** Total negative log-likelihood (natural log) over the scored tokens. */
  nll: number;
  chunks: number;
}

/**
 * Perplexity exactly as llama.cpp's `llama-perplexity` computes it (tools/perplexity/perplexity.cpp, `perplexity()`,
 * default options): `ids` is the whole tokenized text (llama.cpp tokenizes with add_special, i.e. BOS first when the
 * model adds BOS); it needs at least 2*ctx tokens; it is cut into floor(len/ctx) non-overlapping chunks of ctx
 * tokens (the remainder is ignored); each chunk is evaluated from an empty KV cache with its first token replaced by
 * BOS when the model adds BOS; with first = floor(ctx/2), the logits at positions first..ctx-2 score the tokens at
 * first+1..ctx-1, i.e. ctx - first - 1 tokens per chunk.
 */
export async function oraclePerplexity(modelPath: string, ids: readonly number[], ctx: number): Promise<PerplexityResult> {
  if (!Number.isInteger(ctx) || ctx < 4) throw new TwinferError('E_INVALID_ARGUMENT', `oracle: ctx must be an integer >= 4, got ${ctx}`);
  if (ids.length < 2 * ctx) {
    throw new TwinferError('E_INVALID_ARGUMENT', `oracle: perplexity with a context of ${ctx} needs at least ${2 * ctx} tokens, got ${ids.length}`);
  }
  const info = await oracleVocabInfo(modelPath);
  const nChunk = Math.floor(ids.length / ctx);
  const first = Math.floor(ctx / 2);
  let nll = 0;
  let count = 0;
  for (let c = 0; c < nChunk; c++) {
    const start = c * ctx;
    const window = ids.slice(start, start + ctx);
    if (info.addBos && info.bos != null) window[0] = info.bos;
    nll += await withSequence(modelPath, ctx, async (seq, model) => {
      checkIds(window, 'ids', vocabSizeOf(model));
      // Only positions first..ctx-2 need a distribution (llama.cpp asks for logits from `first` on; the last is unused).
      const want = { generateNext: { probabilities: true, options: { temperature: 0 } } };
      const out = await seq.controlledEvaluate(
        window.map((t, j): ControlledEvaluateInputItem => (j >= first && j <= ctx - 2 ? [t as Token, want] : (t as Token))),
      );
      let chunkNll = 0;
      for (let j = first; j <= ctx - 2; j++) {
        const probs = out[j]?.next.probabilities;
        if (!probs) throw new TwinferError('E_INTERNAL', `oracle: node-llama-cpp returned no probabilities for position ${j}`);
        // The scored token is the original one (only position 0 is ever replaced, and it is never a target).
        chunkNll -= logOf(probs.get(ids[start + j + 1] as Token) ?? 0);
      }
      return chunkNll;
    });
    count += ctx - first - 1;
  }
  return { ppl: Math.exp(nll / count), tokens: count, nll, chunks: nChunk };
}

/** Frees every model and context (bench scripts call it before exiting; tests may leave it to process exit). */
export async function disposeOracle(): Promise<void> {
  const all = [...fullModels.values()];
  const vocab = [...vocabModels.values()];
  fullModels.clear();
  vocabModels.clear();
  for (const p of all) {
    const l = await p.catch(() => undefined);
    await l?.context?.dispose();
    await l?.model.dispose();
  }
  for (const p of vocab) await (await p.catch(() => undefined))?.dispose();
  const llama = await llamaPromise?.catch(() => undefined);
  llamaPromise = undefined;
  await llama?.dispose();
}
