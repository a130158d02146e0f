/**
 * The vocabulary as llama.cpp's `llama_vocab::impl::load` builds it from GGUF metadata: token texts, scores and
 * attributes, BPE merge ranks, special token ids with llama.cpp's defaults, the tokenizer flags (add BOS/EOS,
 * space prefix, clean-up of spaces) and the set of end-of-generation tokens. Everything llama.cpp derives from token
 * *texts* (EOT/EOG/FIM detection, Phi-3's RSTRIP) is derived the same way here, because it changes which tokens are
 * matched as special and how they render.
 */
import { TwinferError } from '../errors.js';
import {
  type Metadata, optBool, optNumberArray, optString, optStringArray, optUint,
} from './metadata-values.js';
import { type PreTokenizerConfig, SUPPORTED_PRE, resolvePreTokenizer } from './pre-tokenizer.js';
import { StringIndex } from './string-index.js';
import { TokenAttr, attrFromTokenType } from './token-attr.js';

export type TokenizerModel = 'llama' | 'gpt2';

const KEY = 'tokenizer.ggml.';

/** Texts llama.cpp recognises as special tokens when their ids are not in the metadata, in its order. */
const EOT_TEXTS = [
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>', '<|end_of_text|>', '<EOT>', '_<EOT>',
  '[EOT]', '<｜end▁of▁sentence｜>', '<end_of_utterance>',
];
const EOM_TEXTS = ['<|eom_id|>'];
const FIM_PRE_TEXTS = ['<|fim_prefix|>', '<fim-prefix>', '<fim_prefix>', '<｜fim▁begin｜>', '<PRE>', '▁<PRE>', '<|code_prefix|>', '<|prefix|>'];
const FIM_SUF_TEXTS = ['<|fim_suffix|>', '<fim-suffix>', '<fim_suffix>', '<｜fim▁hole｜>', '<SUF>', '▁<SUF>', '<|code_suffix|>', '<|suffix|>'];
const FIM_MID_TEXTS = ['<|fim_middle|>', '<fim-middle>', '<fim_middle>', '<｜fim▁end｜>', '<MID>', '▁<MID>', '<|code_middle|>', '<|middle|>'];
const FIM_PAD_TEXTS = ['<|fim_pad|>', '<fim-pad>', '<fim_pad>', '<PAD>', '[PAD]'];
const FIM_REP_TEXTS = ['<|fim_repo|>', '<|repo_name|>', '<fim-repo>', '<REPO>', '<reponame>'];
const FIM_SEP_TEXTS = ['<|file_sep|>'];
/** Tokens that end generation, recognised by text. */
const EOG_TEXTS = [
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<|return|>', '<|call|>', '<|flush|>', '<|calls|>', '<end_of_turn>',
  '<|endoftext|>', '</s>', '<|eom_id|>', '<EOT>', '_<EOT>', '[EOT]', '[EOS]', '<|end_of_text|>', '<end_of_utterance>',
  '<eos>', '<turn|>', '<|tool_response>', '<｜end▁of▁sentence｜>', '[e~[',
];
/** gpt-oss: llama.cpp always renders these, whatever their stored type. */
const ALWAYS_RENDERED_TEXTS = ['<|channel|>', '<|message|>', '<|start|>', '<|constrain|>'];

type SpecialIdName = 'bos' | 'eos' | 'eot' | 'eom' | 'unk' | 'sep' | 'pad' | 'mask' |
  'fimPre' | 'fimSuf' | 'fimMid' | 'fimPad' | 'fimRep' | 'fimSep';

/** Metadata keys of the special ids, in llama.cpp's order (the deprecated prefix/suffix/middle keys come last). */
const SPECIAL_ID_KEYS: ReadonlyArray<readonly [SpecialIdName, string]> = [
  ['bos', 'bos_token_id'], ['eos', 'eos_token_id'], ['eot', 'eot_token_id'], ['eom', 'eom_token_id'],
  ['unk', 'unknown_token_id'], ['sep', 'seperator_token_id'], ['pad', 'padding_token_id'], ['mask', 'mask_token_id'],
  ['fimPre', 'fim_pre_token_id'], ['fimSuf', 'fim_suf_token_id'], ['fimMid', 'fim_mid_token_id'],
  ['fimPad', 'fim_pad_token_id'], ['fimRep', 'fim_rep_token_id'], ['fimSep', 'fim_sep_token_id'],
  ['fimPre', 'prefix_token_id'], ['fimSuf', 'suffix_token_id'], ['fimMid', 'middle_token_id'],
];

export class Vocab {
  readonly model: TokenizerModel;
  /** `tokenizer.ggml.pre` as stored ('default' when an SPM vocabulary has none) */
  readonly pre: string;
  /** the pre-tokenizer (byte-level BPE only) */
  readonly preTokenizer: PreTokenizerConfig | undefined;
  readonly tokens: readonly string[];
  readonly scores: Float32Array;
  /** TokenAttr bits per token */
  readonly attrs: Uint16Array;
  /** token text -> id */
  readonly tokenToId: StringIndex;
  /** BPE merge line "left right" -> rank (byte-level BPE only; empty for SPM) */
  readonly mergeRanks: StringIndex;

  readonly ids: Readonly<Record<SpecialIdName, number | undefined>>;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly addSpacePrefix: boolean;
  readonly cleanSpaces: boolean;
  readonly ignoreMerges: boolean;
  readonly eogIds: ReadonlySet<number>;
  /** control, user-defined and unknown tokens, longest text first: matched in text before tokenizing */
  readonly specialTokens: readonly number[];

  constructor(md: Metadata) {
    const model = optString(md, KEY + 'model');
    if (model === undefined) {
      throw new TwinferError('E_TOKENIZER', 'GGUF metadata has no tokenizer.ggml.model: the file carries no tokenizer', { key: KEY + 'model' });
    }
    if (model !== 'llama' && model !== 'gpt2') {
      throw new TwinferError('E_TOKENIZER', `unsupported tokenizer.ggml.model '${model}' (supported: llama, gpt2)`, { model });
    }
    this.model = model;
    const pre = optString(md, KEY + 'pre');

    // model defaults (llama.cpp: SPM = "llama", BPE = "gpt2")
    const ids: Record<SpecialIdName, number | undefined> = {
      bos: undefined, eos: undefined, eot: undefined, eom: undefined, unk: undefined, sep: undefined, pad: undefined,
      mask: undefined, fimPre: undefined, fimSuf: undefined, fimMid: undefined, fimPad: undefined, fimRep: undefined,
      fimSep: undefined,
    };
    let addBos: boolean;
    let addSpacePrefix: boolean;
    let cleanSpaces: boolean;
    if (model === 'llama') {
      ids.bos = 1; ids.eos = 2; ids.unk = 0;
      this.pre = pre ?? 'default';
      this.preTokenizer = undefined;
      addBos = true;
      addSpacePrefix = true;
      cleanSpaces = false;
      this.ignoreMerges = false;
    } else {
      ids.bos = 11; ids.eos = 11;
      if (pre === undefined) {
        throw new TwinferError('E_TOKENIZER', `GGUF metadata has no tokenizer.ggml.pre for the gpt2 tokenizer (supported: ${SUPPORTED_PRE.join(', ')})`, { key: KEY + 'pre' });
      }
      const cfg = resolvePreTokenizer(pre);
      if (!cfg) {
        throw new TwinferError('E_TOKENIZER', `unsupported tokenizer.ggml.pre '${pre}' (supported: ${SUPPORTED_PRE.join(', ')})`, { pre });
      }
      this.pre = pre;
      this.preTokenizer = cfg;
      addBos = cfg.addBosDefault;
      addSpacePrefix = false;
      cleanSpaces = cfg.cleanSpaces;
      this.ignoreMerges = cfg.ignoreMerges;
    }
    addSpacePrefix = optBool(md, KEY + 'add_space_prefix') ?? addSpacePrefix;
    this.addSpacePrefix = addSpacePrefix;
    this.cleanSpaces = cleanSpaces;

    // tokens, scores, types
    const tokens = optStringArray(md, KEY + 'tokens');
    if (!tokens || tokens.length === 0) {
      throw new TwinferError('E_TOKENIZER', 'GGUF metadata has no tokenizer.ggml.tokens', { key: KEY + 'tokens' });
    }
    const n = tokens.length;
    const rawScores = optNumberArray(md, KEY + 'scores', n);
    const rawTypes = optNumberArray(md, KEY + 'token_type', n);
    const texts: string[] = new Array(n);
    const scores = new Float32Array(n);
    const attrs = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      // llama.cpp renames empty tokens so that every text stays a unique key
      texts[i] = tokens[i].length > 0 ? tokens[i] : `[EMPTY_${i}]`;
      if (rawScores) scores[i] = rawScores[i];
      attrs[i] = rawTypes ? attrFromTokenType(rawTypes[i]) : TokenAttr.NORMAL;
    }
    const tokenToId = new StringIndex(texts);
    if (tokenToId.firstDuplicate) {
      // llama.cpp refuses such a vocabulary too (its id <-> text maps would disagree)
      const [a, b] = tokenToId.firstDuplicate;
      throw new TwinferError('E_TOKENIZER', `tokenizer.ggml.tokens holds '${texts[a]}' twice (ids ${a} and ${b})`, { text: texts[a], ids: [a, b] });
    }
    const idOf = (text: string): number | undefined => {
      const id = tokenToId.get(text);
      return id < 0 ? undefined : id;
    };
    this.tokens = texts;
    this.scores = scores;
    this.attrs = attrs;
    this.tokenToId = tokenToId;

    // merges
    let merges: string[] = [];
    if (model === 'gpt2') {
      const stored = optStringArray(md, KEY + 'merges');
      if (!stored) throw new TwinferError('E_TOKENIZER', 'GGUF metadata has no tokenizer.ggml.merges for the gpt2 tokenizer', { key: KEY + 'merges' });
      merges = stored;
    }
    // llama.cpp splits a line at its first space after the first character; a line without one never matches.
    // Keying by the whole line is then exact, because byte-level symbols never contain a space ('Ġ' stands for it).
    // A repeated line keeps its first rank, like llama.cpp's emplace.
    this.mergeRanks = new StringIndex(merges, (line) => line.indexOf(' ', 1) >= 0);

    // special ids: a default out of range is disabled; a stored id out of range is ignored (llama.cpp warns)
    for (const name of Object.keys(ids) as SpecialIdName[]) {
      const id = ids[name];
      if (id !== undefined && id >= n) ids[name] = undefined;
    }
    for (const [name, key] of SPECIAL_ID_KEYS) {
      const id = optUint(md, KEY + key);
      if (id !== undefined && id < n) ids[name] = id;
    }
    this.addBos = optBool(md, KEY + 'add_bos_token') ?? addBos;
    this.addEos = optBool(md, KEY + 'add_eos_token') ?? false;

    // ids recognised by text, marked CONTROL (llama.cpp picks the first it meets in a hash map; we take the first
    // text of its list that the vocabulary has, which is deterministic and the same whenever only one is present)
    const detect = (name: SpecialIdName, candidates: readonly string[]): void => {
      if (ids[name] !== undefined) return;
      for (const text of candidates) {
        const id = idOf(text);
        if (id !== undefined) {
          ids[name] = id;
          attrs[id] |= TokenAttr.CONTROL;
          return;
        }
      }
    };
    detect('eot', EOT_TEXTS);
    detect('eom', EOM_TEXTS);
    detect('fimPre', FIM_PRE_TEXTS);
    detect('fimSuf', FIM_SUF_TEXTS);
    detect('fimMid', FIM_MID_TEXTS);
    detect('fimPad', FIM_PAD_TEXTS);
    detect('fimRep', FIM_REP_TEXTS);
    detect('fimSep', FIM_SEP_TEXTS);

    const eog = new Set<number>();
    for (const name of ['fimPad', 'fimRep', 'fimSep'] as const) {
      const id = ids[name];
      if (id !== undefined) eog.add(id);
    }
    for (const text of EOG_TEXTS) {
      const id = idOf(text);
      if (id !== undefined) {
        eog.add(id);
        attrs[id] |= TokenAttr.CONTROL;
      }
    }
    for (const text of ALWAYS_RENDERED_TEXTS) {
      const id = idOf(text);
      if (id !== undefined) attrs[id] = TokenAttr.USER_DEFINED;
    }
    for (const name of ['eos', 'eot', 'eom'] as const) {
      const id = ids[name];
      if (id !== undefined) eog.add(id);
    }
    // o200k_harmony / solar-open: "<|end|>" ends a message there, not the generation
    const eogText = (t: string): boolean => {
      const id = idOf(t);
      return id !== undefined && eog.has(id);
    };
    const endId = idOf('<|end|>');
    if (endId !== undefined && eog.has(endId) &&
        ((eogText('<|return|>') && (eogText('<|call|>') || eogText('<|calls|>'))) ||
         ((eogText('<|call|>') || eogText('<|calls|>')) && eogText('<|flush|>')))) {
      eog.delete(endId);
      attrs[endId] = TokenAttr.USER_DEFINED;
    }
    // gemma4 / paddleocr: "</s>" is ordinary text where "<|tool_response>" exists
    const sId = idOf('</s>');
    if (sId !== undefined && eog.has(sId) && eogText('<|tool_response>')) {
      eog.delete(sId);
      attrs[sId] = TokenAttr.NORMAL;
    }
    this.eogIds = eog;
    this.ids = ids;

    // tokens matched as wholes in the text, longest (in UTF-8 bytes) first; ties by id (llama.cpp's sort leaves
    // them unspecified)
    const special: number[] = [];
    const byteLen = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      if (attrs[i] & (TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN)) {
        special.push(i);
        byteLen.set(i, Buffer.byteLength(texts[i], 'utf8'));
      }
    }
    special.sort((a, b) => (byteLen.get(b) as number) - (byteLen.get(a) as number) || a - b);
    this.specialTokens = special;

    // Phi-3: llama.cpp strips whitespace after its special tokens, chosen by the model name
    const name = (optString(md, 'general.name') ?? '').toLowerCase();
    if (name.includes('phi-3') || name.includes('phi3')) {
      for (const id of special) attrs[id] |= TokenAttr.RSTRIP;
      const set = (text: string, on: boolean): void => {
        const id = idOf(text);
        if (id === undefined) return;
        attrs[id] = on ? attrs[id] | TokenAttr.RSTRIP : attrs[id] & ~TokenAttr.RSTRIP;
      };
      set('</s>', true);
      for (const t of ['<unk>', '<s>', '<|endoftext|>']) set(t, false);
    }
  }

  /** The id of the token with this text, if any. */
  id(text: string): number | undefined {
    const id = this.tokenToId.get(text);
    return id < 0 ? undefined : id;
  }

  get size(): number {
    return this.tokens.length;
  }
}
