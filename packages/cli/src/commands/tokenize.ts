/** `twinfer tokenize`: token ids of a text, reading only the tokenizer from the GGUF header (no weights). */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { loadTokenizer } from '@twinfer/sdk';
import { modelOption } from '../options.js';
import { printJson, writeOut } from '../output.js';

interface TokenizeFlags {
  model: string;
  json?: boolean;
  bos?: boolean;
  special?: boolean;
  pieces?: boolean;
}

export function tokenizeCommand(): Command {
  return new Command('tokenize')
    .description('print the token ids of TEXT ("-" reads stdin); no BOS unless --bos')
    .argument('<text>', 'text to tokenize, or - for stdin')
    .addOption(modelOption())
    .option('--bos', 'prepend the BOS token')
    .option('--special', 'parse control tokens written in the text (e.g. <|im_start|>)')
    .option('--pieces', 'also show each token as text (one "id<TAB>piece" line each, or {id, piece} objects with --json)')
    .option('--json', 'print a JSON array')
    .action(async (text: string, flags: TokenizeFlags) => {
      const input = text === '-' ? readFileSync(0, 'utf8') : text;
      const tok = await loadTokenizer(flags.model);
      const ids = tok.encode(input, { addBos: flags.bos ?? false, parseSpecial: flags.special ?? false });
      if (flags.pieces) {
        const rows = ids.map((id) => ({ id, piece: tok.tokenToPiece(id) }));
        if (flags.json) await printJson(rows);
        else await writeOut(rows.map((r) => `${r.id}\t${JSON.stringify(r.piece)}\n`).join(''));
      } else if (flags.json) await printJson(ids);
      else await writeOut(`${ids.join(' ')}\n`);
    });
}
