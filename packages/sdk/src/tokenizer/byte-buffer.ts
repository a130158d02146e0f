/** A growable byte buffer (the detokenizers assemble token bytes in one before cleaning and decoding them). */
export class ByteBuffer {
  data = new Uint8Array(64);
  length = 0;

  push(bytes: Uint8Array, from = 0): void {
    const n = bytes.length - from;
    if (n <= 0) return;
    if (this.length + n > this.data.length) {
      let cap = this.data.length * 2;
      while (cap < this.length + n) cap *= 2;
      const grown = new Uint8Array(cap);
      grown.set(this.data.subarray(0, this.length));
      this.data = grown;
    }
    this.data.set(from === 0 ? bytes : bytes.subarray(from), this.length);
    this.length += n;
  }

  /** Drops the first n bytes. */
  shift(n: number): void {
    this.data.copyWithin(0, n, this.length);
    this.length -= n;
  }
}
