/**
 * Run-time backend choice. 'auto' takes CUDA when its addon loads and reports a usable device, else WASM; the
 * result always says why (so `twinfer info` and BackendInfo can tell a user what happened).
 */
import { TwinferError } from '../errors.js';
import type { BackendKind } from '../types.js';
import type { CoreDeviceInfo, CoreModule } from './core.js';

export interface BackendStatus {
  name: 'wasm' | 'cuda';
  available: boolean;
  reason: string;
  devices?: CoreDeviceInfo[];
}

let wasmCore: Promise<CoreModule> | undefined;
let cudaCore: Promise<CoreModule | string> | undefined;

async function loadWasm(): Promise<CoreModule> {
  wasmCore ??= import('@twinfer/core-wasm').then((m) => m.loadWasmCore() as unknown as Promise<CoreModule>);
  return wasmCore;
}

/** The CUDA core, or the reason it could not be loaded. */
async function loadCuda(): Promise<CoreModule | string> {
  cudaCore ??= (async () => {
    try {
      const name = '@twinfer/core-cuda';
      const m = (await import(/* @vite-ignore */ name)) as { default?: CoreModule; loadCudaCore?: () => Promise<CoreModule> | CoreModule };
      if (m.loadCudaCore) return await m.loadCudaCore();
      if (m.default) return m.default;
      return '@twinfer/core-cuda does not export a core';
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') return '@twinfer/core-cuda is not installed';
      return `@twinfer/core-cuda failed to load: ${(e as Error).message}`;
    }
  })();
  return cudaCore;
}

export async function backendStatuses(): Promise<BackendStatus[]> {
  const out: BackendStatus[] = [];
  const cuda = await loadCuda();
  if (typeof cuda === 'string') out.push({ name: 'cuda', available: false, reason: cuda });
  else {
    const p = cuda.probe();
    out.push({ name: 'cuda', available: p.available, reason: p.reason, devices: p.devices });
  }
  try {
    const w = (await loadWasm()).probe();
    out.push({ name: 'wasm', available: w.available, reason: w.reason });
  } catch (e) {
    out.push({ name: 'wasm', available: false, reason: `@twinfer/core-wasm failed to load: ${(e as Error).message}` });
  }
  return out;
}

export function requestedBackend(opt?: BackendKind): BackendKind {
  const env = process.env.TWINFER_BACKEND;
  const v = opt ?? (env && env.length > 0 ? (env as BackendKind) : 'auto');
  if (v !== 'auto' && v !== 'wasm' && v !== 'cuda') {
    throw new TwinferError('E_INVALID_ARGUMENT', `backend must be auto, wasm or cuda (got "${v}"${opt ? '' : ' from TWINFER_BACKEND'})`);
  }
  return v;
}

export interface SelectedCore {
  core: CoreModule;
  name: 'wasm' | 'cuda';
  reason: string;
  device?: string;
}

export async function selectCore(kind: BackendKind): Promise<SelectedCore> {
  if (kind === 'cuda' || kind === 'auto') {
    const cuda = await loadCuda();
    const probe = typeof cuda === 'string' ? { available: false, reason: cuda } : cuda.probe();
    if (typeof cuda !== 'string' && probe.available) {
      const dev = (probe as { devices?: CoreDeviceInfo[] }).devices?.[0];
      return { core: cuda, name: 'cuda', reason: kind === 'cuda' ? 'requested' : `auto: CUDA device available (${dev?.name ?? 'GPU'})`, device: dev?.name };
    }
    if (kind === 'cuda') throw new TwinferError('E_BACKEND_UNAVAILABLE', `CUDA backend unavailable: ${probe.reason}`);
    const wasm = await loadWasm();
    return { core: wasm, name: 'wasm', reason: `auto: CUDA not used (${probe.reason}); using WebAssembly SIMD` };
  }
  const wasm = await loadWasm();
  const p = wasm.probe();
  if (!p.available) throw new TwinferError('E_BACKEND_UNAVAILABLE', `WASM backend unavailable: ${p.reason}`);
  return { core: wasm, name: 'wasm', reason: 'requested' };
}
