import { describe, expect, it } from 'vitest';
import { Tokenizer } from './index.js';
import { TokenType } from './token-attr.js';
import { SPM_FIRST_EXTRA as X, spmMetadata } from './testing.js';

const byte = (b: number): number => 3 + b;

describe('SPM tokenizer (tokenizer.ggml.model = llama)', () => {
  // ids X.. in this order
  const base = [
    { text: '▁', score: -1 }, { text: 'a', score: -2 }, { text: 'b', score: -2 }, { text: 'c', score: -2 },
    { text: 'ab', score: -1 }, { text: 'bc', score: 0 }, { text: '▁a', score: -0.5 },
  ];
  const [SP, A, B, C, AB, BC, SP_A] = base.map((_, i) => X + i);

  it('merges the highest-scoring pair first', () => {
    const tok = Tokenizer.fromGGUF(spmMetadata(base));
    // "▁abc": bc (0) beats ▁a (-0.5) and ab (-1); then ▁a joins; "▁abc" and "abc" are no tokens
    expect(tok.encode('abc')).toEqual([SP_A, BC]);
  });

  it('breaks score ties by taking the leftmost pair', () => {
    const tied = base.map((t) => (t.text === 'ab' || t.text === 'bc' ? { ...t, score: 0 } : t))
      .filter((t) => t.text !== '▁a');
    const tok = Tokenizer.fromGGUF(spmMetadata(tied));
    expect(tok.encode('abc')).toEqual([SP, AB, C]);
  });

  it('adds the space prefix, escapes spaces and falls back to byte tokens for unknown characters', () => {
    const tok = Tokenizer.fromGGUF(spmMetadata(base));
    expect(tok.encode('é')).toEqual([SP, byte(0xc3), byte(0xa9)]);
    expect(tok.encode('a b')).toEqual([SP_A, SP, B]);
    expect(tok.encode('')).toEqual([]);
    expect(tok.decode(tok.encode('a b é'))).toBe('a b é');
  });

  it('honours tokenizer.ggml.add_space_prefix = false', () => {
    const tok = Tokenizer.fromGGUF(spmMetadata(base, { 'tokenizer.ggml.add_space_prefix': false }));
    expect(tok.encode('ab')).toEqual([AB]);
    expect(tok.decode([SP, A])).toBe(' a');
  });

  it('matches user-defined tokens always, control tokens only with parseSpecial, and re-adds the space after them', () => {
    const tok = Tokenizer.fromGGUF(spmMetadata([...base, { text: '<tag>', type: TokenType.USER_DEFINED }]));
    const TAG = X + base.length;
    expect(tok.encode('a<tag>a')).toEqual([SP_A, TAG, SP_A]);
    expect(tok.encode('<s>a', { parseSpecial: true })).toEqual([1, SP_A]);
    expect(tok.encode('<s>a')).not.toContain(1);
    expect(tok.decode([TAG])).toBe('<tag>');
    expect(tok.decode([1, SP_A])).toBe('<s> a');
    expect(tok.decode([1, SP_A], { skipSpecial: true })).toBe(' a');
  });

  it("strips whitespace after special tokens for Phi-3 (llama.cpp's RSTRIP, chosen by general.name)", () => {
    const extra = [...base, { text: '<tag>', type: TokenType.USER_DEFINED }];
    const TAG = X + base.length;
    const phi = Tokenizer.fromGGUF(spmMetadata(extra, { 'general.name': 'Phi3' }));
    expect(phi.encode('<tag>  a')).toEqual([TAG, SP_A]);
    const plain = Tokenizer.fromGGUF(spmMetadata(extra));
    expect(plain.encode('<tag>  a')).toEqual([TAG, SP, SP, SP_A]);
  });

  it('uses the unknown token when the vocabulary has no byte tokens', () => {
    const md = spmMetadata(base);
    const tokens = (md['tokenizer.ggml.tokens'] as string[]).map((t) => (t.startsWith('<0x') ? `${t}!` : t));
    const tok = Tokenizer.fromGGUF({ ...md, 'tokenizer.ggml.tokens': tokens });
    expect(tok.encode('é')).toEqual([SP, 0, 0]);
  });
});
