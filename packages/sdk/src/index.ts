/**
 * @twinfer/sdk — run GGUF language models in Node.js on CUDA or WebAssembly SIMD.
 *
 *   const model = await loadModel('model.gguf');
 *   const { text } = await model.generate('Once upon a time', { maxNewTokens: 32 });
 *   for await (const chunk of model.stream('Hello', { temperature: 0.7, seed: 1 })) process.stdout.write(chunk.text);
 *   model.dispose();
 */
import { backendStatuses } from './backend/select.js';

export { loadModel, inspectModel, loadTokenizer, Model, type GenerateOptions } from './model/model.js';
export { TwinferError, isTwinferError, type TwinferErrorCode } from './errors.js';
export { Tokenizer } from './tokenizer/index.js';
export * from './types.js';
export * as gguf from './gguf/index.js';
export { readGGUF } from './gguf/reader.js';
export { createSampler, logSoftmaxTopK, logprobOf, logSumExp, topLogits, validateGenerationConfig } from './sampling/index.js';
export { InferenceEngine, Sequence } from './engine/engine.js';
export { BlockAllocator } from './engine/block-allocator.js';
export { hparamsOf, placeTensors, ROLE } from './model/architecture.js';
export type { BackendStatus } from './backend/select.js';

export const VERSION = '0.1.0';

/** Every backend this build knows, whether it can run here, and why not. */
export async function listBackends() {
  return backendStatuses();
}
