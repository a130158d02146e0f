/**
 * Bad input through the SDK: every case is a TwinferError with a stable code, and the process stays usable.
 */
import { copyFileSync, mkdtempSync, rmSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { gguf, loadModel, TwinferError } from '@twinfer/sdk';
import { hasFixtures, missingFixturesMessage } from './oracle/paths.js';
import { STORIES_F32 } from './helpers/models.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'twinfer-errors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Rewrites stories260K.gguf with edits to its metadata and tensors. */
async function variant(
  name: string,
  edit: {
    meta?: (m: gguf.GGUFMetadataEntry[]) => gguf.GGUFMetadataEntry[];
    tensors?: (t: gguf.GGUFWriteTensor[]) => gguf.GGUFWriteTensor[];
  },
): Promise<string> {
  const src = await gguf.readGGUF(STORIES_F32);
  let meta = gguf.metadataFromFile(src);
  let tensors: gguf.GGUFWriteTensor[] = [];
  for (const t of src.tensors) tensors.push({ name: t.name, dims: t.dims, type: t.type, data: await gguf.readTensorData(src, t) });
  if (edit.meta) meta = edit.meta(meta);
  if (edit.tensors) tensors = edit.tensors(tensors);
  const out = path.join(dir, name);
  await gguf.writeGGUF(out, { metadata: meta, tensors });
  return out;
}

async function expectCode(p: Promise<unknown>, code: string, messagePart?: RegExp): Promise<TwinferError> {
  const err = await p.then(() => undefined, (e) => e);
  expect(err, `expected ${code}`).toBeInstanceOf(TwinferError);
  expect((err as TwinferError).code).toBe(code);
  if (messagePart) expect((err as TwinferError).message).toMatch(messagePart);
  expect((err as TwinferError).message).not.toContain('\n');
  return err as TwinferError;
}

describe.skipIf(!hasFixtures)('bad models are typed errors', () => {
  if (!hasFixtures) it.skip(missingFixturesMessage, () => {});

  it('missing file', async () => {
    await expectCode(loadModel(path.join(dir, 'nope.gguf')), 'E_FILE_NOT_FOUND');
  });

  it('not a GGUF file', async () => {
    const p = path.join(dir, 'text.gguf');
    writeFileSync(p, 'this is not a model\n'.repeat(100));
    await expectCode(loadModel(p), 'E_NOT_GGUF');
  });

  it('truncated in the header and in the tensor data', async () => {
    const p1 = path.join(dir, 'trunc-header.gguf');
    copyFileSync(STORIES_F32, p1);
    truncateSync(p1, 200);
    await expectCode(loadModel(p1), 'E_TRUNCATED');
    const p2 = path.join(dir, 'trunc-data.gguf');
    copyFileSync(STORIES_F32, p2);
    truncateSync(p2, statSync(STORIES_F32).size - 1000);
    await expectCode(loadModel(p2), 'E_TENSOR_OUT_OF_BOUNDS', /output\.weight|token_embd|blk\./);
  });

  it('unsupported architecture', async () => {
    const p = await variant('arch.gguf', {
      meta: (m) => m.map((e) => (e.key === 'general.architecture' ? { ...e, value: 'mamba' } : e)),
    });
    await expectCode(loadModel(p), 'E_UNSUPPORTED_ARCH', /mamba/);
  });

  it('unsupported tensor type names the tensor and the type', async () => {
    const p = await variant('type.gguf', {
      tensors: (ts) =>
        ts.map((t) => (t.name === 'blk.0.ffn_up.weight' ? { ...t, type: gguf.GGMLType.Q8_1, data: new Uint8Array((64 / 32) * 36 * 172) } : t)),
    });
    await expectCode(loadModel(p), 'E_UNSUPPORTED_TYPE', /blk\.0\.ffn_up\.weight.*Q8_1/);
  });

  it('missing tensor', async () => {
    const p = await variant('missing.gguf', { tensors: (ts) => ts.filter((t) => t.name !== 'blk.2.ffn_down.weight') });
    await expectCode(loadModel(p), 'E_MISSING_TENSOR', /blk\.2\.ffn_down/);
  });

  it('wrong tensor shape', async () => {
    const p = await variant('shape.gguf', {
      tensors: (ts) => ts.map((t) => (t.name === 'blk.1.attn_q.weight' ? { ...t, dims: [64, 32], data: new Uint8Array(64 * 32 * 4) } : t)),
    });
    await expectCode(loadModel(p), 'E_SHAPE_MISMATCH', /blk\.1\.attn_q/);
  });

  it('bad load options', async () => {
    await expectCode(loadModel(STORIES_F32, { contextSize: -5 }), 'E_INVALID_ARGUMENT');
    await expectCode(loadModel(STORIES_F32, { threads: 1.5 }), 'E_INVALID_ARGUMENT');
    await expectCode(loadModel(STORIES_F32, { backend: 'tpu' as never }), 'E_INVALID_ARGUMENT');
  });

  it('after all of that the process still loads and runs a model', async () => {
    const m = await loadModel(STORIES_F32, { threads: 1, backend: 'wasm' });
    const r = await m.generate('Once upon a time', { maxNewTokens: 4 });
    expect(r.ids).toHaveLength(4);
    m.dispose();
  });
});
