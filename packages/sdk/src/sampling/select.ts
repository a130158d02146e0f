/**
 * Ranking helpers shared by the sampler and the log-probability helpers. Order is always "higher value first,
 * lower id first on ties" so that every result is deterministic.
 */

/** NaN ranks like -Infinity, so comparisons stay a total order. */
function key(v: number): number {
  return v !== v ? -Infinity : v;
}

/** true when (va, ia) ranks before (vb, ib) */
function before(va: number, ia: number, vb: number, ib: number): boolean {
  va = key(va);
  vb = key(vb);
  return va > vb || (va === vb && ia < ib);
}

/**
 * The k best ids among `ids` (or among 0..n-1 when ids is omitted), ranked by values[id], best first.
 * A bounded min-heap keeps this O(n log k), which matters for vocabularies of 150k tokens.
 */
export function topKIds(values: ArrayLike<number>, k: number, n: number, ids?: ArrayLike<number>): Int32Array {
  const count = ids ? ids.length : n;
  k = Math.max(0, Math.min(k, count));
  if (k === 0) return new Int32Array(0);
  // heap[0] is the worst of the kept ids
  const heap = new Int32Array(k);
  let size = 0;
  const worse = (x: number, y: number): boolean => before(values[y]!, y, values[x]!, x); // x ranks after y
  const siftUp = (i: number): void => {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!worse(heap[i]!, heap[p]!)) break;
      const t = heap[i]!; heap[i] = heap[p]!; heap[p] = t;
      i = p;
    }
  };
  const siftDown = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < size && worse(heap[l]!, heap[m]!)) m = l;
      if (r < size && worse(heap[r]!, heap[m]!)) m = r;
      if (m === i) break;
      const t = heap[i]!; heap[i] = heap[m]!; heap[m] = t;
      i = m;
    }
  };
  for (let j = 0; j < count; j++) {
    const id = ids ? ids[j]! : j;
    if (size < k) {
      heap[size++] = id;
      siftUp(size - 1);
    } else if (before(values[id]!, id, values[heap[0]!]!, heap[0]!)) {
      heap[0] = id;
      siftDown(0);
    }
  }
  return sortIds(values, heap);
}

/** Sorts ids in place by values[id] descending, id ascending on ties. */
export function sortIds(values: ArrayLike<number>, ids: Int32Array): Int32Array {
  return ids.sort((x, y) => {
    const vx = key(values[x]!);
    const vy = key(values[y]!);
    return vx > vy ? -1 : vx < vy ? 1 : x - y;
  });
}

/** argmax over values[0..n-1]; ties go to the lowest id. Returns -1 when every value is -Infinity or NaN. */
export function argmax(values: ArrayLike<number>, n: number): number {
  let best = -1;
  let bestV = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

/**
 * The k best entries of a logits row with their values, best first: what a core's forwardTop returns for the same
 * row (NaN is returned as -Infinity, as the device selection does). Used where the core has no device selection.
 */
export function topLogits(row: ArrayLike<number>, k: number): { ids: Int32Array; logits: Float32Array } {
  const ids = topKIds(row, k, row.length);
  const logits = new Float32Array(ids.length);
  for (let j = 0; j < ids.length; j++) logits[j] = key(row[ids[j]!]!);
  return { ids, logits };
}
