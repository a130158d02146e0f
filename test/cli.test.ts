/**
 * The built `twinfer` command end to end (node packages/cli/dist/cli.js, run as a child process): help on every
 * command, the stories260K greedy reference text byte for byte, the JSON and logprobs output, tokenize, and bad
 * input that must fail with exactly one `twinfer: error E_...` line, a non-zero exit code, and no hang.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cliJs = path.join(repoRoot, 'packages', 'cli', 'dist', 'cli.js');
const models = path.resolve(repoRoot, '..', 'shared', 'fixtures', 'models');
const stories = path.join(models, 'stories260K.gguf');
const haveShared = fs.existsSync(stories);
if (!haveShared) console.warn(`cli.test.ts: skipping model tests, ${models} not found (expected ../shared beside the checkout)`);

/** No command may take longer than this: a failure must never hang. */
const TIME_LIMIT_MS = 60_000;

interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function twinfer(args: string[], opts: { env?: Record<string, string>; input?: string } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [cliJs, ...args], {
      cwd: repoRoot,
      env: { ...process.env, TWINFER_DEBUG: '', TWINFER_BACKEND: '', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.stdin.end(opts.input ?? '');
    const timer = setTimeout(() => child.kill('SIGKILL'), TIME_LIMIT_MS);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        ms: performance.now() - t0,
      });
    });
  });
}

/** A failure: one stderr line `twinfer: error <code>: ...`, the given exit code, nothing on stdout, in time. */
function expectFailure(r: Ran, code: string, exit: number): void {
  expect(r.signal, `killed after ${TIME_LIMIT_MS} ms (hang?)`).toBeNull();
  expect(r.stderr).toMatch(new RegExp(`^twinfer: error ${code}: \\S.*\\n$`));
  expect(r.stderr.split('\n').filter((l) => l.length > 0)).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  expect(r.code).toBe(exit);
  expect(r.stdout).toBe('');
}

beforeAll(() => {
  if (!fs.existsSync(cliJs)) throw new Error(`${cliJs} is missing: run \`pnpm build\` (or \`cd packages/cli && npx tsup\`) first`);
});

describe('help and usage', () => {
  for (const cmd of ['generate', 'tokenize', 'perplexity', 'info', 'bench']) {
    it(`${cmd} --help`, async () => {
      const r = await twinfer([cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`Usage: twinfer ${cmd}`);
      expect(r.stdout).toContain('--help');
      expect(r.stderr).toBe('');
    });
  }

  it('--help and --version', async () => {
    const help = await twinfer(['--help']);
    expect(help.code).toBe(0);
    for (const cmd of ['generate', 'tokenize', 'perplexity', 'info', 'bench']) expect(help.stdout).toContain(cmd);
    const v = await twinfer(['--version']);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('usage errors: no command, unknown command, unknown option, missing --model, bad choice', async () => {
    expectFailure(await twinfer([]), 'E_USAGE', 2);
    expectFailure(await twinfer(['frobnicate']), 'E_USAGE', 2);
    expectFailure(await twinfer(['generate', '--model', stories, '--bogus']), 'E_USAGE', 2);
    expectFailure(await twinfer(['generate']), 'E_USAGE', 2);
    expectFailure(await twinfer(['generate', '--model', stories, '--backend', 'tpu']), 'E_INVALID_ARGUMENT', 2);
  });

  it('numbers must parse and be in range (checked before any model is loaded)', async () => {
    const bad: string[][] = [
      ['--max-tokens', '-1'],
      ['--max-tokens', '1O'],
      ['--max-tokens', '2.5'],
      ['--temperature', '-0.5'],
      ['--top-p', '0'],
      ['--top-p', '1.5'],
      ['--top-k', '-3'],
      ['--min-p', '2'],
      ['--repeat-penalty', '0'],
      ['--threads', '0'],
      ['--ctx', 'abc'],
      ['--seed', '1e3'],
    ];
    for (const [flag, value] of bad) {
      // a missing model file proves the values were judged first: the error names the flag, not the file
      const r = await twinfer(['generate', '--model', '/nonexistent/model.gguf', flag!, value!]);
      expectFailure(r, 'E_INVALID_ARGUMENT', 2);
      expect(r.stderr).toContain(flag);
      expect(r.stderr).toContain(value);
    }
  });
});

describe.skipIf(!haveShared)('bad model files', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'twinfer-cli-'));
    const bytes = fs.readFileSync(stories);
    fs.writeFileSync(path.join(tmp, 'not.gguf'), 'this is a text file, not a model\n');
    fs.writeFileSync(path.join(tmp, 'empty.gguf'), '');
    fs.writeFileSync(path.join(tmp, 'header-cut.gguf'), bytes.subarray(0, 1000)); // inside the tensor infos
    fs.writeFileSync(path.join(tmp, 'data-cut.gguf'), bytes.subarray(0, Math.floor(bytes.length / 2))); // inside the weights
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('a non-GGUF file', async () => {
    expectFailure(await twinfer(['generate', '--model', path.join(tmp, 'not.gguf')]), 'E_NOT_GGUF', 1);
    expectFailure(await twinfer(['generate', '--model', path.join(tmp, 'empty.gguf')]), 'E_NOT_GGUF', 1);
  });

  it('a truncated copy of stories260K.gguf', async () => {
    expectFailure(await twinfer(['generate', '--model', path.join(tmp, 'header-cut.gguf')]), 'E_TRUNCATED', 1);
    const r = await twinfer(['generate', '--model', path.join(tmp, 'data-cut.gguf')]);
    expectFailure(r, '(E_TRUNCATED|E_TENSOR_OUT_OF_BOUNDS)', 1);
    expectFailure(await twinfer(['info', '--model', path.join(tmp, 'header-cut.gguf')]), 'E_TRUNCATED', 1);
  });

  it('a missing file', async () => {
    expectFailure(await twinfer(['generate', '--model', path.join(tmp, 'nope.gguf')]), 'E_FILE_NOT_FOUND', 1);
    expectFailure(await twinfer(['tokenize', '--model', path.join(tmp, 'nope.gguf'), 'hi']), 'E_FILE_NOT_FOUND', 1);
    expectFailure(await twinfer(['perplexity', '--model', stories, '--file', path.join(tmp, 'nope.txt')]), 'E_FILE_NOT_FOUND', 1);
  });

  it('a prompt longer than the context', async () => {
    const prompt = 'Once upon a time there was a little girl named Lily. '.repeat(8);
    expectFailure(await twinfer(['generate', '--model', stories, '--ctx', '16', '--prompt', prompt]), 'E_CONTEXT_OVERFLOW', 1);
    expectFailure(await twinfer(['generate', '--model', stories, '--ctx', '16', '--prompt', prompt, '--json']), 'E_CONTEXT_OVERFLOW', 1);
  });

  it('TWINFER_DEBUG=1 adds the stack trace after the error line', async () => {
    const r = await twinfer(['generate', '--model', path.join(tmp, 'not.gguf')], { env: { TWINFER_DEBUG: '1' } });
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n')[0]).toMatch(/^twinfer: error E_NOT_GGUF: /);
    expect(r.stderr).toMatch(/\n\s+at /);
  });
});

describe.skipIf(!haveShared)('stories260K', () => {
  it('200 greedy tokens from BOS print stories260K.expected.txt byte for byte', async () => {
    const expected = fs.readFileSync(path.join(models, 'stories260K.expected.txt'));
    const r = await twinfer(['generate', '--model', stories, '--max-tokens', '200', '--temperature', '0']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(Buffer.from(r.stdout, 'utf8').equals(expected), `stdout:\n${JSON.stringify(r.stdout)}\nexpected:\n${JSON.stringify(expected.toString())}`).toBe(true);
  });

  it('--json prints one object with the documented fields, consistent with the stream', async () => {
    const r = await twinfer(['generate', '--model', stories, '--max-tokens', '24', '--json', '--prompt', 'Once upon a time']);
    expect(r.code).toBe(0);
    expect(r.stdout.trimEnd().split('\n')).toHaveLength(1);
    const j = JSON.parse(r.stdout);
    expect(j.promptIds).toEqual([1, 403, 407, 261, 378]);
    expect(j.ids).toHaveLength(24);
    expect(j.text.startsWith(', there was a little girl named Lily. She loved to play outside')).toBe(true);
    expect(j.finishReason).toBe('length');
    expect(j.backend.name).toMatch(/^(wasm|cuda)$/);
    expect(typeof j.backend.reason).toBe('string');
    expect(j.timings.promptTokens).toBe(5);
    expect(j.timings.generatedTokens).toBe(24);
    for (const k of ['promptMs', 'generateMs', 'prefillTokensPerSecond', 'decodeTokensPerSecond']) expect(j.timings[k]).toBeGreaterThan(0);
    expect(j.logprobs).toBeUndefined();
    const streamed = await twinfer(['generate', '--model', stories, '--max-tokens', '24', '--prompt', 'Once upon a time']);
    expect(streamed.stdout).toBe(j.text);
  });

  it('--logprobs 5 gives the top 5 of every step, best first, including the chosen token', async () => {
    const r = await twinfer(['generate', '--model', stories, '--max-tokens', '16', '--json', '--logprobs', '5']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.logprobs.length).toBeGreaterThanOrEqual(j.ids.length);
    j.ids.forEach((id: number, i: number) => {
      const step = j.logprobs[i];
      expect(step.id).toBe(id);
      expect(step.top).toHaveLength(5);
      for (let k = 1; k < 5; k++) expect(step.top[k - 1].logprob).toBeGreaterThanOrEqual(step.top[k].logprob);
      for (const t of step.top) expect(t.logprob).toBeLessThanOrEqual(0);
      expect(step.top.reduce((s: number, t: { logprob: number }) => s + Math.exp(t.logprob), 0)).toBeLessThanOrEqual(1 + 1e-9);
      // greedy: the chosen token is the most likely one, with the same log-probability
      expect(step.top[0].id).toBe(id);
      expect(step.top[0].logprob).toBeCloseTo(step.logprob, 12);
    });
  });

  it('seeded sampling is reproducible and different seeds differ', async () => {
    const args = ['generate', '--model', stories, '--max-tokens', '48', '--temperature', '1.5', '--json'];
    const a = JSON.parse((await twinfer([...args, '--seed', '7'])).stdout);
    const b = JSON.parse((await twinfer([...args, '--seed', '7'])).stdout);
    expect(b.ids).toEqual(a.ids);
    expect(a.seed).toBe(7);
    const others = await Promise.all([8, 9, 10].map(async (s) => JSON.parse((await twinfer([...args, '--seed', String(s)])).stdout).ids));
    for (const o of others) expect(o).not.toEqual(a.ids);
  });

  it('--stop ends before the stop text; --repeat-penalty changes greedy output', async () => {
    const base = ['generate', '--model', stories, '--max-tokens', '64', '--json', '--prompt', 'Once upon a time'];
    const stop = JSON.parse((await twinfer([...base, '--stop', ' Lily'])).stdout);
    expect(stop.finishReason).toBe('stop');
    expect(stop.text).toBe(', there was a little girl named');
    const plain = JSON.parse((await twinfer(base)).stdout);
    const penalized = JSON.parse((await twinfer([...base, '--repeat-penalty', '1.5'])).stdout);
    expect(penalized.ids).not.toEqual(plain.ids);
    expect(penalized.seed).toBeUndefined(); // still greedy: no seed involved
  });

  it('tokenize', async () => {
    const bos = await twinfer(['tokenize', '--model', stories, '--bos', 'Once upon a time']);
    expect(bos.code).toBe(0);
    expect(bos.stdout).toBe('1 403 407 261 378\n');
    const json = await twinfer(['tokenize', '--model', stories, '--json', 'Once upon a time']);
    expect(JSON.parse(json.stdout)).toEqual([403, 407, 261, 378]);
    const stdin = await twinfer(['tokenize', '--model', stories, '--json', '-'], { input: 'Once upon a time' });
    expect(JSON.parse(stdin.stdout)).toEqual([403, 407, 261, 378]);
  });

  it('perplexity --json', async () => {
    const text = fs.readFileSync(path.join(models, 'stories260K.expected.txt'), 'utf8').repeat(3);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'twinfer-ppl-'));
    try {
      const file = path.join(tmp, 'text.txt');
      fs.writeFileSync(file, text);
      const r = await twinfer(['perplexity', '--model', stories, '--file', file, '--ctx', '64', '--json']);
      expect(r.code).toBe(0);
      const j = JSON.parse(r.stdout);
      expect(j.ctx).toBe(64);
      expect(j.tokens).toBe(j.windows * 31); // positions 32..62 of each 64-token window predict the next token
      // the model's own greedy text is highly predictable to it
      expect(j.ppl).toBeGreaterThan(1);
      expect(j.ppl).toBeLessThan(3);
      const tooShort = await twinfer(['perplexity', '--model', stories, '--file', file, '--ctx', '100000']);
      expect(tooShort.code).not.toBe(0);
      expect(tooShort.stderr).toMatch(/^twinfer: error E_[A-Z_]+: /);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('info --json describes backends and the model', async () => {
    const r = await twinfer(['info', '--model', stories, '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    const wasm = j.backends.find((b: { name: string }) => b.name === 'wasm');
    expect(wasm.available).toBe(true);
    const cuda = j.backends.find((b: { name: string }) => b.name === 'cuda');
    expect(typeof cuda.reason).toBe('string');
    expect(j.model.architecture).toBe('llama');
    expect(j.model.layers).toBe(5);
    expect(j.model.vocabSize).toBe(512);
    expect(j.model.fileBytes).toBe(fs.statSync(stories).size);
    expect(j.model.tensorTypes.F32).toBeGreaterThan(0);
    expect(j.model.memory.totalBytes).toBeGreaterThan(j.model.memory.weightBytes);
    const text = await twinfer(['info']);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/wasm\s+available/);
  });

  it('bench --json reports prefill and decode speed and peak memory', async () => {
    const r = await twinfer(['bench', '--model', stories, '--prompt-tokens', '32', '--gen-tokens', '8', '--repetitions', '2', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.promptTokens).toBe(32);
    expect(j.prefill.tokensPerSecond).toBeGreaterThan(0);
    expect(j.prefill.runsTokensPerSecond).toHaveLength(2);
    expect(j.decode.msPerToken).toBeCloseTo(1000 / j.decode.tokensPerSecond, 9);
    expect(j.peakRssBytes).toBeGreaterThan(1 << 20);
  });
});
