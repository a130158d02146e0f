/**
 * Exact raw float32 logits of the last prompt position, from llama.cpp's own `llama-debug --save-logits`
 * (examples/debug, built by scripts/build-llama-tools.sh). node-llama-cpp only exposes float32 softmax probabilities
 * (see llamacpp.ts), so this is the one place where the absolute logit values, bit for bit as llama.cpp computes them,
 * are available. Same settings as the node-llama-cpp oracle: F32 KV cache, no flash attention, the whole prompt in one
 * ubatch, one thread.
 *
 * The tool takes text, not ids: it tokenizes the prompt itself (`common_tokenize(ctx, prompt, add_bos)`, no special
 * token parsing) and we return the ids it used, so a caller can check they are the ones it meant.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { TwinferError } from '../../packages/sdk/src/errors.js';
import { findLlamaTool, missingToolMessage } from './paths.js';

const execFileAsync = promisify(execFile);

export interface RawLastLogits {
  /** The token ids llama.cpp evaluated (BOS first when the model adds BOS). */
  tokens: number[];
  /** Raw logits of the last position, vocabulary order, exactly as llama_get_logits_ith returned them. */
  logits: Float32Array;
}

export async function llamaRawLastLogits(modelPath: string, prompt: string, opts: { contextSize?: number } = {}): Promise<RawLastLogits> {
  const tool = findLlamaTool('llama-debug');
  if (!tool) throw new TwinferError('E_BACKEND_UNAVAILABLE', missingToolMessage('llama-debug'));
  const model = path.resolve(modelPath);
  if (!existsSync(model)) throw new TwinferError('E_FILE_NOT_FOUND', `model file not found: ${model}`, { path: model });
  if (typeof prompt !== 'string' || prompt.length === 0) throw new TwinferError('E_INVALID_ARGUMENT', 'llama-debug needs a non-empty prompt');
  if (prompt.includes('\0')) throw new TwinferError('E_INVALID_ARGUMENT', 'the prompt cannot contain NUL (it is passed as a command-line argument)');
  // Context = batch = ubatch so that the prompt is one decode; the UTF-8 byte length bounds the token count (+BOS).
  const n = opts.contextSize ?? Math.ceil(Math.max(512, Buffer.byteLength(prompt) + 8) / 256) * 256;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'llama-debug-'));
  try {
    const args = [
      '-m', model, '-p', prompt, '--no-escape', '--save-logits', '--logits-output-dir', dir,
      '-c', String(n), '-b', String(n), '-ub', String(n), '-ctk', 'f32', '-ctv', 'f32', '-fa', 'off', '-t', '1', '-ngl', '0',
    ];
    try {
      await execFileAsync(tool, args, { cwd: dir, maxBuffer: 64 << 20 });
    } catch (e) {
      const err = e as { stderr?: string; stdout?: string; code?: number };
      const tail = `${err.stderr ?? ''}${err.stdout ?? ''}`.trim().split('\n').slice(-8).join('\n');
      throw new TwinferError('E_INTERNAL', `llama-debug failed (exit ${err.code}) on ${model}:\n${tail}`, undefined, { cause: e });
    }
    // Files: llamacpp-<model stem>.bin (float32 logits) and llamacpp-<model stem>-tokens.bin (int32 ids).
    const files = readdirSync(dir);
    const logitsFile = files.find((f) => f.endsWith('.bin') && !f.endsWith('-tokens.bin'));
    const tokensFile = files.find((f) => f.endsWith('-tokens.bin'));
    if (!logitsFile || !tokensFile) throw new TwinferError('E_INTERNAL', `llama-debug wrote no logits (files: ${files.join(', ')})`);
    const lb = readFileSync(path.join(dir, logitsFile));
    const tb = readFileSync(path.join(dir, tokensFile));
    const logits = new Float32Array(lb.buffer.slice(lb.byteOffset, lb.byteOffset + lb.length));
    const tokens = Array.from(new Int32Array(tb.buffer.slice(tb.byteOffset, tb.byteOffset + tb.length)));
    return { tokens, logits };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
