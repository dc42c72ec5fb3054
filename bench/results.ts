/**
 * Run folders and results.json. A run never reuses or overwrites a folder (`createRunDir` claims a fresh one with an
 * exclusive mkdir), and results.json is rewritten atomically (temp file + rename) after each configuration, so a crash
 * keeps every configuration finished before it, and a reader never sees a half-written file.
 * @module
 */

import { join } from "@std/path";
import { UserError } from "../common/errors.ts";
import type { BenchConfig, ConfigurationName } from "./config.ts";
import { resultKey } from "./headline.ts";
import type { WebgpuRuntime } from "../kernels/runtime.ts";
import {
  type ConfigurationResult,
  type Environment,
  type PeerResult,
  type Provenance,
  RESULTS_SCHEMA_VERSION,
  type ResultsDocument,
} from "./results_types.ts";

/** `date` as YYYY-MM-DD in the local time zone (the calendar day of whoever started the run). */
export function formatRunDate(date: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${p(date.getFullYear(), 4)}-${p(date.getMonth() + 1)}-${p(date.getDate())}`;
}

/** The folder name of run `n` on `day` (YYYY-MM-DD): `<day>_run<NN>`, NN at least two digits. */
export function runDirName(day: string, n: number): string {
  return `${day}_run${String(n).padStart(2, "0")}`;
}

/**
 * Claims a new run folder `root/<YYYY-MM-DD>_run<NN>/` and returns its path. NN starts after the highest existing
 * run of that day; the folder is made with a non-recursive mkdir, which fails when it exists, so when two runs start
 * at once the loser moves on to NN + 1: they never share a folder and never overwrite an earlier run. `root` is made
 * when missing. Throws UserError when `root` is not a writable directory.
 */
export async function createRunDir(root: string, date: Date = new Date()): Promise<string> {
  const day = formatRunDate(date);
  try {
    await Deno.mkdir(root, { recursive: true });
  } catch (e) {
    throw new UserError(
      `The results folder ${root} could not be created (${
        (e as Error).message
      }); set results_dir to a writable folder.`,
    );
  }
  const pattern = new RegExp(`^${day}_run(\\d+)$`);
  let n = 1;
  try {
    for await (const entry of Deno.readDir(root)) {
      const m = pattern.exec(entry.name);
      if (m) n = Math.max(n, Number(m[1]) + 1);
    }
  } catch (e) {
    throw new UserError(
      `The results folder ${root} could not be listed (${(e as Error).message}); set results_dir to a readable folder.`,
    );
  }
  for (;; n++) {
    const dir = join(root, runDirName(day, n));
    try {
      await Deno.mkdir(dir);
      return dir;
    } catch (e) {
      if (e instanceof Deno.errors.AlreadyExists) continue;
      throw new UserError(
        `The run folder ${dir} could not be created (${(e as Error).message}); set results_dir to a writable folder.`,
      );
    }
  }
}

/**
 * Writes `value` as JSON to `path` atomically: into a uniquely named temp file in the same folder (so the rename
 * stays on one file system), then renamed over `path`. A reader sees the old file or the new one, never a torn one.
 */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await Deno.writeTextFile(tmp, JSON.stringify(value, null, 2) + "\n");
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new UserError(`Could not write ${path} (${(e as Error).message}); check the disk space and permissions.`);
  }
}

/** File name of the results inside a run folder. */
export const RESULTS_FILE = "results.json";

/**
 * Keeps a run's ResultsDocument and rewrites `<dir>/results.json` after every change. Writes are serialised, so
 * concurrent calls cannot reorder them; each write holds every configuration recorded before it.
 */
export class ResultsWriter {
  /** Path of results.json. */
  readonly path: string;
  readonly #doc: ResultsDocument;
  #queue: Promise<void> = Promise.resolve();

  /** A writer for run folder `dir`; nothing is written until `start` (or another method) is called. */
  constructor(readonly dir: string, config: BenchConfig, environment: Environment, provenance?: Provenance) {
    this.path = join(dir, RESULTS_FILE);
    this.#doc = {
      schema_version: RESULTS_SCHEMA_VERSION,
      run: dir.split(/[\\/]/).filter((s) => s !== "").pop() ?? dir,
      status: "running",
      config: structuredClone(config),
      environment: structuredClone(environment),
      configurations: {},
      failure: null,
      ...(provenance ? { provenance: structuredClone(provenance) } : {}),
    };
  }

  /** A deep copy of the document as last written (or about to be). */
  get document(): ResultsDocument {
    return structuredClone(this.#doc);
  }

  /** Writes the document with status "running" and no configurations yet. */
  start(): Promise<void> {
    return this.#write();
  }

  /**
   * Adds (or replaces) one configuration's results on its runtime (under headline.ts resultKey) and rewrites
   * results.json.
   */
  record(result: ConfigurationResult): Promise<void> {
    const key = resultKey(result.name, result.runtime ?? "deno", this.#doc.config.webgpu);
    this.#doc.configurations[key] = structuredClone(result);
    return this.#write();
  }

  /** Replaces the environment block (e.g. with a roofline added) and rewrites results.json. */
  setEnvironment(environment: Environment): Promise<void> {
    this.#doc.environment = structuredClone(environment);
    return this.#write();
  }

  /** Sets the peers measured after the configurations (results.json's `peers`) and rewrites results.json. */
  setPeers(peers: PeerResult[]): Promise<void> {
    this.#doc.peers = structuredClone(peers);
    return this.#write();
  }

  /** Marks the run complete and rewrites results.json. */
  complete(): Promise<void> {
    this.#doc.status = "complete";
    return this.#write();
  }

  /**
   * Marks the run failed in `configuration` on `runtime` (null: outside any configuration) with the error's message,
   * keeping what was recorded, and rewrites results.json.
   */
  fail(configuration: ConfigurationName | null, error: unknown, runtime: WebgpuRuntime | null = null): Promise<void> {
    this.#doc.status = "failed";
    const message = error instanceof Error ? error.message : String(error);
    this.#doc.failure = { configuration, ...(configuration && runtime ? { runtime } : {}), message };
    return this.#write();
  }

  /**
   * Marks the run interrupted by `signal` in `configuration` (null: between configurations), keeping what was
   * recorded, and rewrites results.json.
   */
  interrupt(
    configuration: ConfigurationName | null,
    signal: string,
    runtime: WebgpuRuntime | null = null,
  ): Promise<void> {
    this.#doc.status = "interrupted";
    this.#doc.failure = {
      configuration,
      ...(configuration && runtime ? { runtime } : {}),
      message: `interrupted by ${signal}`,
    };
    return this.#write();
  }

  #write(): Promise<void> {
    const snapshot = structuredClone(this.#doc);
    const next = this.#queue.then(() => writeJsonAtomic(this.path, snapshot));
    this.#queue = next.catch(() => {});
    return next;
  }
}
