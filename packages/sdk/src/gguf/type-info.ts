/**
 * Block geometry of ggml tensor types: how many elements one block holds and how many bytes it takes.
 * Sizes are ggml's `ggml_blck_size` / `ggml_type_size` (checked against the llama.cpp bundled with
 * node-llama-cpp 3.21.1); a tensor's row length must be a multiple of `blockSize`. Knowing a type's geometry only
 * lets the reader lay the file out; which types the engine computes with is decided elsewhere.
 */
import { GGMLType } from './types.js';

export interface GGMLTypeInfo {
  id: number;
  name: string;
  /** elements per block */
  blockSize: number;
  /** bytes per block */
  typeSize: number;
  /** true for the block-quantized formats */
  quantized: boolean;
}

function t(id: number, name: string, blockSize: number, typeSize: number): GGMLTypeInfo {
  return { id, name, blockSize, typeSize, quantized: blockSize > 1 };
}

/** Every ggml type id this reader understands the geometry of (ids missing here were removed from ggml). */
const TABLE: readonly GGMLTypeInfo[] = [
  t(GGMLType.F32, 'F32', 1, 4),
  t(GGMLType.F16, 'F16', 1, 2),
  t(GGMLType.Q4_0, 'Q4_0', 32, 18),
  t(GGMLType.Q4_1, 'Q4_1', 32, 20),
  t(GGMLType.Q5_0, 'Q5_0', 32, 22),
  t(GGMLType.Q5_1, 'Q5_1', 32, 24),
  t(GGMLType.Q8_0, 'Q8_0', 32, 34),
  t(GGMLType.Q8_1, 'Q8_1', 32, 36),
  t(GGMLType.Q2_K, 'Q2_K', 256, 84),
  t(GGMLType.Q3_K, 'Q3_K', 256, 110),
  t(GGMLType.Q4_K, 'Q4_K', 256, 144),
  t(GGMLType.Q5_K, 'Q5_K', 256, 176),
  t(GGMLType.Q6_K, 'Q6_K', 256, 210),
  t(GGMLType.Q8_K, 'Q8_K', 256, 292),
  t(16, 'IQ2_XXS', 256, 66),
  t(17, 'IQ2_XS', 256, 74),
  t(18, 'IQ3_XXS', 256, 98),
  t(19, 'IQ1_S', 256, 50),
  t(20, 'IQ4_NL', 32, 18),
  t(21, 'IQ3_S', 256, 110),
  t(22, 'IQ2_S', 256, 82),
  t(23, 'IQ4_XS', 256, 136),
  t(24, 'I8', 1, 1),
  t(25, 'I16', 1, 2),
  t(26, 'I32', 1, 4),
  t(27, 'I64', 1, 8),
  t(28, 'F64', 1, 8),
  t(29, 'IQ1_M', 256, 56),
  t(GGMLType.BF16, 'BF16', 1, 2),
  t(34, 'TQ1_0', 256, 54),
  t(35, 'TQ2_0', 256, 66),
  t(39, 'MXFP4', 32, 17),
  // 40..42 (NVFP4, Q1_0, Q2_0) are too new to rely on; files using them fail with E_UNSUPPORTED_TYPE.
];

const BY_ID = new Map<number, GGMLTypeInfo>(TABLE.map((e) => [e.id, e]));

/** Geometry of a ggml type id, or undefined when the id is unknown. */
export function typeInfo(type: number): GGMLTypeInfo | undefined {
  return BY_ID.get(type);
}

/** All known types (for listings and tests). */
export function allTypeInfos(): readonly GGMLTypeInfo[] {
  return TABLE;
}

/** Display name of a type id ('type#99' when unknown). */
export function typeName(type: number): string {
  return BY_ID.get(type)?.name ?? `type#${type}`;
}

/** Bytes of `nElements` elements of a known type; nElements must be a multiple of the block size. */
export function typeByteSize(info: GGMLTypeInfo, nElements: number): number {
  return (nElements / info.blockSize) * info.typeSize;
}
