/**
 * A bench child process whose output the test reads while it runs (to act at a given point of a run: signal it,
 * release a lock), for the lifecycle and lock tests.
 */

import { benchCommand } from "./run_bench.ts";

/** A running `deno task bench`; its stdout and stderr collect in `output`. */
export class Child {
  output = "";
  readonly #process: Deno.ChildProcess;
  readonly #done: Promise<void>;

  constructor(args: string[], env: Record<string, string> = {}) {
    this.#process = benchCommand(args, env).spawn();
    const read = async (stream: ReadableStream<Uint8Array>) => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) this.output += decoder.decode(chunk, { stream: true });
    };
    this.#done = Promise.all([read(this.#process.stdout), read(this.#process.stderr)]).then(() => {});
  }

  /** The child's pid. */
  get pid(): number {
    return this.#process.pid;
  }

  /** Waits until `seen(output)` holds; throws with the output so far after `ms` or when the child exits first. */
  async until(seen: (output: string) => boolean, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    let exited = false;
    this.#process.status.then(() => exited = true);
    while (!seen(this.output)) {
      if (exited || Date.now() > deadline) {
        await this.#done;
        if (seen(this.output)) return;
        throw new Error(`${exited ? "the bench exited" : "timed out"} before the expected output:\n${this.output}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Sends `signal` and returns the exit code. */
  async stop(signal: Deno.Signal): Promise<number> {
    this.#process.kill(signal);
    return await this.wait();
  }

  /** Waits for the child to exit; its exit code. */
  async wait(): Promise<number> {
    const status = await this.#process.status;
    await this.#done;
    return status.code;
  }
}

/** Waits until `path` exists and parses as JSON (a results.json written at least once); throws after `ms`. */
export async function untilFile(path: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      JSON.parse(await Deno.readTextFile(path));
      return;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`${path} did not appear: ${(e as Error).message}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
