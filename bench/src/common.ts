import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';

/** A deterministic prompt: BOS then n-1 ids in 3..30002 (inside every vocabulary we bench, past BOS/EOS/UNK). */
export function benchPrompt(n: number): number[] {
  const ids: number[] = [1];
  let s = 12345;
  while (ids.length < n) {
    s = (s * 1103515245 + 12345) >>> 0;
    ids.push(3 + (s % 30000));
  }
  return ids.slice(0, n);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Peak resident set of this process (VmHWM), bytes; falls back to the current RSS where /proc is absent. */
export function peakRssBytes(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return process.memoryUsage().rss;
}

/** The arguments both bench drivers take: MODEL [--prompt N] [--gen N] [--threads N] [--runs N] [--kv f16|f32]. */
export function benchArgs(script: string) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      prompt: { type: 'string', default: '128' },
      gen: { type: 'string', default: '64' },
      threads: { type: 'string', default: '2' },
      runs: { type: 'string', default: '3' },
      kv: { type: 'string', default: 'f16' },
    },
  });
  const modelPath = positionals[0];
  if (!modelPath) throw new Error(`usage: ${script} MODEL [--prompt N] [--gen N] [--threads N] [--runs N] [--kv f16|f32]`);
  return {
    modelPath,
    nPrompt: Number(values.prompt),
    nGen: Number(values.gen),
    threads: Number(values.threads),
    runs: Number(values.runs),
    kv: values.kv as 'f16' | 'f32',
  };
}
