/**
 * `twinfer perplexity`: perplexity of a text over non-overlapping windows of --ctx tokens, scoring the second
 * half of each window, as llama.cpp's perplexity tool does (the SDK's Model.perplexity does the windowing).
 */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { inspectModel, loadTokenizer } from '@twinfer/sdk';
import { openModel } from '../load.js';
import { backendOption, ctxOption, modelOption, threadsOption, quantizeOption, kvTypeOption, type ModelOptions } from '../options.js';
import { info, printJson, writeOut } from '../output.js';
import { CliError } from '../errors.js';

interface PerplexityFlags extends ModelOptions {
  file: string;
  json?: boolean;
}

/** llama.cpp's perplexity default window. */
const DEFAULT_CTX = 512;

export function perplexityCommand(): Command {
  return new Command('perplexity')
    .description("perplexity of a text file (llama.cpp's method: windows of --ctx tokens, second half of each scored)")
    .addOption(modelOption())
    .addOption(new Option('-f, --file <file>', 'text file to score (- for stdin)').makeOptionMandatory())
    .addOption(ctxOption(`window size in tokens (default: ${DEFAULT_CTX}, or the trained context if smaller)`, 4))
    .addOption(backendOption())
    .addOption(threadsOption())
    .addOption(quantizeOption())
    .addOption(kvTypeOption())
    .option('--json', 'print { ppl, tokens, nll, windows, ctx, textTokens, ms }')
    .option('-v, --verbose', 'print backend and timing to stderr')
    .action(async (flags: PerplexityFlags) => {
      const text = readFileSync(flags.file === '-' ? 0 : flags.file, 'utf8');
      const ctx = flags.ctx ?? Math.min(DEFAULT_CTX, (await inspectModel(flags.model)).trainedContext);
      // Tokenize first (header only, no weights) so a text too short for the window fails before a big load.
      // llama.cpp tokenizes the whole text with the model's BOS policy; the SDK then starts each window with BOS.
      const tok = await loadTokenizer(flags.model);
      const ids = tok.encode(text, { addBos: tok.addBosDefault });
      const windows = Math.floor(ids.length / ctx);
      if (windows < 1) {
        throw new CliError('E_INVALID_ARGUMENT', `${flags.file} has ${ids.length} tokens; --ctx ${ctx} needs at least ${ctx} (use a smaller --ctx)`);
      }
      const model = await openModel({ ...flags, ctx });
      try {
        const t0 = performance.now();
        const r = await model.perplexity(ids, { ctx });
        const ms = performance.now() - t0;
        if (flags.json) {
          await printJson({ ppl: r.ppl, tokens: r.tokens, nll: r.nll, windows, ctx, textTokens: ids.length, ms });
        } else {
          await writeOut(`perplexity ${r.ppl.toFixed(4)} over ${r.tokens} scored tokens (${windows} windows of ${ctx}; text ${ids.length} tokens)\n`);
        }
        if (flags.verbose) info(`scored in ${ms.toFixed(0)} ms (${((windows * ctx) / (ms / 1000)).toFixed(1)} tokens/s evaluated)`);
      } finally {
        model.dispose();
      }
    });
}
