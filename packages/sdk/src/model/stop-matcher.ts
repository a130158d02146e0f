/**
 * Stop strings over streamed text: text is released only once it cannot be the start of a stop string, so a
 * stream never shows a user part of a stop sequence that generation then cuts off.
 */
export class StopMatcher {
  private pending = '';
  private readonly longest: number;

  constructor(private readonly stops: readonly string[]) {
    this.longest = Math.max(0, ...stops.map((s) => s.length));
  }

  /** Adds text; returns what may be shown now and whether a stop string was reached. */
  push(text: string): { emit: string; stopped: boolean } {
    if (this.stops.length === 0) return { emit: text, stopped: false };
    this.pending += text;
    let cut = -1;
    for (const s of this.stops) {
      if (s.length === 0) continue;
      const i = this.pending.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      const emit = this.pending.slice(0, cut);
      this.pending = '';
      return { emit, stopped: true };
    }
    // Hold back the longest suffix that is a prefix of some stop string.
    let hold = 0;
    for (let k = Math.min(this.longest - 1, this.pending.length); k > 0; k--) {
      const suffix = this.pending.slice(this.pending.length - k);
      if (this.stops.some((s) => s.startsWith(suffix))) {
        hold = k;
        break;
      }
    }
    const emit = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return { emit, stopped: false };
  }

  /** End of generation: whatever was held back is shown (after a final check of `tail`). */
  flush(tail: string): string {
    const r = this.push(tail);
    if (r.stopped) return r.emit;
    const rest = r.emit + this.pending;
    this.pending = '';
    return rest;
  }
}
