/**
 * Token attributes, as llama.cpp keeps them (a bit set per token, `llama_token_attr`). GGUF stores one token *type*
 * per token (`tokenizer.ggml.token_type`); llama.cpp turns it into one attribute bit and later adds bits of its own
 * (CONTROL for end-of-generation tokens recognised by text, RSTRIP for Phi-3's special tokens). Keeping the same bit
 * set lets the tokenizer and the detokenizer test exactly the conditions llama.cpp tests.
 */
export const TokenAttr = {
  UNDEFINED: 0,
  UNKNOWN: 1 << 0,
  UNUSED: 1 << 1,
  NORMAL: 1 << 2,
  CONTROL: 1 << 3,
  USER_DEFINED: 1 << 4,
  BYTE: 1 << 5,
  NORMALIZED: 1 << 6,
  LSTRIP: 1 << 7,
  RSTRIP: 1 << 8,
  SINGLE_WORD: 1 << 9,
} as const;

/** GGUF token types (`llama_token_type`). */
export const TokenType = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** The attribute llama.cpp gives a token of the given GGUF type (unknown type numbers count as UNDEFINED). */
export function attrFromTokenType(type: number): number {
  switch (type) {
    case TokenType.UNKNOWN: return TokenAttr.UNKNOWN;
    case TokenType.UNUSED: return TokenAttr.UNUSED;
    case TokenType.NORMAL: return TokenAttr.NORMAL;
    case TokenType.CONTROL: return TokenAttr.CONTROL;
    case TokenType.USER_DEFINED: return TokenAttr.USER_DEFINED;
    case TokenType.BYTE: return TokenAttr.BYTE;
    default: return TokenAttr.UNDEFINED;
  }
}
