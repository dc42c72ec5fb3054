/**
 * What a running bench prints. Every message is a line stamped with the seconds since the start
 * (`[   12.3s] message`), as before. When stdout is a terminal, a progress bar for the configuration being measured
 * stays on the last line below them, redrawn every second: measurements done of the configuration's total (TTFT, one
 * per decode position, one per PoE gamma), elapsed time and an ETA. When stdout is a file or a pipe (CI, `| tee`),
 * only the plain lines are written, with no control characters.
 *
 * Hand-written (about 100 lines) because no maintained progress-bar package fits: @std/cli's ProgressBar is not in
 * the npm build of deno-std the import map uses (1.4.0), and the npm bars (cli-progress, progress) are unmaintained
 * and cannot print lines above their bar.
 * @module
 */

import { type BenchConfig, type ConfigurationName, decodePositions, poeGammas, poeSpreads } from "./config.ts";
import { sweepMeasurements } from "./contexts.ts";

/** Where the progress goes and how time is read (tests pass fakes). */
export interface ProgressOptions {
  /** Whether to draw the bar (default: Deno.stdout.isTerminal()). */
  tty?: boolean;
  /** Writes text as is (default: to stdout). */
  write?: (text: string) => void;
  /** The clock in ms (default performance.now). */
  now?: () => number;
  /** Terminal width in columns (default: Deno.consoleSize(), else 100). */
  columns?: () => number;
  /** Redraw the bar every this many ms while waiting (default 1000; 0: only on events). */
  refreshMs?: number;
}

/**
 * Measurements (harness benchmark calls) configuration `name` makes: TTFT, then decode positions (and the length
 * sweeps) or PoE gammas x spreads.
 */
export function measurementsOf(name: ConfigurationName, c: BenchConfig): number {
  return 1 +
    (name === "hydra_poe"
      ? poeGammas(c).length * poeSpreads(c).length
      : decodePositions(c).length + sweepMeasurements(c));
}

/** Seconds as m:ss (or h:mm:ss). */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h > 0 ? String(m).padStart(2, "0") : String(m);
  return `${h > 0 ? `${h}:` : ""}${mm}:${String(r).padStart(2, "0")}`;
}

const encoder = new TextEncoder();
const CLEAR_LINE = "\r\x1b[2K";

/** The run's terminal output: timestamped lines, and a progress bar per configuration on a terminal. */
export class RunProgress {
  readonly tty: boolean;
  readonly #write: (text: string) => void;
  readonly #now: () => number;
  readonly #columns: () => number;
  readonly #refreshMs: number;
  readonly #t0: number;
  #bar: { name: string; total: number; done: number; start: number; firstDone: number | null } | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;

  constructor(options: ProgressOptions = {}) {
    this.tty = options.tty ?? Deno.stdout.isTerminal();
    this.#write = options.write ?? ((text) => Deno.stdout.writeSync(encoder.encode(text)));
    this.#now = options.now ?? (() => performance.now());
    this.#columns = options.columns ?? (() => {
      try {
        return Deno.consoleSize().columns;
      } catch {
        return 100;
      }
    });
    this.#refreshMs = options.refreshMs ?? 1000;
    this.#t0 = this.#now();
  }

  /** Prints `message` on its own line, stamped with the seconds since the run started. */
  line(message: string): void {
    const s = ((this.#now() - this.#t0) / 1000).toFixed(1).padStart(7);
    this.#write(`${this.#bar && this.tty ? CLEAR_LINE : ""}[${s}s] ${message}\n`);
    this.#draw();
  }

  /** Starts the bar of configuration `name`, which makes `total` measurements. */
  begin(name: string, total: number): void {
    this.end();
    this.#bar = { name, total, done: 0, start: this.#now(), firstDone: null };
    if (this.tty && this.#refreshMs > 0) {
      const timer = setInterval(() => this.#draw(), this.#refreshMs);
      Deno.unrefTimer(timer); // never keeps the process alive
      this.#timer = timer;
    }
    this.#draw();
  }

  /** One measurement of the current configuration is done. */
  tick(): void {
    const b = this.#bar;
    if (!b) return;
    b.done = Math.min(b.total, b.done + 1);
    if (b.done === 1) b.firstDone = this.#now();
    this.#draw();
  }

  /** Removes the bar (the configuration finished or failed). */
  end(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    if (this.#bar && this.tty) this.#write(CLEAR_LINE);
    this.#bar = null;
  }

  /**
   * Seconds left for the current configuration, or null before its first measurement. After two or more, the mean
   * time of the measurements after the first (the first also paid for building the model) times those left.
   */
  eta(): number | null {
    const b = this.#bar;
    if (!b || b.done === 0) return null;
    const now = this.#now();
    const each = b.done >= 2 ? (now - b.firstDone!) / (b.done - 1) : now - b.start;
    return (each * (b.total - b.done)) / 1000;
  }

  /** The bar as drawn: `name [#####-----] done/total  elapsed m:ss  ETA m:ss`, fitted to the terminal. */
  barText(): string {
    const b = this.#bar;
    if (!b) return "";
    const eta = this.eta();
    const tail = ` ${b.done}/${b.total} measurements  ${clock((this.#now() - b.start) / 1000)} elapsed  ETA ${
      eta === null ? "-:--" : clock(eta)
    }`;
    const width = Math.max(10, Math.min(40, this.#columns() - b.name.length - tail.length - 4));
    const full = Math.round((width * b.done) / b.total);
    return `${b.name} [${"█".repeat(full)}${"░".repeat(width - full)}]${tail}`;
  }

  #draw(): void {
    if (this.tty && this.#bar) this.#write(`${CLEAR_LINE}${this.barText()}`);
  }
}
