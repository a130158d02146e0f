/**
 * Models the end-to-end tests run: the real TinyStories fixtures from ../shared and small synthetic models with
 * real architecture features (GQA, qwen2 biases) written by our generator, cached in the OS temp folder.
 */
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeSyntheticModel, PRESETS, type SyntheticType } from '../../scripts/make-synthetic-model.js';
import { modelsDir } from '../oracle/paths.js';

export const fixture = (name: string) => path.join(modelsDir, name);
export const STORIES_F32 = fixture('stories260K.gguf');
export const STORIES_Q8 = fixture('stories260K-Q8_0.gguf');
export const STORIES_Q4 = fixture('stories260K-Q4_0.gguf');

const cacheDir = path.join(os.tmpdir(), 'twinfer-test-models');

/** Writes (once) a synthetic model of a preset and type; same seed -> same bytes. */
export async function syntheticModel(preset: 'tiny-llama' | 'tiny-qwen2' | 'tinyllama-2l' | 'qwen2-0.5b-2l', type: SyntheticType): Promise<string> {
  mkdirSync(cacheDir, { recursive: true });
  const out = path.join(cacheDir, `${preset}-${type}-v1.gguf`);
  if (!existsSync(out)) {
    const tmp = `${out}.${process.pid}.tmp`;
    await makeSyntheticModel({ ...PRESETS[preset], type, seed: 1, out: tmp });
    renameSync(tmp, out);
  }
  return out;
}

/** Tolerance on log-probabilities against llama.cpp, by weight type (issue #2). */
export function tolerance(type: string): number {
  if (type === 'f32') return 1e-3;
  if (type === 'f16' || type === 'bf16') return 2e-2;
  return 0.25;
}

export const threads = Math.max(1, Math.min(2, os.availableParallelism()));
