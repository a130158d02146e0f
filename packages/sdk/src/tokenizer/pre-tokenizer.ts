/**
 * Pre-tokenizers of byte-level BPE vocabularies: the regular expressions that cut text into words before BPE runs
 * on each word, one set per `tokenizer.ggml.pre`, exactly as llama.cpp's `llm_tokenizer_bpe` lists them (llama.cpp
 * src/llama-vocab.cpp; the llama3 / qwen2 / gpt-2 sets run there through hand-written matchers in src/unicode.cpp that
 * behave like these expressions). Several expressions apply in sequence: each one splits every piece left by the
 * previous one into its matches *and* the unmatched stretches between them (llama.cpp's `unicode_regex_split`).
 *
 * Whitespace: llama.cpp's `\s` is its own set (ASCII \t\n\v\f\r and space plus U+0085, U+00A0, U+1680, U+2000-U+200A,
 * U+2028, U+2029, U+202F, U+205F, U+3000; not U+FEFF, which JavaScript's \s includes), and before any expression runs
 * it replaces every non-ASCII whitespace code point by \v. We do the same on a copy of the text used only for
 * matching (one UTF-16 unit for one, so offsets carry over) and write `\s` as the ASCII class; that also keeps those
 * code points out of the literal ranges of the deepseek-llm expressions, as in llama.cpp.
 * \p{L}, \p{N} and \p{P} are JavaScript's Unicode property classes (llama.cpp uses its generated tables of the same
 * general categories).
 */

export type PreTokenizerKind = 'llama3' | 'qwen2' | 'gpt2' | 'falcon' | 'deepseek-llm' | 'default';

export interface PreTokenizerConfig {
  kind: PreTokenizerKind;
  /** applied in order; each with the 'gu' flags */
  patterns: readonly RegExp[];
  /** a whole word that is a token is emitted as is, without running merges (llama.cpp `ignore_merges`) */
  ignoreMerges: boolean;
  /** detokenizer removes spaces before punctuation and some contractions (llama.cpp `clean_spaces`) */
  cleanSpaces: boolean;
  /** llama.cpp's default for add_bos before tokenizer.ggml.add_bos_token is read */
  addBosDefault: boolean;
}

/** `tokenizer.ggml.pre` values llama.cpp maps to each of the supported pre-tokenizers. */
const PRE_ALIASES: Readonly<Record<string, PreTokenizerKind>> = {
  'default': 'default',
  'llama3': 'llama3', 'llama-v3': 'llama3', 'llama-bpe': 'llama3', 'falcon3': 'llama3', 'falcon-h1': 'llama3',
  'pixtral': 'llama3', 'midm-2.0': 'llama3', 'lfm2': 'llama3',
  'qwen2': 'qwen2', 'deepseek-r1-qwen': 'qwen2', 'kormo': 'qwen2', 'f2llmv2': 'qwen2',
  'gpt-2': 'gpt2', 'phi-2': 'gpt2', 'gigachat': 'gpt2', 'a.x-4.0': 'gpt2', 'mellum': 'gpt2',
  'falcon': 'falcon',
  'deepseek-llm': 'deepseek-llm',
};

/** Names accepted in `tokenizer.ggml.pre` (for error messages). */
export const SUPPORTED_PRE: readonly string[] = Object.keys(PRE_ALIASES);

/** llama.cpp's whitespace after non-ASCII whitespace has become \v: the ASCII set. */
const WS = '\\t\\n\\v\\f\\r ';
const S = `[${WS}]`;
const NOT_S = `[^${WS}]`;

const CONTRACTIONS_ANY_CASE = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
const GPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|${S}+(?!${NOT_S})`;

const SOURCES: Readonly<Record<PreTokenizerKind, readonly string[]>> = {
  // "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
  'llama3': [
    `${CONTRACTIONS_ANY_CASE}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^${WS}\\p{L}\\p{N}]+[\\r\\n]*|${S}*[\\r\\n]+|${S}+(?!${NOT_S})|${S}+`,
  ],
  // like llama3 but one digit per word
  'qwen2': [
    `${CONTRACTIONS_ANY_CASE}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^${WS}\\p{L}\\p{N}]+[\\r\\n]*|${S}*[\\r\\n]+|${S}+(?!${NOT_S})|${S}+`,
  ],
  'gpt2': [GPT2],
  'falcon': [
    '[\\p{P}\\$\\+<=>\\^~\\|`]+',
    GPT2,
    '[0-9][0-9][0-9]',
  ],
  'deepseek-llm': [
    '[\\r\\n]',
    `${S}?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+`,
    `${S}?[!-/:-~！-／：-～‘-‟　-。]+`,
    `${S}+$`,
    '[一-龥ࠀ-一가-퟿]+',
    '\\p{N}+',
  ],
  'default': [
    '[\\p{P}\\$\\+<=>\\^~\\|]+',
    GPT2,
    '\\p{N}+',
    '[0-9][0-9][0-9]',
  ],
};

const COMPILED = new Map<PreTokenizerKind, readonly RegExp[]>();

function compiled(kind: PreTokenizerKind): readonly RegExp[] {
  let list = COMPILED.get(kind);
  if (!list) {
    list = SOURCES[kind].map((src) => new RegExp(src, 'gu'));
    COMPILED.set(kind, list);
  }
  return list;
}

/** The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre = pre`, or undefined when it is not one we support. */
export function resolvePreTokenizer(pre: string): PreTokenizerConfig | undefined {
  if (!Object.prototype.hasOwnProperty.call(PRE_ALIASES, pre)) return undefined;
  const kind = PRE_ALIASES[pre];
  return {
    kind,
    patterns: compiled(kind),
    ignoreMerges: kind === 'llama3',
    // llama.cpp turns clean_spaces off for these two of ours; every other BPE vocabulary keeps the default (on)
    cleanSpaces: !(kind === 'qwen2' || kind === 'deepseek-llm'),
    addBosDefault: kind === 'llama3',
  };
}

/** Non-ASCII code points llama.cpp counts as whitespace; they are matched as \v. */
const NON_ASCII_WS = /[\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]/g;

/** Cuts `text` into words with `patterns` applied in sequence (see the file comment). */
export function preTokenize(text: string, patterns: readonly RegExp[]): string[] {
  if (text.length === 0) return [];
  const masked = text.replace(NON_ASCII_WS, '\v');
  // piece boundaries as [start, end) pairs of UTF-16 offsets
  let bounds: number[] = [0, text.length];
  for (const re of patterns) {
    const next: number[] = [];
    for (let p = 0; p < bounds.length; p += 2) {
      const start = bounds[p];
      const end = bounds[p + 1];
      const piece = masked.slice(start, end);
      let done = 0;
      re.lastIndex = 0;
      for (let m = re.exec(piece); m !== null; m = re.exec(piece)) {
        const len = m[0].length;
        if (len === 0) {
          // none of the expressions can match empty; stepping on keeps a future one from looping
          re.lastIndex = m.index + 1;
          continue;
        }
        if (m.index > done) next.push(start + done, start + m.index);
        next.push(start + m.index, start + m.index + len);
        done = m.index + len;
      }
      if (done < piece.length) next.push(start + done, end);
    }
    bounds = next;
  }
  const words: string[] = new Array(bounds.length / 2);
  for (let p = 0; p < bounds.length; p += 2) words[p / 2] = text.slice(bounds[p], bounds[p + 1]);
  return words;
}
