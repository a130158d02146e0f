/**
 * Weights decode exactly: for every supported type, our dequantization (the shared C++ kernels, compiled to WASM)
 * of each tensor equals llama.cpp's bit for bit. llama.cpp's reference is `llama-quantize --allow-requantize IN OUT
 * F32`, built from the source bundle inside node-llama-cpp (scripts/build-llama-tools.sh), which writes every
 * quantizable tensor dequantized to F32.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gguf } from '@twinfer/sdk';
import { loadWasmCore } from '@twinfer/core-wasm';
import { llamaDequantizeToF32 } from './oracle/dequant.js';
import { findLlamaTool, hasFixtures, missingFixturesMessage, missingToolMessage } from './oracle/paths.js';
import { STORIES_F32, STORIES_Q4, STORIES_Q8, syntheticModel } from './helpers/models.js';

const haveTool = findLlamaTool('llama-quantize') !== undefined;
const dir = mkdtempSync(path.join(os.tmpdir(), 'twinfer-dequant-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const inputs: Array<{ name: string; path: () => Promise<string> }> = [
  { name: 'stories260K.gguf (F32)', path: async () => STORIES_F32 },
  { name: 'stories260K-Q8_0.gguf (Q8_0 + F16)', path: async () => STORIES_Q8 },
  { name: 'stories260K-Q4_0.gguf (Q4_0 + Q8_0 + F16)', path: async () => STORIES_Q4 },
  ...(['f16', 'bf16', 'q8_0', 'q4_0'] as const).map((t) => ({ name: `synthetic tiny-llama ${t}`, path: () => syntheticModel('tiny-llama', t) })),
];

describe.skipIf(!hasFixtures || !haveTool)('dequantization is bit-exact with llama.cpp', () => {
  if (!hasFixtures) it.skip(missingFixturesMessage, () => {});
  if (!haveTool) it.skip(missingToolMessage('llama-quantize'), () => {});
  let core: Awaited<ReturnType<typeof loadWasmCore>>;
  beforeAll(async () => {
    core = await loadWasmCore();
  });

  for (const input of inputs) {
    it(input.name, async () => {
      const src = await input.path();
      const out = path.join(dir, `${path.basename(src)}.f32.gguf`);
      await llamaDequantizeToF32(src, out);
      const ours = await gguf.readGGUF(src);
      const ref = await gguf.readGGUF(out);
      const refByName = new Map(ref.tensors.map((t) => [t.name, t]));
      const typesSeen = new Set<string>();
      for (const t of ours.tensors) {
        const r = refByName.get(t.name);
        expect(r, `tensor ${t.name} in llama.cpp's output`).toBeDefined();
        const bytes = await gguf.readTensorData(ours, t);
        const refBytes = await gguf.readTensorData(ref, r!);
        if (r!.type !== gguf.GGMLType.F32) {
          // llama-quantize left it as it was (norms, biases): bytes must be identical
          expect(Buffer.compare(Buffer.from(bytes), Buffer.from(refBytes))).toBe(0);
          continue;
        }
        typesSeen.add(gguf.typeName(t.type));
        const mine = core.dequantize(t.type, bytes, t.nElements);
        const a = new Uint32Array(mine.buffer, mine.byteOffset, mine.length);
        const b = new Uint32Array(refBytes.buffer, refBytes.byteOffset, refBytes.length / 4);
        expect(a.length).toBe(b.length);
        let firstDiff = -1;
        for (let i = 0; i < a.length; i++) {
          if (a[i] !== b[i]) {
            firstDiff = i;
            break;
          }
        }
        expect(firstDiff, `${t.name} (${gguf.typeName(t.type)}) first differing element`).toBe(-1);
      }
      expect(typesSeen.size).toBeGreaterThan(0);
    });
  }
});
