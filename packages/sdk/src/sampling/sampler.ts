/**
 * Picks the next token from a row of logits. The transforms run in llama.cpp's default chain order so that the
 * same settings mean the same thing here as there:
 *   penalties -> top-k -> top-p -> min-p -> temperature -> dist
 * (top-p and min-p therefore see the untempered distribution, as in llama.cpp). Greedy decoding (doSample false,
 * or temperature 0) still applies the repetition penalty first, as llama.cpp's chain does, then takes the argmax.
 */
import { TwinferError } from '../errors.js';
import { createPrng, randomSeed, type Prng } from './prng.js';
import { argmax, sortIds, topKIds } from './select.js';
import { validateGenerationConfig, type SamplerConfig } from './validate.js';

/** llama.cpp's default `penalty_last_n`. */
export const DEFAULT_REPETITION_LAST_N = 64;
/** Temperature used when doSample is true and no temperature was given. */
export const DEFAULT_SAMPLING_TEMPERATURE = 0.8;

export interface Sampler {
  /** true when this sampler always takes the argmax */
  readonly greedy: boolean;
  /** true when it takes the argmax of the raw row (greedy, no repetition penalty): a core's own best id is its choice */
  readonly takesBest: boolean;
  /** the seed of the random stream (also set, but unused, when greedy) */
  readonly seed: number;
  /** Chooses a token id from logits[0..vocabSize-1]; `history` is every token so far (prompt + generated). */
  sample(logits: Float32Array, history: readonly number[]): number;
  /**
   * How many of the best logits (with their ids) `sampleTop` needs to choose exactly the token `sample` would
   * choose from the whole row, given this history; 0 when it needs the whole row.
   */
  topNeeded(history: readonly number[]): number;
  /**
   * The same choice as `sample` (same token, same random draws), from the best `topNeeded(history)` or more
   * logits of the row, best first (larger first, lower id on ties), as a core's forwardTop returns them.
   */
  sampleTop(top: { ids: Int32Array; logits: Float32Array }, history: readonly number[]): number;
}

/** The most candidates sampleTop is asked to work from (more: the whole row is cheaper to ship than to rank). */
export const MAX_TOP_CANDIDATES = 256;

/** The settings a sampler actually runs with, after defaults. */
export interface ResolvedSampling {
  greedy: boolean;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repetitionPenalty: number;
  repetitionLastN: number;
}

/**
 * Resolves defaults: sampling happens when doSample is true (temperature defaults to 0.8), or when doSample is
 * unset and a temperature > 0 was given; doSample false or temperature 0 means greedy.
 */
export function resolveSampling(cfg: SamplerConfig = {}): ResolvedSampling {
  const doSample = cfg.doSample ?? (cfg.temperature !== undefined && cfg.temperature > 0);
  const temperature = cfg.temperature ?? (doSample ? DEFAULT_SAMPLING_TEMPERATURE : 0);
  return {
    greedy: !doSample || temperature <= 0,
    temperature,
    topK: cfg.topK ?? 0,
    topP: cfg.topP ?? 1,
    minP: cfg.minP ?? 0,
    repetitionPenalty: cfg.repetitionPenalty ?? 1,
    repetitionLastN: cfg.repetitionLastN ?? DEFAULT_REPETITION_LAST_N,
  };
}

export function createSampler(cfg: SamplerConfig | undefined, vocabSize: number): Sampler {
  validateGenerationConfig(cfg);
  if (!Number.isInteger(vocabSize) || vocabSize <= 0) {
    throw new TwinferError('E_INVALID_ARGUMENT', `vocabSize must be a positive integer, got ${vocabSize}`, { vocabSize });
  }
  const s = resolveSampling(cfg);
  const seed = cfg?.seed ?? randomSeed();
  const rng = createPrng(seed);
  const n = vocabSize;
  // Working buffers reused across steps (a 150k vocabulary would otherwise allocate megabytes per token).
  const work = new Float64Array(n);
  const allIds = new Int32Array(n).map((_, i) => i);
  const probs = new Float64Array(n);

  return {
    greedy: s.greedy,
    takesBest: s.greedy && (s.repetitionPenalty === 1 || s.repetitionLastN === 0),
    seed,
    sample(logits: Float32Array, history: readonly number[]): number {
      if (logits.length < n) {
        throw new TwinferError('E_INVALID_ARGUMENT', `logits has ${logits.length} entries, expected ${n}`, {
          length: logits.length,
          vocabSize: n,
        });
      }
      const penalize = s.repetitionPenalty !== 1 && s.repetitionLastN !== 0 && history.length > 0;
      // Plain greedy needs no working copy: NaN compares false, so argmax never picks it.
      if (s.greedy && !penalize) return checked(argmax(logits, n));
      for (let i = 0; i < n; i++) {
        const v = logits[i]!;
        work[i] = v !== v ? -Infinity : v; // a NaN logit can never be chosen
      }
      applyRepetitionPenalty(work, n, history, s.repetitionPenalty, s.repetitionLastN);
      if (s.greedy) return checked(argmax(work, n));
      return checked(sampleFrom(work, n, s, allIds, probs, rng));
    },

    // Why the best K logits are enough. The penalty (> 1) only lowers logits, and at most P distinct ids are
    // penalized, so among the best K + P of the raw row are at least K unpenalized ids that keep their values; an
    // id outside that set ranks below all of them before the penalty and so also after it. Hence the penalized
    // row's best K ids (value desc, id asc) all lie in the raw row's best K + P: greedy needs K = 1, top-k
    // sampling K = topK, and everything after top-k (top-p, min-p, temperature, the draw) reads only those ids.
    // Top-p / min-p / temperature without top-k, or a penalty below 1 (it raises logits), need the whole row.
    topNeeded(history: readonly number[]): number {
      let k: number;
      if (s.greedy) k = 1;
      else if (s.topK > 0 && s.topK < n) k = s.topK;
      else return 0;
      if (s.repetitionPenalty !== 1 && s.repetitionLastN !== 0 && history.length > 0) {
        if (s.repetitionPenalty < 1) return 0;
        k += penalizedIds(history, n, s.repetitionLastN).size;
      }
      return k <= MAX_TOP_CANDIDATES && k < n ? k : 0;
    },

    sampleTop(top: { ids: Int32Array; logits: Float32Array }, history: readonly number[]): number {
      const need = this.topNeeded(history);
      if (need === 0 || top.ids.length < need) {
        throw new TwinferError('E_INTERNAL', `sampleTop got ${top.ids.length} candidates, needs ${need || 'the whole row'}`);
      }
      // work[] is read only at the candidates' ids below (argmax over them, top-k among them), so the rest of it
      // may hold stale values of earlier steps.
      const ids = top.ids;
      for (let j = 0; j < ids.length; j++) {
        const v = top.logits[j]!;
        work[ids[j]!] = v !== v ? -Infinity : v;
      }
      applyRepetitionPenalty(work, n, history, s.repetitionPenalty, s.repetitionLastN);
      if (s.greedy) {
        // argmax over the candidates: the largest value, the lowest id on ties (argmax's first maximum)
        let best = -1;
        let bestV = -Infinity;
        for (let j = 0; j < ids.length; j++) {
          const id = ids[j]!;
          const v = work[id]!;
          if (v > bestV || (v === bestV && best >= 0 && id < best)) {
            bestV = v;
            best = id;
          }
        }
        return checked(best);
      }
      return checked(sampleFrom(work, n, s, allIds, probs, rng, ids));
    },
  };
}

/** The distinct valid ids among the last `lastN` of the history (-1: all): those the repetition penalty touches. */
function penalizedIds(history: readonly number[], n: number, lastN: number): Set<number> {
  const from = lastN < 0 ? 0 : Math.max(0, history.length - lastN);
  const seen = new Set<number>();
  for (let i = from; i < history.length; i++) {
    const id = history[i]!;
    if (Number.isInteger(id) && id >= 0 && id < n) seen.add(id);
  }
  return seen;
}

function checked(id: number): number {
  if (id < 0) throw new TwinferError('E_INTERNAL', 'every logit is -Infinity or NaN: no token can be sampled');
  return id;
}

/**
 * llama.cpp's `penalty_repeat`: each distinct token among the last `lastN` of the history has its logit divided
 * by the penalty when positive and multiplied when negative (once per token, however often it occurred).
 */
export function applyRepetitionPenalty(
  logits: Float64Array | Float32Array,
  n: number,
  history: readonly number[],
  penalty: number,
  lastN: number,
): void {
  if (penalty === 1 || lastN === 0 || history.length === 0) return;
  const from = lastN < 0 ? 0 : Math.max(0, history.length - lastN);
  const seen = new Set<number>();
  for (let i = from; i < history.length; i++) {
    const id = history[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= n || seen.has(id)) continue;
    seen.add(id);
    const v = logits[id]!;
    logits[id] = v <= 0 ? v * penalty : v / penalty;
  }
}

function sampleFrom(
  work: Float64Array,
  n: number,
  s: ResolvedSampling,
  allIds: Int32Array,
  probs: Float64Array,
  rng: Prng,
  pool?: Int32Array,
): number {
  // Candidates: ids still in play. `sorted` tells whether they are ranked best-first. `pool` (sampleTop): the only
  // ids whose work[] values are current, known to contain the top-k (topNeeded).
  let cand: Int32Array = allIds;
  let sorted = false;
  if (s.topK > 0 && s.topK < n) {
    cand = topKIds(work, s.topK, n, pool);
    sorted = true;
  } else if (pool) {
    throw new TwinferError('E_INTERNAL', 'sampling from candidates needs top-k');
  }
  if (s.topP < 1) {
    cand = nucleus(work, cand, sorted, s.topP, probs);
    sorted = true;
  }
  if (s.minP > 0) {
    // keep p_i >= minP * p_max, i.e. logit_i >= logit_max + log(minP) (llama.cpp compares logits the same way)
    let max = -Infinity;
    for (let j = 0; j < cand.length; j++) max = Math.max(max, work[cand[j]!]!);
    const floor = max + Math.log(s.minP);
    const keep = cand.filter((id) => work[id]! >= floor);
    if (keep.length > 0) cand = keep;
  }
  // temperature then the final draw: softmax(logit / T) over the candidates
  let max = -Infinity;
  for (let j = 0; j < cand.length; j++) max = Math.max(max, work[cand[j]!]!);
  if (max === -Infinity) return -1;
  const invT = 1 / s.temperature;
  let sum = 0;
  for (let j = 0; j < cand.length; j++) {
    const id = cand[j]!;
    const p = Math.exp((work[id]! - max) * invT);
    probs[id] = p;
    sum += p;
  }
  const target = rng.nextFloat() * sum;
  let acc = 0;
  let last = -1;
  for (let j = 0; j < cand.length; j++) {
    const id = cand[j]!;
    const p = probs[id]!;
    if (p <= 0) continue;
    acc += p;
    last = id;
    if (target < acc) return id;
  }
  return last; // rounding left target == sum: the last token with mass
}

/** Bucket resolution of the top-p histogram: 1/64 nat per bucket, 2048 buckets = 32 nats (about 1e-14). */
const BUCKETS_PER_NAT = 64;
const BUCKETS = 2048;

/**
 * Top-p: the smallest best-first set whose probability (over the current candidates, untempered) reaches p, at
 * least one token; ties at the cut go to the lower ids. Sorting a 150k vocabulary per token is slow, so unsorted
 * candidates go into a histogram by distance below the max logit: whole buckets are taken best-first while their
 * mass stays below p, and only the one bucket where the mass crosses p is sorted. That is O(n) per token.
 */
function nucleus(work: Float64Array, cand: Int32Array, sorted: boolean, p: number, probs: Float64Array): Int32Array {
  let max = -Infinity;
  for (let j = 0; j < cand.length; j++) max = Math.max(max, work[cand[j]!]!);
  let sum = 0;
  for (let j = 0; j < cand.length; j++) {
    const id = cand[j]!;
    const e = Math.exp(work[id]! - max);
    probs[id] = e;
    sum += e;
  }
  const need = p * sum;
  if (sorted) {
    let acc = 0;
    for (let j = 0; j < cand.length; j++) {
      acc += probs[cand[j]!]!;
      if (acc >= need) return cand.subarray(0, j + 1);
    }
    return cand;
  }
  const bucketOf = (id: number): number => Math.min(BUCKETS - 1, Math.floor((max - work[id]!) * BUCKETS_PER_NAT));
  const mass = new Float64Array(BUCKETS);
  const count = new Int32Array(BUCKETS);
  for (let j = 0; j < cand.length; j++) {
    const id = cand[j]!;
    const b = bucketOf(id);
    mass[b]! += probs[id]!;
    count[b]!++;
  }
  // the bucket where the cumulative mass reaches p
  let acc = 0;
  let cut = BUCKETS - 1;
  for (let b = 0; b < BUCKETS; b++) {
    if (acc + mass[b]! >= need) {
      cut = b;
      break;
    }
    acc += mass[b]!;
  }
  let inside = 0;
  for (let b = 0; b < cut; b++) inside += count[b]!;
  const edge = new Int32Array(count[cut]!);
  const out = new Int32Array(inside + count[cut]!);
  let o = 0;
  let e = 0;
  for (let j = 0; j < cand.length; j++) {
    const id = cand[j]!;
    const b = bucketOf(id);
    if (b < cut) out[o++] = id;
    else if (b === cut) edge[e++] = id;
  }
  // within the crossing bucket, best first (lower id on ties) until the mass reaches p
  sortIds(work, edge);
  for (let j = 0; j < edge.length; j++) {
    out[o++] = edge[j]!;
    acc += probs[edge[j]!]!;
    if (acc >= need) break;
  }
  return out.subarray(0, Math.max(1, o));
}
