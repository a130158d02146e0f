/**
 * Continuous batching. Every generation loop asks for "the logits after these tokens of my sequence"; requests
 * that arrive while a step is being prepared are merged into one forward step (decode tokens first, then prompt
 * chunks, within the step's token and output budgets), so N concurrent generations cost about one step per token,
 * not N. A request whose prompt does not fit one step continues in the next (chunked prefill); a request that joins
 * later simply joins the next step.
 */
import { TwinferError } from '../errors.js';
import { argmax } from '../sampling/select.js';
import type { InferenceEngine, Sequence, StepItem, TopLogits } from './engine.js';

/**
 * What a generation loop tells the scheduler about its next request, so decode can be pipelined: `chain` — the
 * token it will ask for next is the best id of this output (greedy, no penalties: what the device picks itself);
 * `more` — it may ask for another token after this one (not at its token limit).
 */
export interface ForwardHints {
  chain?: boolean;
  more?: boolean;
}

/** What a request gets back: the whole logits row, or (asked with top > 0, when the step could) its best logits. */
export type StepOutput = Float32Array | TopLogits;

interface Pending {
  seq: Sequence;
  tokens: readonly number[];
  /** tokens already evaluated */
  done: number;
  /** > 0: the best `top` logits with their ids are enough (see Sampler.topNeeded) */
  top: number;
  hints: ForwardHints;
  resolve: (out: StepOutput) => void;
  reject: (e: unknown) => void;
}

export class StepScheduler {
  private queue: Pending[] = [];
  private scheduled = false;
  /** set when the core failed to chain a step: pipelined decode is not tried again */
  private pipelineOff = false;
  /** steps run and tokens processed, for metrics */
  steps = 0;
  tokens = 0;

  constructor(private readonly engine: InferenceEngine) {}

  /**
   * Evaluates `tokens` for `seq` (in one or more steps) and resolves with the logits after the last one: the whole
   * row, or — when `top` > 0 and every request finishing in that step asks for top logits and the core selects
   * them on its device — the best `top` (or more) logits with their ids. Callers handle both.
   */
  forward(seq: Sequence, tokens: readonly number[], top = 0, hints: ForwardHints = {}): Promise<StepOutput> {
    if (tokens.length === 0) return Promise.reject(new TwinferError('E_INVALID_ARGUMENT', 'nothing to evaluate'));
    return new Promise((resolve, reject) => {
      this.queue.push({ seq, tokens, done: 0, top, hints, resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // setImmediate, not a microtask: lets every generation loop that is about to ask (and I/O) get in first.
    setImmediate(() => this.runStep());
  }

  private plan(): Array<{ p: Pending; take: number }> {
    const { maxBatchTokens, maxOutputs } = this.engine.limits;
    let budget = maxBatchTokens;
    let outputs = maxOutputs;
    const plan: Array<{ p: Pending; take: number }> = [];
    // Decode steps (one token) first: they are latency-bound; prompts fill what is left of the step.
    const order = [...this.queue].sort((a, b) => Number(a.tokens.length - a.done > 1) - Number(b.tokens.length - b.done > 1));
    for (const p of order) {
      if (budget === 0 || outputs === 0) break;
      const remaining = p.tokens.length - p.done;
      const take = Math.min(remaining, budget);
      plan.push({ p, take });
      budget -= take;
      if (take === remaining) outputs--;
    }
    return plan;
  }

  private execute(plan: Array<{ p: Pending; take: number }>): void {
    const items: StepItem[] = plan.map(({ p, take }) => ({
      seq: p.seq,
      tokens: p.tokens.slice(p.done, p.done + take),
      outputs: p.done + take === p.tokens.length ? 'last' : 'none',
    }));
    // Top logits only when every request that gets its output this step can use them (one shared k, the largest
    // asked); a single request wanting the whole row makes the step return whole rows to all.
    let k = 0;
    let allTop = this.engine.deviceTop;
    plan.forEach(({ p, take }) => {
      if (p.done + take !== p.tokens.length) return;
      if (p.top <= 0) allTop = false;
      k = Math.max(k, p.top);
    });
    const results: Array<StepOutput | undefined> = allTop && k > 0
      ? this.engine.stepTop(items, k).map((r) => r ?? undefined)
      : this.engine.step(items).map((rows) => rows[0]);
    // A lone greedy sequence that will ask for this output's best id next: queue that step now (runPipelined).
    const only = plan.length === 1 ? plan[0]! : undefined;
    const out = results[0];
    if (only && !this.pipelineOff && this.engine.canPipeline && only.p.hints.chain && only.p.hints.more &&
        only.p.done + only.take === only.p.tokens.length && out && this.queue.length === 1 &&
        this.roomAfter(only.p.seq, 0)) {
      const best = out instanceof Float32Array ? argmax(out, out.length) : out.ids[0]!;
      try {
        if (best >= 0) this.engine.submitDecode(only.p.seq, Math.max(1, only.p.top), best);
      } catch {
        this.pipelineFailed();
      }
    }
    this.steps++;
    plan.forEach(({ p, take }, i) => {
      p.done += take;
      this.tokens += take;
      if (p.done === p.tokens.length) {
        this.queue.splice(this.queue.indexOf(p), 1);
        p.resolve(results[i]!);
      }
    });
  }

  /**
   * Pipelined decode of a lone greedy sequence (device cores): while the host reads step N's result, step N+1 —
   * whose token is step N's best id, chosen on the device — is already queued, so the GPU does not wait for the
   * host between tokens. Runs when the only request is the one token its sequence's oldest submitted step computes;
   * anything else drops the submitted steps (their results unread, their cache writes past the sequence's end) and
   * takes the plain path.
   */
  private runPipelined(): boolean {
    const engine = this.engine;
    if (engine.submitted.length === 0) return false;
    const p = this.queue.length === 1 ? this.queue[0]! : undefined;
    const s = engine.submitted[0]!;
    if (!p || p.seq !== s.seq || p.tokens.length !== 1 || p.tokens[0] !== s.token || p.top <= 0 || p.top > s.k) {
      engine.dropSubmitted();
      return false;
    }
    try {
      // the next one first (chained on the newest in flight), then read this one
      if (p.hints.chain && p.hints.more && engine.submitted.length === 1 && this.roomAfter(p.seq, 1)) {
        engine.submitDecode(p.seq, s.k, null);
      }
      engine.waitSubmitted();
      engine.acceptSubmitted(s);
    } catch {
      this.pipelineFailed();
      return false;
    }
    this.queue.length = 0;
    this.steps++;
    this.tokens++;
    p.resolve(s.top);
    return true;
  }

  /** Whether the sequence has room for a token `ahead` places past its end (context size). */
  private roomAfter(seq: Sequence, ahead: number): boolean {
    return seq.length + ahead + 1 < this.engine.limits.contextSize;
  }

  /** A core that cannot chain steps (say, its last selection ran on the host) is not asked again. */
  private pipelineFailed(): void {
    this.pipelineOff = true;
    try {
      this.engine.dropSubmitted();
    } catch {
      // the plain path reports the core's state on its next step
    }
  }

  private runStep(): void {
    this.scheduled = false;
    if (this.runPipelined()) {
      if (this.queue.length > 0) this.kick();
      return;
    }
    const plan = this.plan();
    if (plan.length === 0) return;
    try {
      this.execute(plan);
    } catch (e) {
      if (plan.length === 1) {
        this.queue.splice(this.queue.indexOf(plan[0].p), 1);
        plan[0].p.reject(e);
      } else {
        // One bad request must not fail the others: run them one by one so only the culprit sees the error.
        for (const entry of plan) {
          try {
            this.execute([entry]);
          } catch (err) {
            this.queue.splice(this.queue.indexOf(entry.p), 1);
            entry.p.reject(err);
          }
        }
      }
    }
    if (this.queue.length > 0) this.kick();
  }
}

/** Admission control: at most `n` sequences hold KV-cache space at once; the rest wait in FIFO order. */
export class SequenceSlots {
  private free: number;
  private readonly waiters: Array<{ resolve: () => void; reject: (e: unknown) => void; signal?: AbortSignal; onAbort?: () => void }> = [];

  constructor(readonly size: number) {
    this.free = size;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(new TwinferError('E_ABORTED', 'request was aborted while queued'));
    if (this.free > 0 && this.waiters.length === 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const w: (typeof this.waiters)[number] = { resolve, reject, signal };
      if (signal) {
        w.onAbort = () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new TwinferError('E_ABORTED', 'request was aborted while queued'));
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.waiters.push(w);
    });
  }

  release(): void {
    const w = this.waiters.shift();
    if (w) {
      if (w.onAbort) w.signal?.removeEventListener('abort', w.onAbort);
      w.resolve();
    } else {
      this.free++;
    }
  }
}
