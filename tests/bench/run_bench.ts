/**
 * Runs `deno task bench` (bench/main.ts) as a child process for the end-to-end tests, with its own device-lock folder
 * unless the caller's `env` names one, so that the tests never wait for a benchmark outside them.
 */

import { fromFileUrl } from "@std/path";

/** The project root. */
export const ROOT = fromFileUrl(new URL("../../", import.meta.url));

/** Flags of a tiny run of all three configurations with short budgets (about 30 s on the CPU adapter). */
export const TINY_FLAGS = [
  "--size",
  "tiny",
  "--prompt-length",
  "9",
  "--gen-length",
  "8",
  "--step-interval",
  "4",
  "--n-heads",
  "3",
  "--heads-depth",
  "2",
  "--poe-gamma",
  "2",
  "--poe-gamma-sweep",
  "1",
  "--poe-max-new-tokens",
  "8",
  "--rep-ms",
  "20",
  "--warmup-ms",
  "5",
];

/** A lock folder of the test process's own (made once). */
const LOCKS = Deno.makeTempDirSync({ prefix: "bench_locks_" });

/** The command of a bench child with `args` and `env` (HYDRA_BENCH_LOCK_DIR defaults to the tests' own folder). */
export function benchCommand(
  args: string[],
  env: Record<string, string> = {},
  io: "piped" | "null" = "piped",
): Deno.Command {
  // HYDRA_WEBGPU (the runtime the tests run on) is passed on as the knob, which the bench requires to include it.
  const runtime = Deno.env.get("HYDRA_WEBGPU");
  const webgpu = runtime && !args.some((a) => a.startsWith("--webgpu")) ? ["--webgpu", runtime] : [];
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "bench/main.ts", ...webgpu, ...args],
    cwd: ROOT,
    env: { HYDRA_BENCH_LOCK_DIR: LOCKS, ...env },
    stdin: "null",
    stdout: io,
    stderr: io,
  });
}

/** Runs the bench with `args` to the end; its exit code and output. */
export async function bench(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await benchCommand(args, env).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** The lock folder bench children use unless told otherwise. */
export const TEST_LOCK_DIR = LOCKS;

/** The run folders under `dir`, sorted. */
export function runFolders(dir: string): string[] {
  return [...Deno.readDirSync(dir)].filter((e) => e.isDirectory).map((e) => e.name).sort();
}
