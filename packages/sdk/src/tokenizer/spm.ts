/**
 * SentencePiece-style BPE over token scores (llama.cpp `llm_tokenizer_spm`, the `tokenizer.ggml.model = llama`
 * tokenizer): start from single code points, repeatedly merge the adjacent pair whose concatenation is a token with
 * the highest score (ties: the leftmost pair), and emit every final symbol as its token, or as its UTF-8 bytes
 * through the `<0xXX>` byte tokens when the vocabulary has no such token. The caller has already replaced spaces by
 * U+2581 and added the leading space.
 */
import { TwinferError } from '../errors.js';
import { PriorityQueue } from './priority-queue.js';
import type { Vocab } from './vocab.js';

interface Bigram {
  left: number;
  right: number;
  score: number;
  /** UTF-16 length of the pair when it was queued; a mismatch later means one side has merged since */
  size: number;
}

/** llama.cpp's order: highest score first, then the lowest left index. */
const before = (a: Bigram, b: Bigram): boolean => a.score > b.score || (a.score === b.score && a.left < b.left);

const HEX = '0123456789ABCDEF';
const encoder = new TextEncoder();

export class SpmTokenizer {
  /** byte -> token id of its byte token (-1 when the vocabulary has none) */
  private readonly byteTokens = new Int32Array(256).fill(-1);

  constructor(private readonly vocab: Vocab) {
    for (let b = 0; b < 256; b++) {
      // llama.cpp's byte_to_token: "<0xXX>", else the byte itself as a one-character token
      const id = vocab.id(`<0x${HEX[b >> 4]}${HEX[b & 15]}>`) ?? (b < 0x80 ? vocab.id(String.fromCharCode(b)) : undefined);
      if (id !== undefined) this.byteTokens[b] = id;
    }
  }

  /** Appends the tokens of `text` (already escaped) to `out`. */
  encode(text: string, out: number[]): void {
    const { tokenToId, scores } = this.vocab;
    // symbols: one per code point, as offsets into text, in a doubly linked list
    const start: number[] = [];
    const len: number[] = [];
    for (let i = 0; i < text.length;) {
      const c = text.charCodeAt(i);
      const w = c >= 0xd800 && c <= 0xdbff && i + 1 < text.length ? 2 : 1;
      start.push(i);
      len.push(w);
      i += w;
    }
    const count = start.length;
    if (count === 0) return;
    const prev = new Int32Array(count);
    const next = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < count ? i + 1 : -1;
    }

    const queue = new PriorityQueue<Bigram>(before);
    const tryAdd = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const size = len[left] + len[right];
      const id = tokenToId.getRange(text, start[left], start[left] + size);
      if (id < 0) return;
      queue.push({ left, right, score: scores[id], size });
    };
    for (let i = 1; i < count; i++) tryAdd(i - 1, i);

    for (let b = queue.pop(); b !== undefined; b = queue.pop()) {
      const { left, right } = b;
      if (len[left] === 0 || len[right] === 0 || len[left] + len[right] !== b.size) continue;
      len[left] += len[right];
      len[right] = 0;
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      tryAdd(prev[left], left);
      tryAdd(left, next[left]);
    }

    for (let i = 0; i !== -1; i = next[i]) {
      const id = tokenToId.getRange(text, start[i], start[i] + len[i]);
      if (id >= 0) {
        out.push(id);
        continue;
      }
      const piece = text.substr(start[i], len[i]);
      // Every merged symbol is a token by construction, so only a single code point can be missing: emit its bytes.
      for (const byte of encoder.encode(piece)) out.push(this.byteToken(byte, piece));
    }
  }

  private byteToken(byte: number, piece: string): number {
    const id = this.byteTokens[byte];
    if (id >= 0) return id;
    // llama.cpp aborts here; a vocabulary without byte tokens falls back to its unknown token instead
    const unk = this.vocab.ids.unk;
    if (unk !== undefined) return unk;
    throw new TwinferError('E_TOKENIZER', `cannot tokenize '${piece}': the vocabulary has neither a byte token for 0x${byte.toString(16).padStart(2, '0')} nor an unknown token`, { piece, byte });
  }
}
