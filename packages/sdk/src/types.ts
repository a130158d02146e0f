/** Public option and result types of the SDK. */

export type BackendKind = 'auto' | 'wasm' | 'cuda';
export type KVCacheType = 'f32' | 'f16';

export interface LoadOptions {
  /** 'auto' (default; also read from TWINFER_BACKEND) picks CUDA when usable, else WASM. */
  backend?: BackendKind;
  /** CPU threads (WASM backend). Default: all available cores. */
  threads?: number;
  /** Maximum tokens per sequence (prompt + generated). Default: min(model's trained context, 4096). */
  contextSize?: number;
  /** KV cache element type (default 'f16': half the memory; 'f32' for bit-level comparisons). */
  kvCacheType?: KVCacheType;
  /** How many sequences may be resident in the KV cache at once. Default 1 (4 for servers). */
  maxSequences?: number;
  /** Largest number of tokens one forward step processes (prompt chunks larger than this are split). */
  maxBatchTokens?: number;
  /**
   * Quantize an F32/F16/BF16 model while it loads (block by block; memory peaks near the quantized size).
   * Matrices become Q8_0 or Q4_0 (with q4_0 the output projection stays Q8_0); norms and biases stay F32.
   */
  quantize?: 'q8_0' | 'q4_0';
  /**
   * CPU: multiply with float activations instead of 8-bit ones (llama.cpp's way, the default for quantized weights).
   * Exact arithmetic on the stored weights, slower.
   */
  exactActivations?: boolean;
  /**
   * Pipelined greedy decode: each next step is queued (its token the device's own best id) before the host has read
   * the step before, so a GPU does not idle between tokens; the tokens are the same either way. Default: on where
   * the backend runs steps asynchronously (CUDA), off on WASM (where it would only run ahead).
   */
  pipelineDecode?: boolean;
  /** Called while weights stream in. */
  onProgress?: (loadedBytes: number, totalBytes: number) => void;
  signal?: AbortSignal;
}

export interface GenerationConfig {
  /** Tokens to generate at most (default 256). Must be >= 0. */
  maxNewTokens?: number;
  /** 0 means greedy. Default 0.8 when doSample, else ignored. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  /** false (default when temperature is 0 or unset) = greedy decoding. */
  doSample?: boolean;
  /** Seed for reproducible sampling. */
  seed?: number;
  /** Stop strings; generation ends before the first occurrence (not included in the text). */
  stop?: string[];
  /** Prepend BOS to the prompt when the model wants one (default: the model's add_bos_token). */
  addBos?: boolean;
  /** Return the top-K log-probabilities of every generated step (OpenAI-style). 0 = none. */
  logprobs?: number;
  signal?: AbortSignal;
}

export interface TopLogprob {
  id: number;
  token: string;
  logprob: number;
}

export interface StepLogprobs {
  /** the token chosen at this step */
  id: number;
  logprob: number;
  top: TopLogprob[];
}

export interface Timings {
  promptTokens: number;
  promptMs: number;
  generatedTokens: number;
  generateMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}

export type FinishReason = 'length' | 'eos' | 'stop' | 'abort';

export interface GenerationResult {
  text: string;
  promptIds: number[];
  ids: number[];
  finishReason: FinishReason;
  logprobs?: StepLogprobs[];
  timings: Timings;
}

export interface StreamChunk {
  id: number;
  /** text that became printable with this token (may be '' while a UTF-8 sequence is incomplete) */
  text: string;
  logprobs?: StepLogprobs;
}

export interface BackendInfo {
  name: 'wasm' | 'cuda';
  /** why this backend was chosen, and why others were not */
  reason: string;
  threads?: number;
  device?: string;
}

export interface ModelInfo {
  path: string;
  architecture: string;
  name?: string;
  parameters: number;
  fileBytes: number;
  /** bytes of weights held by the backend */
  weightBytes: number;
  kvCacheBytes: number;
  /** KV cache bytes one token takes (all layers, K and V) */
  kvBytesPerToken: number;
  kvCacheType?: KVCacheType;
  /** set when the model was quantized on load */
  quantization?: { type: 'q8_0' | 'q4_0'; fileWeightBytes: number; loadedWeightBytes: number; savedBytes: number };
  contextSize: number;
  trainedContext: number;
  vocabSize: number;
  embeddingLength: number;
  layers: number;
  heads: number;
  kvHeads: number;
  feedForwardLength: number;
  /** tensor type name -> number of tensors */
  tensorTypes: Record<string, number>;
}
