// Types of @twinfer/core-cuda: structurally the SDK's CoreModule (packages/sdk/src/backend/core.ts).
export interface CoreHParams {
  arch: number;
  nVocab: number;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  nFf: number;
  nCtxTrain: number;
  ropeMode: number;
  ropeTheta: number;
  ropeFreqScale: number;
  rmsEps: number;
}
export interface CoreRuntimeConfig {
  nThreads: number;
  kvType: number;
  kvBlockSize: number;
  kvBlocks: number;
  maxBatchTokens: number;
  maxOutputs: number;
  device: number;
  flags: number;
}
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
  allocTensor(role: number, layer: number, type: number, ne0: number, ne1: number): Uint8Array | null;
  writeTensor(role: number, layer: number, offset: number, data: Uint8Array): void;
  finalizeTensor(role: number, layer: number): void;
  dequantizeTensor(role: number, layer: number, ne: number): Float32Array;
  ready(): void;
  forward(batch: CoreBatch): Float32Array;
  /** The k largest logits of each output row and their ids, best first (tw_engine_forward_top). */
  forwardTop(batch: CoreBatch, k: number): { ids: Int32Array; logits: Float32Array };
  /** Pipelined decode: queues the step; its arrays hold the results once waitTop() returned for it. */
  submitTop(batch: CoreBatch, k: number, chain: boolean): { ids: Int32Array; logits: Float32Array };
  waitTop(): void;
  readonly asyncSteps: boolean;
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
export interface ProbeResult {
  available: boolean;
  reason: string;
  devices?: CoreDeviceInfo[];
}
export interface CoreModule {
  name: 'wasm' | 'cuda';
  probe(): ProbeResult;
  createEngine(hp: CoreHParams, rc: CoreRuntimeConfig): CoreEngine;
  typeRowSize(type: number, n: number): number;
  typeSupported(type: number): boolean;
  dequantize(type: number, src: Uint8Array, n: number): Float32Array;
}
export declare class CoreError extends Error {
  readonly coreCode: number;
  constructor(coreCode: number, message: string);
}
export declare function probe(): ProbeResult;
export declare function createEngine(hp: CoreHParams, rc: CoreRuntimeConfig): CoreEngine;
export declare function typeRowSize(type: number, n: number): number;
export declare function typeSupported(type: number): boolean;
export declare function dequantize(type: number, src: Uint8Array, n: number): Float32Array;
export declare const core: CoreModule;
export default core;
