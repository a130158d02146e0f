import { describe, expect, it } from 'vitest';
import { cleanSpaces } from './detokenize.js';

const clean = (s: string): string => {
  const bytes = new TextEncoder().encode(s);
  return new TextDecoder().decode(bytes.subarray(0, cleanSpaces(bytes, bytes.length)));
};

describe("cleanSpaces (llama.cpp's clean_up_tokenization_spaces)", () => {
  it('removes the space before ? ! . ,', () => {
    expect(clean('Hello , world ! How are you ? Fine .')).toBe('Hello, world! How are you? Fine.');
  });

  it("joins a lone apostrophe between spaces and contractions 's 'm 're 've, but not 't 'd 'll", () => {
    expect(clean("a ' b")).toBe("a'b");
    expect(clean("it 's I 'm we 're they 've")).toBe("it's I'm we're they've");
    expect(clean("don 't he 'd we 'll")).toBe("don 't he 'd we 'll");
    expect(clean("x 'RE y 'S")).toBe("x 'RE y 'S");
  });

  it('keeps the quirks of the in-place passes', () => {
    // only the space right before the mark goes
    expect(clean('a  ,')).toBe('a ,');
    // after " ' " has eaten the following space, a second apostrophe right after is not preceded by a space
    expect(clean("a ' ' b")).toBe("a'' b");
    // a leading space goes too
    expect(clean(' ?')).toBe('?');
    expect(clean('')).toBe('');
  });

  it('leaves multi-byte text alone', () => {
    expect(clean('😁 ?我想 ，')).toBe('😁?我想 ，');
  });
});
