/**
 * Small synthetic vocabularies for the tokenizer's unit tests (not used by the SDK itself): GGUF-style metadata
 * objects built in code, so the tests can pin down merge order, byte fallback and special-token handling without
 * the real vocabulary files.
 */
import type { GGUFValue } from '../gguf/types.js';
import { BYTE_TO_CHAR } from './byte-encoding.js';
import { TokenType } from './token-attr.js';

export type TestMetadata = Record<string, GGUFValue>;

export interface SpmToken {
  text: string;
  score?: number;
  type?: number;
}

/** An SPM ("llama") vocabulary: <unk> <s> </s>, the 256 byte tokens, then `extra`. */
export function spmMetadata(extra: SpmToken[], more: TestMetadata = {}): TestMetadata {
  const list: SpmToken[] = [
    { text: '<unk>', type: TokenType.UNKNOWN },
    { text: '<s>', type: TokenType.CONTROL },
    { text: '</s>', type: TokenType.CONTROL },
  ];
  for (let b = 0; b < 256; b++) list.push({ text: `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, type: TokenType.BYTE });
  list.push(...extra);
  return {
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': list.map((t) => t.text),
    'tokenizer.ggml.scores': Float32Array.from(list.map((t) => t.score ?? 0)),
    'tokenizer.ggml.token_type': Int32Array.from(list.map((t) => t.type ?? TokenType.NORMAL)),
    ...more,
  };
}

/** Index of the first `extra` token of spmMetadata. */
export const SPM_FIRST_EXTRA = 3 + 256;

/**
 * A byte-level BPE ("gpt2") vocabulary: the 256 GPT-2 byte characters (ids 0..255 in byte order), then one token
 * per merge result in merge order, then `special` (control tokens). `merges` are lines "left right" in GPT-2
 * characters (a space is 'Ġ').
 */
export function bpeMetadata(pre: string, merges: string[], special: string[] = [], more: TestMetadata = {}): TestMetadata {
  const tokens = [...BYTE_TO_CHAR];
  for (const m of merges) {
    const joined = m.replace(' ', '');
    if (!tokens.includes(joined)) tokens.push(joined);
  }
  const types = tokens.map(() => TokenType.NORMAL as number);
  for (const s of special) {
    tokens.push(s);
    types.push(TokenType.CONTROL);
  }
  return {
    'tokenizer.ggml.model': 'gpt2',
    'tokenizer.ggml.pre': pre,
    'tokenizer.ggml.tokens': tokens,
    'tokenizer.ggml.token_type': Int32Array.from(types),
    'tokenizer.ggml.merges': merges,
    ...more,
  };
}
