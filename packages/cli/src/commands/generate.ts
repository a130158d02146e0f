/** `twinfer generate`: stream a completion to stdout, or print one JSON object with ids, timings and logprobs. */
import { readFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { Command, Option } from 'commander';
import type { GenerateOptions, Model, Timings } from '@twinfer/sdk';
import { UsageError } from '../errors.js';
import { openModel } from '../load.js';
import { backendOption, collect, ctxOption, floatParser, intParser, modelOption, threadsOption, quantizeOption, kvTypeOption, type ModelOptions } from '../options.js';
import { info, printJson, writeOut } from '../output.js';
import { onInterrupt } from '../signals.js';

interface GenerateFlags extends ModelOptions {
  prompt?: string;
  promptFile?: string;
  maxTokens: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repeatPenalty?: number;
  repeatLastN?: number;
  seed?: number;
  stop?: string[];
  bos?: boolean;
  ignoreEos?: boolean;
  json?: boolean;
  logprobs?: number;
}

const MAX_SEED = Number.MAX_SAFE_INTEGER;
const DEFAULT_TEMPERATURE = 0.8;

export function generateCommand(): Command {
  return new Command('generate')
    .description('generate text from a prompt (no prompt: start from BOS alone); greedy unless --temperature > 0')
    .addOption(modelOption())
    .addOption(new Option('-p, --prompt <text>', 'prompt text (default: none, BOS alone)').conflicts('promptFile'))
    .option('-f, --prompt-file <file>', 'read the prompt from a file (- for stdin)')
    .addOption(new Option('-n, --max-tokens <n>', 'tokens to generate at most').argParser(intParser('--max-tokens', 0)).default(256))
    .addOption(new Option('-t, --temperature <t>', 'sampling temperature; 0 = greedy (default: 0, or 0.8 when --top-p/--top-k/--min-p/--seed is given)').argParser(floatParser('--temperature', { min: 0, rule: 'a number >= 0' })))
    .addOption(new Option('--top-p <p>', 'nucleus sampling: keep the smallest set with probability >= p (1 = off)').argParser(floatParser('--top-p', { min: 0, minExclusive: true, max: 1, rule: 'in (0, 1]' })))
    .addOption(new Option('--top-k <k>', 'keep the k most likely tokens (0 = off)').argParser(intParser('--top-k', 0)))
    .addOption(new Option('--min-p <p>', 'drop tokens below p x the top probability (0 = off)').argParser(floatParser('--min-p', { min: 0, max: 1, rule: 'in [0, 1]' })))
    .addOption(new Option('--repeat-penalty <r>', "llama.cpp's repetition penalty (1 = off)").argParser(floatParser('--repeat-penalty', { min: 0, minExclusive: true, rule: 'a number > 0' })))
    .addOption(new Option('--repeat-last-n <n>', 'how many recent tokens the penalty looks at (-1 = all, 0 = off; default 64)').argParser(intParser('--repeat-last-n', -1, Number.MAX_SAFE_INTEGER, 'an integer >= -1')))
    .addOption(new Option('-s, --seed <n>', 'random seed for reproducible sampling (-1 or unset = random, reported with --json/--verbose)').argParser(intParser('--seed', -1, MAX_SEED)))
    .addOption(new Option('--stop <text>', 'stop before this text (repeatable)').argParser(collect))
    .option('--no-bos', "do not prepend BOS to a text prompt (default: the model's add_bos_token)")
    .option('--ignore-eos', 'keep generating past end-of-generation tokens')
    .addOption(backendOption())
    .addOption(threadsOption())
    .addOption(quantizeOption())
    .addOption(kvTypeOption())
    .addOption(ctxOption("context size in tokens (default: min(model's trained context, 4096))"))
    .option('--json', 'print one JSON object { promptIds, ids, text, backend, timings, finishReason, logprobs? } instead of streaming')
    .addOption(new Option('--logprobs <k>', 'with --json: the top-k log-probabilities of every generated step').argParser(intParser('--logprobs', 0, 1000)))
    .option('-v, --verbose', 'print backend and timings to stderr')
    .action(async (flags: GenerateFlags) => {
      process.exitCode = await runGenerate(flags);
    });
}

async function runGenerate(flags: GenerateFlags): Promise<number> {
  if (flags.logprobs !== undefined && flags.logprobs > 0 && !flags.json) {
    throw new UsageError('E_USAGE', '--logprobs needs --json (log-probabilities are part of the JSON output)');
  }
  const prompt = flags.promptFile !== undefined ? readFileSync(flags.promptFile === '-' ? 0 : flags.promptFile, 'utf8') : flags.prompt;
  // Greedy by default; a sampling option given without --temperature means sampling at the SDK's default
  // temperature (0.8, as llama.cpp), since asking for top-p etc. under greedy decoding would silently do nothing.
  const impliesSampling = [flags.topP, flags.topK, flags.minP].some((v) => v !== undefined) || (flags.seed ?? -1) >= 0;
  const temperature = flags.temperature ?? (impliesSampling ? DEFAULT_TEMPERATURE : 0);
  const sampling = temperature > 0;
  // Pick the seed here when none was given, so it can be reported and the run repeated.
  const seed = flags.seed === undefined || flags.seed < 0 ? randomInt(0, 2 ** 48 - 1) : flags.seed;

  const model = await openModel(flags);
  try {
    if (flags.logprobs !== undefined && flags.logprobs > model.info.vocabSize) {
      throw new UsageError('E_INVALID_ARGUMENT', `--logprobs must be at most the vocabulary size ${model.info.vocabSize}, got ${flags.logprobs}`);
    }
    const ac = new AbortController();
    const cfg: GenerateOptions & { repetitionLastN?: number } = {
      maxNewTokens: flags.maxTokens,
      doSample: sampling,
      temperature,
      topK: flags.topK,
      topP: flags.topP,
      minP: flags.minP,
      repetitionPenalty: flags.repeatPenalty,
      repetitionLastN: flags.repeatLastN,
      seed,
      stop: flags.stop,
      addBos: flags.bos === false ? false : undefined,
      logprobs: flags.logprobs,
      ignoreEos: flags.ignoreEos,
      signal: ac.signal,
    };
    const off = onInterrupt(() => ac.abort());
    try {
      if (flags.json) return await generateJson(model, prompt, cfg, sampling);
      return await generateStream(model, prompt, cfg, flags, sampling);
    } finally {
      off();
    }
  } finally {
    model.dispose();
  }
}

async function generateJson(model: Model, prompt: string | undefined, cfg: GenerateOptions, sampling: boolean): Promise<number> {
  const r = await model.generate(prompt, cfg);
  await printJson({
    promptIds: r.promptIds,
    ids: r.ids,
    text: r.text,
    finishReason: r.finishReason,
    backend: model.backend,
    timings: r.timings,
    ...(sampling ? { seed: cfg.seed } : {}),
    ...(r.logprobs ? { logprobs: r.logprobs } : {}),
  });
  return r.finishReason === 'abort' ? 130 : 0;
}

async function generateStream(model: Model, prompt: string | undefined, cfg: GenerateOptions, flags: GenerateFlags, sampling: boolean): Promise<number> {
  const t0 = performance.now();
  let tFirst: number | undefined;
  let generated = 0;
  let last = '';
  for await (const chunk of model.stream(prompt, cfg)) {
    tFirst ??= performance.now();
    if (chunk.id >= 0) generated++;
    if (chunk.text.length > 0) {
      await writeOut(chunk.text); // one write per token: the text appears as it is made
      last = chunk.text;
    }
  }
  // On a terminal, end with a newline so the prompt does not run on; piped output stays exactly the text.
  if (process.stdout.isTTY && last.length > 0 && !last.endsWith('\n')) await writeOut('\n');
  const aborted = cfg.signal?.aborted ?? false;
  if (flags.verbose) {
    const t1 = performance.now();
    const promptTokens = countPromptTokens(model, prompt, cfg.addBos);
    const firstAt = tFirst ?? t1;
    const timings: Timings = {
      promptTokens,
      promptMs: firstAt - t0,
      generatedTokens: generated,
      generateMs: t1 - firstAt,
      prefillTokensPerSecond: promptTokens / Math.max(1e-9, (firstAt - t0) / 1000),
      decodeTokensPerSecond: generated > 1 ? (generated - 1) / Math.max(1e-9, (t1 - firstAt) / 1000) : 0,
    };
    info(
      `prompt: ${timings.promptTokens} tokens in ${timings.promptMs.toFixed(1)} ms (${timings.prefillTokensPerSecond.toFixed(1)} tok/s); ` +
        `generated: ${timings.generatedTokens} tokens in ${timings.generateMs.toFixed(1)} ms (${timings.decodeTokensPerSecond.toFixed(1)} tok/s)` +
        (sampling ? `; seed ${cfg.seed}` : '') +
        (aborted ? '; interrupted' : ''),
    );
  }
  return aborted ? 130 : 0;
}

/** The prompt length as the SDK counts it (BOS alone for no prompt), for the verbose timing line. */
function countPromptTokens(model: Model, prompt: string | undefined, addBos: boolean | undefined): number {
  if (prompt === undefined || prompt === '') return 1;
  return model.tokenize(prompt, { bos: addBos ?? model.tokenizer.addBosDefault, special: true }).length;
}
