/**
 * One benchmark run of twinfer on one model, in its own process (clean peak RSS): load through the SDK, one warm-up
 * generation, then `runs` generations of a fixed prompt; prints one JSON line with the median prefill and decode
 * tokens/s. Usage: tsx bench/src/ours.ts MODEL --prompt N --gen N --threads N [--runs N] [--kv f16|f32]
 */
import { loadModel } from '../../packages/sdk/src/index.js';
import { benchArgs, benchPrompt, median, peakRssBytes } from './common.js';

const { modelPath, nPrompt, nGen, threads, runs, kv } = benchArgs('ours.ts');

const t0 = performance.now();
const model = await loadModel(modelPath, {
  backend: 'wasm',
  threads,
  contextSize: nPrompt + nGen + 8,
  kvCacheType: kv,
  maxBatchTokens: Math.max(nPrompt, 1),
});
const loadMs = performance.now() - t0;
const ids = benchPrompt(nPrompt);
const prefill: number[] = [], decode: number[] = [];
for (let r = 0; r <= runs; ++r) {
  const res = await model.generate(ids, { maxNewTokens: nGen, ignoreEos: true });
  if (r === 0) continue;  // warm-up: first touches of weights and scratch
  prefill.push(res.timings.prefillTokensPerSecond);
  decode.push(res.timings.decodeTokensPerSecond);
}
// model.memory() reads through a pointer that core-wasm's binding mis-signs above 2 GiB of linear memory (F16
// TinyLlama); the speed numbers do not depend on it (reported in /work/notes/cpu-requests.md).
let mem: { weights: number; kvCache: number } = { weights: NaN, kvCache: NaN };
try {
  mem = model.memory();
} catch { /* see above */ }
model.dispose();
console.log(JSON.stringify({
  engine: 'twinfer', model: modelPath, prefill_tps: median(prefill), decode_tps: median(decode), prefill, decode,
  load_ms: loadMs, peak_rss: peakRssBytes(), weights_bytes: mem.weights, kv_bytes: mem.kvCache,
}));
