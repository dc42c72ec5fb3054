/**
 * The `webgpu` knob (issue 15): the runtimes a run times every configuration on, its results keyed by (configuration,
 * runtime) in results.json, the validator, the headline keys, the summary and the panels showing the runtimes side by
 * side (and a one-runtime run exactly as before), and a Dawn the machine cannot run stopping the bench with one
 * sentence and exit 2 before anything is timed.
 */

import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { DEFAULT_CONFIG, helpText, loadConfig, validateBenchConfig } from "../../bench/config.ts";
import { chartPanels, runHeader } from "../../bench/charts.ts";
import { renderGraph } from "../../bench/graph.ts";
import { compareRuns } from "../../bench/compare.ts";
import { configurationsOf, headlines, resultKey } from "../../bench/headline.ts";
import { ResultsWriter } from "../../bench/results.ts";
import type { ResultsDocument } from "../../bench/results_types.ts";
import { validateResults } from "../../bench/schema.ts";
import { runSummary, summaryText } from "../../bench/summary.ts";
import { UserError } from "../../common/errors.ts";
import { Gpu, runtimeFromEnv, runtimeFromFlag } from "../../kernels/runtime.ts";
import { bench } from "./run_bench.ts";
import { assertProblem, type Json, problemsAfter } from "./problems.ts";

/** problemsAfter on the two-runtime document. */
const problems2 = (edit: (doc: Json) => void, make: () => unknown = syntheticTwoRuntimes) => problemsAfter(edit, make);
import { syntheticResults, syntheticTwoRuntimes } from "./synthetic.ts";

Deno.test("webgpu knob: deno by default, a comma list from the flag or config file, checked, in --help", async () => {
  assertEquals(DEFAULT_CONFIG.webgpu, ["deno"]);
  const dir = await Deno.makeTempDir({ prefix: "bench_webgpu_" });
  const path = `${dir}/config.json`;
  await Deno.writeTextFile(path, JSON.stringify({ webgpu: ["dawn"] }));
  assertEquals((await loadConfig(path)).webgpu, ["dawn"]);
  assertEquals((await loadConfig(path, ["--webgpu", "deno,dawn"])).webgpu, ["deno", "dawn"]);
  assertEquals((await loadConfig(path, ["--webgpu=dawn,deno"])).webgpu, ["dawn", "deno"]); // the order given
  for (const [bad, part] of [["wgpu", "deno, dawn"], ["deno,deno", "without repeats"], ["", "needs a value"]]) {
    const e = await loadConfig(path, ["--webgpu", bad, "--seed", "1"]).catch((e) => e);
    assert(e instanceof UserError, `--webgpu ${bad}: ${e}`);
    assertStringIncludes(e.message, "--webgpu");
    assertStringIncludes(e.message, part);
  }
  const e = await loadConfig(path, ["--webgpuu", "dawn"]).catch((e) => e);
  assertStringIncludes(e.message, "did you mean --webgpu?");
  assertStringIncludes(helpText(), "--webgpu <name,...>");
  // A results.json config written before the knob ran on Deno's runtime.
  const { webgpu: _, ...old } = structuredClone(DEFAULT_CONFIG);
  assertEquals(validateBenchConfig(old, "results.json config").webgpu, ["deno"]);
});

Deno.test("HYDRA_WEBGPU and a tool's --webgpu name a runtime or fail with one sentence", () => {
  const before = Deno.env.get("HYDRA_WEBGPU");
  try {
    Deno.env.set("HYDRA_WEBGPU", "foo");
    assertThrows(() => runtimeFromEnv(), UserError, "HYDRA_WEBGPU=foo is not a WebGPU runtime: set it to deno or dawn");
    assertEquals(runtimeFromFlag("dawn"), "dawn"); // the flag wins over the variable
    Deno.env.set("HYDRA_WEBGPU", "dawn");
    assertEquals([runtimeFromEnv(), runtimeFromFlag(undefined)], ["dawn", "dawn"]);
    Deno.env.delete("HYDRA_WEBGPU");
    assertEquals(runtimeFromFlag(undefined), "deno");
    assertThrows(() => runtimeFromFlag("vulkan"), UserError, "--webgpu vulkan is not a WebGPU runtime");
  } finally {
    if (before === undefined) Deno.env.delete("HYDRA_WEBGPU");
    else Deno.env.set("HYDRA_WEBGPU", before);
  }
});

Deno.test("a two-runtime run validates; its keys, runtime fields and environment.runtimes are checked", () => {
  const doc = syntheticTwoRuntimes();
  assertEquals(validateResults(doc), []);
  assertEquals(Object.keys(doc.configurations).length, 6);
  assertEquals(validateResults(syntheticTwoRuntimes(["hydra_poe"])), []);
  // A plain name is ambiguous with two runtimes; a key must name one of config.webgpu.
  assertProblem(problems2((d) => d.configurations.baseline = d.configurations["baseline@deno"]), "baseline", "@");
  assertProblem(
    problems2((d) => delete d.configurations["hydra_naive@dawn"]),
    "hydra_naive@dawn",
    "missing in a complete run",
  );
  assertProblem(problems2((d) => d.configurations["baseline@dawn"].runtime = "deno"), "baseline@dawn.runtime");
  assertProblem(problems2((d) => delete d.configurations["baseline@dawn"].runtime_version), "baseline@dawn");
  assertProblem(problems2((d) => d.environment.runtimes.pop()), "environment.runtimes", "config.webgpu");
  assertProblem(problems2((d) => d.environment.runtimes[1].adapter.vendor = 1), "runtimes[1].adapter.vendor");
  assertProblem(problems2((d) => d.environment.roofline.baseline = {}), "environment.roofline.baseline");
  assertProblem(problems2((d) => d.config.webgpu = ["deno"]), "configurations.baseline@deno", "unknown");
  assertEquals(
    problems2((d) => {
      delete d.configurations["hydra_poe@dawn"];
      d.status = "failed";
      d.failure = { configuration: "hydra_poe", runtime: "dawn", message: "out of memory" };
    }),
    [],
  );
  assertProblem(
    problems2((d) => {
      d.status = "failed";
      d.failure = { configuration: "hydra_poe", runtime: "metal", message: "x" };
    }),
    "failure.runtime",
  );
  // One runtime: results stay under their names (as before the knob), with the runtime recorded; on dawn it must be.
  const dawnOnly = (): ResultsDocument => {
    const d = syntheticResults();
    d.config.webgpu = ["dawn"];
    for (const c of Object.values(d.configurations)) {
      Object.assign(c!, { runtime: "dawn", runtime_version: "webgpu@0.6.2", runtime_toggles: [] });
    }
    return d;
  };
  assertEquals(validateResults(dawnOnly()), []);
  assertProblem(problems2((d) => delete d.configurations.baseline.runtime, dawnOnly), "baseline.runtime");
  assertProblem(problems2((d) => d.config.webgpu = ["dawn"], syntheticResults), "baseline.runtime", "dawn");
});

Deno.test("ResultsWriter keys a result by its runtime when the run has several, by its name when one", async () => {
  const dir = `${await Deno.makeTempDir({ prefix: "bench_runtimes_" })}/2026-11-30_run01`;
  await Deno.mkdir(dir);
  const two = syntheticTwoRuntimes();
  const w = new ResultsWriter(dir, two.config, two.environment);
  await w.record(two.configurations["baseline@dawn"]!);
  await w.record(two.configurations["baseline@deno"]!);
  await w.fail("hydra_naive", new Error("lost"), "dawn");
  const doc = JSON.parse(await Deno.readTextFile(w.path));
  assertEquals(Object.keys(doc.configurations), ["baseline@dawn", "baseline@deno"]);
  assertEquals(doc.failure, { configuration: "hydra_naive", runtime: "dawn", message: "lost" });
  assertEquals(validateResults(doc), []);
  assertEquals(resultKey("baseline", "dawn", ["dawn"]), "baseline");
});

Deno.test("headlines, summary and compare key a two-runtime run by (configuration, runtime)", () => {
  const doc = syntheticTwoRuntimes();
  assertEquals(
    configurationsOf(doc).map((c) => `${c.name}/${c.runtime}`),
    ["baseline/deno", "hydra_naive/deno", "hydra_poe/deno", "baseline/dawn", "hydra_naive/dawn", "hydra_poe/dawn"],
  );
  const all = headlines(doc);
  const dawnBase = all.find((h) => h.key === "baseline@dawn.decode_tokens_per_s")!;
  assertEquals([dawnBase.subject, dawnBase.configuration, dawnBase.runtime], ["baseline · dawn", "baseline", "dawn"]);
  assertEquals(dawnBase.value, doc.configurations["baseline@dawn"]!.decode!.tokens_per_s);
  assert(all.some((h) => h.key === "hydra_poe@deno.gamma2.poe_effective_tps"));
  assertEquals(new Set(all.map((h) => h.key)).size, all.length, "every headline key is unique");
  const text = summaryText(doc);
  for (const r of ["baseline · deno", "baseline · dawn", "hydra_poe · dawn γ=8"]) assertStringIncludes(text, `| ${r} `);
  assertStringIncludes(text, "WebGPU runtimes, each row naming its own: deno (deno 2.9.6), dawn (webgpu@0.6.2");
  assert(!summaryText(syntheticResults()).includes("WebGPU"), "a one-runtime summary is as before");
  assertEquals(runSummary(doc).rows.length, 2 * runSummary(syntheticResults()).rows.length);
  const c = compareRuns([{ dir: "a", doc }, { dir: "b", doc }]);
  assertEquals(c.metrics.length, all.length);
  // One runtime: the keys and subjects of before the knob.
  const one = headlines(syntheticResults());
  assert(one.every((h) => !h.key.includes("@") && !h.subject.includes("·")), "a one-runtime run names no runtime");
});

Deno.test("the panels show each runtime's series side by side; a one-runtime run's labels name no runtime", () => {
  const doc = syntheticTwoRuntimes();
  doc.config.prompt_lengths = [];
  const panels = chartPanels(doc, "static");
  for (const p of panels) {
    if (!p.config) throw new Error(`${p.name} has no data: ${p.why}`);
    const labels = p.config.data.datasets.map((d) => String(d.label)).filter((l) => l !== "");
    for (const runtime of ["deno", "dawn"]) {
      assert(labels.some((l) => l.includes(` · ${runtime}`)), `${p.name}: no ${runtime} series in ${labels}`);
    }
  }
  const colours = (name: string) =>
    panels.find((p) => p.name === name)!.config!.data.datasets.filter((d) => String(d.label) !== "")
      .map((d) => String((d as { borderColor?: unknown }).borderColor));
  const decode = colours("decode_tps");
  assertEquals(new Set(decode).size, decode.length, "each runtime's series has its own colour");
  assertStringIncludes(runHeader(doc).lines.join("\n"), "WebGPU: deno (deno 2.9.6) on NVIDIA H100");
  assertStringIncludes(runHeader(doc).lines.join("\n"), "dawn (webgpu@0.6.2; toggles backend=vulkan)");
  const single = syntheticResults();
  for (const p of chartPanels(single, "static")) {
    for (const d of p.config?.data.datasets ?? []) assert(!String(d.label).includes(" · "), `${p.name}: ${d.label}`);
  }
  assertEquals(runHeader(single).lines.length, 2);
});

Deno.test("graph.png of a two-runtime run renders every panel", async () => {
  const png = await renderGraph(syntheticTwoRuntimes());
  assertEquals([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
  assert(png.length > 100_000, `${png.length} bytes`);
});

/** Why Dawn cannot be tested here (its UserError), or null when it finds an adapter. */
async function dawnMissing(): Promise<string | null> {
  try {
    (await Gpu.create("dawn")).destroy();
    return null;
  } catch (e) {
    if (e instanceof UserError) return e.message;
    throw e;
  }
}

const missing = await dawnMissing();

Deno.test({
  name: `--webgpu deno,dawn without a Dawn adapter: one sentence, exit 2, nothing timed${
    missing === null ? " (skipped: Dawn has an adapter here)" : ""
  }`,
  ignore: missing === null,
  fn: async () => {
    const results = await Deno.makeTempDir({ prefix: "bench_nodawn_" });
    const { code, stdout, stderr } = await bench(["--webgpu", "deno,dawn", "--size", "tiny", "--results-dir", results]);
    assertEquals(code, 2, stderr);
    // Dawn's native code prints its own warning about the adapter above; ours is the last line, and no stack trace.
    const lines = stderr.trim().split("\n");
    assertEquals(lines.at(-1), `error: ${missing}`);
    assert(!/^\s+at .*\.ts:\d+/m.test(stderr), stderr);
    assertEquals(stdout, "", "nothing ran before the error");
    assertEquals([...Deno.readDirSync(results)], [], "no run folder");
  },
});
