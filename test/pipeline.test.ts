/**
 * Pipelined greedy decode (LoadOptions.pipelineDecode): each next step is submitted before the host has read the
 * step before it, its token the core's own best id. On CUDA that keeps the GPU busy between tokens; here it is
 * forced on the WASM core (which finishes each submitted step at once), so the scheduler's bookkeeping — chained
 * steps, their acceptance, the steps dropped when a generation stops or other requests arrive — is checked against
 * plain decoding on the real model: every text and id must be the same, and the pipeline must actually have run.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type Model } from '@twinfer/sdk';
import { hasFixtures, missingFixturesMessage } from './oracle/paths.js';
import { STORIES_F32, fixture, threads } from './helpers/models.js';

/** Counts the core's submitted steps (the pipeline's) without changing what they do. */
function countSubmits(model: Model): { submits: number; chained: number } {
  const core = (model as unknown as { engine: { core: Record<string, unknown> } }).engine.core;
  const counts = { submits: 0, chained: 0 };
  const submit = core.submitTop as (b: unknown, k: number, chain: boolean) => unknown;
  core.submitTop = (b: unknown, k: number, chain: boolean) => {
    counts.submits++;
    if (chain) counts.chained++;
    return submit.call(core, b, k, chain);
  };
  return counts;
}

describe.skipIf(!hasFixtures)('pipelined greedy decode on stories260K', () => {
  if (!hasFixtures) it.skip(missingFixturesMessage, () => {});
  let plain: Model;
  let piped: Model;
  let counts: { submits: number; chained: number };
  beforeAll(async () => {
    plain = await loadModel(STORIES_F32, { threads, backend: 'wasm', maxSequences: 3, pipelineDecode: false });
    piped = await loadModel(STORIES_F32, { threads, backend: 'wasm', maxSequences: 3, pipelineDecode: true });
    counts = countSubmits(piped);
  });
  afterAll(() => {
    plain?.dispose();
    piped?.dispose();
  });

  it('200 greedy tokens from BOS: the reference text, through chained steps', async () => {
    const before = { ...counts };
    const expected = readFileSync(fixture('stories260K.expected.txt'), 'utf8');
    const r = await piped.generate(undefined, { maxNewTokens: 200 });
    expect(r.text).toBe(expected);
    expect(r.ids.length).toBe(200);
    // one step with a known token after the prompt, then chained ones up to the last token (199 decode steps)
    expect(counts.submits - before.submits).toBe(199);
    expect(counts.chained - before.chained).toBe(198);
  });

  it('stops (length, stop string, end of context) give the same text and ids as plain decoding', async () => {
    for (const cfg of [{ maxNewTokens: 1 }, { maxNewTokens: 2 }, { maxNewTokens: 7 }, { maxNewTokens: 60, stop: ['Lily'] }, { maxNewTokens: 300 }]) {
      const a = await plain.generate('Once upon a time', cfg);
      const b = await piped.generate('Once upon a time', cfg);
      expect(b.ids).toEqual(a.ids);
      expect(b.text).toBe(a.text);
      expect(b.finishReason).toBe(a.finishReason);
    }
  });

  it('a sequence that continues after a pipelined generation reads the cache its accepted steps wrote', async () => {
    const a = await plain.generate('Once upon a time', { maxNewTokens: 30 });
    const b = await piped.generate('Once upon a time', { maxNewTokens: 30 });
    // the next request reuses the KV blocks the dropped step wrote into: its text must not change
    const a2 = await plain.generate('The dog', { maxNewTokens: 30 });
    const b2 = await piped.generate('The dog', { maxNewTokens: 30 });
    expect(b.ids).toEqual(a.ids);
    expect(b2.ids).toEqual(a2.ids);
  });

  it('concurrent requests (batched steps) and sampled requests beside a greedy one give the same results', async () => {
    const run = (m: Model) =>
      Promise.all([
        m.generate('Once upon a time', { maxNewTokens: 40 }),
        m.generate('The cat', { maxNewTokens: 25 }),
        m.generate('Lily', { maxNewTokens: 30, temperature: 0.9, seed: 7 }),
      ]);
    const a = await run(plain);
    const b = await run(piped);
    for (let i = 0; i < a.length; i++) {
      expect(b[i]!.ids).toEqual(a[i]!.ids);
      expect(b[i]!.text).toBe(a[i]!.text);
    }
    // a greedy request that starts while another is still going, and one that ends first
    const late = async (m: Model) => {
      const first = m.generate('Once upon a time', { maxNewTokens: 50 });
      await new Promise((r) => setTimeout(r, 5));
      const second = m.generate('The dog', { maxNewTokens: 10 });
      return Promise.all([first, second]);
    };
    const c = await late(plain);
    const d = await late(piped);
    expect(d[0].ids).toEqual(c[0].ids);
    expect(d[1].ids).toEqual(c[1].ids);
  });

  it('with a repetition penalty or log-probabilities nothing is chained (the host chooses)', async () => {
    const before = { ...counts };
    const cfgs = [{ maxNewTokens: 20, repetitionPenalty: 1.3 }, { maxNewTokens: 20, logprobs: 2 }];
    for (const cfg of cfgs) {
      const a = await plain.generate('Once upon a time', cfg);
      const b = await piped.generate('Once upon a time', cfg);
      expect(b.ids).toEqual(a.ids);
    }
    expect(counts.submits).toBe(before.submits);
  });

  it('aborting a pipelined generation leaves the model usable and the next text unchanged', async () => {
    const ac = new AbortController();
    let n = 0;
    for await (const chunk of piped.stream('Once upon a time', { maxNewTokens: 100, signal: ac.signal })) {
      if (chunk.id >= 0 && ++n === 5) ac.abort();
    }
    const a = await plain.generate('The cat', { maxNewTokens: 20 });
    const b = await piped.generate('The cat', { maxNewTokens: 20 });
    expect(b.ids).toEqual(a.ids);
  });
});
