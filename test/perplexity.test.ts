/**
 * Perplexity as llama.cpp's perplexity tool computes it, against node-llama-cpp on the same text and windows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type Model } from '@twinfer/sdk';
import { disposeOracle, oraclePerplexity } from './oracle/llamacpp.js';
import { hasFixtures, missingFixturesMessage } from './oracle/paths.js';
import { STORIES_F32, STORIES_Q8, threads } from './helpers/models.js';

/** A text of > 2,000 tokens: stories sampled from the model itself with fixed seeds (any text works for a comparison). */
async function sampleText(model: Model): Promise<string> {
  let text = '';
  for (let seed = 1; model.tokenize(text, { bos: true }).length < 2100; seed++) {
    const r = await model.generate(undefined, { maxNewTokens: 400, temperature: 1, seed });
    text += r.text.trim() + '\n';
  }
  return text;
}

describe.skipIf(!hasFixtures)('perplexity matches llama.cpp', () => {
  if (!hasFixtures) it.skip(missingFixturesMessage, () => {});
  let text: string;
  beforeAll(async () => {
    const m = await loadModel(STORIES_F32, { threads, backend: 'wasm' });
    text = await sampleText(m);
    m.dispose();
  });
  afterAll(async () => {
    await disposeOracle();
  });

  for (const [name, path] of [['F32', STORIES_F32], ['Q8_0', STORIES_Q8]] as const) {
    it(`stories260K ${name}, ctx 256, within 0.5 %`, async () => {
      const model = await loadModel(path, { threads, backend: 'wasm', kvCacheType: 'f32' });
      try {
        const ids = model.tokenize(text, { bos: true });
        expect(ids.length).toBeGreaterThanOrEqual(2000);
        const ours = await model.perplexity(ids, { ctx: 256 });
        const ref = await oraclePerplexity(path, ids, 256);
        expect(ours.tokens).toBe(ref.tokens);
        expect(Math.abs(ours.ppl / ref.ppl - 1)).toBeLessThan(0.005);
        expect(ours.ppl).toBeGreaterThan(1);
      } finally {
        model.dispose();
      }
    });
  }
});
