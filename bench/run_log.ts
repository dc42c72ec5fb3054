/**
 * bench.log: everything a run prints is also written to `<run folder>/bench.log`, as plain lines: the timestamped
 * lines of the terminal output (RunProgress writes them straight to stdout; `tee` records them, and drops what a
 * terminal would overwrite: the progress bar redrawn after a carriage return, colour codes) and whatever goes through
 * `console` (the summary, an error). Lines printed before the run folder exists (adapter, config checks, a wait for
 * the device lock) are kept and written first when the folder is attached.
 * @module
 */

import { join } from "@std/path";

/** File name of the log inside a run folder. */
export const LOG_FILE = "bench.log";

// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

const METHODS = ["log", "info", "warn", "error"] as const;

/** Records a run's output for bench.log. */
export class RunLog {
  #partial = "";
  #pending: string[] = [];
  #path: string | null = null;
  #restore: (() => void) | null = null;

  /** Also records what `console.log`, `info`, `warn` and `error` print (until `restore`). */
  captureConsole(): void {
    const original = Object.fromEntries(METHODS.map((m) => [m, console[m]])) as Record<
      typeof METHODS[number],
      (...args: unknown[]) => void
    >;
    for (const m of METHODS) {
      console[m] = (...args: unknown[]) => {
        original[m](...args);
        this.record(args.map((a) => typeof a === "string" ? a : Deno.inspect(a)).join(" ") + "\n");
      };
    }
    this.#restore = () => METHODS.forEach((m) => console[m] = original[m]);
  }

  /** Puts the console's own methods back. */
  restore(): void {
    this.#restore?.();
    this.#restore = null;
  }

  /** `write`, also recording the text (for output written straight to stdout, e.g. RunProgress's). */
  tee(write: (text: string) => void): (text: string) => void {
    return (text) => {
      write(text);
      this.record(text);
    };
  }

  /** Records terminal text: each completed line as a terminal shows it (after its last carriage return). */
  record(text: string): void {
    const lines = (this.#partial + text).split("\n");
    this.#partial = lines.pop()!;
    for (const line of lines) this.#add(line.slice(line.lastIndexOf("\r") + 1).replace(ANSI, "") + "\n");
  }

  /** The log file once a folder is attached, else null. */
  get path(): string | null {
    return this.#path;
  }

  /** Writes what was printed so far to `dir`/bench.log and appends every later line there. */
  attach(dir: string): string {
    const path = join(dir, LOG_FILE);
    Deno.writeTextFileSync(path, this.#pending.join(""));
    this.#pending = [];
    this.#path = path;
    return path;
  }

  #add(line: string): void {
    if (this.#path === null) {
      this.#pending.push(line);
      return;
    }
    try {
      Deno.writeTextFileSync(this.#path, line, { append: true });
    } catch {
      // The folder went away (e.g. pruned while the run was interrupted): the terminal still has the line.
    }
  }
}
