/**
 * One benchmark run of llama.cpp through node-llama-cpp 3.21.1 (prebuilt CPU binaries, same thread count), in its
 * own process: same prompt ids and token counts as ours.ts, F16 KV cache, one warm-up then `runs` measured runs;
 * prints one JSON line. Prefill = one evaluation of the whole prompt; decode = greedy tokens after it.
 * Usage: tsx bench/src/peer.ts MODEL --prompt N --gen N --threads N [--runs N]
 */
import { getLlama, LlamaLogLevel, type Token } from 'node-llama-cpp';
import { benchArgs, benchPrompt, median, peakRssBytes } from './common.js';

const { modelPath, nPrompt, nGen, threads, runs } = benchArgs('peer.ts');

const t0 = performance.now();
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, maxThreads: threads });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const loadMs = performance.now() - t0;
const context = await model.createContext({
  contextSize: nPrompt + nGen + 8, batchSize: Math.max(nPrompt, 1), threads, sequences: 1, flashAttention: false,
});
const ids = benchPrompt(nPrompt) as Token[];
const prefill: number[] = [], decode: number[] = [];
for (let r = 0; r <= runs; ++r) {
  const seq = context.getSequence();
  const p0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(ids);
  const p1 = performance.now();
  // Greedy decode: the first token comes from the prompt's logits, then each step evaluates one token.
  let n = 0, tFirst = 0;
  for await (const _tok of seq.evaluate([ids[ids.length - 1]], { temperature: 0 })) {
    if (n === 0) tFirst = performance.now();
    if (++n >= nGen) break;
  }
  const p2 = performance.now();
  seq.dispose();
  if (r === 0) continue;
  prefill.push(nPrompt / ((p1 - p0) / 1000));
  decode.push((nGen - 1) / ((p2 - tFirst) / 1000));
}
await context.dispose();
await model.dispose();
console.log(JSON.stringify({
  engine: 'llama.cpp', model: modelPath, prefill_tps: median(prefill), decode_tps: median(decode), prefill, decode,
  load_ms: loadMs, peak_rss: peakRssBytes(),
}));
