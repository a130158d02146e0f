/**
 * UTF-8 decoding of detokenized bytes. `ignoreBOM: true` keeps a leading U+FEFF in the text (the default decoder
 * would silently drop it, and a BOM the user typed must survive a round trip); invalid or incomplete sequences
 * become U+FFFD, as they do where llama.cpp's bytes become a JavaScript string.
 */
export function newUtf8Decoder(): TextDecoder {
  return new TextDecoder('utf-8', { ignoreBOM: true });
}
