// @twinfer/core-cuda: the CoreModule (see packages/sdk/src/backend/core.ts, duplicated here structurally so this
// package does not depend on the SDK) backed by the CUDA addon. Loading never throws: when the addon was not built
// (no nvcc at install time) or cannot load, probe() says why and the SDK falls back to WebAssembly.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = dirname(fileURLToPath(import.meta.url));

/** Error thrown by the core: `coreCode` is the C ABI's tw_error value (same shape as the SDK's CoreError). */
export class CoreError extends Error {
  constructor(coreCode, message) {
    super(message);
    this.name = 'CoreError';
    this.coreCode = coreCode;
  }
}

function loadAddon() {
  const candidates = [
    process.env.TWINFER_CUDA_ADDON,
    join(here, 'dist', 'twinfer_cuda.node'),
    join(here, 'build', 'Release', 'twinfer_cuda.node'),
  ].filter(Boolean);
  const tried = [];
  for (const file of candidates) {
    if (!existsSync(file)) {
      tried.push(file);
      continue;
    }
    try {
      return { addon: require(file), error: null };
    } catch (e) {
      return { addon: null, error: `CUDA addon ${file} failed to load: ${e instanceof Error ? e.message : e}` };
    }
  }
  return {
    addon: null,
    error: 'CUDA addon not built (nvcc was not found when @twinfer/core-cuda was built)',
  };
}

const { addon, error: loadError } = loadAddon();

function rethrow(e) {
  if (e && typeof e === 'object' && typeof e.coreCode === 'number') throw new CoreError(e.coreCode, e.message);
  throw e;
}
function guard(fn) {
  try {
    return fn();
  } catch (e) {
    return rethrow(e);
  }
}

/** Whether a CUDA device can run twinfer here, and if not, why. Never throws. */
export function probe() {
  if (!addon) return { available: false, reason: loadError };
  try {
    return addon.probe();
  } catch (e) {
    return { available: false, reason: `CUDA probe failed: ${e instanceof Error ? e.message : e}` };
  }
}

function need() {
  if (!addon) throw new CoreError(7, loadError);
  return addon;
}

export function createEngine(hp, rc) {
  const a = need();
  const native = guard(() => new a.Engine(hp, rc));
  let disposed = false;
  return {
    allocTensor: (role, layer, type, ne0, ne1) => guard(() => native.allocTensor(role, layer, type, ne0, ne1)),
    writeTensor: (role, layer, offset, data) => guard(() => native.writeTensor(role, layer, offset, data)),
    finalizeTensor: (role, layer) => guard(() => native.finalizeTensor(role, layer)),
    dequantizeTensor: (role, layer, ne) => guard(() => native.dequantizeTensor(role, layer, ne)),
    ready: () => guard(() => native.ready()),
    forward: (batch) => guard(() => native.forward(batch)),
    forwardTop: (batch, k) => guard(() => native.forwardTop(batch, k)),
    // pipelined decode: the step is queued on the GPU and its results arrive at waitTop (tw_engine_submit_top)
    submitTop: (batch, k, chain) => guard(() => native.submitTop(batch, k, chain)),
    waitTop: () => guard(() => native.waitTop()),
    asyncSteps: true,
    copyKVBlock: (src, dst) => guard(() => native.copyKVBlock(src, dst)),
    memory: () => guard(() => native.memory()),
    dispose: () => {
      if (disposed) return;
      disposed = true;
      native.dispose();
    },
  };
}

export const typeRowSize = (type, n) => need().typeRowSize(type, n);
// Only claim the types that have CUDA matmul (tensor-core and exact paths) and get_rows kernels
// (kernels/cuda/matmul.cu, cuda_common.cuh load_elem), so the SDK refuses any other with a clear error.
const CUDA_KERNEL_TYPES = new Set([
  0 /* F32 */, 1 /* F16 */, 30 /* BF16 */, 8 /* Q8_0 */, 2 /* Q4_0 */, 3 /* Q4_1 */, 6 /* Q5_0 */, 7 /* Q5_1 */,
  12 /* Q4_K */, 13 /* Q5_K */, 14 /* Q6_K */,
]);
export const typeSupported = (type) => (addon ? CUDA_KERNEL_TYPES.has(type) && addon.typeSupported(type) : false);
export const dequantize = (type, src, n) => guard(() => need().dequantize(type, src, n));

/** The CoreModule object the SDK selects between (name 'cuda'). */
export const core = { name: 'cuda', probe, createEngine, typeRowSize, typeSupported, dequantize };
export default core;
