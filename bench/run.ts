/**
 * `pnpm -C bench bench` — twinfer (WASM SIMD, through the SDK) against llama.cpp (node-llama-cpp 3.21.1 prebuilt CPU
 * binaries) on synthetic models of real shapes, same thread count, runs alternated (ours, peer, ours, peer, ...)
 * because the machine is shared: compare the ratios, not the absolute numbers.
 *
 * 1. Generates the models into bench/models/ if missing (scripts/make-synthetic-model.ts; the Q4_K_M mix through
 *    llama.cpp's own llama-quantize, built by scripts/build-llama-tools.sh).
 * 2. Measures the machine's memory read bandwidth (bench/src/bandwidth.cpp, native, same thread count).
 * 3. For every model: bytes of weights read per decoded token -> the physical floor (bandwidth / bytes).
 * 4. Prints | model | type | prefill ours / peer / ratio | decode ours / peer / ratio | peak RSS | floor | and appends
 *    it to bench/NOTES.md (unless --no-notes).
 *
 * Options: --models a,b (names below; default all) --threads N (2) --prompt N (128) --gen N (64) --rounds N (2)
 *          --runs N (2 per process) --no-peer --no-notes --note "why the numbers moved"
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readGGUF } from '../packages/sdk/src/gguf/reader.js';
import { median } from './src/common.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const modelsDir = path.join(here, 'models');
const resultsDir = path.join(here, 'results');
const tsx = path.join(here, 'node_modules', '.bin', 'tsx');
const vocab = (name: string) => path.resolve(root, '..', 'shared', 'fixtures', 'vocab', `ggml-vocab-${name}.gguf`);

interface ModelSpec {
  name: string;
  label: string;
  type: string;
  make: (out: string) => void;
}

function synth(args: string[], out: string): void {
  execFileSync(tsx, [path.join(root, 'scripts', 'make-synthetic-model.ts'), ...args, '--out', out], { stdio: 'inherit', cwd: root });
}

function llamaQuantize(src: string, out: string, type: string): void {
  const line = execFileSync('bash', [path.join(root, 'scripts', 'build-llama-tools.sh'), '--targets', 'llama-quantize'], { cwd: root, encoding: 'utf8' })
    .trim().split('\n').pop() ?? '';
  const bin = path.join(line.replace(/^LLAMA_TOOLS_BIN=/, ''), 'llama-quantize');
  execFileSync(bin, ['--allow-requantize', src, out, type], { stdio: ['ignore', 'ignore', 'inherit'] });
}

const TL = ['--preset', 'tinyllama-1.1b'];
const L3 = ['--arch', 'llama', '--dim', '2048', '--layers', '16', '--heads', '32', '--kv-heads', '8', '--ffn', '8192',
  '--vocab-from', vocab('llama-bpe'), '--ctx', '8192'];
const MODELS: ModelSpec[] = [
  { name: 'tinyllama-1.1b-q4_0', label: 'TinyLlama-1.1B', type: 'Q4_0', make: (o) => synth([...TL, '--type', 'q4_0'], o) },
  { name: 'tinyllama-1.1b-q8_0', label: 'TinyLlama-1.1B', type: 'Q8_0', make: (o) => synth([...TL, '--type', 'q8_0'], o) },
  { name: 'tinyllama-1.1b-q4_k_m', label: 'TinyLlama-1.1B', type: 'Q4_K_M', make: (o) => llamaQuantize(modelPath('tinyllama-1.1b-f16'), o, 'Q4_K_M') },
  { name: 'tinyllama-1.1b-f16', label: 'TinyLlama-1.1B', type: 'F16', make: (o) => synth([...TL, '--type', 'f16'], o) },
  { name: 'llama3-1b-q4_k_m', label: 'Llama-3-1B (128k vocab)', type: 'Q4_K_M', make: (o) => llamaQuantize(modelPath('llama3-1b-f16'), o, 'Q4_K_M') },
];
const HELPERS: Record<string, (out: string) => void> = {
  'llama3-1b-f16': (o) => synth([...L3, '--type', 'f16'], o),
};

function modelPath(name: string): string {
  const p = path.join(modelsDir, `${name}.gguf`);
  if (!existsSync(p)) {
    mkdirSync(modelsDir, { recursive: true });
    const make = MODELS.find((m) => m.name === name)?.make ?? HELPERS[name];
    if (!make) throw new Error(`no recipe for model ${name}`);
    console.error(`bench: generating ${p}`);
    const tmp = `${p}.partial`;
    make(tmp);
    renameSync(tmp, p);
  }
  return p;
}

function bandwidthGBs(threads: number): number {
  mkdirSync(resultsDir, { recursive: true });
  const bin = path.join(resultsDir, 'bandwidth');
  execFileSync('g++', ['-O3', '-march=native', '-pthread', path.join(here, 'src', 'bandwidth.cpp'), '-o', bin]);
  const out = JSON.parse(execFileSync(bin, [String(threads), '1024'], { encoding: 'utf8' })) as { read_gbs: number };
  return out.read_gbs;
}

/** Bytes a decode step reads: every weight once, except the token embedding (one row) unless it is also the output. */
async function bytesPerToken(file: string): Promise<number> {
  const g = await readGGUF(file);
  const hasOutput = g.tensors.some((t) => t.name === 'output.weight');
  let bytes = 0;
  for (const t of g.tensors) {
    if (t.name === 'token_embd.weight' && hasOutput) bytes += t.size / Number(t.dims[1] ?? 1);
    else bytes += t.size;
  }
  return bytes;
}

interface Run { prefill_tps: number; decode_tps: number; peak_rss: number }

function runOne(script: string, file: string, o: { threads: number; prompt: number; gen: number; runs: number }): Run {
  const r = spawnSync(tsx, [path.join(here, 'src', script), file, '--threads', String(o.threads), '--prompt', String(o.prompt),
    '--gen', String(o.gen), '--runs', String(o.runs)], { encoding: 'utf8', cwd: root, maxBuffer: 1 << 24 });
  const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  if (r.status !== 0 || !line) throw new Error(`${script} failed on ${file}:\n${r.stderr.slice(-2000)}`);
  return JSON.parse(line) as Run;
}

/** Appends an entry at the end of the "## CPU (WASM)" section of NOTES.md (other sections belong to other benches). */
function insertInSection(text: string, entry: string): string {
  const heading = '## CPU (WASM)';
  let i = text.indexOf(`\n${heading}\n`);
  if (i < 0) return `${text.replace(/\n*$/, '\n\n')}${heading}\n\n${entry}`;
  const next = text.indexOf('\n## ', i + heading.length + 2);
  if (next < 0) return `${text.replace(/\n*$/, '\n\n')}${entry}`;
  return `${text.slice(0, next + 1)}${entry}${text.slice(next + 1)}`;
}

const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '-');
const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      models: { type: 'string' }, threads: { type: 'string', default: '2' }, prompt: { type: 'string', default: '128' },
      gen: { type: 'string', default: '64' }, rounds: { type: 'string', default: '2' }, runs: { type: 'string', default: '2' },
      'no-peer': { type: 'boolean', default: false }, 'no-notes': { type: 'boolean', default: false }, note: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(`usage: pnpm -C bench bench [--models ${MODELS.map((m) => m.name).join(',')}] [--threads 2] [--prompt 128]
  [--gen 64] [--rounds 2] [--runs 2] [--no-peer] [--no-notes] [--note TEXT]`);
    return;
  }
  const o = { threads: Number(values.threads), prompt: Number(values.prompt), gen: Number(values.gen), runs: Number(values.runs) };
  const rounds = Number(values.rounds);
  const names = values.models ? values.models.split(',') : MODELS.map((m) => m.name);
  const specs = names.map((n) => {
    const m = MODELS.find((x) => x.name === n);
    if (!m) throw new Error(`unknown model ${n}; known: ${MODELS.map((x) => x.name).join(', ')}`);
    return m;
  });
  for (const m of specs) modelPath(m.name);
  const bw = bandwidthGBs(o.threads);
  console.error(`bench: memory read bandwidth ${bw.toFixed(2)} GB/s (${o.threads} threads)`);

  const rows: string[] = [];
  for (const m of specs) {
    const file = modelPath(m.name);
    const bytes = await bytesPerToken(file);
    const ours: Run[] = [], peer: Run[] = [];
    for (let r = 0; r < rounds; r++) {
      ours.push(runOne('ours.ts', file, o));
      console.error(`bench: ${m.name} round ${r + 1} ours   prefill ${fmt(ours.at(-1)!.prefill_tps)} decode ${fmt(ours.at(-1)!.decode_tps)}`);
      if (!values['no-peer']) {
        peer.push(runOne('peer.ts', file, o));
        console.error(`bench: ${m.name} round ${r + 1} peer   prefill ${fmt(peer.at(-1)!.prefill_tps)} decode ${fmt(peer.at(-1)!.decode_tps)}`);
      }
    }
    const op = median(ours.map((x) => x.prefill_tps)), od = median(ours.map((x) => x.decode_tps));
    const pp = peer.length ? median(peer.map((x) => x.prefill_tps)) : NaN, pd = peer.length ? median(peer.map((x) => x.decode_tps)) : NaN;
    const floor = (bw * 1e9) / bytes;
    const rss = `${mib(Math.max(...ours.map((x) => x.peak_rss)))}${peer.length ? ` / ${mib(Math.max(...peer.map((x) => x.peak_rss)))}` : ''}`;
    rows.push(`| ${m.label} | ${m.type} | ${fmt(op)} / ${fmt(pp)} / ${fmt(op / pp)}x | ${fmt(od)} / ${fmt(pd)} / ${fmt(od / pd)}x | ${rss} | ${fmt(floor)} (${fmt(od / floor * 100, 0)}%) |`);
  }
  const header = [
    `| model | type | prefill tok/s ours / peer / ratio | decode tok/s ours / peer / ratio | peak RSS ours / peer | floor tok/s (ours % of it) |`,
    '| --- | --- | --- | --- | --- | --- |',
  ];
  const table = [...header, ...rows].join('\n');
  console.log(table);
  console.log(`\nmemory read bandwidth ${bw.toFixed(2)} GB/s; ${o.threads} threads; prompt ${o.prompt}, gen ${o.gen}; ${rounds} alternating rounds x ${o.runs} runs (medians)`);
  if (!values['no-notes']) {
    let rev = 'unknown';
    try { rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim(); } catch { /* not a checkout */ }
    const notes = path.join(here, 'NOTES.md');
    const entry = `### ${new Date().toISOString().slice(0, 16)}Z, ${rev}\n\n${values.note ? `${values.note}\n\n` : ''}${table}\n\n` +
      `Bandwidth ${bw.toFixed(2)} GB/s, ${o.threads} threads, prompt ${o.prompt}, gen ${o.gen}, ${rounds} alternating rounds.\n\n`;
    writeFileSync(notes, insertInSection(existsSync(notes) ? readFileSync(notes, 'utf8') : '# Benchmark notes\n\n', entry));
  }
}

await main();
