import { describe, expect, it } from 'vitest';
import { Tokenizer } from './index.js';
import { SPM_FIRST_EXTRA as X, bpeMetadata, spmMetadata } from './testing.js';

const streamAll = (tok: Tokenizer, ids: number[], opts = {}): string[] => {
  const dec = tok.createStreamDecoder(opts);
  const out = ids.map((id) => dec.push(id));
  out.push(dec.flush());
  return out;
};

describe('stream decoder', () => {
  it('holds back a character split over byte tokens and releases it complete', () => {
    const tok = Tokenizer.fromGGUF(spmMetadata([{ text: '▁' }, { text: 'a' }]));
    const ids = tok.encode('a😁a');
    expect(ids).toHaveLength(7); // ▁ a <F0> <9F> <98> <81> a
    expect(streamAll(tok, ids)).toEqual(['', 'a', '', '', '', '😁', 'a', '']);
    expect(tok.decode(ids)).toBe('a😁a');
  });

  it('turns an incomplete character left at the end into U+FFFD, like decode', () => {
    const tok = Tokenizer.fromGGUF(spmMetadata([{ text: 'a' }]));
    const ids = [X, 3 + 0xf0, 3 + 0x9f];
    expect(streamAll(tok, ids).join('')).toBe(tok.decode(ids));
    expect(tok.decode(ids)).toBe('a\uFFFD');
  });

  it('strips the SPM leading space from the first token only, and not after BOS', () => {
    const tok = Tokenizer.fromGGUF(spmMetadata([{ text: '▁a' }]));
    const A = X;
    expect(streamAll(tok, [A, A])).toEqual(['a', ' a', '']);
    expect(streamAll(tok, [A, A], { stripLeadingSpace: false })).toEqual([' a', ' a', '']);
    expect(streamAll(tok, [1, A], { skipSpecial: true })).toEqual(['', ' a', '']);
    expect(streamAll(tok, [1, A])).toEqual(['<s>', ' a', '']);
  });

  it('starts over after flush', () => {
    const tok = Tokenizer.fromGGUF(spmMetadata([{ text: '▁a' }]));
    const dec = tok.createStreamDecoder();
    expect(dec.push(X) + dec.flush()).toBe('a');
    expect(dec.push(X) + dec.flush()).toBe('a');
  });

  it('holds back spaces the clean-up may delete, and always agrees with decode', () => {
    // gpt-2 keeps llama.cpp's clean_spaces; ids 0..255 are the bytes themselves in this vocabulary
    const tok = Tokenizer.fromGGUF(bpeMetadata('gpt-2', []));
    const b = (s: string): number[] => Array.from(new TextEncoder().encode(s));
    expect(streamAll(tok, b('Hi ?'))).toEqual(['H', 'i', '', '', '?']);
    expect(tok.decode(b('Hi ?'))).toBe('Hi?');
    const alphabet = [...b(" '?!.,smrevtdlx"), ...b('é😁')];
    let s = 99;
    const rnd = (): number => {
      s = (Math.imul(s, 1103515245) + 12345) & 0x7fffffff;
      return s / 0x80000000;
    };
    for (let k = 0; k < 3000; k++) {
      const ids = Array.from({ length: 1 + Math.floor(rnd() * 10) }, () => alphabet[Math.floor(rnd() * alphabet.length)]);
      expect(streamAll(tok, ids).join(''), ids.join(' ')).toBe(tok.decode(ids));
    }
  });

  it('rejects ids outside the vocabulary', () => {
    const tok = Tokenizer.fromGGUF(bpeMetadata('gpt-2', []));
    const dec = tok.createStreamDecoder();
    expect(() => dec.push(256)).toThrow(expect.objectContaining({ code: 'E_INVALID_ARGUMENT' }));
    expect(() => dec.push(1.5)).toThrow(expect.objectContaining({ code: 'E_INVALID_ARGUMENT' }));
  });
});
