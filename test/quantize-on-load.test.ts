/**
 * On-load quantization of a float model (issue #3): the weights shrink to the quantized size, perplexity stays
 * within 1 % of the float model's and greedy text is unchanged.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, TwinferError, type Model } from '@twinfer/sdk';
import { hasFixtures, missingFixturesMessage } from './oracle/paths.js';
import { STORIES_F32, threads } from './helpers/models.js';

async function sampleText(model: Model): Promise<number[]> {
  let text = '';
  for (let seed = 1; model.tokenize(text, { bos: true }).length < 1100; seed++) {
    text += (await model.generate(undefined, { maxNewTokens: 300, temperature: 1, seed })).text.trim() + '\n';
  }
  return model.tokenize(text, { bos: true });
}

describe.skipIf(!hasFixtures)('quantize on load', () => {
  if (!hasFixtures) it.skip(missingFixturesMessage, () => {});
  let f32: Model;
  let ids: number[];
  beforeAll(async () => {
    f32 = await loadModel(STORIES_F32, { threads, backend: 'wasm' });
    ids = await sampleText(f32);
  });
  afterAll(() => f32?.dispose());

  for (const q of ['q8_0', 'q4_0'] as const) {
    it(`${q}: smaller weights, ${q === 'q8_0' ? 'perplexity within 1 % and the same 40 greedy tokens' : 'still a working model'}`, async () => {
      const m = await loadModel(STORIES_F32, { threads, backend: 'wasm', quantize: q });
      try {
        expect(m.info.quantization?.type).toBe(q);
        expect(m.info.weightBytes).toBeLessThan(f32.info.weightBytes * (q === 'q8_0' ? 0.35 : 0.3));
        expect(m.info.quantization!.savedBytes).toBe(m.info.quantization!.fileWeightBytes - m.info.weightBytes);
        const base = await f32.perplexity(ids, { ctx: 256 });
        const ours = await m.perplexity(ids, { ctx: 256 });
        if (q === 'q8_0') {
          expect(Math.abs(ours.ppl / base.ppl - 1)).toBeLessThan(0.01);
          const a = await f32.generate(undefined, { maxNewTokens: 40 });
          const b = await m.generate(undefined, { maxNewTokens: 40 });
          expect(b.text).toBe(a.text);
        } else {
          // 4-bit on a 260K-parameter model costs more, but it must stay a language model, not noise
          expect(ours.ppl).toBeLessThan(base.ppl * 1.5);
        }
      } finally {
        m.dispose();
      }
    });
  }

  it('rejects an unknown quantization', async () => {
    const err = await loadModel(STORIES_F32, { quantize: 'q3' as never }).catch((e) => e);
    expect(err).toBeInstanceOf(TwinferError);
    expect((err as TwinferError).code).toBe('E_INVALID_ARGUMENT');
  });
});
