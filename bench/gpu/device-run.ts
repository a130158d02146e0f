/**
 * GPU checks and benchmark through the SDK with the CUDA core, runnable without node_modules: scripts/device/pack.sh
 * bundles it (esbuild) to one .mjs that runs on the GPU machine with a carried Node binary. Each command prints
 * human-readable lines and one `RESULT {json}` line per measurement, which summarize.mjs turns into tables.
 *
 *   check   --shared DIR                 probe; stories260K 200 greedy tokens == expected text; OOM then recovery
 *   logits  --model F --out F.json       teacher-forced logits of a fixed 64-token prompt + 16 greedy steps
 *   logits  ... --backend wasm           the same from the WASM backend (exact float activations): the CPU reference
 *   compare --ref A.json --test B.json   max |logit difference| and greedy agreement (tolerance 5e-2); .json.gz too
 *   bench   --model F --label L          prefill 512, decode 128, batched decode 8/32/64 sequences
 *   decode-ab --model F --label L        tg128 and 8-sequence steps with CUDA graphs on / off, in one process
 *   profile --model F --label L [--batch N]  decode 128 / N-sequence steps (TWINFER_CUDA_PROFILE=1: per-op GPU times)
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { gunzipSync, gzipSync } from 'node:zlib';
import { parseArgs } from 'node:util';

import { listBackends, loadModel, type Model } from '../../packages/sdk/src/index.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    shared: { type: 'string' },
    model: { type: 'string' },
    out: { type: 'string' },
    ref: { type: 'string' },
    test: { type: 'string' },
    label: { type: 'string' },
    big: { type: 'string' },
    backend: { type: 'string' },
    threads: { type: 'string' },
    'ref-name': { type: 'string' },
    batch: { type: 'string' },
    ab: { type: 'string' },
    values: { type: 'string' },
  },
});

let failures = 0;
function result(obj: Record<string, unknown>): void {
  console.log(`RESULT ${JSON.stringify(obj)}`);
}
function check(name: string, ok: boolean, detail: string): void {
  if (!ok) failures++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}: ${detail}`);
  result({ kind: 'check', name, ok, detail });
}

// A fixed prompt: BOS then pseudo-random ids (an LCG, so every run and every backend sees the same tokens).
function promptIds(n: number, bos: number, vocab: number, seed = 7): number[] {
  const ids = [bos];
  let s = seed >>> 0;
  while (ids.length < n) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    ids.push(s % Math.min(vocab, 128000));
  }
  return ids;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function cmdCheck(shared: string, big?: string): Promise<void> {
  const backends = await listBackends();
  const cuda = backends.find((b) => b.name === 'cuda');
  console.log(`backends: ${JSON.stringify(backends)}`);
  check('cuda probe', !!cuda?.available, cuda?.reason ?? 'no cuda entry');
  if (!cuda?.available) return;

  const models = `${shared}/fixtures/models`;
  const expected = readFileSync(`${models}/stories260K.expected.txt`, 'utf8');
  const m = await loadModel(`${models}/stories260K.gguf`, { backend: 'cuda', kvCacheType: 'f32' });
  check('backend is cuda', m.backend.name === 'cuda', `${m.backend.name} (${m.backend.reason})`);
  const r = await m.generate(undefined, { maxNewTokens: 200, temperature: 0 });
  const same = r.text === expected;
  let at = 0;
  while (at < r.text.length && r.text[at] === expected[at]) at++;
  check('stories260K F32 200 greedy tokens == llama2.c text', same,
    same ? `${r.ids.length} tokens, identical` : `differs at char ${at}: got ${JSON.stringify(r.text.slice(at, at + 40))}`);
  const f32ids = r.ids.slice(0, 32);
  // The device top-k selection (forwardTop: generate without logprobs) against whole rows on the host (asking for
  // logprobs makes every step return whole rows): same tokens for greedy and for seeded top-k sampling.
  for (const [name, cfg] of [
    ['greedy + penalty', { maxNewTokens: 100, temperature: 0, repetitionPenalty: 1.3 }],
    ['top-k sampling', { maxNewTokens: 100, temperature: 1.0, topK: 40, topP: 0.95, repetitionPenalty: 1.1, seed: 7 }],
  ] as const) {
    const top = await m.generate('Once upon a time', cfg);
    const rows = await m.generate('Once upon a time', { ...cfg, logprobs: 1 });
    const same = top.ids.join() === rows.ids.join();
    check(`stories260K ${name}: device top-k == whole rows`, same, `${top.ids.length} / ${rows.ids.length} tokens${same ? ', identical' : ''}`);
  }
  m.dispose();
  for (const q of ['Q8_0', 'Q4_0']) {
    const mq = await loadModel(`${models}/stories260K-${q}.gguf`, { backend: 'cuda', kvCacheType: 'f32' });
    const rq = await mq.generate(undefined, { maxNewTokens: 32, temperature: 0 });
    let agree = 0;
    while (agree < 32 && rq.ids[agree] === f32ids[agree]) agree++;
    console.log(`info stories260K-${q}: first 32 greedy tokens agree with F32 for ${agree} steps`);
    result({ kind: 'info', name: `stories260K-${q} agreement with F32 (32 steps)`, value: agree });
    mq.dispose();
  }

  // Out of memory: a KV cache sized to leave less room than the weights need, so the load fails part-way
  // through the weights; the error must name needed and free bytes, and the next load must work.
  if (big) {
    const dev = cuda.devices?.[0];
    const free = dev?.freeBytes ?? dev?.memoryBytes ?? 0;
    const weights = statSync(big).size;
    const perToken = 32 * 2 * 1024 * 4; // 8B shape, F32 cache: layers x (K,V) x kv_dim x 4 bytes
    const kvTokens = Math.floor((free - weights / 2) / perToken);
    const maxSequences = Math.max(1, Math.floor(kvTokens / 8192));
    let msg = '';
    let code = '';
    try {
      const mb = await loadModel(big, { backend: 'cuda', kvCacheType: 'f32', contextSize: 8192, maxSequences });
      mb.dispose();
    } catch (e) {
      msg = (e as Error).message;
      code = String((e as { code?: unknown }).code ?? '');
    }
    // Either the SDK's check before loading ("model needs N bytes ... but F bytes are free", E_OUT_OF_MEMORY) or the
    // backend's allocation failure part-way ("out of memory allocating N bytes ...; the GPU has F bytes free").
    const oom = code === 'E_OUT_OF_MEMORY' || /out of memory/i.test(msg);
    check('out-of-memory load fails with needed and free bytes', oom && /\d+ bytes/.test(msg) && /free/i.test(msg),
      `${code} ${msg}`.trim() || 'no error');
    const again = await loadModel(`${models}/stories260K.gguf`, { backend: 'cuda', kvCacheType: 'f32' });
    const r2 = await again.generate(undefined, { maxNewTokens: 200, temperature: 0 });
    check('process usable after OOM (stories260K again)', r2.text === expected, `${r2.ids.length} tokens`);
    again.dispose();
  }
}

interface LogitsFile {
  positions: number[];
  logits: number[][];
  greedy: number[];
  margins: number[];
}

// backend 'wasm' (exact float activations) computes the reference on a CPU machine; 'cuda' (default) the GPU side.
async function cmdLogits(model: string, out: string, backend: 'cuda' | 'wasm', threads?: number): Promise<void> {
  const m = await loadModel(model, {
    backend, kvCacheType: 'f32', contextSize: 256, maxBatchTokens: 128,
    ...(backend === 'wasm' ? { exactActivations: true, threads } : {}),
  });
  const ids = promptIds(64, m.tokenizer.bosId ?? 1, m.info.vocabSize);
  const all = await m.evaluate(ids);
  const positions = [15, 31, 47, 63];
  const r = await m.generate(ids, { maxNewTokens: 16, temperature: 0, logprobs: 2 });
  const margins = (r.logprobs ?? []).map((s) => (s.top.length > 1 ? s.top[0].logprob - s.top[1].logprob : Infinity));
  // Logits rounded to 1e-4 (the comparison's tolerance is 5e-2) and gzipped when `out` ends in .gz: the references
  // travel to the GPU machine inside a 64 MiB working tree.
  const round = (v: number) => Math.round(v * 1e4) / 1e4;
  const file: LogitsFile = { positions, logits: positions.map((p) => Array.from(all[p], round)), greedy: r.ids, margins };
  writeLogits(out, file);
  console.log(`logits of ${model} -> ${out} (greedy ${r.ids.join(' ')})`);
  m.dispose();
}

function writeLogits(path: string, file: LogitsFile): void {
  const json = Buffer.from(JSON.stringify(file));
  writeFileSync(path, path.endsWith('.gz') ? gzipSync(json, { level: 9 }) : json);
}
function readLogits(path: string): LogitsFile {
  const raw = readFileSync(path);
  return JSON.parse((path.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8')) as LogitsFile;
}

function cmdCompare(refPath: string, testPath: string, label: string, refName: string): void {
  const a = readLogits(refPath);
  const b = readLogits(testPath);
  if (a.positions.join() !== b.positions.join() || a.logits[0].length !== b.logits[0].length)
    throw new Error(`${refPath} and ${testPath} hold different positions or vocabularies`);
  let maxDiff = 0;
  for (let i = 0; i < a.positions.length; i++)
    for (let j = 0; j < a.logits[i].length; j++) maxDiff = Math.max(maxDiff, Math.abs(a.logits[i][j] - b.logits[i][j]));
  let agree = 0;
  while (agree < 16 && a.greedy[agree] === b.greedy[agree]) agree++;
  // Random weights give near-ties: a divergence only counts where the reference's top-2 margin is above tolerance.
  const tieOk = agree === 16 || a.margins[agree] < 5e-2;
  check(`${label} logits vs ${refName}`, maxDiff <= 5e-2, `max |diff| ${maxDiff.toExponential(3)} over ${a.positions.length} positions`);
  check(`${label} greedy 16 steps`, tieOk,
    agree === 16 ? 'identical' : `diverge at step ${agree} (reference top-2 margin ${a.margins[agree]?.toExponential(2)})`);
}

async function cmdBench(model: string, label: string): Promise<void> {
  const t0 = performance.now();
  const m: Model = await loadModel(model, {
    backend: 'cuda', kvCacheType: 'f16', contextSize: 1024, maxSequences: 64, maxBatchTokens: 512,
  });
  const loadS = (performance.now() - t0) / 1000;
  const bytes = statSync(model).size;
  const mem = m.memory();
  console.log(`${label}: loaded ${(bytes / 1e9).toFixed(2)} GB in ${loadS.toFixed(1)} s (${(bytes / 1e9 / loadS).toFixed(2)} GB/s); weights ${mem.weights}, kv ${mem.kvCache}`);
  result({ kind: 'load', label, fileBytes: bytes, weightBytes: mem.weights, seconds: loadS });
  const bos = m.tokenizer.bosId ?? 1;
  const prompt = promptIds(512, bos, m.info.vocabSize, 11);

  await m.generate(prompt.slice(0, 64), { maxNewTokens: 8, temperature: 0 }); // warm-up: kernels, scratch growth
  const pp: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await m.generate(prompt, { maxNewTokens: 1, temperature: 0 });
    pp.push((512 / r.timings.promptMs) * 1000);
  }
  const tg: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await m.generate([bos], { maxNewTokens: 128, temperature: 0 });
    tg.push(r.timings.decodeTokensPerSecond);
  }
  console.log(`${label}: prefill 512 ${median(pp).toFixed(0)} tok/s, decode ${median(tg).toFixed(1)} tok/s`);
  result({ kind: 'bench', label, test: 'pp512', tps: median(pp), runs: pp });
  result({ kind: 'bench', label, test: 'tg128', tps: median(tg), runs: tg });

  // Batched decode: N sequences, each with a 128-token prompt, then 128 steps of one token per sequence
  // (llama-batched-bench -npp 128 -ntg 128 -npl N measures the same thing). Each step is a greedy generation step
  // as the SDK runs it for N concurrent requests: the best logit of every row selected on the GPU (forwardTop,
  // k = 1) and fed back as the sequence's next token. batched64-fullrows: the same with every row's 128k logits
  // copied to the host (engine.step), as before the device selection — the cost it removes.
  const engine = (m as unknown as { engine: import('../../packages/sdk/src/engine/engine.js').InferenceEngine }).engine;
  const runs: Array<[number, boolean]> = [[8, false], [32, false], [64, false], [64, true]];
  for (const [n, fullRows] of runs) {
    const seqs = Array.from({ length: n }, () => engine.createSequence());
    for (const [i, s] of seqs.entries()) engine.evaluate(s, promptIds(128, bos, m.info.vocabSize, 100 + i), 'last');
    const next = seqs.map((_, i) => (i * 7919) % 32000);
    const items = () => seqs.map((seq, i) => ({ seq, tokens: [next[i]], outputs: 'last' as const }));
    const step = fullRows
      ? () => void engine.step(items())
      : () => engine.stepTop(items(), 1).forEach((t, i) => (next[i] = t!.ids[0]!));
    step(); // warm-up at this batch size
    const t1 = performance.now();
    for (let k = 1; k < 128; k++) step();
    const s = (performance.now() - t1) / 1000;
    const tps = (n * 127) / s;
    const test = `batched${n}${fullRows ? '-fullrows' : ''}`;
    console.log(`${label}: ${test} decode ${n} seqs: ${tps.toFixed(0)} tok/s (${((s / 127) * 1000).toFixed(2)} ms/step)`);
    result({ kind: 'bench', label, test, tps });
    for (const seq of seqs) engine.releaseSequence(seq);
  }
  m.dispose();
}

// Single-stream decode (tg128, 3 runs) and 8-sequence greedy steps with a backend switch on and off (--ab NAME,
// default TWINFER_CUDA_GRAPHS; the backend reads it when a model is loaded, so both run in this process, one load
// each, alternating order).
async function cmdDecodeAB(model: string, label: string, name: string, vals: string[]): Promise<void> {
  for (const graphs of [...vals, ...vals]) {
    if (graphs === '') delete process.env[name];
    else process.env[name] = graphs;
    // --ab TWINFER_PIPELINE: pipelined greedy decode (LoadOptions.pipelineDecode) off / on
    const pipe = process.env.TWINFER_PIPELINE;
    const m = await loadModel(model, {
      backend: 'cuda', kvCacheType: 'f16', contextSize: 1024, maxSequences: 8, maxBatchTokens: 512,
      pipelineDecode: pipe === undefined || pipe === '' ? undefined : pipe !== '0',
    });
    const bos = m.tokenizer.bosId ?? 1;
    await m.generate(promptIds(16, bos, m.info.vocabSize, 11), { maxNewTokens: 8, temperature: 0 });
    const tg: number[] = [];
    let text = '';
    for (let i = 0; i < 3; i++) {
      const r = await m.generate([bos], { maxNewTokens: 128, temperature: 0 });
      tg.push(r.timings.decodeTokensPerSecond);
      text = r.ids.slice(0, 16).join(",");
    }
    const engine = (m as unknown as { engine: import('../../packages/sdk/src/engine/engine.js').InferenceEngine }).engine;
    const seqs = Array.from({ length: 8 }, () => engine.createSequence());
    for (const [i, s] of seqs.entries()) engine.evaluate(s, promptIds(128, bos, m.info.vocabSize, 100 + i), 'last');
    const next = seqs.map((_, i) => (i * 7919) % 32000);
    const step = () => engine.stepTop(seqs.map((seq, i) => ({ seq, tokens: [next[i]], outputs: 'last' as const })), 1)
      .forEach((t, i) => (next[i] = t!.ids[0]!));
    step();
    const t1 = performance.now();
    for (let k = 1; k < 128; k++) step();
    const b8 = (8 * 127) / ((performance.now() - t1) / 1000);
    console.log(`${label} ${name}=${graphs}: tg128 ${tg.map((x) => x.toFixed(1)).join(' / ')} tok/s, batched8 ${b8.toFixed(0)} tok/s; first tokens ${text}`);
    result({ kind: 'decode-ab', label, name, value: graphs, tg, b8 });
    m.dispose();
  }
}

// Decode of 128 tokens from BOS on a fresh model (--batch N > 1: N sequences with 128-token prompts, then 64 steps
// of one token each, as the bench's batched decode); with TWINFER_CUDA_PROFILE=1 the backend prints each op's GPU
// time when the model is disposed, to compare with the wall time per step printed here.
async function cmdProfile(model: string, label: string, batch: number): Promise<void> {
  const m = await loadModel(model, { backend: 'cuda', kvCacheType: 'f16', contextSize: 1024, maxSequences: Math.max(1, batch), maxBatchTokens: 512 });
  const bos = m.tokenizer.bosId ?? 1;
  if (batch <= 1) {
    const r = await m.generate([bos], { maxNewTokens: 128, temperature: 0 });
    console.log(`${label}: profiled decode ${r.timings.decodeTokensPerSecond.toFixed(1)} tok/s ` +
      `(${(1000 / r.timings.decodeTokensPerSecond).toFixed(3)} ms per token wall)`);
  } else {
    const engine = (m as unknown as { engine: import('../../packages/sdk/src/engine/engine.js').InferenceEngine }).engine;
    const seqs = Array.from({ length: batch }, () => engine.createSequence());
    for (const [i, s] of seqs.entries()) engine.evaluate(s, promptIds(128, bos, m.info.vocabSize, 100 + i), 'last');
    const next = seqs.map((_, i) => (i * 7919) % 32000);
    const step = () => engine.stepTop(seqs.map((seq, i) => ({ seq, tokens: [next[i]], outputs: 'last' as const })), 1)
      .forEach((t, i) => (next[i] = t!.ids[0]!));
    const t0 = performance.now();
    for (let k = 0; k < 64; k++) step();
    const ms = (performance.now() - t0) / 64;
    console.log(`${label}: profiled batched decode ${batch} seqs (greedy, device top-1): ${ms.toFixed(2)} ms per step wall`);
  }
  m.dispose();
}

async function main(): Promise<void> {
  const cmd = positionals[0];
  if (cmd === 'check') await cmdCheck(values.shared ?? '../shared', values.big);
  else if (cmd === 'logits') {
    const backend = values.backend ?? 'cuda';
    if (backend !== 'cuda' && backend !== 'wasm') throw new Error(`--backend must be cuda or wasm, got ${backend}`);
    await cmdLogits(values.model!, values.out!, backend, values.threads ? Number(values.threads) : undefined);
  }
  else if (cmd === 'compare') cmdCompare(values.ref!, values.test!, values.label ?? 'model', values['ref-name'] ?? 'exact-F32 CUDA path');
  else if (cmd === 'bench') await cmdBench(values.model!, values.label ?? values.model!);
  else if (cmd === 'decode-ab') await cmdDecodeAB(values.model!, values.label ?? values.model!, values.ab ?? 'TWINFER_CUDA_GRAPHS', (values.values ?? '1,0').split(','));
  else if (cmd === 'profile') await cmdProfile(values.model!, values.label ?? values.model!, Number(values.batch ?? 1));
  else throw new Error(`unknown command ${cmd}`);
  if (failures) {
    console.log(`${failures} check(s) failed`);
    process.exitCode = 1;
  }
}

main().catch((e) => {
  console.error(`error: ${(e as Error).stack ?? e}`);
  process.exitCode = 2;
});
