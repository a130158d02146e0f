/** GGUF file format: types, reader, writer and the quantizers used to produce test models. */
export * from './types.js';
export * from './type-info.js';
export { readGGUF, readInto, streamTensor, readTensorData, GGUF_MAGIC, GGUF_DEFAULT_ALIGNMENT, GGUF_MAX_DIMS } from './reader.js';
export { writeGGUF, metadataFromFile, type GGUFMetadataEntry, type GGUFWriteTensor, type GGUFWriteOptions, type GGUFWriteResult, type TensorChunks } from './writer.js';
export {
  quantize, quantizeInto, dequantize, quantizedSize, QUANTIZABLE_TYPES, type QuantizableType,
  f32ToF16Bits, f32BitsToF16Bits, f16BitsToF32, f32ToBf16Bits, f32BitsToBf16Bits, bf16BitsToF32,
} from './quantize.js';
