/** GGUF value type ids (gguf_type). */
export enum GGUFValueType {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
}

/** Tensor type ids (ggml_type numbering as stored in GGUF). */
export enum GGMLType {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, BF16 = 30,
}

/**
 * A metadata value. Scalars become number | bigint (64-bit ints) | boolean | string; arrays of numbers become
 * typed arrays (Int32Array, Float32Array, ...; 64-bit as BigInt64Array/BigUint64Array), arrays of strings string[],
 * arrays of arrays unknown[].
 */
export type GGUFValue =
  | number | bigint | boolean | string
  | Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array
  | BigInt64Array | BigUint64Array
  | string[] | boolean[] | unknown[];

/** The stored GGUF type of a metadata value (kept so values can be written back verbatim). */
export interface GGUFMetadataType {
  type: GGUFValueType;
  /** element type when type is ARRAY */
  arrayType?: GGUFValueType;
}

export interface GGUFTensorInfo {
  name: string;
  /** ggml order: dims[0] is the row length (contiguous), dims[1] the number of rows, ... */
  dims: number[];
  type: GGMLType | number;
  /** absolute byte offset of the data in the file */
  offset: number;
  /** bytes of data */
  size: number;
  /** number of elements */
  nElements: number;
}

export interface GGUFFile {
  path: string;
  version: number;
  fileSize: number;
  alignment: number;
  /** absolute offset where tensor data begins */
  dataOffset: number;
  /**
   * Metadata values. 64-bit integer scalars are `number` when |v| <= 2^53 - 1, else `bigint`; arrays of 64-bit
   * integers are always BigInt64Array/BigUint64Array.
   */
  metadata: Record<string, GGUFValue>;
  /** the stored type of every metadata value (set by readGGUF) */
  metadataTypes?: Record<string, GGUFMetadataType>;
  tensors: GGUFTensorInfo[];
}
