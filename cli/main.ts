/**
 * The `sliceserve` command line. Each command lives in its own module under cli/commands/
 * and registers itself on the commander program; `--help` works on every command.
 */
import { Command, CommanderError } from 'commander';
import { COMMANDS } from './commands/index.js';

/**
 * commander's usage error (`error: option '--x <n>' argument 'y' is invalid. ...\n`) as one
 * line in the CLI's style, with where to find the usage.
 */
export function oneLineUsageError(message: string): string {
  const text = message.trim().replace(/^error: /, '').replace(/\s*\n\s*/g, ' ');
  return `sliceserve: ${text} (run with --help for usage)`;
}

/** Builds the commander program with every command registered. */
export function buildProgram(): Command {
  const program = new Command('sliceserve')
    .description('SliceGPT-compressed language models behind an OpenAI-compatible server')
    // Usage errors are one line, like the errors commands throw: `sliceserve: <what> (<hint>)`.
    .configureOutput({ outputError: (str, write) => write(`${oneLineUsageError(str)}\n`) });
  for (const register of COMMANDS) register(program);
  return program;
}

/**
 * Runs the CLI. Usage errors and thrown errors print one line (`sliceserve: <message>`)
 * and set a non-zero exit code; they never print a stack trace.
 */
export async function main(argv: string[]): Promise<void> {
  const program = buildProgram().exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    throw err;
  }
}
