/**
 * From GGUF metadata to the engine's hyperparameters, and from llama.cpp tensor names to weight roles.
 * Supported architectures: `llama` (Llama 2/3, TinyLlama, SmolLM, Mistral) and `qwen2`.
 */
import { TwinferError } from '../errors.js';
import type { GGUFFile, GGUFTensorInfo, GGUFValue } from '../gguf/types.js';
import type { CoreHParams } from '../backend/core.js';

export const ARCH = { llama: 0, qwen2: 1 } as const;
export type ArchName = keyof typeof ARCH;

/** tw_role ids (kernels/include/twinfer.h). */
export const ROLE = {
  TOK_EMBD: 0, OUTPUT_NORM: 1, OUTPUT: 2, ATTN_NORM: 3, ATTN_Q: 4, ATTN_K: 5, ATTN_V: 6, ATTN_OUT: 7,
  ATTN_Q_BIAS: 8, ATTN_K_BIAS: 9, ATTN_V_BIAS: 10, FFN_NORM: 11, FFN_GATE: 12, FFN_UP: 13, FFN_DOWN: 14,
} as const;

const ROPE_NORMAL = 0;
const ROPE_NEOX = 2;

const GLOBAL_TENSORS: Record<string, number> = {
  'token_embd.weight': ROLE.TOK_EMBD,
  'output_norm.weight': ROLE.OUTPUT_NORM,
  'output.weight': ROLE.OUTPUT,
};
const LAYER_TENSORS: Record<string, number> = {
  'attn_norm.weight': ROLE.ATTN_NORM,
  'attn_q.weight': ROLE.ATTN_Q,
  'attn_k.weight': ROLE.ATTN_K,
  'attn_v.weight': ROLE.ATTN_V,
  'attn_output.weight': ROLE.ATTN_OUT,
  'attn_q.bias': ROLE.ATTN_Q_BIAS,
  'attn_k.bias': ROLE.ATTN_K_BIAS,
  'attn_v.bias': ROLE.ATTN_V_BIAS,
  'ffn_norm.weight': ROLE.FFN_NORM,
  'ffn_gate.weight': ROLE.FFN_GATE,
  'ffn_up.weight': ROLE.FFN_UP,
  'ffn_down.weight': ROLE.FFN_DOWN,
};

export interface TensorPlacement {
  tensor: GGUFTensorInfo;
  role: number;
  layer: number;
}

function num(meta: Record<string, GGUFValue>, key: string, fallback?: number): number {
  const v = meta[key];
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    throw new TwinferError('E_BAD_METADATA', `GGUF metadata key ${key} is missing`, { key });
  }
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  // head_count_kv may be stored per layer as an array; we support uniform values only.
  if (ArrayBuffer.isView(v) && (v as Int32Array).length > 0) {
    const arr = Array.from(v as Int32Array, Number);
    if (arr.every((x) => x === arr[0])) return arr[0];
    throw new TwinferError('E_UNSUPPORTED_ARCH', `GGUF metadata ${key} varies per layer, which is not supported`, { key });
  }
  throw new TwinferError('E_BAD_METADATA', `GGUF metadata key ${key} is not a number`, { key });
}

export function architectureOf(file: GGUFFile): ArchName {
  const arch = file.metadata['general.architecture'];
  if (typeof arch !== 'string') throw new TwinferError('E_BAD_METADATA', 'GGUF metadata general.architecture is missing');
  if (!(arch in ARCH)) {
    throw new TwinferError('E_UNSUPPORTED_ARCH', `architecture "${arch}" is not supported (supported: ${Object.keys(ARCH).join(', ')})`, { arch });
  }
  return arch as ArchName;
}

export function hparamsOf(file: GGUFFile): CoreHParams {
  const arch = architectureOf(file);
  const m = file.metadata;
  const nEmbd = num(m, `${arch}.embedding_length`);
  const nHead = num(m, `${arch}.attention.head_count`);
  const nHeadKv = num(m, `${arch}.attention.head_count_kv`, nHead);
  const headDim = num(m, `${arch}.attention.key_length`, Math.floor(nEmbd / Math.max(1, nHead)));
  const embd = file.tensors.find((t) => t.name === 'token_embd.weight');
  const tokens = m['tokenizer.ggml.tokens'];
  const nVocab = embd?.dims[1] ?? num(m, `${arch}.vocab_size`, Array.isArray(tokens) ? tokens.length : undefined);
  let ropeFreqScale = 1;
  const scalingType = m[`${arch}.rope.scaling.type`];
  if (scalingType === 'linear') ropeFreqScale = 1 / num(m, `${arch}.rope.scaling.factor`, 1);
  else if (scalingType !== undefined && scalingType !== 'none') {
    throw new TwinferError('E_UNSUPPORTED_ARCH', `rope scaling "${String(scalingType)}" is not supported`, { scalingType });
  }
  const ropeDims = num(m, `${arch}.rope.dimension_count`, headDim);
  if (ropeDims !== headDim) {
    throw new TwinferError('E_UNSUPPORTED_ARCH', `partial rotary embeddings (${ropeDims} of ${headDim} dims) are not supported`);
  }
  const hp: CoreHParams = {
    arch: ARCH[arch],
    nVocab,
    nEmbd,
    nLayer: num(m, `${arch}.block_count`),
    nHead,
    nHeadKv,
    headDim,
    nFf: num(m, `${arch}.feed_forward_length`),
    nCtxTrain: num(m, `${arch}.context_length`, 2048),
    ropeMode: arch === 'qwen2' ? ROPE_NEOX : ROPE_NORMAL,
    ropeTheta: num(m, `${arch}.rope.freq_base`, arch === 'qwen2' ? 1_000_000 : 10_000),
    ropeFreqScale,
    rmsEps: num(m, `${arch}.attention.layer_norm_rms_epsilon`, 1e-5),
  };
  for (const [k, v] of Object.entries(hp)) {
    if (!Number.isFinite(v) || (k !== 'arch' && k !== 'ropeMode' && !(v > 0))) {
      throw new TwinferError('E_BAD_METADATA', `invalid hyperparameter ${k} = ${v}`, { key: k, value: v });
    }
  }
  if (hp.nHead % hp.nHeadKv !== 0) {
    throw new TwinferError('E_BAD_METADATA', `head_count ${hp.nHead} is not a multiple of head_count_kv ${hp.nHeadKv}`);
  }
  return hp;
}

/** Maps every tensor of the file to its role; unknown tensors are an error (ignoring them could silently change the maths). */
export function placeTensors(file: GGUFFile, nLayer: number): TensorPlacement[] {
  const out: TensorPlacement[] = [];
  for (const tensor of file.tensors) {
    const g = GLOBAL_TENSORS[tensor.name];
    if (g !== undefined) {
      out.push({ tensor, role: g, layer: -1 });
      continue;
    }
    const m = /^blk\.(\d+)\.(.+)$/.exec(tensor.name);
    const role = m ? LAYER_TENSORS[m[2]] : undefined;
    if (m && role !== undefined) {
      const layer = Number(m[1]);
      if (layer >= nLayer) throw new TwinferError('E_BAD_METADATA', `tensor ${tensor.name} names layer ${layer} of a ${nLayer}-layer model`);
      out.push({ tensor, role, layer });
      continue;
    }
    if (tensor.name === 'rope_freqs.weight') {
      throw new TwinferError('E_UNSUPPORTED_ARCH', 'rope frequency factors (rope_freqs.weight, Llama 3.1 long-context scaling) are not supported yet', { tensor: tensor.name });
    }
    throw new TwinferError('E_UNSUPPORTED_ARCH', `unexpected tensor ${tensor.name} for this architecture`, { tensor: tensor.name });
  }
  return out;
}
