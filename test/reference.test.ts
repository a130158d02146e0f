/**
 * Our logits against llama.cpp's (node-llama-cpp 3.21.1, F32 KV cache, no flash attention): teacher-forced over a
 * 64-token prompt plus the greedy continuation, the top-5 log-probabilities at every position must agree within the
 * tolerance of the weight type, and greedy decoding must pick the same tokens.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, logprobOf, logSoftmaxTopK, logSumExp, type Model } from '@twinfer/sdk';
import { disposeOracle, oracleGreedy, oracleTeacherForcedTopK, oracleTokenize } from './oracle/llamacpp.js';
import { hasFixtures, missingFixturesMessage } from './oracle/paths.js';
import { STORIES_F32, STORIES_Q4, STORIES_Q8, syntheticModel, threads, tolerance } from './helpers/models.js';

const STORY =
  'Once upon a time, there was a little boy named Tim. Tim had a big red ball. He liked to play with his ball in the park every day. ' +
  'One day, Tim saw a small dog. The dog was sad because it was lost. Tim wanted to help the dog find its home. They walked and walked ' +
  'until they found a big house with a blue door.';

const PROMPT_TOKENS = 64;

interface Case {
  name: string;
  path: () => Promise<string>;
  type: string;
  greedySteps: number;
  /** fixtures must match greedy exactly; random-weight models up to the first genuine near-tie */
  exactGreedy: boolean;
}

const cases: Case[] = [
  { name: 'stories260K F32', path: async () => STORIES_F32, type: 'f32', greedySteps: 32, exactGreedy: true },
  { name: 'stories260K Q8_0', path: async () => STORIES_Q8, type: 'q8_0', greedySteps: 32, exactGreedy: true },
  { name: 'stories260K Q4_0', path: async () => STORIES_Q4, type: 'q4_0', greedySteps: 32, exactGreedy: true },
];
for (const preset of ['tiny-llama', 'tiny-qwen2'] as const) {
  for (const type of ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const) {
    cases.push({ name: `synthetic ${preset} ${type}`, path: () => syntheticModel(preset, type), type, greedySteps: 16, exactGreedy: false });
  }
}
// Real layer shapes (TinyLlama-1.1B and Qwen2-0.5B matrices and vocabularies, 2 layers).
for (const type of ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const) {
  cases.push({ name: `synthetic tinyllama-2l ${type}`, path: () => syntheticModel('tinyllama-2l', type), type, greedySteps: 16, exactGreedy: false });
}
for (const type of ['f16', 'q8_0', 'q4_0'] as const) {
  cases.push({ name: `synthetic qwen2-0.5b-2l ${type}`, path: () => syntheticModel('qwen2-0.5b-2l', type), type, greedySteps: 16, exactGreedy: false });
}

async function promptFor(model: Model, path: string): Promise<number[]> {
  // The same ids for both engines: ours must equal llama.cpp's tokenization (checked here too).
  let text = STORY;
  let ids = model.tokenize(text, { bos: true });
  while (ids.length < PROMPT_TOKENS) {
    text += ' ' + STORY;
    ids = model.tokenize(text, { bos: true });
  }
  expect(ids).toEqual(await oracleTokenize(path, text, { addBos: true }));
  return ids.slice(0, PROMPT_TOKENS);
}

describe.skipIf(!hasFixtures)('logits and greedy tokens against llama.cpp', () => {
  if (!hasFixtures) it.skip(missingFixturesMessage, () => {});
  afterAll(async () => {
    await disposeOracle();
  });

  for (const c of cases) {
    describe(c.name, () => {
      let model: Model;
      let path: string;
      beforeAll(async () => {
        path = await c.path();
        model = await loadModel(path, { threads, backend: 'wasm', kvCacheType: 'f32' });
      });
      afterAll(() => model?.dispose());

      it(`top-5 log-probabilities agree within ${tolerance(c.type)} and greedy tokens match`, async () => {
        const tol = tolerance(c.type);
        const prompt = await promptFor(model, path);
        const ours = await model.generate(prompt, { maxNewTokens: c.greedySteps, ignoreEos: true });
        const theirs = await oracleGreedy(path, prompt, c.greedySteps);

        // Teacher-forced over prompt + the reference's greedy tokens.
        const seq = [...prompt, ...theirs];
        const ref = await oracleTeacherForcedTopK(path, seq, 5);
        const logits = await model.evaluate(seq);
        expect(logits.length).toBe(seq.length);
        let worst = 0;
        for (let i = 0; i < seq.length; i++) {
          const logZ = logSumExp(logits[i]);
          for (let k = 0; k < ref.topk[i].ids.length; k++) {
            const id = ref.topk[i].ids[k];
            const mine = logprobOf(logits[i], id, logZ);
            const diff = Math.abs(mine - ref.topk[i].logprobs[k]);
            worst = Math.max(worst, diff);
            if (diff > tol) {
              throw new Error(`position ${i}: token ${id} logprob ours ${mine} vs llama.cpp ${ref.topk[i].logprobs[k]} (tolerance ${tol})`);
            }
          }
          // and our own top-5 is the same set of tokens, up to near-ties at the boundary
          const ourTop = logSoftmaxTopK(logits[i], 5, logZ);
          for (const t of ourTop) {
            if (!ref.topk[i].ids.includes(t.id)) expect(t.logprob - ref.topk[i].logprobs[4]).toBeLessThanOrEqual(tol);
          }
        }
        expect(worst).toBeLessThanOrEqual(tol);

        // Greedy: identical, or (random weights) identical up to the first step where llama.cpp's own top-2 margin
        // is within the tolerance — a genuine near-tie that either engine may break either way.
        let agreeUpTo = c.greedySteps;
        for (let s = 0; s < c.greedySteps; s++) {
          const top = ref.topk[prompt.length - 1 + s];
          const margin = top.logprobs[0] - top.logprobs[1];
          if (!c.exactGreedy && margin < tol) {
            agreeUpTo = s;
            break;
          }
        }
        expect(ours.ids.slice(0, agreeUpTo)).toEqual(theirs.slice(0, agreeUpTo));
        if (c.exactGreedy) expect(agreeUpTo).toBe(c.greedySteps);
      });
    });
  }
});
