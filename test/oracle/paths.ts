/**
 * Where the oracle finds things: the repository root, the read-only fixtures beside the checkout (`../shared`, never
 * copied into the repo) and the cache of llama.cpp tools built by scripts/build-llama-tools.sh.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** `../shared` relative to the repository root. */
export const sharedDir = path.resolve(repoRoot, '..', 'shared');
export const modelsDir = path.join(sharedDir, 'fixtures', 'models');
export const vocabDir = path.join(sharedDir, 'fixtures', 'vocab');

/** True when the shared fixtures are present; tests use it with `describe.skipIf(!hasFixtures)`. */
export const hasFixtures = existsSync(path.join(modelsDir, 'stories260K.gguf'));
export const missingFixturesMessage = `shared fixtures not found at ${sharedDir} (expected beside the checkout as ../shared); skipping`;

/** Binaries of scripts/build-llama-tools.sh: LLAMA_TOOLS_BIN overrides the default CPU build folder. */
export function llamaToolsBinDir(): string {
  return process.env.LLAMA_TOOLS_BIN ?? path.join(repoRoot, '.cache', 'llama.cpp', 'build-cpu', 'bin');
}

/** Path of a built llama.cpp tool (e.g. 'llama-quantize'), or undefined when it has not been built. */
export function findLlamaTool(name: string): string | undefined {
  const p = path.join(llamaToolsBinDir(), name);
  return existsSync(p) ? p : undefined;
}

export const missingToolMessage = (name: string): string =>
  `${name} not built (run scripts/build-llama-tools.sh, about 15 min on 2 cores, or set LLAMA_TOOLS_BIN); skipping`;
