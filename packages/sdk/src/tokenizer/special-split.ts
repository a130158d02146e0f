/**
 * Splits text at occurrences of special tokens before the tokenizer sees it (llama.cpp `tokenizer_st_partition`).
 * Tokens are tried longest first; each one splits every remaining text fragment at all of its occurrences.
 * Control and unknown tokens are matched only when `parseSpecial` is set; user-defined tokens always are (as in
 * llama.cpp and Hugging Face tokenizers). A token with LSTRIP / RSTRIP swallows the whitespace before / after it.
 */
import { TokenAttr } from './token-attr.js';
import type { Vocab } from './vocab.js';

export type Fragment = { text: string; id?: undefined } | { id: number; text?: undefined };

/** C isspace() in the "C" locale, which is what llama.cpp strips around LSTRIP / RSTRIP tokens. */
function isCSpace(code: number): boolean {
  return code === 0x20 || (code >= 0x09 && code <= 0x0d);
}

export function splitSpecial(vocab: Vocab, text: string, parseSpecial: boolean): Fragment[] {
  let fragments: Fragment[] = text.length > 0 ? [{ text }] : [];
  if (fragments.length === 0) return fragments;
  const { attrs, tokens } = vocab;
  for (const id of vocab.specialTokens) {
    const attr = attrs[id];
    if (!parseSpecial && (attr & (TokenAttr.CONTROL | TokenAttr.UNKNOWN))) continue;
    const needle = tokens[id];
    let touched = false;
    const out: Fragment[] = [];
    for (const frag of fragments) {
      if (frag.text === undefined || frag.text.indexOf(needle) < 0) {
        out.push(frag);
        continue;
      }
      touched = true;
      const s = frag.text;
      let from = 0;
      while (from < s.length) {
        const at = s.indexOf(needle, from);
        if (at < 0) {
          out.push({ text: s.slice(from) });
          break;
        }
        let leftEnd = at;
        if (attr & TokenAttr.LSTRIP) while (leftEnd > from && isCSpace(s.charCodeAt(leftEnd - 1))) leftEnd--;
        if (leftEnd > from) out.push({ text: s.slice(from, leftEnd) });
        out.push({ id });
        from = at + needle.length;
        if (attr & TokenAttr.RSTRIP) while (from < s.length && isCSpace(s.charCodeAt(from))) from++;
      }
    }
    if (touched) fragments = out;
  }
  return fragments;
}
