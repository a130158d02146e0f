import { describe, expect, it } from 'vitest';
import { Tokenizer } from './index.js';
import { bpeMetadata } from './testing.js';

// ids 0..255 are the byte characters in byte order, merge results follow from 256
const ch = (c: string): number => c.charCodeAt(0);

describe('byte-level BPE tokenizer (tokenizer.ggml.model = gpt2)', () => {
  it('applies merges by rank until none is left', () => {
    const tok = Tokenizer.fromGGUF(bpeMetadata('gpt-2', ['h e', 'l l', 'he ll', 'hell o']));
    expect(tok.encode('hello')).toEqual([259]);
    expect(tok.encode('hell')).toEqual([258]);
    expect(tok.encode('ole')).toEqual([ch('o'), ch('l'), ch('e')]);
  });

  it('prefers the lower rank, then the leftmost pair', () => {
    expect(Tokenizer.fromGGUF(bpeMetadata('gpt-2', ['l o', 'e l'])).encode('elo')).toEqual([ch('e'), 256]);
    expect(Tokenizer.fromGGUF(bpeMetadata('gpt-2', ['e l', 'l o'])).encode('elo')).toEqual([256, ch('o')]);
    expect(Tokenizer.fromGGUF(bpeMetadata('gpt-2', ['a a'])).encode('aaa')).toEqual([256, ch('a')]);
  });

  it('writes bytes as GPT-2 characters (a space is Ġ) and decodes them back', () => {
    const tok = Tokenizer.fromGGUF(bpeMetadata('gpt-2', ['Ġ w', 'Ġw o']));
    expect(tok.encode(' wo')).toEqual([257]);
    expect(tok.tokenText(257)).toBe('Ġwo');
    expect(tok.tokenToPiece(257)).toBe(' wo');
    // é is two bytes, each its own token
    expect(tok.encode('é')).toEqual([0xc3, 0xa9]);
    expect(tok.tokenBytes(0xc3)).toEqual(Uint8Array.of(0xc3));
    expect(tok.decode(tok.encode('Hé wo\n'))).toBe('Hé wo\n');
  });

  it('keeps whole-word tokens for llama3 (ignore_merges) but not for gpt-2', () => {
    const merges = ['x y', 'y z', 'x yz'];
    expect(Tokenizer.fromGGUF(bpeMetadata('gpt-2', merges)).encode('xyz')).toEqual([256, ch('z')]);
    expect(Tokenizer.fromGGUF(bpeMetadata('llama-bpe', merges)).encode('xyz')).toEqual([258]);
  });

  it('merges only within pre-tokenizer words', () => {
    const tok = Tokenizer.fromGGUF(bpeMetadata('gpt-2', ['a Ġ']));
    expect(tok.encode('a a')).toEqual([ch('a'), 0x20, ch('a')]);
  });

  it('matches control tokens only with parseSpecial', () => {
    const tok = Tokenizer.fromGGUF(bpeMetadata('gpt-2', [], ['<|endoftext|>'], { 'tokenizer.ggml.eos_token_id': 256 }));
    expect(tok.encode('a<|endoftext|>', { parseSpecial: true })).toEqual([ch('a'), 256]);
    expect(tok.encode('a<|endoftext|>')).not.toContain(256);
    expect(tok.isEog(256)).toBe(true);
    expect(tok.decode([ch('a'), 256])).toBe('a<|endoftext|>');
    expect(tok.decode([ch('a'), 256], { skipSpecial: true })).toBe('a');
  });
});
