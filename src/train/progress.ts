/**
 * Progress of long work: a bar with ETA and throughput on a terminal, plain log lines
 * otherwise (CI, files). Updates never force a GPU readback; callers pass what they have.
 */
export interface ProgressFields {
  [key: string]: string | number | undefined;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(r).padStart(2, "0")}s` : `${r}s`;
}

function formatFields(fields: ProgressFields): string {
  return Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) =>
      `${k} ${typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(4)) : v}`
    )
    .join("  ");
}

export class Progress {
  readonly #start = performance.now();
  readonly #tty: boolean;
  readonly #encoder = new TextEncoder();
  #lastLine = 0;

  /** Units done before this bar started (a resumed epoch): not counted in its rate. */
  readonly start: number;

  constructor(
    readonly label: string,
    readonly total: number,
    options: { tty?: boolean; out?: (s: string) => void; start?: number } = {},
  ) {
    this.#tty = options.tty ?? Deno.stderr.isTerminal();
    this.out = options.out ?? ((s) => Deno.stderr.writeSync(this.#encoder.encode(s)));
    this.start = options.start ?? 0;
  }

  private out: (s: string) => void;

  /**
   * Reports `done` of `total` units (counting the `start` ones); on a non-terminal, prints at
   * most every `every` seconds.
   */
  update(done: number, fields: ProgressFields = {}, every = 10): void {
    const elapsed = (performance.now() - this.#start) / 1000;
    const rate = (done - this.start) / elapsed;
    const eta = done > this.start ? (this.total - done) / rate : NaN;
    const pct = this.total ? Math.min(100, (100 * done) / this.total) : 100;
    const info = `${done}/${this.total}  ${formatDuration(elapsed)} elapsed  ETA ${formatDuration(eta)}  ${
      formatFields(fields)
    }`;
    if (this.#tty) {
      const width = 24, filled = Math.round((pct / 100) * width);
      this.out(
        `\r\x1b[2K${this.label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${
          pct.toFixed(0)
        }%  ${info}`,
      );
    } else if (elapsed - this.#lastLine >= every) {
      this.#lastLine = elapsed;
      this.out(`${this.label} ${pct.toFixed(0)}%  ${info}\n`);
    }
  }

  /** Ends the bar (a newline on terminals). */
  done(fields: ProgressFields = {}): void {
    this.update(this.total, fields, 0);
    if (this.#tty) this.out("\n");
  }
}
