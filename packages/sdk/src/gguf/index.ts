/** GGUF file format: types, reader, writer and the quantizers used to produce test models. */
export * from './types.js';
export * from './type-info.js';
export { readGGUF, readInto, streamTensor, readTensorData, GGUF_MAGIC, GGUF_DEFAULT_ALIGNMENT, GGUF_MAX_DIMS } from './reader.js';
