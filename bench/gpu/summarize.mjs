// Turns the GPU run's logs into the benchmark table (markdown): ours beside llama.cpp, ratios, bandwidth floor.
// Usage: node summarize.mjs DIR   (DIR holds ours-<type>.log, llama-bench-<type>.json, batched-<type>.jsonl,
// op_test.txt and nvidia-smi.txt as written by scripts/device/run-on-device.sh)
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

// node summarize.mjs --ncu FILE.csv: per-kernel time and DRAM bytes of an Nsight Compute CSV (--metrics
// gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum --csv --print-units base), in launch order
// of first appearance, with the achieved bandwidth of each kernel.
if (process.argv[2] === '--ncu') {
  const text = readFileSync(process.argv[3], 'utf8');
  const lines = text.split('\n').filter((l) => l.startsWith('"'));
  const parse = (l) => l.slice(1, -1).split('","');
  if (!lines.length) {
    console.log(`no Nsight Compute rows in ${process.argv[3]}`);
    process.exit(0);
  }
  const head = parse(lines[0]);
  const col = (n) => head.indexOf(n);
  const [cId, cName, cMetric, cValue] = [col('ID'), col('Kernel Name'), col('Metric Name'), col('Metric Value')];
  const launches = new Map();
  for (const l of lines.slice(1)) {
    const f = parse(l);
    const id = f[cId];
    if (!launches.has(id)) launches.set(id, { name: f[cName].replace(/\(.*$/, '').replace(/^void /, ''), m: {} });
    launches.get(id).m[f[cMetric]] = Number(f[cValue].replace(/,/g, ''));
  }
  const by = new Map();
  let tot = 0, bytes = 0;
  for (const { name, m } of launches.values()) {
    const ns = m['gpu__time_duration.sum'] ?? 0;
    const b = (m['dram__bytes_read.sum'] ?? 0) + (m['dram__bytes_write.sum'] ?? 0);
    const e = by.get(name) ?? { n: 0, ns: 0, b: 0 };
    e.n++, e.ns += ns, e.b += b;
    by.set(name, e);
    tot += ns, bytes += b;
  }
  console.log(`${launches.size} launches, ${(tot / 1e3).toFixed(1)} us, ${(bytes / 1e6).toFixed(1)} MB DRAM, ${(bytes / tot).toFixed(0)} GB/s`);
  for (const [name, e] of by)
    console.log(`${name.padEnd(60).slice(0, 60)} ${String(e.n).padStart(5)} x ${(e.ns / e.n / 1e3).toFixed(2).padStart(8)} us ` +
      `${(e.b / e.n / 1e6).toFixed(2).padStart(8)} MB ${(e.b / e.ns).toFixed(0).padStart(5)} GB/s  ${(100 * e.ns / tot).toFixed(1).padStart(5)} %`);
  process.exit(0);
}

const dir = process.argv[2] ?? '.';
const read = (f) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8') : '');
const types = ['f16', 'q8_0', 'q4_0', 'q4_k_m'];
// Bytes per value of the token-embedding table (llama-quantize's Q4_K_M keeps it in Q4_K).
const bytesPerWeight = { f16: 2, q8_0: 34 / 32, q4_0: 18 / 32, q4_k_m: 144 / 256 };

const copy = /device-to-device copy: ([\d.]+) GB\/s/.exec(read('op_test.txt'));
const copyGBs = copy ? Number(copy[1]) : NaN;
const card = (read('nvidia-smi.txt').match(/NVIDIA [A-Z]\d+[^|]*?(?=\s{2,}|\|)/) ?? ['unknown GPU'])[0].trim();

const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '–');
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : '–');

const rows = [];
for (const t of types) {
  if (!read(`ours-${t}.log`) && !read(`llama-bench-${t}.json`)) continue;
  const ours = {};
  let weightBytes = NaN;
  for (const line of read(`ours-${t}.log`).split('\n')) {
    if (!line.startsWith('RESULT ')) continue;
    const r = JSON.parse(line.slice(7));
    if (r.kind === 'bench') ours[r.test] = r.tps;
    if (r.kind === 'load') weightBytes = r.weightBytes;
  }
  const theirs = {};
  try {
    for (const r of JSON.parse(read(`llama-bench-${t}.json`) || '[]')) {
      if (r.n_prompt > 0 && r.n_gen === 0) theirs.pp512 = r.avg_ts;
      if (r.n_gen > 0 && r.n_prompt === 0) theirs.tg128 = r.avg_ts;
    }
  } catch {}
  for (const line of read(`batched-${t}.jsonl`).split('\n')) {
    if (!line.trim().startsWith('{')) continue;
    const r = JSON.parse(line);
    theirs[`batched${r.pl}`] = r.speed_tg;
  }
  // Bytes one decode step must read: every weight except the embedding table (one row of it is read).
  const embd = 128256 * 4096 * bytesPerWeight[t];
  const stepBytes = weightBytes - embd;
  const floorTps = (copyGBs * 1e9) / stepBytes;
  rows.push({ t, ours, theirs, stepBytes, floorTps });
}

const out = [];
out.push(`Card: ${card}; device-to-device copy ${fmt(copyGBs)} GB/s (read+write). Synthetic Llama-3-8B shape.`);
out.push('');
out.push('| type | test | twinfer tok/s | llama.cpp tok/s | ratio |');
out.push('| --- | --- | ---: | ---: | ---: |');
for (const r of rows) {
  // batched64-fullrows: ours with every row's logits copied to the host, against llama.cpp's batched64
  for (const test of ['pp512', 'tg128', 'batched8', 'batched32', 'batched64', 'batched64-fullrows']) {
    if (test.endsWith('fullrows') && !(test in r.ours)) continue;
    const theirs = r.theirs[test.replace('-fullrows', '')];
    out.push(`| ${r.t} | ${test} | ${fmt(r.ours[test])} | ${fmt(theirs)} | ${ratio(r.ours[test], theirs)} |`);
  }
}
out.push('');
out.push('| type | bytes per decode step | floor tok/s | twinfer tg128 % of floor | llama.cpp tg128 % of floor |');
out.push('| --- | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  out.push(`| ${r.t} | ${fmt(r.stepBytes / 1e9, 2)} GB | ${fmt(r.floorTps)} | ${fmt((100 * r.ours.tg128) / r.floorTps)}% | ${fmt((100 * r.theirs.tg128) / r.floorTps)}% |`);
}
console.log(out.join('\n'));
