/**
 * GPT-2's reversible byte <-> unicode mapping. Byte-level BPE vocabularies store every token as a string of
 * printable code points, one per byte: the printable bytes '!'..'~', '¡'..'¬' and '®'..'ÿ' stand for themselves and
 * the remaining 68 bytes (controls, space, ...) are moved to U+0100 and up in byte order (so ' ' becomes 'Ġ' and
 * '\n' becomes 'Ċ'). Every mapped code point is in the BMP, so each byte is exactly one UTF-16 unit.
 */

function buildByteToChar(): string[] {
  const table: (string | undefined)[] = new Array(256).fill(undefined);
  const keep = (lo: number, hi: number): void => {
    for (let b = lo; b <= hi; b++) table[b] = String.fromCharCode(b);
  };
  keep(0x21, 0x7e);
  keep(0xa1, 0xac);
  keep(0xae, 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (table[b] === undefined) table[b] = String.fromCharCode(256 + n++);
  }
  return table as string[];
}

/** BYTE_TO_CHAR[b] is the one-character string standing for byte b. */
export const BYTE_TO_CHAR: readonly string[] = buildByteToChar();

/** Inverse of BYTE_TO_CHAR, by UTF-16 code unit. */
export const CHAR_TO_BYTE: ReadonlyMap<number, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c.charCodeAt(0), b]));

/** Maps the UTF-8 bytes of `utf8` to their GPT-2 characters. */
export function bytesToBpeString(utf8: Uint8Array): string {
  let s = '';
  for (let i = 0; i < utf8.length; i++) s += BYTE_TO_CHAR[utf8[i]];
  return s;
}
