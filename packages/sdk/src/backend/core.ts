/**
 * The contract every native core (WASM, CUDA) implements for the SDK: a thin, typed wrapper over the C ABI in
 * kernels/include/twinfer.h. Codes and enums mirror that header.
 */

export interface CoreHParams {
  arch: number; // tw_arch
  nVocab: number;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  nFf: number;
  nCtxTrain: number;
  ropeMode: number; // tw_rope_mode
  ropeTheta: number;
  ropeFreqScale: number;
  rmsEps: number;
}

export interface CoreRuntimeConfig {
  nThreads: number;
  kvType: number; // tw_type: 0 = F32, 1 = F16
  kvBlockSize: number;
  kvBlocks: number;
  maxBatchTokens: number;
  maxOutputs: number;
  device: number;
  flags: number;
}

/** One forward step (see tw_batch): typed arrays of int32. */
export interface CoreBatch {
  tokens: Int32Array;
  pos: Int32Array;
  seqIdx: Int32Array;
  outIdx: Int32Array;
  nOutputs: number;
  nSeqs: number;
  blocksPerSeq: number;
  blockTables: Int32Array;
}

export interface CoreMemory {
  weights: number;
  kvCache: number;
  scratch: number;
}

export interface CoreEngine {
  /** Reserve a weight; returns a directly writable view of its bytes when the backend's memory is host memory. */
  allocTensor(role: number, layer: number, type: number, ne0: number, ne1: number): Uint8Array | null;
  /** Upload bytes of a weight at a byte offset (for device memory, or when no view was returned). */
  writeTensor(role: number, layer: number, offset: number, data: Uint8Array): void;
  finalizeTensor(role: number, layer: number): void;
  dequantizeTensor(role: number, layer: number, ne: number): Float32Array;
  ready(): void;
  /** Runs one step; returns nOutputs x nVocab logits (a fresh copy the caller owns). */
  forward(batch: CoreBatch): Float32Array;
  /**
   * Runs one step; returns the k largest logits of each output row and their ids (nOutputs x k each, best first:
   * larger logit first, lower id first on ties, NaN as -Infinity) — tw_engine_forward_top. Only cores that select
   * on the device (CUDA) have it: there it saves copying nVocab floats per sequence to the host.
   */
  forwardTop?(batch: CoreBatch, k: number): { ids: Int32Array; logits: Float32Array };
  /**
   * Pipelined decode (tw_engine_submit_top / tw_engine_wait_top): starts the step of forwardTop and returns its
   * result arrays, which hold the results once waitTop() has returned for it (steps complete in submission order,
   * at most two in flight). chain: batch.tokens is ignored and token i is the best id of output row i of the step
   * submitted just before — taken on the device, so the next step is queued before this one's results are read.
   */
  submitTop?(batch: CoreBatch, k: number, chain: boolean): { ids: Int32Array; logits: Float32Array };
  waitTop?(): void;
  /** Whether submitTop returns before the step has finished (a device core): only then does pipelining pay. */
  readonly asyncSteps?: boolean;
  copyKVBlock(src: number, dst: number): void;
  memory(): CoreMemory;
  dispose(): void;
}

export interface CoreDeviceInfo {
  name: string;
  memoryBytes: number;
  freeBytes?: number;
  computeCapability?: string;
}

export interface CoreModule {
  name: 'wasm' | 'cuda';
  /** Whether this core can run here, and if not, why (e.g. "no CUDA device: cudaGetDeviceCount error 35"). */
  probe(): { available: boolean; reason: string; devices?: CoreDeviceInfo[] };
  createEngine(hp: CoreHParams, rc: CoreRuntimeConfig): CoreEngine | Promise<CoreEngine>;
  typeRowSize(type: number, n: number): number;
  typeSupported(type: number): boolean;
  dequantize(type: number, src: Uint8Array, n: number): Float32Array;
}

/** Error codes of the C ABI (enum tw_error). */
export const CORE_ERROR = {
  OK: 0,
  INVALID_ARGUMENT: 1,
  UNSUPPORTED_TYPE: 2,
  OUT_OF_MEMORY: 3,
  MISSING_TENSOR: 4,
  SHAPE_MISMATCH: 5,
  KV_CACHE: 6,
  BACKEND: 7,
} as const;

/** Thrown by cores: `code` is the C ABI's tw_error value. The SDK maps it to a TwinferError. */
export class CoreError extends Error {
  constructor(readonly coreCode: number, message: string) {
    super(message);
    this.name = 'CoreError';
  }
}
