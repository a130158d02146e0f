import { describe, expect, it } from 'vitest';
import { StringIndex } from './string-index.js';

describe('StringIndex', () => {
  it('finds every key and nothing else', () => {
    const keys = Array.from({ length: 5000 }, (_, i) => `k${i * 7}`);
    const idx = new StringIndex(keys);
    expect(idx.size).toBe(5000);
    keys.forEach((k, i) => expect(idx.get(k)).toBe(i));
    expect(idx.get('k1')).toBe(-1);
    expect(idx.getRange('xxk14yy', 2, 5)).toBe(2);
    expect(idx.getRange('xxk14yy', 2, 4)).toBe(-1);
    expect(idx.get('')).toBe(-1);
  });

  it('keeps the first of repeated keys and reports the repeat', () => {
    const idx = new StringIndex(['a', 'b', 'a', 'b']);
    expect(idx.get('a')).toBe(0);
    expect(idx.get('b')).toBe(1);
    expect(idx.firstDuplicate).toEqual([0, 2]);
    expect(new StringIndex(['a', 'b']).firstDuplicate).toBeUndefined();
  });

  it('looks up "left right" without building it, and leaves out rejected keys', () => {
    const idx = new StringIndex(['Ġ t', 'h e', 'nospace', 'he llo'], (k) => k.indexOf(' ', 1) >= 0);
    expect(idx.getJoined('h', 'e')).toBe(1);
    expect(idx.getJoined('he', 'llo')).toBe(3);
    expect(idx.getJoined('Ġ', 't')).toBe(0);
    expect(idx.getJoined('h', 'el')).toBe(-1);
    expect(idx.getJoined('hel', 'lo')).toBe(-1);
    expect(idx.get('nospace')).toBe(-1);
  });
});
