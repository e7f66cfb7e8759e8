/** The list of CLI commands; each entry registers one command on the program. */
import type { Command } from 'commander';
import { register as convert } from './convert.js';
import { register as evalCommand } from './eval.js';
import { register as generate } from './generate.js';
import { register as slice } from './slice.js';
import { register as synth } from './synth.js';
import { register as bench } from './bench.js';
import { register as serve } from './serve.js';

export type RegisterCommand = (program: Command) => void;

export const COMMANDS: RegisterCommand[] = [generate, evalCommand, slice, convert, synth, bench, serve];
