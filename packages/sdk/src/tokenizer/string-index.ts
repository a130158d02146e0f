/**
 * A read-only string -> index table (open addressing over an Int32Array, FNV-1a hashing), used for token texts and
 * for BPE merge lines. A JavaScript Map of the 128k tokens plus 280k merges of a Llama-3 vocabulary takes several
 * hundred milliseconds to build (hashing and repeatedly growing a hash table of fresh strings); this table is
 * sized once, stores only indices and compares against the original strings, and builds in a fraction of that.
 * It also answers "is `left + ' ' + right` a key" without building the joined string, which is the BPE merge lookup.
 */

const SPACE = 0x20;
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

function hashInto(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), FNV_PRIME);
  return h;
}

export class StringIndex {
  private readonly keys: readonly string[];
  /** index + 1 per slot; 0 = empty */
  private readonly slots: Int32Array;
  private readonly mask: number;
  /** number of distinct keys stored */
  readonly size: number;
  /** the first repeated key as [first index, repeated index]; the first index is the one kept */
  readonly firstDuplicate: readonly [number, number] | undefined;

  /** Indexes `keys` (first occurrence wins); keys rejected by `accept` are left out. */
  constructor(keys: readonly string[], accept?: (key: string) => boolean) {
    this.keys = keys = keys.slice();
    let cap = 16;
    while (cap < keys.length * 2) cap *= 2;
    const slots = new Int32Array(cap);
    const mask = cap - 1;
    let size = 0;
    let dup: [number, number] | undefined;
    for (let k = 0; k < keys.length; k++) {
      const key = keys[k];
      if (accept && !accept(key)) continue;
      for (let i = hashInto(FNV_OFFSET, key) & mask; ; i = (i + 1) & mask) {
        const slot = slots[i];
        if (slot === 0) {
          slots[i] = k + 1;
          size++;
          break;
        }
        if (keys[slot - 1] === key) {
          dup ??= [slot - 1, k];
          break;
        }
      }
    }
    this.slots = slots;
    this.mask = mask;
    this.size = size;
    this.firstDuplicate = dup;
  }

  /** Index of `key`, or -1. */
  get(key: string): number {
    for (let i = hashInto(FNV_OFFSET, key) & this.mask; ; i = (i + 1) & this.mask) {
      const slot = this.slots[i];
      if (slot === 0) return -1;
      if (this.keys[slot - 1] === key) return slot - 1;
    }
  }

  /** Index of the key `text.slice(start, end)`, or -1 (without building that string). */
  getRange(text: string, start: number, end: number): number {
    let h = FNV_OFFSET;
    for (let i = start; i < end; i++) h = Math.imul(h ^ text.charCodeAt(i), FNV_PRIME);
    const len = end - start;
    for (let i = h & this.mask; ; i = (i + 1) & this.mask) {
      const slot = this.slots[i];
      if (slot === 0) return -1;
      const key = this.keys[slot - 1];
      if (key.length === len && text.startsWith(key, start)) return slot - 1;
    }
  }

  /** Index of the key `left + ' ' + right`, or -1 (without building that string). */
  getJoined(left: string, right: string): number {
    const h = hashInto(Math.imul(hashInto(FNV_OFFSET, left) ^ SPACE, FNV_PRIME), right);
    const total = left.length + 1 + right.length;
    for (let i = h & this.mask; ; i = (i + 1) & this.mask) {
      const slot = this.slots[i];
      if (slot === 0) return -1;
      const key = this.keys[slot - 1];
      if (key.length === total && key.charCodeAt(left.length) === SPACE && key.startsWith(left) && key.endsWith(right)) {
        return slot - 1;
      }
    }
  }
}
