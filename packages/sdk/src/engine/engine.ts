/**
 * The inference engine: sequences, their KV blocks, and forward steps over a batch of sequences.
 *
 * A forward step takes any mix of sequences, each with its own new tokens (a prompt chunk, one decode token);
 * every token carries its own position and the block table of its sequence. This is the unit a continuous-batching
 * scheduler builds on: it decides which sequences advance in a step; the engine only executes.
 */
import { TwinferError } from '../errors.js';
import type { CoreBatch, CoreEngine, CoreHParams } from '../backend/core.js';
import { topLogits } from '../sampling/select.js';
import { BlockAllocator } from './block-allocator.js';

export type OutputMode = 'none' | 'last' | 'all';

export interface EngineLimits {
  blockSize: number;
  nBlocks: number;
  maxBatchTokens: number;
  maxOutputs: number;
  contextSize: number;
  /** Pipelined decode (LoadOptions.pipelineDecode); default: where the core runs steps asynchronously. */
  pipeline?: boolean;
}

/** A sequence resident in the KV cache: the tokens already evaluated and the blocks holding their K/V. */
export class Sequence {
  readonly tokens: number[] = [];
  readonly blocks: number[] = [];
  released = false;
  constructor(readonly id: number) {}
  get length(): number {
    return this.tokens.length;
  }
}

/** The k best logits of one output row and their token ids, best first (see CoreEngine.forwardTop). */
export interface TopLogits {
  ids: Int32Array;
  logits: Float32Array;
}

export interface StepItem {
  seq: Sequence;
  tokens: readonly number[];
  outputs: OutputMode;
}

function outputCount(it: StepItem): number {
  return it.outputs === 'all' ? it.tokens.length : it.outputs === 'last' && it.tokens.length > 0 ? 1 : 0;
}

/** After a successful step: the items' tokens are now in the cache. */
function commit(items: readonly StepItem[]): void {
  for (const it of items) for (const t of it.tokens) it.seq.tokens.push(t);
}

/**
 * A decode step submitted ahead (pipelined decode, see InferenceEngine.submitDecode): one token of `seq` at position
 * seq.length + its place among the submitted steps of that sequence. Its token is the best id of the step before
 * it, so it is known on the host only once that step has been read (`token`, null until then). `top` holds the
 * step's k best logits once `InferenceEngine.waitSubmitted` has returned for it.
 */
export interface SubmittedStep {
  seq: Sequence;
  token: number | null;
  k: number;
  top: TopLogits;
}

export class InferenceEngine {
  readonly allocator: BlockAllocator;
  private nextId = 0;
  /** Submitted decode steps not yet waited for, oldest first (at most two: the core's limit). */
  readonly submitted: SubmittedStep[] = [];

  constructor(readonly core: CoreEngine, readonly hp: CoreHParams, readonly limits: EngineLimits) {
    this.allocator = new BlockAllocator(limits.nBlocks);
  }

  createSequence(): Sequence {
    return new Sequence(this.nextId++);
  }

  releaseSequence(seq: Sequence): void {
    if (seq.released) return;
    if (this.submitted.some((s) => s.seq === seq)) this.dropSubmitted();
    seq.released = true;
    for (const b of seq.blocks) this.allocator.release(b);
    seq.blocks.length = 0;
    seq.tokens.length = 0;
  }

  /** Drops the sequence's tokens after `length` (e.g. to re-evaluate from a shared prefix). */
  truncate(seq: Sequence, length: number): void {
    if (this.submitted.some((s) => s.seq === seq)) this.dropSubmitted();
    if (length < 0 || length > seq.length) throw new TwinferError('E_INVALID_ARGUMENT', `cannot truncate to ${length}`);
    seq.tokens.length = length;
    const keep = Math.ceil(length / this.limits.blockSize);
    while (seq.blocks.length > keep) this.allocator.release(seq.blocks.pop()!);
  }

  private ensureBlocks(seq: Sequence, newLength: number): void {
    if (newLength > this.limits.contextSize) {
      throw new TwinferError('E_CONTEXT_OVERFLOW', `sequence of ${newLength} tokens exceeds the context size of ${this.limits.contextSize}`, {
        length: newLength, contextSize: this.limits.contextSize,
      });
    }
    const need = Math.ceil(newLength / this.limits.blockSize);
    const added: number[] = [];
    try {
      while (seq.blocks.length < need) {
        const b = this.allocator.allocate();
        added.push(b);
        seq.blocks.push(b);
      }
    } catch (e) {
      for (const b of added) {
        seq.blocks.pop();
        this.allocator.release(b);
      }
      throw e;
    }
  }

  /** Whether the core runs submitted steps while the host goes on (a device core): then pipelining decode pays. */
  get canPipeline(): boolean {
    return (this.limits.pipeline ?? this.core.asyncSteps === true) && typeof this.core.submitTop === 'function' &&
      typeof this.core.waitTop === 'function';
  }

  /**
   * Pipelined decode: submits a one-token step of `seq` behind the steps already submitted (at position seq.length +
   * their count for this sequence). Its token is `token`, or (null) the best id of the step submitted just before —
   * a greedy choice the device makes without the host, so this step is queued while the host still reads the last.
   * Nothing is committed: `acceptSubmitted` does that once the caller has checked the token is the one it wants.
   */
  submitDecode(seq: Sequence, k: number, token: number | null): SubmittedStep {
    const core = this.core;
    if (!core.submitTop || this.submitted.length >= 2) throw new TwinferError('E_INTERNAL', 'cannot submit another decode step');
    if (seq.released) throw new TwinferError('E_INVALID_ARGUMENT', 'sequence was released');
    const ahead = this.submitted.filter((s) => s.seq === seq).length;
    const pos = seq.length + ahead;
    this.ensureBlocks(seq, pos + 1);
    const blockTables = Int32Array.from(seq.blocks);
    if (token !== null && (!Number.isInteger(token) || token < 0 || token >= this.hp.nVocab)) {
      throw new TwinferError('E_INVALID_ARGUMENT', `token id ${token} is outside the vocabulary (0..${this.hp.nVocab - 1})`);
    }
    const batch: CoreBatch = {
      tokens: Int32Array.of(token ?? 0), pos: Int32Array.of(pos), seqIdx: new Int32Array(1), outIdx: new Int32Array(1),
      nOutputs: 1, nSeqs: 1, blocksPerSeq: blockTables.length, blockTables,
    };
    // a known token (the first step after a plain one) is uploaded; after that each step chains on the one before
    const step: SubmittedStep = { seq, token, k, top: core.submitTop(batch, k, token === null) };
    this.submitted.push(step);
    return step;
  }

  /** Waits for the oldest submitted step: its `top` holds its results after this. */
  waitSubmitted(): SubmittedStep {
    const step = this.submitted.shift();
    if (!step) throw new TwinferError('E_INTERNAL', 'no submitted step to wait for');
    this.core.waitTop!();
    // the next step of the sequence was chained on this one: its token is this step's best id
    const next = this.submitted.find((s) => s.seq === step.seq);
    if (next) next.token = step.top.ids[0]!;
    return step;
  }

  /** The oldest submitted step's token is now part of its sequence (its K/V are in the cache). */
  acceptSubmitted(step: SubmittedStep): void {
    step.seq.tokens.push(step.token!);
  }

  /** Waits for every submitted step and drops their results (their cache writes lie past their sequences' ends). */
  dropSubmitted(): void {
    while (this.submitted.length > 0) this.waitSubmitted();
  }

  /** Whether the core selects top logits on its own device (forwardTop): then stepTop ships k values per row. */
  get deviceTop(): boolean {
    return typeof this.core.forwardTop === 'function';
  }

  /**
   * One forward step. Items must fit the step limits (use `evaluate` for arbitrary lengths). Returns, per item,
   * the logits rows asked for (views into one buffer).
   */
  step(items: readonly StepItem[]): Float32Array[][] {
    this.dropSubmitted();
    const batch = this.prepare(items);
    if (!batch) return items.map(() => []);
    const logits = this.core.forward(batch);
    commit(items);
    const V = this.hp.nVocab;
    let row = 0;
    return items.map((it) => {
      const rows: Float32Array[] = [];
      for (let i = 0; i < outputCount(it); i++, row++) rows.push(logits.subarray(row * V, (row + 1) * V));
      return rows;
    });
  }

  /**
   * One forward step that returns, per item asking for its last token's output, the k best logits of that row
   * with their ids (null for items asking for none; 'all' is not allowed here). The core selects them on the
   * device when it can (deviceTop); otherwise they are taken from the whole row here, in the same order.
   */
  stepTop(items: readonly StepItem[], k: number): Array<TopLogits | null> {
    if (!Number.isInteger(k) || k < 1 || k > this.hp.nVocab) throw new TwinferError('E_INVALID_ARGUMENT', `top k ${k} outside 1..${this.hp.nVocab}`);
    if (items.some((it) => it.outputs === 'all' && it.tokens.length > 1)) throw new TwinferError('E_INTERNAL', "stepTop takes outputs 'last' or 'none'");
    if (!this.core.forwardTop) return this.step(items).map((rows) => (rows.length > 0 ? topLogits(rows[0]!, k) : null));
    this.dropSubmitted();
    const batch = this.prepare(items);
    if (!batch) return items.map(() => null);
    const top = this.core.forwardTop(batch, k);
    commit(items);
    let row = 0;
    return items.map((it) => {
      if (outputCount(it) === 0) return null;
      const r = row++;
      return { ids: top.ids.subarray(r * k, (r + 1) * k), logits: top.logits.subarray(r * k, (r + 1) * k) };
    });
  }

  /** Validates the items, maps their KV blocks and builds the core batch; null: no tokens. */
  private prepare(items: readonly StepItem[]): CoreBatch | null {
    let nTokens = 0;
    let nOutputs = 0;
    for (const it of items) {
      if (it.seq.released) throw new TwinferError('E_INVALID_ARGUMENT', 'sequence was released');
      nTokens += it.tokens.length;
      nOutputs += it.outputs === 'all' ? it.tokens.length : it.outputs === 'last' && it.tokens.length > 0 ? 1 : 0;
    }
    if (nTokens === 0) return null;
    if (nTokens > this.limits.maxBatchTokens || nOutputs > this.limits.maxOutputs) {
      throw new TwinferError('E_INTERNAL', `step of ${nTokens} tokens / ${nOutputs} outputs exceeds the engine limits`);
    }
    for (const it of items) {
      for (const t of it.tokens) {
        if (!Number.isInteger(t) || t < 0 || t >= this.hp.nVocab) {
          throw new TwinferError('E_INVALID_ARGUMENT', `token id ${t} is outside the vocabulary (0..${this.hp.nVocab - 1})`);
        }
      }
      this.ensureBlocks(it.seq, it.seq.length + it.tokens.length);
    }
    const blocksPerSeq = Math.max(1, ...items.map((it) => it.seq.blocks.length));
    const tokens = new Int32Array(nTokens);
    const pos = new Int32Array(nTokens);
    const seqIdx = new Int32Array(nTokens);
    const outIdx = new Int32Array(nTokens).fill(-1);
    const blockTables = new Int32Array(items.length * blocksPerSeq).fill(-1);
    let k = 0;
    let o = 0;
    items.forEach((it, row) => {
      blockTables.set(it.seq.blocks, row * blocksPerSeq);
      const n = it.tokens.length;
      for (let i = 0; i < n; i++, k++) {
        tokens[k] = it.tokens[i];
        pos[k] = it.seq.length + i;
        seqIdx[k] = row;
        if (it.outputs === 'all' || (it.outputs === 'last' && i === n - 1)) outIdx[k] = o++;
      }
    });
    return { tokens, pos, seqIdx, outIdx, nOutputs, nSeqs: items.length, blocksPerSeq, blockTables };
  }

  /** Evaluates any number of tokens for one sequence, in chunks that fit a step. */
  evaluate(seq: Sequence, tokens: readonly number[], outputs: OutputMode): Float32Array[] {
    if (seq.length + tokens.length > this.limits.contextSize) {
      throw new TwinferError('E_CONTEXT_OVERFLOW', `${seq.length + tokens.length} tokens exceed the context size of ${this.limits.contextSize}`, {
        length: seq.length + tokens.length, contextSize: this.limits.contextSize,
      });
    }
    const chunk = outputs === 'all' ? Math.min(this.limits.maxBatchTokens, this.limits.maxOutputs) : this.limits.maxBatchTokens;
    const result: Float32Array[] = [];
    for (let i = 0; i < tokens.length; i += chunk) {
      const part = tokens.slice(i, i + chunk);
      const last = i + chunk >= tokens.length;
      const mode: OutputMode = outputs === 'all' ? 'all' : outputs === 'last' && last ? 'last' : 'none';
      result.push(...this.step([{ seq, tokens: part, outputs: mode }])[0]);
    }
    return result;
  }
}
