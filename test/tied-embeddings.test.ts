/**
 * Tied embeddings (no output.weight: Qwen2-0.5B, Llama-3.2-1B, ...): the token embedding is also the output matrix.
 * The CPU backend keeps the embedding in GGUF layout while loading and rearranges it for its matrix kernels only
 * once it knows the output matrix is absent (tw_engine_ready). A model without output.weight must give exactly the
 * logits of the same model whose output.weight is a copy of token_embd.weight.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { gguf, loadModel } from '@twinfer/sdk';
import { syntheticModel, threads } from './helpers/models.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinfer-tied-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The model with output.weight replaced by the embedding (untied copy) or removed (tied). */
async function variant(src: string, tied: boolean): Promise<string> {
  const file = await gguf.readGGUF(src);
  const embd = file.tensors.find((t) => t.name === 'token_embd.weight')!;
  const embdData = await gguf.readTensorData(file, embd);
  const tensors: gguf.GGUFWriteTensor[] = [];
  for (const t of file.tensors) {
    if (t.name === 'output.weight') {
      if (!tied) tensors.push({ name: t.name, dims: embd.dims, type: embd.type, data: embdData });
      continue;
    }
    tensors.push({ name: t.name, dims: t.dims, type: t.type, data: t === embd ? embdData : await gguf.readTensorData(file, t) });
  }
  const out = path.join(dir, `${path.basename(src, '.gguf')}-${tied ? 'tied' : 'copy'}.gguf`);
  await gguf.writeGGUF(out, { metadata: gguf.metadataFromFile(file), tensors });
  return out;
}

describe('tied embeddings', () => {
  for (const type of ['q8_0', 'q4_0'] as const) {
    it(`${type}: a model without output.weight scores like its untied copy, logit for logit`, async () => {
      const src = await syntheticModel('tinyllama-2l', type);
      const ids = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203];
      const logits: Float32Array[][] = [];
      for (const tied of [false, true]) {
        const model = await loadModel(await variant(src, tied), { threads, backend: 'wasm' });
        try {
          logits.push(await model.evaluate(ids));
        } finally {
          model.dispose();
        }
      }
      const [copy, tiedRows] = logits;
      expect(tiedRows.length).toBe(ids.length);
      for (let i = 0; i < ids.length; i++) {
        expect(tiedRows[i].length).toBe(32000);
        expect(Array.from(tiedRows[i])).toEqual(Array.from(copy[i]));
      }
    }, 120_000);
  }
});
