/**
 * Token -> bytes, as llama.cpp's `token_to_piece` and `detokenize` produce them:
 * - normal tokens: SPM turns U+2581 back into spaces; byte-level BPE maps each GPT-2 character back to its byte;
 * - byte tokens `<0xXX>`: that one byte (possibly part of a UTF-8 sequence);
 * - control and unknown tokens: their text when special tokens are rendered, nothing otherwise;
 *   user-defined tokens: always their text; unused / undefined tokens: nothing;
 * - a sequence drops the leading space of its first token when the vocabulary adds a space prefix (SPM), and
 *   BPE vocabularies with `clean_spaces` remove spaces before ?!., and some apostrophe contractions.
 */
import { CHAR_TO_BYTE } from './byte-encoding.js';
import { TokenAttr } from './token-attr.js';
import type { Vocab } from './vocab.js';

const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

/** UTF-8 of the text of a byte-level BPE token, each GPT-2 character turned back into its byte. */
function decodeBpeText(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const b = ch.length === 1 ? CHAR_TO_BYTE.get(ch.charCodeAt(0)) : undefined;
    if (b !== undefined) {
      out.push(b);
      continue;
    }
    // llama.cpp's llama_decode_text writes characters outside the byte map like this (and keeps going)
    const hex = Array.from(encoder.encode(ch), (x) => x.toString(16).padStart(2, '0')).join('');
    for (const x of encoder.encode(`[UNK_BYTE_0x${hex}${text}]`)) out.push(x);
  }
  return Uint8Array.from(out);
}

/** Computes and caches the bytes of each token (rendered as if special tokens are shown). */
export class PieceTable {
  private readonly cache: (Uint8Array | undefined)[];

  constructor(private readonly vocab: Vocab) {
    this.cache = new Array(vocab.size);
  }

  /** The bytes token `id` contributes; `special` = render control/unknown tokens. `id` must be in range. */
  bytes(id: number, special: boolean): Uint8Array {
    const attr = this.vocab.attrs[id];
    if (!special && (attr & (TokenAttr.CONTROL | TokenAttr.UNKNOWN))) return EMPTY;
    let piece = this.cache[id];
    if (piece === undefined) {
      piece = this.compute(id, attr);
      this.cache[id] = piece;
    }
    return piece;
  }

  private compute(id: number, attr: number): Uint8Array {
    const text = this.vocab.tokens[id];
    if (attr & (TokenAttr.CONTROL | TokenAttr.UNKNOWN | TokenAttr.USER_DEFINED)) return encoder.encode(text);
    if (attr & TokenAttr.NORMAL) {
      return this.vocab.model === 'llama' ? encoder.encode(text.replaceAll('\u2581', ' ')) : decodeBpeText(text);
    }
    if (attr & TokenAttr.BYTE) {
      // "<0xXX>"
      const byte = Number.parseInt(text.slice(3, 5), 16);
      return Number.isNaN(byte) ? EMPTY : Uint8Array.of(byte);
    }
    return EMPTY;
  }
}

const SPACE = 0x20;
const APOS = 0x27;

/**
 * llama.cpp's clean-up of spaces, applied in place to bytes[0..length); returns the new length. A literal port of
 * its three passes (they read bytes they have already rewritten, which a regex rewrite would not reproduce):
 * " ?" " !" " ." " ," lose the space; " ' " becomes "'"; " 's" " 'm" " 're" " 've" lose the space.
 */
export function cleanSpaces(text: Uint8Array, length: number): number {
  let total = length;
  {
    const total1 = total;
    total = total ? 1 : 0;
    for (let i = 1; i < total1; i++) {
      const x = text[i];
      if (text[i - 1] === SPACE && (x === 0x3f || x === 0x21 || x === 0x2e || x === 0x2c)) total--;
      text[total++] = x;
    }
  }
  {
    const total2 = total;
    total = total ? 1 : 0;
    for (let i = 1; i < total2; i++) {
      const x = text[i];
      if (x === APOS && i + 1 < total2 && text[i - 1] === SPACE && text[i + 1] === SPACE) {
        total--;
        text[++i] = 0;
      }
      text[total++] = x;
    }
  }
  {
    const total3 = total;
    total = total ? 1 : 0;
    for (let i = 1; i < total3; i++) {
      const x = text[i];
      if (text[i - 1] === SPACE && x === APOS && i + 1 < total3) {
        const x1 = text[i + 1];
        if (x1 === 0x73 || x1 === 0x6d) {
          total--; // " 's" " 'm"
        } else if (x1 !== 0x74 && x1 !== 0x64 && i + 2 < total3) {
          const x2 = text[i + 2];
          if ((x1 === 0x72 && x2 === 0x65) || (x1 === 0x76 && x2 === 0x65)) total--; // " 're" " 've"
        }
      }
      text[total++] = x;
    }
  }
  return total;
}
