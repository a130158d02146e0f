/**
 * Byte-level BPE (llama.cpp `llm_tokenizer_bpe`, the `tokenizer.ggml.model = gpt2` tokenizer): the text is cut into
 * words by the pre-tokenizer, each word's UTF-8 bytes are written as GPT-2 characters, and within a word the adjacent
 * pair with the lowest merge rank is merged until no ranked pair is left (ties: the leftmost pair). Each final
 * symbol is emitted as its token; a symbol that is not a token falls back to its single-byte tokens. Results are
 * cached per word, since the same words recur constantly in real text.
 */
import { bytesToBpeString } from './byte-encoding.js';
import { preTokenize } from './pre-tokenizer.js';
import { PriorityQueue } from './priority-queue.js';
import type { Vocab } from './vocab.js';

interface Bigram {
  left: number;
  right: number;
  rank: number;
  /** the concatenated text when queued; if either side has changed since, the pair is stale */
  text: string;
}

/** llama.cpp's order: lowest rank first, then the lowest left index. */
const before = (a: Bigram, b: Bigram): boolean => a.rank < b.rank || (a.rank === b.rank && a.left < b.left);

const encoder = new TextEncoder();
const CACHE_LIMIT = 1 << 16;

export class BpeTokenizer {
  private readonly cache = new Map<string, readonly number[]>();

  constructor(private readonly vocab: Vocab) {
    if (!vocab.preTokenizer) throw new Error('BpeTokenizer needs a byte-level BPE vocabulary');
  }

  /** Appends the tokens of `text` to `out`. */
  encode(text: string, out: number[]): void {
    const words = preTokenize(text, this.vocab.preTokenizer!.patterns);
    for (const word of words) {
      const encoded = bytesToBpeString(encoder.encode(word));
      let ids = this.cache.get(encoded);
      if (ids === undefined) {
        ids = this.encodeWord(encoded);
        if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
        this.cache.set(encoded, ids);
      }
      for (const id of ids) out.push(id);
    }
  }

  /** Tokens of one byte-encoded word. */
  private encodeWord(word: string): number[] {
    const { tokenToId, mergeRanks, ignoreMerges } = this.vocab;
    if (ignoreMerges) {
      const whole = tokenToId.get(word);
      if (whole >= 0) return [whole];
    }
    // every GPT-2 character is one UTF-16 unit: one symbol per unit
    const count = word.length;
    const start = new Int32Array(count);
    const len = new Int32Array(count);
    const prev = new Int32Array(count);
    const next = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      start[i] = i;
      len[i] = 1;
      prev[i] = i - 1;
      next[i] = i + 1 < count ? i + 1 : -1;
    }
    const sym = (i: number): string => word.substr(start[i], len[i]);
    const queue = new PriorityQueue<Bigram>(before);
    const tryAdd = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const l = sym(left);
      const r = sym(right);
      const rank = mergeRanks.getJoined(l, r);
      if (rank < 0) return;
      queue.push({ left, right, rank, text: l + r });
    };
    for (let i = 1; i < count; i++) tryAdd(i - 1, i);

    for (let b = queue.pop(); b !== undefined; b = queue.pop()) {
      const { left, right } = b;
      if (len[left] === 0 || len[right] === 0) continue;
      if (len[left] + len[right] !== b.text.length || sym(left) + sym(right) !== b.text) continue;
      len[left] += len[right];
      len[right] = 0;
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      tryAdd(prev[left], left);
      tryAdd(left, next[left]);
    }

    const ids: number[] = [];
    for (let i = 0; i !== -1; i = next[i]) {
      const piece = sym(i);
      const id = tokenToId.get(piece);
      if (id >= 0) {
        ids.push(id);
        continue;
      }
      // llama.cpp looks each byte of the symbol's UTF-8 text up as a one-byte token; only ASCII bytes can match
      for (const byte of encoder.encode(piece)) {
        if (byte >= 0x80) continue;
        const b = tokenToId.get(String.fromCharCode(byte));
        if (b >= 0) ids.push(b);
      }
    }
    return ids;
  }
}
