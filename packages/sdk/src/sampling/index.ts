export { createSampler, applyRepetitionPenalty, resolveSampling, DEFAULT_REPETITION_LAST_N, DEFAULT_SAMPLING_TEMPERATURE, MAX_TOP_CANDIDATES } from './sampler.js';
export type { Sampler, ResolvedSampling } from './sampler.js';
export { validateGenerationConfig } from './validate.js';
export type { SamplerConfig, SamplerOptions } from './validate.js';
export { logSoftmaxTopK, logprobOf, logSumExp } from './logprobs.js';
export type { TokenLogprob } from './logprobs.js';
export { createPrng, randomSeed, MAX_SEED } from './prng.js';
export type { Prng } from './prng.js';
export { argmax, topKIds, topLogits } from './select.js';
