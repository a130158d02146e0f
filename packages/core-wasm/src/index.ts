/**
 * @twinfer/core-wasm — the kernels compiled to WebAssembly SIMD128 with a pthread pool, wrapped as a twinfer core.
 *
 * Each engine gets its own module instance: its own linear memory (up to 4 GiB) and its own pool of worker
 * threads, sized when the instance starts (Node cannot spawn a pthread synchronously later).
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

// Structural copies of the SDK's core contract (packages/sdk/src/backend/core.ts): the SDK depends on this
// package, not the other way round.
export interface CoreHParams {
  arch: number; nVocab: number; nEmbd: number; nLayer: number; nHead: number; nHeadKv: number; headDim: number;
  nFf: number; nCtxTrain: number; ropeMode: number; ropeTheta: number; ropeFreqScale: number; rmsEps: number;
}
export interface CoreRuntimeConfig {
  nThreads: number; kvType: number; kvBlockSize: number; kvBlocks: number; maxBatchTokens: number;
  maxOutputs: number; device: number; flags: number;
}
export interface CoreBatch {
  tokens: Int32Array; pos: Int32Array; seqIdx: Int32Array; outIdx: Int32Array; nOutputs: number; nSeqs: number;
  blocksPerSeq: number; blockTables: Int32Array;
}
export interface CoreMemory { weights: number; kvCache: number; scratch: number }

export class CoreError extends Error {
  constructor(readonly coreCode: number, message: string) {
    super(message);
    this.name = 'CoreError';
  }
}

interface EmModule {
  wasmMemory: WebAssembly.Memory;
  PThread?: { unusedWorkers: Array<{ unref?: () => void; terminate: () => void }>; runningWorkers: Array<{ unref?: () => void; terminate: () => void }>; terminateAllThreads?: () => void };
  UTF8ToString(ptr: number): string;
  _malloc(n: number): number;
  _free(p: number): void;
  _tw_last_error(): number;
  _tw_backend_name(): number;
  _tw_type_row_size(type: number, nLo: number, nHi: number): number;
  _tw_type_block_size(type: number): number;
  _tw_type_supported(type: number): number;
  _tw_dequantize(type: number, src: number, dst: number, nLo: number, nHi: number): number;
  _tw_engine_create(hp: number, rc: number, out: number): number;
  _tw_engine_free(e: number): void;
  _tw_tensor_alloc(e: number, role: number, layer: number, type: number, ne0Lo: number, ne0Hi: number, ne1Lo: number, ne1Hi: number, hostPtr: number): number;
  _tw_tensor_write(e: number, role: number, layer: number, offset: number, src: number, n: number): number;
  _tw_tensor_finalize(e: number, role: number, layer: number): number;
  _tw_tensor_dequantize(e: number, role: number, layer: number, out: number): number;
  _tw_engine_ready(e: number): number;
  _tw_engine_forward(e: number, batch: number): number;
  _tw_engine_submit_top(e: number, batch: number, k: number, chain: number, ids: number, logits: number): number;
  _tw_engine_wait_top(e: number): number;
  _tw_kv_copy_block(e: number, src: number, dst: number): number;
  _tw_engine_memory(e: number, w: number, kv: number, s: number): number;
}

type Factory = (opts: Record<string, unknown>) => Promise<EmModule>;

let factory: Factory | undefined;
let wasmBinary: Uint8Array | undefined;

async function instantiate(poolSize: number): Promise<EmModule> {
  if (!factory) {
    const url = new URL('./wasm/twinfer-wasm.mjs', import.meta.url);
    factory = ((await import(url.href)) as { default: Factory }).default;
    wasmBinary = readFileSync(new URL('./wasm/twinfer-wasm.wasm', import.meta.url));
  }
  // Emscripten 3.1.6 never resolves a module whose pthread pool is empty, so every instance has at least one worker.
  const mod = await factory({ wasmBinary, twinferPoolSize: Math.max(1, poolSize) });
  // Pool workers must not keep Node alive: an idle model should let the process exit.
  for (const w of mod.PThread?.unusedWorkers ?? []) w.unref?.();
  return mod;
}

function releaseThreads(mod: EmModule): void {
  const pt = mod.PThread;
  if (!pt) return;
  for (const w of [...pt.runningWorkers, ...pt.unusedWorkers]) w.terminate();
  pt.runningWorkers.length = 0;
  pt.unusedWorkers.length = 0;
}

/** malloc, as an unsigned address: wasm returns i32, so addresses above 2 GiB would read as negative numbers. */
const malloc = (mod: EmModule, n: number): number => mod._malloc(n) >>> 0;

// wasm32 passes int64 arguments as (lo, hi) pairs in emscripten 3.1 without BigInt integration.
const lo = (n: number) => n >>> 0;
const hi = (n: number) => Math.floor(n / 2 ** 32) >>> 0;

function check(mod: EmModule, rc: number, what: string): void {
  if (rc !== 0) throw new CoreError(rc, `${what}: ${mod.UTF8ToString(mod._tw_last_error())}`);
}

const u8 = (mod: EmModule, ptr: number, n: number) => new Uint8Array(mod.wasmMemory.buffer, ptr, n);
const i32 = (mod: EmModule, ptr: number, n: number) => new Int32Array(mod.wasmMemory.buffer, ptr, n);
const f32 = (mod: EmModule, ptr: number, n: number) => new Float32Array(mod.wasmMemory.buffer, ptr, n);
const f64 = (mod: EmModule, ptr: number, n: number) => new Float64Array(mod.wasmMemory.buffer, ptr, n);

export class WasmEngine {
  private handle: number;
  private readonly batchPtr: number;
  private readonly tokensPtr: number;
  private readonly posPtr: number;
  private readonly seqPtr: number;
  private readonly outPtr: number;
  private readonly logitsPtr: number;
  private tablesPtr = 0;
  private tablesCap = 0;
  private topPtr = 0; // submitTop's ids then logits
  private topCap = 0; // entries of each
  private disposed = false;

  constructor(private readonly mod: EmModule, handle: number, private readonly hp: CoreHParams, private readonly rc: CoreRuntimeConfig) {
    this.handle = handle;
    const T = rc.maxBatchTokens;
    this.batchPtr = malloc(mod, 64);
    this.tokensPtr = malloc(mod, T * 4);
    this.posPtr = malloc(mod, T * 4);
    this.seqPtr = malloc(mod, T * 4);
    this.outPtr = malloc(mod, T * 4);
    this.logitsPtr = malloc(mod, rc.maxOutputs * hp.nVocab * 4);
    if (!this.batchPtr || !this.tokensPtr || !this.posPtr || !this.seqPtr || !this.outPtr || !this.logitsPtr)
      throw new CoreError(3, 'out of memory allocating batch buffers in WebAssembly memory');
  }

  private live(): number {
    if (this.disposed) throw new CoreError(1, 'engine was disposed');
    return this.handle;
  }

  allocTensor(role: number, layer: number, type: number, ne0: number, ne1: number): Uint8Array | null {
    const m = this.mod;
    const out = malloc(m, 4);
    try {
      check(m, m._tw_tensor_alloc(this.live(), role, layer, type, lo(ne0), hi(ne0), lo(ne1), hi(ne1), out), 'tensor alloc');
      const ptr = i32(m, out, 1)[0] >>> 0;
      const bytes = m._tw_type_row_size(type, lo(ne0), hi(ne0)) * ne1;
      return ptr ? u8(m, ptr, bytes) : null;
    } finally {
      m._free(out);
    }
  }

  writeTensor(role: number, layer: number, offset: number, data: Uint8Array): void {
    const m = this.mod;
    const p = malloc(m, data.length);
    if (!p) throw new CoreError(3, 'out of memory staging tensor data');
    try {
      u8(m, p, data.length).set(data);
      check(m, m._tw_tensor_write(this.live(), role, layer, offset, p, data.length), 'tensor write');
    } finally {
      m._free(p);
    }
  }

  finalizeTensor(role: number, layer: number): void {
    check(this.mod, this.mod._tw_tensor_finalize(this.live(), role, layer), 'tensor finalize');
  }

  dequantizeTensor(role: number, layer: number, ne: number): Float32Array {
    const m = this.mod;
    const p = malloc(m, ne * 4);
    if (!p) throw new CoreError(3, 'out of memory');
    try {
      check(m, m._tw_tensor_dequantize(this.live(), role, layer, p), 'dequantize');
      return f32(m, p, ne).slice();
    } finally {
      m._free(p);
    }
  }

  ready(): void {
    check(this.mod, this.mod._tw_engine_ready(this.live()), 'engine');
  }

  forward(b: CoreBatch): Float32Array {
    const m = this.mod;
    const h = this.live();
    this.writeBatch(b);
    check(m, m._tw_engine_forward(h, this.batchPtr), 'forward');
    return f32(m, this.logitsPtr, b.nOutputs * this.hp.nVocab).slice();
  }

  /**
   * tw_engine_submit_top: this (host) backend finishes the step before returning, so its results are final at
   * once; waitTop() only keeps the engine's count of steps in flight. chain: tokens are the previous step's best ids.
   */
  submitTop(b: CoreBatch, k: number, chain: boolean): { ids: Int32Array; logits: Float32Array } {
    const m = this.mod;
    const h = this.live();
    const n = b.nOutputs * Math.max(0, k);
    if (n > this.topCap) {
      if (this.topPtr) m._free(this.topPtr);
      this.topCap = Math.max(n, 2 * this.topCap);
      this.topPtr = malloc(m, this.topCap * 8);
      if (!this.topPtr) {
        this.topCap = 0;
        throw new CoreError(3, 'out of memory for top-k results');
      }
    }
    this.writeBatch(b);
    const vals = this.topPtr + this.topCap * 4;
    check(m, m._tw_engine_submit_top(h, this.batchPtr, k, chain ? 1 : 0, this.topPtr, vals), 'submit');
    return { ids: i32(m, this.topPtr, n).slice(), logits: f32(m, vals, n).slice() };
  }

  waitTop(): void {
    check(this.mod, this.mod._tw_engine_wait_top(this.live()), 'wait');
  }

  /** The batch into WebAssembly memory (batchPtr and the arrays it points to). */
  private writeBatch(b: CoreBatch): void {
    const m = this.mod;
    const n = b.tokens.length;
    if (n > this.rc.maxBatchTokens) throw new CoreError(1, `batch of ${n} tokens exceeds ${this.rc.maxBatchTokens}`);
    if (b.nOutputs > this.rc.maxOutputs) throw new CoreError(1, `batch asks for ${b.nOutputs} outputs (max ${this.rc.maxOutputs})`);
    const entries = b.blockTables.length;
    if (entries > this.tablesCap) {
      if (this.tablesPtr) m._free(this.tablesPtr);
      this.tablesCap = Math.max(entries, 2 * this.tablesCap);
      this.tablesPtr = malloc(m, this.tablesCap * 4);
      if (!this.tablesPtr) throw new CoreError(3, 'out of memory for block tables');
    }
    i32(m, this.tokensPtr, n).set(b.tokens);
    i32(m, this.posPtr, n).set(b.pos);
    i32(m, this.seqPtr, n).set(b.seqIdx);
    i32(m, this.outPtr, n).set(b.outIdx);
    i32(m, this.tablesPtr, entries).set(b.blockTables);
    const s = i32(m, this.batchPtr, 10);
    s[0] = n;
    s[1] = this.tokensPtr;
    s[2] = this.posPtr;
    s[3] = this.seqPtr;
    s[4] = this.outPtr;
    s[5] = b.nOutputs;
    s[6] = b.nSeqs;
    s[7] = b.blocksPerSeq;
    s[8] = this.tablesPtr;
    s[9] = this.logitsPtr;
  }

  copyKVBlock(src: number, dst: number): void {
    check(this.mod, this.mod._tw_kv_copy_block(this.live(), src, dst), 'kv copy');
  }

  memory(): CoreMemory {
    const m = this.mod;
    const p = malloc(m, 24);
    try {
      check(m, m._tw_engine_memory(this.live(), p, p + 8, p + 16), 'memory');
      const v = f64(m, p, 3);
      return { weights: v[0], kvCache: v[1], scratch: v[2] };
    } finally {
      m._free(p);
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.mod._tw_engine_free(this.handle);
    this.handle = 0;
    releaseThreads(this.mod);
  }
}

function writeHParams(mod: EmModule, p: number, hp: CoreHParams): void {
  const iv = i32(mod, p, 10);
  iv.set([hp.arch, hp.nVocab, hp.nEmbd, hp.nLayer, hp.nHead, hp.nHeadKv, hp.headDim, hp.nFf, hp.nCtxTrain, hp.ropeMode]);
  f32(mod, p + 40, 3).set([hp.ropeTheta, hp.ropeFreqScale, hp.rmsEps]);
}

function writeRuntimeConfig(mod: EmModule, p: number, rc: CoreRuntimeConfig): void {
  i32(mod, p, 8).set([rc.nThreads, rc.kvType, rc.kvBlockSize, rc.kvBlocks, rc.maxBatchTokens, rc.maxOutputs, rc.device, rc.flags]);
}

let utility: Promise<EmModule> | undefined;
/** A thread-less instance for stateless helpers (type sizes, dequantization). */
function utilityModule(): Promise<EmModule> {
  utility ??= instantiate(1);
  return utility;
}

export const defaultThreads = (): number => Math.max(1, availableParallelism());

export interface WasmCore {
  name: 'wasm';
  probe(): { available: boolean; reason: string };
  createEngine(hp: CoreHParams, rc: CoreRuntimeConfig): Promise<WasmEngine>;
  typeRowSize(type: number, n: number): number;
  typeSupported(type: number): boolean;
  dequantize(type: number, src: Uint8Array, n: number): Float32Array;
}

/** Loads the WebAssembly core (compiles the module once per process). */
export async function loadWasmCore(): Promise<WasmCore> {
  const util = await utilityModule();
  return {
    name: 'wasm',
    probe() {
      const simd = WebAssembly.validate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]));
      return simd
        ? { available: true, reason: `WebAssembly SIMD128 with threads, ${defaultThreads()} cores available` }
        : { available: false, reason: 'this JavaScript engine does not support WebAssembly SIMD128' };
    },
    async createEngine(hp, rc) {
      const threads = rc.nThreads > 0 ? rc.nThreads : defaultThreads();
      const mod = await instantiate(threads - 1);
      const p = malloc(mod, 128);
      try {
        writeHParams(mod, p, hp);
        writeRuntimeConfig(mod, p + 64, { ...rc, nThreads: threads });
        const rcode = mod._tw_engine_create(p, p + 64, p + 120);
        if (rcode !== 0) {
          const msg = mod.UTF8ToString(mod._tw_last_error());
          releaseThreads(mod);
          throw new CoreError(rcode, msg);
        }
        const handle = i32(mod, p + 120, 1)[0];
        return new WasmEngine(mod, handle, hp, { ...rc, nThreads: threads });
      } finally {
        mod._free(p);
      }
    },
    typeRowSize(type, n) {
      return util._tw_type_row_size(type, lo(n), hi(n));
    },
    typeSupported(type) {
      return util._tw_type_supported(type) !== 0;
    },
    dequantize(type, src, n) {
      const s = malloc(util, src.length);
      const d = malloc(util, n * 4);
      try {
        u8(util, s, src.length).set(src);
        check(util, util._tw_dequantize(type, s, d, lo(n), hi(n)), 'dequantize');
        return f32(util, d, n).slice();
      } finally {
        util._free(s);
        util._free(d);
      }
    },
  };
}
