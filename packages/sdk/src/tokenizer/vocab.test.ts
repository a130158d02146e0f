import { describe, expect, it } from 'vitest';
import { TwinferError } from '../errors.js';
import { Tokenizer } from './index.js';
import { TokenType } from './token-attr.js';
import { SPM_FIRST_EXTRA as X, bpeMetadata, spmMetadata } from './testing.js';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof TwinferError) return `${e.code}: ${e.message}`;
    throw e;
  }
  return 'no error';
}

describe('vocabulary loading', () => {
  it('rejects missing or unsupported tokenizer.ggml.model / pre, naming the value', () => {
    const spm = spmMetadata([]);
    const { ['tokenizer.ggml.model']: _m, ...noModel } = spm;
    expect(codeOf(() => Tokenizer.fromGGUF(noModel))).toMatch(/^E_TOKENIZER: .*tokenizer\.ggml\.model/);
    expect(codeOf(() => Tokenizer.fromGGUF({ ...spm, 'tokenizer.ggml.model': 'bert' }))).toMatch(/^E_TOKENIZER: .*'bert'/);
    const bpe = bpeMetadata('gpt-2', []);
    expect(codeOf(() => Tokenizer.fromGGUF({ ...bpe, 'tokenizer.ggml.pre': 'chatglm-bpe' }))).toMatch(/^E_TOKENIZER: .*'chatglm-bpe'/);
    const { ['tokenizer.ggml.pre']: _p, ...noPre } = bpe;
    expect(codeOf(() => Tokenizer.fromGGUF(noPre))).toMatch(/^E_TOKENIZER: .*tokenizer\.ggml\.pre/);
    const { ['tokenizer.ggml.merges']: _g, ...noMerges } = bpe;
    expect(codeOf(() => Tokenizer.fromGGUF(noMerges))).toMatch(/^E_TOKENIZER: .*merges/);
    // SPM vocabularies need no pre-tokenizer name (older GGUFs have none)
    expect(Tokenizer.fromGGUF(spm).pre).toBe('default');
  });

  it('rejects malformed tokenizer arrays with TwinferError', () => {
    const spm = spmMetadata([{ text: 'a' }]);
    expect(codeOf(() => Tokenizer.fromGGUF({ ...spm, 'tokenizer.ggml.tokens': [] }))).toMatch(/^E_TOKENIZER/);
    expect(codeOf(() => Tokenizer.fromGGUF({ ...spm, 'tokenizer.ggml.tokens': 'abc' }))).toMatch(/^E_BAD_METADATA: .*tokens/);
    expect(codeOf(() => Tokenizer.fromGGUF({ ...spm, 'tokenizer.ggml.scores': new Float32Array(3) }))).toMatch(/^E_BAD_METADATA: .*scores/);
    expect(codeOf(() => Tokenizer.fromGGUF({ ...spm, 'tokenizer.ggml.token_type': ['x'] }))).toMatch(/^E_BAD_METADATA: .*token_type/);
    expect(codeOf(() => Tokenizer.fromGGUF({ ...spm, 'tokenizer.ggml.bos_token_id': 'one' }))).toMatch(/^E_BAD_METADATA: .*bos_token_id/);
    const dup = spmMetadata([{ text: 'a' }, { text: 'a' }]);
    expect(codeOf(() => Tokenizer.fromGGUF(dup))).toMatch(/^E_TOKENIZER: .*'a' twice/);
    expect(codeOf(() => Tokenizer.fromGGUF(null as never))).toMatch(/^E_INVALID_ARGUMENT/);
  });

  it("uses llama.cpp's defaults and the stored settings", () => {
    const spm = Tokenizer.fromGGUF(spmMetadata([]));
    expect([spm.model, spm.bosId, spm.eosId, spm.eotId, spm.addBosDefault, spm.addEosDefault]).toEqual(['llama', 1, 2, undefined, true, false]);
    const noBos = Tokenizer.fromGGUF(spmMetadata([], { 'tokenizer.ggml.add_bos_token': false, 'tokenizer.ggml.eos_token_id': 5n }));
    expect([noBos.addBosDefault, noBos.eosId]).toEqual([false, 5]);
    // an id outside the vocabulary is ignored, as llama.cpp does
    expect(Tokenizer.fromGGUF(spmMetadata([], { 'tokenizer.ggml.bos_token_id': 100000 })).bosId).toBe(1);
    const gpt2 = Tokenizer.fromGGUF(bpeMetadata('gpt-2', []));
    expect([gpt2.model, gpt2.pre, gpt2.bosId, gpt2.addBosDefault]).toEqual(['gpt2', 'gpt-2', 11, false]);
    expect(Tokenizer.fromGGUF(bpeMetadata('llama-bpe', [])).addBosDefault).toBe(true);
    expect(() => Tokenizer.fromGGUF(spmMetadata([])).encode('x', { addBos: true })).not.toThrow();
  });

  it('recognises end-of-turn tokens by text and treats them as control tokens', () => {
    const tok = Tokenizer.fromGGUF(spmMetadata([
      { text: '▁a' }, { text: '<|im_end|>', type: TokenType.USER_DEFINED }, { text: '<|endoftext|>', type: TokenType.NORMAL },
    ]));
    const IM_END = X + 1;
    const EOT = X + 2;
    expect(tok.eotId).toBe(IM_END);
    expect(tok.isEog(IM_END)).toBe(true);
    expect(tok.isEog(EOT)).toBe(true);
    expect(tok.isEog(2)).toBe(true); // </s>, the EOS
    expect(tok.isEog(X)).toBe(false);
    // now control: no longer matched without parseSpecial, and hidden with skipSpecial
    expect(tok.encode('<|im_end|>')).not.toContain(IM_END);
    expect(tok.encode('<|im_end|>', { parseSpecial: true })).toEqual([IM_END]);
    expect(tok.isControl(IM_END)).toBe(true);
    expect(tok.decode([X, IM_END], { skipSpecial: true })).toBe('a');
  });

  it('validates ids given to decode and friends', () => {
    const tok = Tokenizer.fromGGUF(spmMetadata([]));
    for (const bad of [-1, tok.vocabSize, 0.5, Number.NaN]) {
      expect(codeOf(() => tok.decode([bad]))).toMatch(/^E_INVALID_ARGUMENT/);
      expect(codeOf(() => tok.tokenBytes(bad))).toMatch(/^E_INVALID_ARGUMENT/);
    }
    expect(codeOf(() => tok.encode(42 as never))).toMatch(/^E_INVALID_ARGUMENT/);
    expect(tok.isEog(-1)).toBe(false);
  });

  it('encodes lone surrogates as U+FFFD', () => {
    const tok = Tokenizer.fromGGUF(spmMetadata([{ text: '▁' }]));
    expect(tok.encode('\uD800')).toEqual(tok.encode('\uFFFD'));
  });
});
