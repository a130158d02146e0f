/**
 * Generation that takes only the best logits of each step (the CUDA core's forwardTop, tw_engine_forward_top)
 * gives the same tokens as generation from whole logit rows. Run here on the CPU backend, whose core has no
 * forwardTop: the test gives it one that selects from the whole row exactly as the device kernel does (the order
 * of sampling/select.ts), so the SDK path under test — scheduler, engine.stepTop, Sampler.sampleTop — is the one
 * the CUDA backend takes. test/gpu.test.ts and bench/gpu/device-run.ts check the device selection itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, topLogits, type GenerationConfig, type Model } from '@twinfer/sdk';
import { hasFixtures, missingFixturesMessage } from './oracle/paths.js';
import { STORIES_F32, threads } from './helpers/models.js';

interface CoreLike {
  forward(b: { nOutputs: number }): Float32Array;
  forwardTop?: (b: { nOutputs: number }, k: number) => { ids: Int32Array; logits: Float32Array };
}

describe.skipIf(!hasFixtures)('generation from the best logits of each step (forwardTop)', () => {
  if (!hasFixtures) it.skip(missingFixturesMessage, () => {});
  let model: Model;
  let core: CoreLike;
  let topCalls = 0;
  beforeAll(async () => {
    model = await loadModel(STORIES_F32, { threads, backend: 'wasm', maxSequences: 4 });
    core = (model as unknown as { engine: { core: CoreLike } }).engine.core;
  });
  afterAll(() => model?.dispose());

  function emulateDeviceTop(on: boolean): void {
    if (!on) {
      delete core.forwardTop;
      return;
    }
    core.forwardTop = (b, k) => {
      topCalls++;
      const all = core.forward(b);
      const V = all.length / b.nOutputs;
      const ids = new Int32Array(b.nOutputs * k);
      const logits = new Float32Array(b.nOutputs * k);
      for (let r = 0; r < b.nOutputs; r++) {
        const t = topLogits(all.subarray(r * V, (r + 1) * V), k);
        ids.set(t.ids, r * k);
        logits.set(t.logits, r * k);
      }
      return { ids, logits };
    };
  }

  const cases: Array<[string, string | undefined, GenerationConfig]> = [
    ['greedy', undefined, { maxNewTokens: 60 }],
    ['greedy with a repetition penalty', 'Once upon a time', { maxNewTokens: 60, repetitionPenalty: 1.5 }],
    ['top-k sampling', 'Tim had a ball', { maxNewTokens: 60, temperature: 1.1, topK: 20, seed: 3 }],
    ['top-k + top-p + min-p + penalty', 'Lily saw a dog', { maxNewTokens: 60, temperature: 0.9, topK: 40, topP: 0.9, minP: 0.02, repetitionPenalty: 1.3, seed: 11 }],
  ];
  for (const [name, prompt, cfg] of cases) {
    it(`${name}: same tokens as from whole rows`, async () => {
      emulateDeviceTop(false);
      const want = await model.generate(prompt, cfg);
      emulateDeviceTop(true);
      const before = topCalls;
      const got = await model.generate(prompt, cfg);
      emulateDeviceTop(false);
      // every sampled token came from the top-logits path (an end-of-text token is sampled but not returned)
      expect(topCalls - before).toBe(got.ids.length + (got.finishReason === 'eos' ? 1 : 0));
      expect(got.ids).toEqual(want.ids);
      expect(got.finishReason).toBe(want.finishReason);
      expect(got.ids.length).toBeGreaterThan(10);
    });
  }

  it('four concurrent requests with different samplers share steps and keep their tokens', async () => {
    const run = () => Promise.all(cases.map(([, prompt, cfg]) => model.generate(prompt, cfg)));
    emulateDeviceTop(false);
    const want = await run();
    emulateDeviceTop(true);
    const got = await run();
    emulateDeviceTop(false);
    expect(got.map((r) => r.ids)).toEqual(want.map((r) => r.ids));
  });

  it('a request for log-probabilities still gets whole rows', async () => {
    emulateDeviceTop(true);
    const before = topCalls;
    const r = await model.generate('Once', { maxNewTokens: 8, logprobs: 3 });
    emulateDeviceTop(false);
    expect(topCalls).toBe(before);
    expect(r.logprobs?.length).toBe(8);
  });
});
