/**
 * Generation through the SDK on the real TinyStories model: the reference text, streaming, sampling, stop strings,
 * cancellation, and the limits a user can hit.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, TwinferError, type Model } from '@twinfer/sdk';
import { hasFixtures, missingFixturesMessage } from './oracle/paths.js';
import { STORIES_F32, fixture, threads } from './helpers/models.js';

describe.skipIf(!hasFixtures)('generation on stories260K', () => {
  if (!hasFixtures) it.skip(missingFixturesMessage, () => {});
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(STORIES_F32, { threads, backend: 'wasm' });
  });
  afterAll(() => model?.dispose());

  it('200 greedy tokens from BOS equal llama2.c run.c output byte for byte', async () => {
    const expected = readFileSync(fixture('stories260K.expected.txt'), 'utf8');
    const r = await model.generate(undefined, { maxNewTokens: 200 });
    expect(r.promptIds).toEqual([1]);
    expect(r.ids.length).toBe(200);
    expect(r.text).toBe(expected);
    expect(r.finishReason).toBe('length');
    expect(model.backend.name).toBe('wasm');
  });

  it('continues "Once upon a time" as llama.cpp does', async () => {
    const r = await model.generate('Once upon a time', { maxNewTokens: 24 });
    expect(r.promptIds).toEqual([1, 403, 407, 261, 378]);
    expect(r.text.startsWith(', there was a little girl named Lily. She loved to play outside')).toBe(true);
  });

  it('the first generated word after a prompt keeps its leading space', async () => {
    // "Once upon a time, there was" -> continuing after "there" must start with " was"
    const prompt = 'Once upon a time, there';
    const r = await model.generate(prompt, { maxNewTokens: 3 });
    expect(r.text.startsWith(' ')).toBe(true);
    expect(model.detokenize([...r.promptIds.slice(1), ...r.ids])).toBe(prompt + r.text);
  });

  it('stream yields the same text as generate', async () => {
    const whole = await model.generate('Once upon a time', { maxNewTokens: 40 });
    let streamed = '';
    const ids: number[] = [];
    for await (const chunk of model.stream('Once upon a time', { maxNewTokens: 40 })) {
      streamed += chunk.text;
      if (chunk.id >= 0) ids.push(chunk.id);
    }
    expect(streamed).toBe(whole.text);
    expect(ids).toEqual(whole.ids);
  });

  it('seeded sampling is reproducible and different seeds differ', async () => {
    const cfg = { maxNewTokens: 48, temperature: 1.0, topP: 0.95, topK: 40 };
    const a = await model.generate('Once upon a time', { ...cfg, seed: 7 });
    const b = await model.generate('Once upon a time', { ...cfg, seed: 7 });
    expect(b.ids).toEqual(a.ids);
    const others = await Promise.all([8, 9, 10].map((seed) => model.generate('Once upon a time', { ...cfg, seed })));
    for (const o of others) expect(o.ids).not.toEqual(a.ids);
  });

  it('stop strings end generation before the stop text', async () => {
    const r = await model.generate('Once upon a time', { maxNewTokens: 64, stop: ['Lily'] });
    expect(r.finishReason).toBe('stop');
    expect(r.text).toBe(', there was a little girl named ');
  });

  it('logprobs: top-K per step, sorted, with the chosen token first when greedy', async () => {
    const r = await model.generate('Once upon a time', { maxNewTokens: 8, logprobs: 5 });
    expect(r.logprobs).toHaveLength(8);
    for (let i = 0; i < 8; i++) {
      const step = r.logprobs![i];
      expect(step.top).toHaveLength(5);
      expect(step.id).toBe(r.ids[i]);
      expect(step.top[0].id).toBe(r.ids[i]);
      expect(step.logprob).toBeCloseTo(step.top[0].logprob, 12);
      for (let k = 1; k < 5; k++) expect(step.top[k].logprob).toBeLessThanOrEqual(step.top[k - 1].logprob);
      expect(step.top[0].logprob).toBeLessThanOrEqual(0);
    }
  });

  it('an aborted signal ends generation with what was produced so far', async () => {
    const ac = new AbortController();
    const chunks: string[] = [];
    for await (const c of model.stream('Once upon a time', { maxNewTokens: 100, signal: ac.signal })) {
      chunks.push(c.text);
      if (chunks.length === 5) ac.abort();
    }
    expect(chunks.length).toBeLessThanOrEqual(6);
    const r = await model.generate('Once upon a time', { maxNewTokens: 100, signal: AbortSignal.abort() });
    expect(r.finishReason).toBe('abort');
    expect(r.ids).toEqual([]);
  });

  it('concurrent calls on one model are all served, each with its own result', async () => {
    const prompts = ['Once upon a time', 'Tim had a red ball', 'The sun was'];
    const results = await Promise.all(prompts.map((p) => model.generate(p, { maxNewTokens: 12 })));
    for (let i = 0; i < prompts.length; i++) {
      const alone = await model.generate(prompts[i], { maxNewTokens: 12 });
      expect(results[i].ids).toEqual(alone.ids);
    }
  });

  it('continuous batching: concurrent requests share forward steps and get the same tokens as alone', async () => {
    const m = await loadModel(STORIES_F32, { threads, backend: 'wasm', maxSequences: 4 });
    try {
      const prompts = ['Once upon a time', 'Tim had a red ball', 'The sun was', 'Lily and her mom went'];
      const alone = [];
      for (const p of prompts) alone.push(await m.generate(p, { maxNewTokens: 24 }));
      const before = m.stats();
      const together = await Promise.all(prompts.map((p, i) => m.generate(p, { maxNewTokens: 24 + i * 4 })));
      const after = m.stats();
      for (let i = 0; i < prompts.length; i++) expect(together[i].ids.slice(0, 24)).toEqual(alone[i].ids);
      // 4 requests of 24..36 tokens: far fewer steps than tokens when they are batched
      const tokens = after.tokens - before.tokens;
      const steps = after.steps - before.steps;
      expect(steps).toBeLessThan(tokens / 2);
      // a fifth request waits for a slot instead of failing
      const five = await Promise.all([...prompts, 'One day'].map((p) => m.generate(p, { maxNewTokens: 8 })));
      expect(five.every((r) => r.ids.length === 8)).toBe(true);
    } finally {
      m.dispose();
    }
  });

  it('a prompt longer than the context is a typed error, and the model stays usable', async () => {
    const small = await loadModel(STORIES_F32, { threads, contextSize: 16, backend: 'wasm' });
    try {
      const err = await small.generate('Once upon a time there was a little girl named Lily who loved to play outside in the park', { maxNewTokens: 4 }).catch((e) => e);
      expect(err).toBeInstanceOf(TwinferError);
      expect((err as TwinferError).code).toBe('E_CONTEXT_OVERFLOW');
      const ok = await small.generate('Once upon a time', { maxNewTokens: 20 });
      expect(ok.finishReason).toBe('length');
      expect(ok.promptIds.length + ok.ids.length).toBeLessThanOrEqual(16);
    } finally {
      small.dispose();
    }
  });

  it('invalid generation settings are rejected with E_INVALID_ARGUMENT', async () => {
    for (const cfg of [{ maxNewTokens: -1 }, { temperature: -1 }, { topP: 0 }, { topK: -2 }, { minP: 2 }, { repetitionPenalty: 0 }, { logprobs: -1 }]) {
      const err = await model.generate('Hi', cfg).catch((e) => e);
      expect(err, JSON.stringify(cfg)).toBeInstanceOf(TwinferError);
      expect((err as TwinferError).code).toBe('E_INVALID_ARGUMENT');
    }
    const bad = await model.generate([1, 99999], { maxNewTokens: 1 }).catch((e) => e);
    expect((bad as TwinferError).code).toBe('E_INVALID_ARGUMENT');
  });

  it('a disposed model refuses work with E_DISPOSED', async () => {
    const m = await loadModel(STORIES_F32, { threads: 1, backend: 'wasm' });
    m.dispose();
    const err = await m.generate('Hi').catch((e) => e);
    expect((err as TwinferError).code).toBe('E_DISPOSED');
  });
});
