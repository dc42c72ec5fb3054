/**
 * `deno task bench` end to end on whatever adapter the machine has (the CPU adapter in CI): a tiny run of all three
 * configurations with short budgets, in a fresh results folder; checks the results.json schema, the figures a reader
 * relies on, that graph.png is a PNG, that the log and summary show the stored figures, and that report.html draws in
 * Chromium; the first run also times both length sweeps with an f32 K/V cache and runs the peers with a fake Python.
 * Also: bad flags exit with 2 and one sentence, a second run never overwrites the first (and, without torch, skips
 * its peer in one line), and compare of the two runs prints its table.
 */

import { assertEquals, assertStringIncludes } from "@std/assert";
import { assertValidResults } from "../../bench/schema.ts";
import type { ConfigurationResult, ResultsDocument } from "../../bench/results_types.ts";
import { summaryText } from "../../bench/summary.ts";
import { formatFigure } from "../../bench/headline.ts";
import { DAWN_PACKAGE } from "../../kernels/runtime.ts";
import { assertReportShows, browserSkipReason } from "./browser.ts";
import { fakePython, NO_TORCH, TORCH_OK_HF_FAILS } from "./fake_python.ts";
import { bench, ROOT, runFolders, TINY_FLAGS } from "./run_bench.ts";

/** A tiny run (run_bench.ts), PoE also at spread 0 (identical heads). */
const FLAGS = [...TINY_FLAGS, "--poe-spread-sweep", "0"];

/** git HEAD of the project's checkout, or null when it has no .git of its own. */
async function projectHead(): Promise<string | null> {
  if (!(await Deno.stat(`${ROOT}/.git`).catch(() => null))) return null;
  const out = await new Deno.Command("git", { args: ["rev-parse", "HEAD"], cwd: ROOT, stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

/**
 * Provenance (issue 9): the command line, where each knob came from, the suite's own commit, the CPU, the backend
 * and driver; and bench.log, everything the run printed.
 */
async function assertProvenance(doc: ResultsDocument, runDir: string, args: string[]): Promise<void> {
  const p = doc.provenance!;
  assertEquals(p.command_line.slice(-args.length), args);
  assertEquals([p.knob_sources.size, p.knob_sources.seed], ["flag", "config file"]);
  assertEquals([p.allow_concurrent, p.process.hostname], [false, Deno.hostname()]);
  assertEquals(doc.environment.commit, Deno.env.get("HYDRA_BENCH_COMMIT") ?? await projectHead());
  if (doc.environment.commit !== null && !Deno.env.get("HYDRA_BENCH_COMMIT")) assertEquals(typeof p.dirty, "boolean");
  if (doc.environment.adapter.description.startsWith("llvmpipe")) {
    assertEquals(doc.environment.adapter.backend, "vulkan"); // lavapipe; it read "default"
  }
  if (Deno.build.os === "linux") assertEquals(typeof doc.environment.cpu?.model, "string");
  assertEquals(typeof doc.environment.adapter.driver, "string");
  // The runtime (the webgpu knob: deno, or HYDRA_WEBGPU's as run_bench.ts passes it on), per result and environment.
  const rt = Deno.env.get("HYDRA_WEBGPU") || "deno";
  const version = rt === "deno" ? `deno ${Deno.version.deno}` : DAWN_PACKAGE;
  assertEquals(doc.environment.runtimes?.map((r) => [r.runtime, r.version]), [[rt, version]]);
  for (const c of Object.values(doc.configurations)) assertEquals([c!.runtime, c!.runtime_version], [rt, version]);
  const log = await Deno.readTextFile(`${runDir}/bench.log`);
  for (const line of ["adapter: ", "run folder", "=== hydra_poe", "hydra_poe done", "wrote ", "done: "]) {
    assertStringIncludes(log, line);
  }
  assertStringIncludes(log, summaryText(doc)); // the summary printed through console
}

/** The first run's further knobs: both length sweeps, an f32 K/V cache, and both peers (Python faked). */
const SWEEP_FLAGS = [
  "--prompt-lengths",
  "4,16",
  "--decode-contexts",
  "12,100",
  "--kv-dtype",
  "f32",
  "--peers",
  "torch,hf",
];

/**
 * The first run's sweeps, kv_dtype and peers (issues 10 and 14): TTFT at 4, 9 (prompt_length, the `ttft` itself)
 * and 16 tokens and a decode step at KV lengths 12 and 100 for baseline and hydra_naive, none for PoE; the torch peer
 * stored with its log, the failing hf peer skipped in one line with its log kept.
 */
async function assertSweepsAndPeers(doc: ResultsDocument, runDir: string, stdout: string): Promise<void> {
  if (doc.config.kv_dtype !== "f32") throw new Error(`kv_dtype ${doc.config.kv_dtype}`);
  for (const name of ["baseline", "hydra_naive"] as const) {
    const c = doc.configurations[name]!;
    const lengths = c.ttft_by_length?.map((e) => e.prompt_length).join();
    const contexts = c.decode_contexts?.map((e) => e.context).join();
    if (lengths !== "4,9,16" || contexts !== "12,100") throw new Error(`${name}: ${lengths} / ${contexts}`);
    if (c.ttft_by_length![1].median_ms !== c.ttft.median_ms) throw new Error(`${name}: prompt_length's TTFT differs`);
  }
  const poe = doc.configurations.hydra_poe!;
  if (poe.ttft_by_length || poe.decode_contexts) throw new Error("hydra_poe has sweeps");
  const peers = doc.peers ?? [];
  if (peers.length !== 1 || peers[0].name !== "torch" || peers[0].decode_ms_per_token !== 9.5) {
    throw new Error(`peers ${JSON.stringify(peers)}`);
  }
  if (!(await Deno.readTextFile(`${runDir}/peer_torch.log`)).includes("d2d copy 3000 GB/s")) {
    throw new Error("peer_torch.log lacks the peer's output");
  }
  if (!(await Deno.readTextFile(`${runDir}/peer_hf.log`)).includes("CUDA error")) throw new Error("no peer_hf.log");
  if (!stdout.includes("peer hf skipped: exit 3 (RuntimeError: CUDA error: no kernel image); see peer_hf.log")) {
    throw new Error(`the log does not say why hf was skipped:\n${stdout}`);
  }
  if (!stdout.includes("peer torch: decode 9.500 ms/token")) throw new Error("the log lacks the torch peer's figure");
}

/**
 * The run's log and end-of-run summary show the numbers results.json stores (issue 9): TTFT and the decode
 * headline of each model, PoE per gamma, and the summary table exactly as summary.ts renders the stored document.
 * Off a terminal the log has no progress bar: plain lines, no escape codes.
 */
function assertLogShowsStoredFigures(stdout: string, doc: ResultsDocument): void {
  const expect = (line: string) => {
    if (!stdout.includes(line)) throw new Error(`the log lacks "${line}":\n${stdout}`);
  };
  for (const name of ["baseline", "hydra_naive"] as const) {
    const c = doc.configurations[name]!;
    expect(`[${name}] ttft ${c.ttft.median_ms.toFixed(3)} ms`);
    const d = c.decode!;
    expect(
      `[${name}] decode median ${formatFigure("decode_ms_per_token", d.median_ms!)} ms/token = ${
        formatFigure("decode_tokens_per_s", d.tokens_per_s!)
      } tok/s; roofline ${c.roofline_tps.toFixed(1)} tok/s (${
        formatFigure("roofline_share", d.tokens_per_s! / c.roofline_tps)
      })`,
    );
  }
  for (const g of doc.configurations.hydra_poe!.poe!) {
    expect(`[hydra_poe] gamma ${g.gamma}: ${g.median_ms.toFixed(1)} ms/call (wall)`);
    expect(`effective ${g.effective_tps.toFixed(1)} tok/s, user-visible ${g.user_visible_tps.toFixed(1)} tok/s`);
    expect(`[hydra_poe] gamma ${g.gamma} model: round ${g.cost_model!.round_ms.toFixed(2)} ms`);
    expect(`ceiling ${g.cost_model!.ceiling_tps.toFixed(1)} tok/s at acceptance 1`);
  }
  for (const g of doc.configurations.hydra_poe!.poe_spreads![0].gammas) {
    expect(`[hydra_poe] spread 0, gamma ${g.gamma}:`);
  }
  expect(summaryText(doc));
  if (stdout.includes("\x1b")) throw new Error("escape codes in a log that is not a terminal");
}

/**
 * hydra_poe's spread sweep and cost model (issue 11): spread 0 (identical heads) accepts every draft at temperature 0
 * and beta 1; every gamma of every spread has its no-op round counts and a cost model whose measured / predicted
 * ratio is finite and roughly 1 (the CPU adapter's CPU encodes and runs the kernels at once: no tight bound here).
 */
function assertPoeModel(poe: ConfigurationResult): void {
  const spreads = poe.poe_spreads ?? [];
  if (spreads.map((s) => s.spread).join() !== "0") throw new Error(`poe_spreads: ${spreads.map((s) => s.spread)}`);
  for (const g of spreads[0].gammas) {
    // (acceptance_per_position may be below 1 at the last draft positions: the call's last round stops early)
    if (g.resample_rate !== 0 || g.acceptance_rate !== 1 || g.acceptance_per_position[0] !== 1) {
      throw new Error(
        `spread 0, gamma ${g.gamma}: acceptance ${g.acceptance_per_position}, resampled ${g.resample_rate}`,
      );
    }
  }
  for (const g of [...poe.poe!, ...spreads[0].gammas]) {
    const m = g.cost_model, ratio = m?.measured_over_predicted ?? NaN;
    if (!(ratio > 0.2 && ratio < 5)) throw new Error(`gamma ${g.gamma}: measured / predicted ${ratio}`);
    if (!(g.noop_rounds_per_call! >= 0 && g.noop_rounds_cold_call! >= 0 && g.dispatches_per_round! > 10)) {
      throw new Error(`gamma ${g.gamma}: no-op counts ${JSON.stringify(g)}`);
    }
  }
}

async function deno(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test({
  name: "deno task bench writes a complete, valid run folder with results.json, graph.png and report.html (tiny, all " +
    "three configs); compare of two runs",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "bench_e2e" });
    try {
      const firstArgs = [...FLAGS, ...SWEEP_FLAGS, "--results-dir", dir];
      const r = await bench(firstArgs, {
        HYDRA_PYTHON: await fakePython(TORCH_OK_HF_FAILS),
      });
      if (r.code !== 0) throw new Error(`bench exited ${r.code}: ${r.stderr.slice(-2000)}`);
      const runs = [...Deno.readDirSync(dir)].map((e) => e.name);
      if (runs.length !== 1 || !/^\d{4}-\d{2}-\d{2}_run01$/.test(runs[0])) throw new Error(`run folders: ${runs}`);
      const doc = JSON.parse(await Deno.readTextFile(`${dir}/${runs[0]}/results.json`));
      assertValidResults(doc);
      if (doc.status !== "complete") throw new Error(`status ${doc.status}`);
      for (const name of ["baseline", "hydra_naive", "hydra_poe"] as const) {
        const c = doc.configurations[name];
        if (!c) throw new Error(`${name} missing`);
        if (!(c.ttft.median_ms > 0 && c.weight_bytes_per_step > 0 && c.roofline_tps > 0)) {
          throw new Error(`${name}: ttft ${c.ttft.median_ms}, bytes ${c.weight_bytes_per_step}`);
        }
      }
      const base = doc.configurations.baseline!, naive = doc.configurations.hydra_naive!;
      const positions = base.decode!.positions.map((p) => p.position).join();
      if (positions !== "0,4") throw new Error(`decode positions ${positions}`);
      // The naive Hydra streams its trunk and all 3 heads: more bytes per step than the plain model.
      if (!(naive.weight_bytes_per_step > base.weight_bytes_per_step)) {
        throw new Error("naive reads no more than baseline");
      }
      const poe = doc.configurations.hydra_poe!;
      if (poe.weights !== "synthetic") throw new Error(`PoE weights labelled ${JSON.stringify(poe.weights)}`);
      if (poe.poe!.map((g) => g.gamma).join() !== "1,2") throw new Error("gammas are not 1,2");
      for (const g of poe.poe!) {
        if (g.avg_output_tokens_per_call !== 8) {
          throw new Error(`gamma ${g.gamma}: ${g.avg_output_tokens_per_call} tokens`);
        }
        if (g.sync_points_per_call > 2) throw new Error(`gamma ${g.gamma}: ${g.sync_points_per_call} syncs per call`);
      }
      assertPoeModel(poe);
      const png = await Deno.readFile(`${dir}/${runs[0]}/graph.png`);
      if (png.length < 1000 || png[1] !== 0x50 || png[2] !== 0x4e || png[3] !== 0x47) {
        throw new Error("graph.png is not a PNG");
      }
      assertLogShowsStoredFigures(r.stdout, doc);
      await assertSweepsAndPeers(doc, `${dir}/${runs[0]}`, r.stdout);
      await assertProvenance(doc, `${dir}/${runs[0]}`, firstArgs);
      // report.html, opened in Chromium: no console errors, every chart drawn, the stored figures in its table.
      const skip = browserSkipReason();
      if (skip) console.log(`report.html of the tiny run not opened in a browser: ${skip}`);
      else await assertReportShows(`${dir}/${runs[0]}/report.html`, doc);
      // A second run gets the next folder; the first is untouched.
      const before = await Deno.readTextFile(`${dir}/${runs[0]}/results.json`);
      // Without torch the peers are skipped in one line, and the run completes; the default knobs add nothing.
      const again = await bench([...FLAGS, "--configs", "baseline", "--peers", "hf", "--results-dir", dir], {
        HYDRA_PYTHON: await fakePython(NO_TORCH),
      });
      if (again.code !== 0) throw new Error(`second run exited ${again.code}`);
      const skipped = again.stdout.split("\n").filter((l) => l.includes("peers hf not run:"));
      if (skipped.length !== 1 || !skipped[0].includes("cannot import torch")) throw new Error(again.stdout);
      const after = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
      if (after.length !== 2 || !after[1].endsWith("_run02")) {
        throw new Error(`run folders after a second run: ${after}`);
      }
      if ((await Deno.readTextFile(`${dir}/${runs[0]}/results.json`)) !== before) throw new Error("run01 was modified");
      const second = JSON.parse(await Deno.readTextFile(`${dir}/${after[1]}/results.json`)) as ResultsDocument;
      assertValidResults(second);
      const b = second.configurations.baseline!;
      if (second.peers || b.ttft_by_length || b.decode_contexts || second.config.kv_dtype !== "bf16") {
        throw new Error("a run without the sweep and peer knobs has sweeps or peers, or no bf16 cache");
      }
      // deno task compare of the two runs: a table with the significance column, and a warning (configs differ).
      const cmp = await deno(["run", "-A", "bench/compare_main.ts", `${dir}/${after[0]}`, `${dir}/${after[1]}`]);
      if (
        cmp.code !== 0 || !cmp.stdout.includes("| baseline · decode (tok/s)") ||
        !cmp.stdout.includes("significant? (B vs A)") || !/different configs: .*[ ;]configs \(A/.test(cmp.stdout)
      ) {
        throw new Error(`compare exited ${cmp.code}: ${cmp.stdout}${cmp.stderr}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "deno task bench: a bad input exits with 2 and one sentence before any configuration runs",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "bench_bad" });
    try {
      const cases: [string[], string][] = [
        [["--bogus", "1"], "Unknown flag --bogus"],
        [["--poe-beta", "1.5"], "--poe-beta must be"],
        [["--size", "13b"], "--size must be"],
        [["--rep-ms", "-3"], "needs a value"],
        // These ran baseline and hydra_naive first, then crashed in the kernels (which stop at 16 rows).
        [["--poe-gamma", "20"], "--poe-gamma must be a whole number from 1 to 16"],
        [["--poe-gamma-sweep", "1,2,4,8,16,24"], "from 1 to 16"],
      ];
      const info = (await navigator.gpu.requestAdapter({ powerPreference: "high-performance" }))?.info;
      if (info && (info.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader/i.test(info.description))) {
        // On a CPU adapter (smoke-test defaults) these passed validation against the defaults they then lost; on a
        // GPU they are valid (and would start a real run).
        cases.push(
          [["--step-interval", "64"], "--step-interval is 64, above gen_length 32 (the software adapter's"],
          [["--heads-depth", "10"], 'size "tiny" (the software adapter\'s smoke-test default) has 4 layers'],
        );
      }
      for (const [args, message] of cases) {
        const r = await bench([...args, "--results-dir", dir]);
        const msg = r.stderr.trim();
        if (r.code !== 2 || !msg.startsWith("error: ") || msg.split("\n").length !== 1 || msg.includes("    at ")) {
          throw new Error(`${args.join(" ")}: exit ${r.code}, stderr ${JSON.stringify(r.stderr.slice(0, 400))}`);
        }
        assertStringIncludes(msg, message);
        assertEquals(runFolders(dir), [], `${args.join(" ")} made a run folder`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("deno task bench without any WebGPU adapter says what to install and exits with 2", async () => {
  // Linux has no DirectX 12: forcing that backend leaves wgpu with no adapter, as on a machine without any driver.
  if (Deno.build.os !== "linux") return;
  const r = await bench(["--size", "tiny"], { DENO_WEBGPU_BACKEND: "dx12" });
  if (r.code !== 2 || !/No WebGPU adapter was found: install .*mesa-vulkan-drivers/.test(r.stderr)) {
    throw new Error(`exit ${r.code}, stderr ${JSON.stringify(r.stderr.slice(0, 400))}`);
  }
});
