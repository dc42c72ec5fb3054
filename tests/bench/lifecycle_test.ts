import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { thisProcess } from "../../bench/process.ts";
import { RESULTS_FILE } from "../../bench/results.ts";
import type { ResultsDocument } from "../../bench/results_types.ts";
import { headline, listRuns, prunable, shownStatus } from "../../bench/runs.ts";
import { assertValidResults } from "../../bench/schema.ts";
import { Child } from "./child.ts";
import { ROOT, runFolders, TINY_FLAGS } from "./run_bench.ts";
import { syntheticResults } from "./synthetic.ts";

Deno.test({
  name: "SIGINT ends a run as interrupted, keeping the configurations that finished; bench.log has the whole run",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const results = await Deno.makeTempDir({ prefix: "bench_sigint_" });
    try {
      const child = new Child([...TINY_FLAGS, "--configs", "baseline,hydra_naive", "--results-dir", results]);
      await child.until((out) => out.includes("baseline done"), 180_000);
      const dir = join(results, runFolders(results)[0]);
      assertEquals(await child.stop("SIGINT"), 130);
      const doc = JSON.parse(await Deno.readTextFile(join(dir, RESULTS_FILE)));
      assertValidResults(doc);
      assertEquals(doc.status, "interrupted");
      const runtime = Deno.env.get("HYDRA_WEBGPU") || "deno"; // run_bench.ts passes it on as --webgpu
      assertEquals(doc.failure, { configuration: "hydra_naive", runtime, message: "interrupted by SIGINT" });
      assert(doc.configurations.baseline?.decode?.positions.length, "baseline was not kept");
      assertEquals(doc.configurations.hydra_naive, undefined);
      const log = await Deno.readTextFile(join(dir, "bench.log"));
      for (
        const line of ["adapter: llvmpipe", "run folder", "=== baseline", "baseline done", "SIGINT: run interrupted"]
      ) {
        assertStringIncludes(log, line);
      }
      assert(!log.includes("\x1b["), "bench.log holds colour codes");
      assertEquals((await listRuns(results))[0].status, "interrupted");
    } finally {
      await Deno.remove(results, { recursive: true });
    }
  },
});

/** Writes a run folder `name` under `root` holding `doc` with the given status (and process, for "running"). */
async function runFolder(root: string, name: string, status: ResultsDocument["status"], process = thisProcess()) {
  const doc: ResultsDocument = {
    ...syntheticResults(),
    run: name,
    status,
    failure: status === "failed" ? { configuration: "hydra_poe", message: "out of memory" } : null,
  };
  if (status !== "complete") delete doc.configurations.hydra_poe;
  doc.provenance = {
    command_line: ["deno", "bench/main.ts"],
    config_file: "config.json",
    knob_sources: {} as never,
    dirty: false,
    allow_concurrent: false,
    process,
  };
  await Deno.mkdir(join(root, name));
  await Deno.writeTextFile(join(root, name, RESULTS_FILE), JSON.stringify(doc));
}

/** Runs `deno task runs` with `args`; its exit code and output. */
async function runsTask(args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "bench/runs.ts", ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

Deno.test("deno task runs: a running run whose process is gone shows as interrupted; --prune --yes removes it", async () => {
  const root = await Deno.makeTempDir({ prefix: "bench_runs_" });
  try {
    const gone = new Deno.Command(Deno.execPath(), { args: ["eval", ""], stdout: "null", stderr: "null" }).spawn();
    await gone.status;
    await runFolder(root, "2026-11-30_run01", "complete");
    await runFolder(root, "2026-11-30_run02", "failed");
    await runFolder(root, "2026-11-30_run03", "running", { ...thisProcess(), pid: gone.pid }); // killed -9
    await runFolder(root, "2026-11-30_run04", "running"); // this live process
    await runFolder(root, "2026-11-30_run05", "running", { ...thisProcess(), hostname: "elsewhere" });
    await Deno.mkdir(join(root, "2026-11-30_run06")); // killed before results.json
    await Deno.mkdir(join(root, "notes"));
    const entries = await listRuns(root);
    assertEquals(entries.map((e) => e.status), [
      "complete",
      "failed",
      "interrupted",
      "running",
      "running",
      "no results.json",
    ]);
    assertStringIncludes(entries[2].note ?? "", `process ${gone.pid}`);
    assertEquals(prunable(entries).map((e) => e.name), ["2026-11-30_run02", "2026-11-30_run03"]);
    assertStringIncludes(headline(entries[0].doc!), "baseline ");
    assertStringIncludes(headline(entries[0].doc!), "(gamma 4, effective) tok/s");
    // The listing: status, model size, device, disk size, headline numbers.
    const listed = await runsTask(["--results-dir", root]);
    assertEquals(listed.code, 0, listed.out);
    const row = listed.out.split("\n").find((l) => l.includes("2026-11-30_run03")) ?? "";
    for (const part of ["interrupted", "7b", "NVIDIA H100 80GB HBM3", "kB"]) assertStringIncludes(row, part);
    // Without a terminal to ask on, --prune needs --yes; nothing is removed.
    const refused = await runsTask(["--results-dir", root, "--prune"]);
    assertEquals(refused.code, 2, refused.out);
    assertStringIncludes(refused.out, "pass --yes to confirm");
    assertEquals(runFolders(root).length, 7);
    const pruned = await runsTask(["--results-dir", root, "--prune", "--yes"]);
    assertEquals(pruned.code, 0, pruned.out);
    assertStringIncludes(pruned.out, "Removed 2 failed or interrupted run folder(s)");
    assertEquals(runFolders(root), [
      "2026-11-30_run01",
      "2026-11-30_run04",
      "2026-11-30_run05",
      "2026-11-30_run06",
      "notes",
    ]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("shownStatus: only a running run whose recorded process is gone reads as interrupted", async () => {
  const doc = syntheticResults();
  assertEquals((await shownStatus(doc)).status, "complete");
  const running: ResultsDocument = { ...doc, status: "running" };
  assertEquals((await shownStatus(running)).status, "running"); // no process recorded (an older run)
  running.provenance = {
    command_line: [],
    config_file: "config.json",
    knob_sources: {} as never,
    dirty: null,
    allow_concurrent: false,
    process: thisProcess(),
  };
  assertEquals((await shownStatus(running, () => Promise.resolve("gone"))).status, "interrupted");
  assertEquals((await shownStatus(running, () => Promise.resolve("unknown"))).status, "running");
  assertEquals((await shownStatus(running)).status, "running");
});
