/**
 * Incremental detokenizer: push token ids one at a time and get back only text that can no longer change, so that
 * the concatenation of everything returned (ending with flush()) equals `Tokenizer.decode` of the same ids.
 *
 * Two things are held back:
 * - incomplete UTF-8 sequences (a character split over byte tokens such as <0xF0><0x9F><0x98><0x81>), via a
 *   streaming TextDecoder, which by specification decodes identically to a one-shot decode;
 * - for vocabularies with clean_spaces, bytes the clean-up might still rewrite: it only ever deletes spaces next to
 *   ' ? ! . , and looks at most two bytes ahead, so text is released up to the last point preceded by two bytes that
 *   are neither space nor apostrophe. Cleaning the released chunks one by one then gives exactly the result of
 *   cleaning the whole text at once (no rule reads or writes across such a point).
 * With skipSpecial, decode also drops a trailing EOS when the vocabulary adds one; a stream cannot know which token
 * is last, but EOS is a control token in every vocabulary we know of and renders as nothing there anyway.
 */
import { TwinferError } from '../errors.js';
import { ByteBuffer } from './byte-buffer.js';
import { cleanSpaces, type PieceTable } from './detokenize.js';
import { newUtf8Decoder } from './utf8.js';
import type { Vocab } from './vocab.js';

export interface DecodeOptions {
  /** Drop a leading BOS (and a trailing EOS when the vocabulary adds one) and render control tokens as nothing. */
  skipSpecial?: boolean;
  /**
   * Strip the space the tokenizer adds in front of SPM text from the first token, as llama.cpp's detokenize does
   * (default true; it has no effect on vocabularies without add_space_prefix, or when the sequence starts with BOS).
   * Pass false when the ids continue earlier text, e.g. tokens generated after a prompt.
   */
  stripLeadingSpace?: boolean;
}

export interface StreamDecoder {
  /** Text that became final with this token (often the token's own text, sometimes '' while bytes are held). */
  push(id: number): string;
  /** Ends the sequence: returns everything still held (an incomplete character becomes U+FFFD) and resets. */
  flush(): string;
}

const SPACE = 0x20;
const APOS = 0x27;
const holdsBack = (b: number): boolean => b === SPACE || b === APOS;

export class TokenStreamDecoder implements StreamDecoder {
  private readonly pending = new ByteBuffer();
  private utf8 = newUtf8Decoder();
  /** the raw byte just before pending[0], or -1 */
  private prevByte = -1;
  private first = true;
  private removeSpace: boolean;

  constructor(
    private readonly vocab: Vocab,
    private readonly pieces: PieceTable,
    private readonly opts: DecodeOptions = {},
  ) {
    this.removeSpace = this.initialRemoveSpace();
  }

  private initialRemoveSpace(): boolean {
    return this.vocab.addSpacePrefix && (this.opts.stripLeadingSpace ?? true);
  }

  push(id: number): string {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocab.size) {
      throw new TwinferError('E_INVALID_ARGUMENT', `token id ${id} is outside the vocabulary (0..${this.vocab.size - 1})`, { id });
    }
    const skipSpecial = this.opts.skipSpecial ?? false;
    if (this.first) {
      this.first = false;
      if (skipSpecial && this.vocab.addBos && id === this.vocab.ids.bos) {
        this.removeSpace = false;
        return '';
      }
    }
    const bytes = this.pieces.bytes(id, !skipSpecial);
    const from = this.removeSpace && bytes.length > 0 && bytes[0] === SPACE ? 1 : 0;
    this.removeSpace = false;
    this.pending.push(bytes, from);
    return this.release(false);
  }

  flush(): string {
    const text = this.release(true);
    this.utf8 = newUtf8Decoder();
    this.prevByte = -1;
    this.first = true;
    this.removeSpace = this.initialRemoveSpace();
    return text;
  }

  private release(final: boolean): string {
    const buf = this.pending;
    let cut = buf.length;
    if (this.vocab.cleanSpaces && !final) {
      const at = (i: number): number => (i >= 0 ? buf.data[i] : i === -1 ? this.prevByte : -1);
      while (cut > 0 && (holdsBack(at(cut - 1)) || holdsBack(at(cut - 2)))) cut--;
    }
    if (cut === 0) return final ? this.utf8.decode() : '';
    const chunk = buf.data.slice(0, cut);
    this.prevByte = chunk[cut - 1];
    buf.shift(cut);
    const n = this.vocab.cleanSpaces ? cleanSpaces(chunk, cut) : cut;
    return this.utf8.decode(chunk.subarray(0, n), { stream: !final });
  }
}
