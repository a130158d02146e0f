/**
 * llama.cpp's own dequantization, as a reference for ours: `llama-quantize --allow-requantize IN OUT F32` writes a
 * GGUF whose quantizable tensors are dequantized to F32 by ggml's reference `to_float` routines (ggml-base, the same
 * code the CPU backend uses) and copied out unchanged.
 *
 * Which tensors become F32 (llama.cpp tools/quantize + src/llama-quant.cpp, `tensor_allows_quantization`):
 *   - converted: every tensor with >= 2 dimensions whose name ends in "weight", including token_embd.weight and
 *     output.weight (the default quantize_output_tensor = true; `--leave-output-tensor` would keep output.weight);
 *   - left in their original type, bytes copied: 1-D tensors (norms, biases), `*_norm.weight`, non-"weight" tensors,
 *     and a few special 2-D ones (ffn_gate_inp = MoE router, position/token-type embeddings, ssm_conv1d, rwkv
 *     time_mix_*, ...). They are usually F32 already; a caller comparing bit for bit must compare only tensors whose
 *     type in the output file is F32 and check the others byte for byte against the input.
 * `--allow-requantize` is required whenever an input tensor is quantized (Q*, IQ*, ...); F16/BF16 inputs don't need it.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { TwinferError } from '../../packages/sdk/src/errors.js';
import { findLlamaTool, missingToolMessage } from './paths.js';

const execFileAsync = promisify(execFile);

export interface LlamaDequantizeResult {
  outPath: string;
  /** llama-quantize's per-tensor log (stderr + stdout), kept for diagnosing a mismatch. */
  log: string;
}

/**
 * Dequantizes every quantizable tensor of `inPath` to F32 into `outPath` with llama.cpp's llama-quantize.
 * Throws E_BACKEND_UNAVAILABLE when the tool has not been built (scripts/build-llama-tools.sh).
 */
export async function llamaDequantizeToF32(inPath: string, outPath: string, opts: { threads?: number } = {}): Promise<LlamaDequantizeResult> {
  const quantize = findLlamaTool('llama-quantize');
  if (!quantize) throw new TwinferError('E_BACKEND_UNAVAILABLE', missingToolMessage('llama-quantize'));
  const src = path.resolve(inPath);
  const dst = path.resolve(outPath);
  if (!existsSync(src)) throw new TwinferError('E_FILE_NOT_FOUND', `llama-quantize input not found: ${src}`, { path: src });
  if (src === dst) throw new TwinferError('E_INVALID_ARGUMENT', `llama-quantize input and output are the same file: ${src}`);
  mkdirSync(path.dirname(dst), { recursive: true });
  const threads = Math.max(1, opts.threads ?? 2);
  // Usage: llama-quantize [options] model-in.gguf [model-out.gguf] type [nthreads]
  const args = ['--allow-requantize', src, dst, 'F32', String(threads)];
  try {
    const { stdout, stderr } = await execFileAsync(quantize, args, { maxBuffer: 64 * 1024 * 1024 });
    return { outPath: dst, log: `${stderr}${stdout}` };
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; code?: number };
    const tail = `${err.stderr ?? ''}${err.stdout ?? ''}`.trim().split('\n').slice(-8).join('\n');
    throw new TwinferError('E_INTERNAL', `llama-quantize failed (exit ${err.code}) on ${src}:\n${tail}`, { args }, { cause: e });
  }
}
