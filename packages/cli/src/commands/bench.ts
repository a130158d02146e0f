/**
 * `twinfer bench`: prefill and decode speed on a fixed pseudo-random prompt, after a warm-up, as the median of
 * several runs (the way llama-bench reports pp/tg), plus the process's peak memory.
 */
import { Command, Option } from 'commander';
import type { Model, Timings } from '@twinfer/sdk';
import { openModel } from '../load.js';
import { backendOption, intParser, modelOption, threadsOption, quantizeOption, kvTypeOption, type ModelOptions } from '../options.js';
import { formatBytes, info, printJson, table, writeOut } from '../output.js';
import { CliError } from '../errors.js';

interface BenchFlags extends ModelOptions {
  promptTokens: number;
  genTokens: number;
  repetitions: number;
  seed: number;
  warmup: boolean;
  json?: boolean;
}

export function benchCommand(): Command {
  return new Command('bench')
    .description('measure prefill and decode speed (median of --repetitions runs after a warm-up) and peak memory')
    .addOption(modelOption())
    .addOption(new Option('--prompt-tokens <n>', 'prompt length for the prefill test').argParser(intParser('--prompt-tokens', 1)).default(128))
    .addOption(new Option('--gen-tokens <n>', 'tokens to generate for the decode test (0 = prefill only)').argParser(intParser('--gen-tokens', 0)).default(64))
    .addOption(new Option('-r, --repetitions <n>', 'measured runs; the median is reported').argParser(intParser('--repetitions', 1, 1000)).default(3))
    .addOption(new Option('--seed <n>', 'seed of the pseudo-random prompt').argParser(intParser('--seed', 0, 2 ** 32 - 1)).default(1234))
    .option('--no-warmup', 'skip the warm-up run')
    .addOption(threadsOption())
    .addOption(quantizeOption())
    .addOption(kvTypeOption())
    .addOption(backendOption())
    .option('--json', 'print one JSON object')
    .option('-v, --verbose', 'print each run to stderr')
    .action(async (flags: BenchFlags) => {
      process.exitCode = await runBench(flags);
    });
}

interface Run {
  prefillMs: number;
  decodeMs: number;
  decodeSteps: number;
}

async function runBench(flags: BenchFlags): Promise<number> {
  // room for the prompt and every generated token
  const ctx = flags.promptTokens + flags.genTokens + 1;
  const model = await openModel({ ...flags, ctx });
  try {
    if (ctx > model.info.trainedContext && flags.verbose) {
      info(`note: ${ctx} tokens exceeds the trained context ${model.info.trainedContext} (speed is still meaningful)`);
    }
    const prompt = benchPrompt(model, flags.promptTokens, flags.seed);
    const once = async (): Promise<Run> => {
      const r = await model.generate(prompt, { maxNewTokens: flags.genTokens, ignoreEos: true, addBos: false });
      return fromTimings(r.timings);
    };
    if (flags.warmup) await once();
    const runs: Run[] = [];
    for (let i = 0; i < flags.repetitions; i++) {
      const run = await once();
      runs.push(run);
      if (flags.verbose) {
        info(`run ${i + 1}: prefill ${run.prefillMs.toFixed(1)} ms, decode ${run.decodeMs.toFixed(1)} ms / ${run.decodeSteps} steps`);
      }
    }
    const prefillMs = runs.map((r) => r.prefillMs / flags.promptTokens);
    const decodeMs = runs.filter((r) => r.decodeSteps > 0).map((r) => r.decodeMs / r.decodeSteps);
    const peakRssBytes = process.resourceUsage().maxRSS * 1024;
    const mem = model.memory();
    const result = {
      model: model.info.path,
      architecture: model.info.architecture,
      parameters: model.info.parameters,
      tensorTypes: model.info.tensorTypes,
      backend: model.backend,
      promptTokens: flags.promptTokens,
      genTokens: flags.genTokens,
      repetitions: flags.repetitions,
      prefill: summary(prefillMs),
      decode: decodeMs.length > 0 ? summary(decodeMs) : null,
      peakRssBytes,
      backendMemory: mem,
      quantization: model.info.quantization,
      kvBytesPerToken: model.info.kvBytesPerToken,
    };
    if (flags.json) {
      await printJson(result);
      return 0;
    }
    const b = model.backend;
    const types = Object.keys(model.info.tensorTypes).join('/');
    const lines = [
      `${model.info.path}: ${model.info.architecture}, ${model.info.parameters} parameters, ${types}; backend ${b.name}${b.threads ? ` (${b.threads} threads)` : ''}${b.device ? ` on ${b.device}` : ''}`,
      table([
        ['test', 'tokens', 'tokens/s', 'ms/token', `runs (tokens/s)`],
        row('prefill', flags.promptTokens, result.prefill),
        ...(result.decode ? [row('decode', flags.genTokens, result.decode)] : []),
      ]),
      `peak RSS ${formatBytes(peakRssBytes)}; backend memory: weights ${formatBytes(mem.weights)}, KV cache ${formatBytes(mem.kvCache)} (${formatBytes(model.info.kvBytesPerToken)}/token, ${model.info.kvCacheType}), scratch ${formatBytes(mem.scratch)}`,
      ...(model.info.quantization
        ? [`quantized to ${model.info.quantization.type} on load: weights ${formatBytes(model.info.quantization.fileWeightBytes)} -> ${formatBytes(model.info.quantization.loadedWeightBytes)}, saved ${formatBytes(model.info.quantization.savedBytes)}`]
        : []),
    ];
    await writeOut(lines.join('\n') + '\n');
    return 0;
  } finally {
    model.dispose();
  }
}

/**
 * The SDK's timings: promptMs is the prefill forward pass; generateMs covers the decode steps, one forward pass
 * per generated token after the first (the first comes from the prefill logits).
 */
function fromTimings(t: Timings): Run {
  return { prefillMs: t.promptMs, decodeMs: t.generateMs, decodeSteps: Math.max(0, t.generatedTokens - 1) };
}

interface Summary {
  tokensPerSecond: number;
  msPerToken: number;
  runsTokensPerSecond: number[];
}

function summary(msPerToken: number[]): Summary {
  const ms = median(msPerToken);
  return { tokensPerSecond: 1000 / ms, msPerToken: ms, runsTokensPerSecond: msPerToken.map((m) => 1000 / m) };
}

function row(name: string, tokens: number, s: Summary): string[] {
  return [name, String(tokens), s.tokensPerSecond.toFixed(2), s.msPerToken.toFixed(3), s.runsTokensPerSecond.map((x) => x.toFixed(1)).join(' ')];
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * BOS (when the model has one) followed by pseudo-random ordinary tokens: fixed by the seed so runs and tools
 * compare on the same input, and free of control/end tokens, which could change what the model does.
 */
function benchPrompt(model: Model, n: number, seed: number): number[] {
  const tok = model.tokenizer;
  const vocab = model.info.vocabSize;
  const ordinary: number[] = [];
  for (let id = 0; id < vocab; id++) {
    if (id === tok.bosId || id === tok.eosId || tok.isEog(id) || tok.isControl(id)) continue;
    ordinary.push(id);
  }
  if (ordinary.length === 0) throw new CliError('E_TOKENIZER', 'the vocabulary has no ordinary tokens to build a prompt from');
  const ids: number[] = tok.bosId !== undefined ? [tok.bosId] : [];
  let state = seed >>> 0 || 1;
  while (ids.length < n) {
    // xorshift32: a tiny fixed generator is enough to pick prompt tokens reproducibly
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    ids.push(ordinary[state % ordinary.length]!);
  }
  return ids;
}
