/**
 * A progress bar with an ETA for long runs, on stderr when stderr is a
 * terminal, and nothing at all when it is piped or redirected.
 *
 * @module
 */

/** Where the bar goes: a terminal's write, or nothing. */
export interface ProgressSink {
  /** Whether to draw at all (stderr is a terminal). */
  readonly isTerminal: boolean;
  /** Write raw bytes (no newline added). */
  write(s: string): void;
}

/** stderr, drawn only when it is a terminal. */
export function stderrSink(): ProgressSink {
  let tty = false;
  try {
    tty = Deno.stderr.isTerminal();
  } catch {
    tty = false;
  }
  const enc = new TextEncoder();
  return { isTerminal: tty, write: (s) => Deno.stderr.writeSync(enc.encode(s)) };
}

/** `m:ss` or `h:mm:ss`. */
export function clock(ms: number): string {
  const t = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
  const ss = String(s).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** One line of the bar: `[#####-----] 12/54  4k qd=1 dma lazy  ETA 0:31`. */
export function progressLine(done: number, total: number, label: string, elapsedMs: number) {
  const width = 24;
  const filled = total > 0 ? Math.round((done / total) * width) : width;
  const eta = done > 0 && done < total ? `ETA ${clock((elapsedMs / done) * (total - done))}` : "";
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${done}/${total}  ${label}  ${eta}`
    .trimEnd();
}

/** Counts finished steps of a run of `total` and redraws the bar after each. */
export class Progress {
  readonly #sink: ProgressSink;
  readonly #total: number;
  readonly #now: () => number;
  readonly #t0: number;
  #done = 0;
  #drawn = false;

  /** A bar for `total` steps (nothing is drawn unless the sink is a terminal). */
  constructor(total: number, sink: ProgressSink = stderrSink(), now = () => performance.now()) {
    this.#total = total;
    this.#sink = sink;
    this.#now = now;
    this.#t0 = now();
  }

  /** About to run `label`: draw the bar with it. */
  start(label: string): void {
    if (!this.#sink.isTerminal) return;
    const line = progressLine(this.#done, this.#total, label, this.#now() - this.#t0);
    this.#sink.write(`\r\x1b[2K${line}`);
    this.#drawn = true;
  }

  /** One step finished. */
  step(): void {
    this.#done++;
  }

  /** Clear the bar (before the report is printed). */
  end(): void {
    if (this.#drawn) this.#sink.write("\r\x1b[2K");
    this.#drawn = false;
  }
}
