import { describe, expect, it } from 'vitest';
import { preTokenize, resolvePreTokenizer } from './pre-tokenizer.js';

const split = (pre: string, text: string): string[] => preTokenize(text, resolvePreTokenizer(pre)!.patterns);

describe('pre-tokenizers (llama.cpp regex sets)', () => {
  it('llama3: case-insensitive contractions, digits in threes, whitespace runs leave one space for the next word', () => {
    expect(split('llama-bpe', "Hello world  12345 I'M here\n\n  x")).toEqual(
      ['Hello', ' world', ' ', ' ', '123', '45', ' I', "'M", ' here', '\n\n', ' ', ' x']);
    expect(split('llama-bpe', '(hi) !!?\n\nok   ')).toEqual(['(hi', ')', ' !!?\n\n', 'ok', '   ']);
    expect(split('llama3', 'abc')).toEqual(split('llama-bpe', 'abc'));
  });

  it("uses llama.cpp's whitespace set: U+3000 is whitespace, U+FEFF is not", () => {
    expect(split('llama-bpe', 'a\u3000b\uFEFFc')).toEqual(['a', '\u3000b', '\uFEFFc']);
  });

  it('qwen2: one digit per word', () => {
    expect(split('qwen2', 'abc 12345 x')).toEqual(['abc', ' ', '1', '2', '3', '4', '5', ' x']);
  });

  it('gpt-2: case-sensitive contractions, whole numbers, unmatched whitespace kept as its own piece', () => {
    expect(split('gpt-2', "I'M it's  12345 hi!!")).toEqual(['I', "'", 'M', ' it', "'s", ' ', ' 12345', ' hi', '!!']);
    expect(split('gpt-2', 'a\tb')).toEqual(['a', '\t', 'b']);
  });

  it('falcon and default: punctuation first, then words, then runs of three digits', () => {
    const want = ['x', ' ', '123', '456', '7', ' a', '+', 'b', '=', 'c', ',', ' ok'];
    expect(split('falcon', 'x 1234567 a+b=c, ok')).toEqual(want);
    expect(split('default', 'x 1234567 a+b=c, ok')).toEqual(want);
    // the backtick is punctuation for falcon only
    expect(split('falcon', 'a`,b')).toEqual(['a', '`,', 'b']);
    expect(split('default', 'a`,b')).toEqual(['a', '`', ',', 'b']);
  });

  it('deepseek-llm: newlines, Latin-like letters, punctuation, trailing spaces, CJK/Hangul, numbers in turn', () => {
    expect(split('deepseek-llm', 'Hello, 世界! 12345 안녕 ö\n\nend  ')).toEqual(
      ['Hello', ',', ' ', '世界', '!', ' ', '12345', ' ', '안녕', ' ö', '\n', '\n', 'end', '  ']);
  });

  it('returns nothing for empty text and the pieces always join back to the text', () => {
    expect(split('llama-bpe', '')).toEqual([]);
    const text = 'Mixed 😶‍🌫️ text\r\n\twith 1234 \u00A0 numbers, ünïcödé and 漢字!';
    for (const pre of ['llama-bpe', 'qwen2', 'gpt-2', 'falcon', 'default', 'deepseek-llm']) {
      const pieces = split(pre, text);
      expect(pieces.join(''), pre).toBe(text);
      expect(pieces.every((p) => p.length > 0), pre).toBe(true);
    }
  });

  it('knows only the supported names', () => {
    expect(resolvePreTokenizer('chatglm-bpe')).toBeUndefined();
    expect(resolvePreTokenizer('toString')).toBeUndefined();
    expect(resolvePreTokenizer('llama-bpe')).toMatchObject({ kind: 'llama3', ignoreMerges: true, cleanSpaces: true, addBosDefault: true });
    expect(resolvePreTokenizer('qwen2')).toMatchObject({ kind: 'qwen2', ignoreMerges: false, cleanSpaces: false, addBosDefault: false });
    expect(resolvePreTokenizer('deepseek-llm')).toMatchObject({ cleanSpaces: false });
    expect(resolvePreTokenizer('gpt-2')).toMatchObject({ cleanSpaces: true });
  });
});
