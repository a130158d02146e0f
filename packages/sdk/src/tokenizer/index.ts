/**
 * The tokenizer of a GGUF model, built from its metadata and matching llama.cpp token for token:
 * `tokenizer.ggml.model = llama` (SentencePiece-style BPE over scores with byte fallback) and `gpt2` (byte-level BPE
 * over merges, with the pre-tokenizers of `tokenizer.ggml.pre` = llama-bpe/llama3, qwen2, gpt-2, falcon,
 * deepseek-llm, default).
 */
import { TwinferError } from '../errors.js';
import type { GGUFValue } from '../gguf/types.js';
import { BpeTokenizer } from './bpe.js';
import { ByteBuffer } from './byte-buffer.js';
import { PieceTable, cleanSpaces } from './detokenize.js';
import { splitSpecial } from './special-split.js';
import { SpmTokenizer } from './spm.js';
import { type DecodeOptions, type StreamDecoder, TokenStreamDecoder } from './stream-decoder.js';
import { TokenAttr } from './token-attr.js';
import { newUtf8Decoder } from './utf8.js';
import { type TokenizerModel, Vocab } from './vocab.js';

export type { DecodeOptions, StreamDecoder } from './stream-decoder.js';
export type { TokenizerModel } from './vocab.js';
export { SUPPORTED_PRE } from './pre-tokenizer.js';

export interface EncodeOptions {
  /** Prepend the BOS token (default false; `addBosDefault` says what the model expects). */
  addBos?: boolean;
  /** Append the EOS token (default false). */
  addEos?: boolean;
  /** Match control tokens such as `<|eot_id|>` written in the text (default false). User-defined tokens always match. */
  parseSpecial?: boolean;
}

/** Lone UTF-16 surrogates cannot be written as UTF-8; they become U+FFFD, as TextEncoder would make them. */
const LONE_SURROGATE = /\p{Surrogate}/gu;

export class Tokenizer {
  readonly model: TokenizerModel;
  /** `tokenizer.ggml.pre` ('default' for an SPM vocabulary that names none) */
  readonly pre: string;
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  readonly eotId: number | undefined;
  /** Whether the model wants BOS in front of a prompt (tokenizer.ggml.add_bos_token, default true for llama/SPM). */
  readonly addBosDefault: boolean;
  /** Whether the model wants EOS after a prompt (tokenizer.ggml.add_eos_token, default false). */
  readonly addEosDefault: boolean;

  private readonly vocab: Vocab;
  private readonly pieces: PieceTable;
  private readonly spm: SpmTokenizer | undefined;
  private readonly bpe: BpeTokenizer | undefined;

  private constructor(vocab: Vocab) {
    this.vocab = vocab;
    this.model = vocab.model;
    this.pre = vocab.pre;
    this.vocabSize = vocab.size;
    this.bosId = vocab.ids.bos;
    this.eosId = vocab.ids.eos;
    this.eotId = vocab.ids.eot;
    this.addBosDefault = vocab.addBos;
    this.addEosDefault = vocab.addEos;
    this.pieces = new PieceTable(vocab);
    this.spm = vocab.model === 'llama' ? new SpmTokenizer(vocab) : undefined;
    this.bpe = vocab.model === 'gpt2' ? new BpeTokenizer(vocab) : undefined;
  }

  /** Builds the tokenizer from a GGUF file's metadata (`readGGUF(path).metadata`). */
  static fromGGUF(metadata: Record<string, GGUFValue>): Tokenizer {
    if (metadata === null || typeof metadata !== 'object') {
      throw new TwinferError('E_INVALID_ARGUMENT', 'Tokenizer.fromGGUF needs the metadata object of a GGUF file');
    }
    return new Tokenizer(new Vocab(metadata));
  }

  /** Token ids of `text`, as llama.cpp's llama_tokenize(add_special = addBos || addEos, parse_special). */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') {
      throw new TwinferError('E_INVALID_ARGUMENT', `encode needs a string, got ${typeof text}`);
    }
    const clean = text.replace(LONE_SURROGATE, '\uFFFD');
    const out: number[] = [];
    if (opts.addBos) out.push(this.requireId(this.bosId, 'BOS'));
    const fragments = splitSpecial(this.vocab, clean, opts.parseSpecial ?? false);
    if (this.spm) {
      // SPM puts a space in front of the text and of every text that follows a special token
      let afterSpecial = true;
      for (const frag of fragments) {
        if (frag.id !== undefined) {
          out.push(frag.id);
          afterSpecial = true;
          continue;
        }
        const prefixed = this.vocab.addSpacePrefix && afterSpecial ? ' ' + frag.text : frag.text;
        this.spm.encode(prefixed.replaceAll(' ', '\u2581'), out);
        afterSpecial = false;
      }
    } else {
      for (const frag of fragments) {
        if (frag.id !== undefined) out.push(frag.id);
        else this.bpe!.encode(frag.text, out);
      }
    }
    if (opts.addEos) out.push(this.requireId(this.eosId, 'EOS'));
    return out;
  }

  /** Text of `ids`, as llama.cpp's llama_detokenize(remove_special = skipSpecial, unparse_special = !skipSpecial). */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    for (const id of ids) this.checkId(id);
    const skipSpecial = opts.skipSpecial ?? false;
    let removeSpace = this.vocab.addSpacePrefix && (opts.stripLeadingSpace ?? true);
    let start = 0;
    let end = ids.length;
    if (skipSpecial && this.vocab.addBos && end > 0 && ids[0] === this.bosId) {
      removeSpace = false;
      start = 1;
    }
    if (skipSpecial && this.vocab.addEos && end > start && ids[end - 1] === this.eosId) end--;
    const buf = new ByteBuffer();
    for (let i = start; i < end; i++) {
      const bytes = this.pieces.bytes(ids[i], !skipSpecial);
      buf.push(bytes, removeSpace && bytes.length > 0 && bytes[0] === 0x20 ? 1 : 0);
      removeSpace = false;
    }
    const n = this.vocab.cleanSpaces ? cleanSpaces(buf.data, buf.length) : buf.length;
    return newUtf8Decoder().decode(buf.data.subarray(0, n));
  }

  /** A decoder that turns ids pushed one by one into text, holding back incomplete characters. */
  createStreamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    return new TokenStreamDecoder(this.vocab, this.pieces, { ...opts });
  }

  /** The bytes token `id` contributes to text (special tokens rendered); may be part of a UTF-8 sequence. */
  tokenBytes(id: number): Uint8Array {
    this.checkId(id);
    return this.pieces.bytes(id, true).slice();
  }

  /** tokenBytes as a string (an incomplete UTF-8 sequence shows as U+FFFD; use a stream decoder to join pieces). */
  tokenToPiece(id: number): string {
    this.checkId(id);
    return newUtf8Decoder().decode(this.pieces.bytes(id, true));
  }

  /** The token's text as stored in the vocabulary (e.g. 'Ġworld', '▁world', '<0x0A>'). */
  tokenText(id: number): string {
    this.checkId(id);
    return this.vocab.tokens[id];
  }

  /** The id of the token whose stored text is `text`, if any. */
  tokenId(text: string): number | undefined {
    return this.vocab.id(text);
  }

  /** True for tokens that end generation (EOS, EOT, EOM and the others llama.cpp recognises). */
  isEog(id: number): boolean {
    return this.vocab.eogIds.has(id);
  }

  /** True for control tokens (not rendered when decoding with skipSpecial). */
  isControl(id: number): boolean {
    this.checkId(id);
    return (this.vocab.attrs[id] & TokenAttr.CONTROL) !== 0;
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new TwinferError('E_INVALID_ARGUMENT', `token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`, { id });
    }
  }

  private requireId(id: number | undefined, what: string): number {
    if (id === undefined) {
      throw new TwinferError('E_TOKENIZER', `the vocabulary has no ${what} token`, { token: what });
    }
    return id;
  }
}
