/** Loading a model for a command: the shared options, a progress bar for big files, and a verbose summary. */
import { statSync } from 'node:fs';
import cliProgress from 'cli-progress';
import { loadModel, type LoadOptions, type Model } from '@twinfer/sdk';
import type { ModelOptions } from './options.js';
import { info } from './output.js';

/** Files smaller than this load in well under a second: no bar. */
const PROGRESS_MIN_BYTES = 64 * 1024 * 1024;

export async function openModel(opts: ModelOptions, extra: LoadOptions = {}): Promise<Model> {
  const load: LoadOptions = { ...extra };
  if (opts.backend !== undefined) load.backend = opts.backend;
  if (opts.threads !== undefined) load.threads = opts.threads;
  if (opts.ctx !== undefined && load.contextSize === undefined) load.contextSize = opts.ctx;
  if (opts.quantize !== undefined) load.quantize = opts.quantize;
  if (opts.kvType !== undefined) load.kvCacheType = opts.kvType;

  let bar: cliProgress.SingleBar | undefined;
  if (process.stderr.isTTY && fileSize(opts.model) >= PROGRESS_MIN_BYTES) {
    bar = new cliProgress.SingleBar(
      { stream: process.stderr, clearOnComplete: true, hideCursor: true, format: 'loading {bar} {percentage}% | {value}/{total} MiB' },
      cliProgress.Presets.shades_classic,
    );
    load.onProgress = (done, total) => {
      if (!bar) return;
      if (!bar.isActive) bar.start(Math.ceil(total / 2 ** 20), 0);
      bar.update(Math.floor(done / 2 ** 20));
    };
  }
  const t0 = performance.now();
  try {
    const model = await loadModel(opts.model, load);
    if (opts.verbose) {
      const b = model.backend;
      info(`backend: ${b.name}${b.threads ? ` (${b.threads} threads)` : ''}${b.device ? ` on ${b.device}` : ''}: ${b.reason}`);
      info(`loaded ${opts.model} in ${(performance.now() - t0).toFixed(0)} ms, context ${model.info.contextSize}`);
      const q = model.info.quantization;
      if (q) info(`quantized to ${q.type} on load: ${(q.fileWeightBytes / 2 ** 20).toFixed(1)} MiB -> ${(q.loadedWeightBytes / 2 ** 20).toFixed(1)} MiB (saved ${(q.savedBytes / 2 ** 20).toFixed(1)} MiB)`);
    }
    return model;
  } finally {
    bar?.stop();
  }
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0; // loadModel reports the missing file with its own error
  }
}
