/**
 * The `twinfer` command. Every command's failures end here: one `twinfer: error E_CODE: message` line on stderr
 * and exit code 2 (command-line mistakes) or 1 (runtime failures); a stack trace only with TWINFER_DEBUG=1.
 */
import { Command, CommanderError } from 'commander';
import { VERSION } from '@twinfer/sdk';
import { benchCommand } from './commands/bench.js';
import { generateCommand } from './commands/generate.js';
import { infoCommand } from './commands/info.js';
import { perplexityCommand } from './commands/perplexity.js';
import { tokenizeCommand } from './commands/tokenize.js';
import { EXIT_OK, EXIT_USAGE, UsageError, errorLine, exitCodeOf } from './errors.js';

const COMMANDS = ['generate', 'tokenize', 'perplexity', 'info', 'bench'];

function buildProgram(): Command {
  const program = new Command('twinfer')
    .description('Run GGUF language models in Node.js: CUDA when there is a GPU, WebAssembly SIMD everywhere else.')
    .version(VERSION, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    .helpCommand('help [command]', 'show help for a command')
    .showSuggestionAfterError(true)
    .exitOverride()
    // Commander's own error text would be a second, differently shaped line: errors are printed by main().
    .configureOutput({ outputError: () => {} });
  for (const make of [generateCommand, tokenizeCommand, perplexityCommand, infoCommand, benchCommand]) {
    const cmd = make();
    cmd
      .helpOption('-h, --help', 'show help')
      .allowExcessArguments(false)
      .showSuggestionAfterError(true)
      .exitOverride()
      .configureOutput({ outputError: () => {} });
    program.addCommand(cmd);
  }
  return program;
}

/** Commander's errors are command-line mistakes: translate them to one usage line. */
function fromCommander(e: CommanderError, argv: string[]): UsageError {
  const message = e.message.replace(/^error:\s*/i, '').replace(/\s*\n\s*/g, ' ');
  const code = e.code === 'commander.invalidArgument' ? 'E_INVALID_ARGUMENT' : 'E_USAGE';
  const cmd = COMMANDS.includes(argv[0] ?? '') ? `${argv[0]} ` : '';
  return new UsageError(code, `${message} (see 'twinfer ${cmd}--help')`);
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    if (argv.length === 0) throw new UsageError('E_USAGE', `missing command (one of: ${COMMANDS.join(', ')}); see 'twinfer --help'`);
    await program.parseAsync(argv, { from: 'user' });
    // actions set process.exitCode when they end other than plainly (130 after Ctrl-C)
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT_OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version end parsing through an exception with exit code 0
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
      return report(fromCommander(e, argv));
    }
    return report(e);
  }
}

function report(e: unknown): number {
  process.stderr.write(`${errorLine(e)}\n`);
  if (process.env.TWINFER_DEBUG === '1' && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
  return exitCodeOf(e);
}

// A closed pipe (`twinfer generate ... | head`) is not an error: stop quietly.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(EXIT_OK);
  throw e;
});

const code = await main(process.argv.slice(2));
// Exit explicitly once stdout has drained: a backend's worker threads must never keep the process alive.
process.stdout.write('', () => process.exit(code));
