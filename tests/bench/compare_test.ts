/**
 * `deno task compare`: every headline figure side by side with its ratio to the first run and a Mann-Whitney p-value
 * on the stored raw samples; warnings when device, config or commit differ; Markdown, CSV or JSON; exit 2 with one
 * sentence for a folder that is not a run.
 */

import { assert, assertAlmostEquals, assertEquals, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { ALPHA, compareRuns, comparisonCsv, comparisonMarkdown, formatP } from "../../bench/compare.ts";
import { main } from "../../bench/compare_main.ts";
import { headlines } from "../../bench/headline.ts";
import { RESULTS_FILE } from "../../bench/results.ts";
import type { ResultsDocument } from "../../bench/results_types.ts";
import { mannWhitneyU } from "../../bench/stats.ts";
import { syntheticConfiguration, syntheticResults } from "./synthetic.ts";

/** A second run of the same setup: same medians up to noise (other seeds), hydra_naive 20% slower per decode step. */
function secondRun(): ResultsDocument {
  const doc = syntheticResults();
  doc.run = "2026-11-29_run01";
  doc.configurations.baseline = syntheticConfiguration("baseline", 11);
  doc.configurations.hydra_poe = syntheticConfiguration("hydra_poe", 13);
  const naive = syntheticConfiguration("hydra_naive", 12);
  for (const p of naive.decode!.positions) {
    for (const k of ["median_ms", "mean_ms", "p10_ms", "p90_ms", "min_ms", "max_ms"] as const) p[k] *= 1.2;
    p.raw_ms = p.raw_ms.map((v) => v * 1.2);
    p.filtered_ms = p.filtered_ms.map((v) => v * 1.2);
    p.tokens_per_s = 1000 / p.median_ms;
  }
  naive.decode!.median_ms! *= 1.2;
  naive.decode!.tokens_per_s = 1000 / naive.decode!.median_ms!;
  doc.configurations.hydra_naive = naive;
  return doc;
}

Deno.test("compareRuns: values, ratios to the first run, and Mann-Whitney p on the stored raw samples", () => {
  const a = syntheticResults(), b = secondRun();
  const c = compareRuns([{ dir: "runs/a", doc: a }, { dir: "runs/b", doc: b }]);
  assertEquals(c.metrics.map((m) => m.key), headlines(a).map((h) => h.key));
  const m = (key: string) => c.metrics.find((x) => x.key === key)!;
  const naive = m("hydra_naive.decode_ms_per_token");
  assertAlmostEquals(
    naive.ratios[1]!,
    b.configurations.hydra_naive!.decode!.median_ms! / a.configurations.hydra_naive!.decode!.median_ms!,
    1e-12,
  );
  assertEquals(naive.ratios[0], null);
  // The p-value is that of every decode step of every timed position, A against B.
  const steps = (d: ResultsDocument) => d.configurations.hydra_naive!.decode!.positions.flatMap((p) => p.raw_ms);
  assertEquals(naive.p_values[1], mannWhitneyU(steps(a), steps(b)).p);
  assert(naive.p_values[1]! < 1e-6 && naive.significant[1] === true, `p ${naive.p_values[1]}`);
  // tokens/s is the reciprocal of the same samples: same ranks, same p.
  assertEquals(m("hydra_naive.decode_tokens_per_s").p_values[1], naive.p_values[1]);
  // Same setup, other noise: not significant.
  const base = m("baseline.decode_ms_per_token");
  assert(base.p_values[1]! > ALPHA && base.significant[1] === false, `baseline p ${base.p_values[1]}`);
  // No samples behind a roofline share: no p.
  assertEquals(m("baseline.roofline_share").p_values, [null, null]);
  assertEquals(c.warnings, []);
});

Deno.test("compare warns when device, config or commit differ, and marks an incomplete run", () => {
  const a = syntheticResults(), b = secondRun();
  b.environment.adapter.description = "llvmpipe (LLVM 15.0.6, 256 bits)";
  b.environment.commit = "fedcba9876543210fedcba9876543210fedcba98";
  b.config.gen_length = 64;
  b.config.results_dir = "elsewhere"; // where a run was written is no difference
  b.status = "failed";
  b.failure = { configuration: "hydra_poe", message: "x" };
  const w = compareRuns([{ dir: "a", doc: a }, { dir: "b", doc: b }]).warnings;
  assertEquals(w.length, 4, w.join("\n"));
  assertStringIncludes(w[0], "different devices: A NVIDIA H100 80GB HBM3; B llvmpipe");
  assertStringIncludes(w[1], "different configs: gen_length (A 128, B 64).");
  assertStringIncludes(w[2], "different commits: A 0123456789, B fedcba9876");
  assertStringIncludes(w[3], "incomplete");
});

Deno.test("compare's Markdown and CSV hold a row per figure, with the significance and p-value shown", () => {
  const a = syntheticResults(), b = secondRun(), c3 = secondRun();
  const c = compareRuns([{ dir: "a", doc: a }, { dir: "b", doc: b }, { dir: "c", doc: c3 }]);
  const md = comparisonMarkdown(c);
  const header = md.split("\n").find((l) => l.startsWith("| metric"))!;
  assertEquals(header.split("|").map((s) => s.trim()).filter((s) => s), [
    "metric",
    "A",
    "B",
    "B/A",
    "significant? (B vs A)",
    "C",
    "C/A",
    "significant? (C vs A)",
  ]);
  const row = md.split("\n").find((l) => l.startsWith("| hydra_naive · decode (ms/token)"))!;
  const naive = c.metrics.find((m) => m.key === "hydra_naive.decode_ms_per_token")!;
  assertStringIncludes(row, `yes, p=${formatP(naive.p_values[1]!)}`);
  assertStringIncludes(row, `${naive.ratios[1]!.toFixed(3)}x`); // ~1.2: 20% slower steps, other noise
  assertAlmostEquals(naive.ratios[1]!, 1.2, 0.02);
  assertEquals(
    md.split("\n").filter((l) => l.startsWith("| ") && !l.startsWith("| metric") && !l.startsWith("| -")).length,
    c.metrics.length,
  );
  const csv = comparisonCsv(c).split("\n");
  assertEquals(csv.length, 1 + c.metrics.length);
  assertStringIncludes(csv[0], "value_A (2026-11-28_run01),value_B (2026-11-29_run01),ratio_B,p_B,significant_B");
  assertEquals(formatP(0.012345), "0.012");
  assertEquals(formatP(3.0198e-11), "3.0e-11");
});

async function runDir(doc: ResultsDocument): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "compare_test" });
  await Deno.writeTextFile(join(dir, RESULTS_FILE), JSON.stringify(doc));
  return dir;
}

/** Runs compare_main with console output captured. */
async function capture(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [], err: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  try {
    return { code: await main(args), out: out.join("\n"), err: err.join("\n") };
  } finally {
    [console.log, console.error] = [log, error];
  }
}

Deno.test("deno task compare: formats, and exit 2 with one sentence for a folder that is not a run", async () => {
  const a = await runDir(syntheticResults()), b = await runDir(secondRun());
  try {
    const md = await capture([a, b]);
    assertEquals(md.code, 0);
    assertStringIncludes(md.out, "| metric");
    const json = await capture([a, b, "--format", "json"]);
    assertEquals(JSON.parse(json.out).metrics.length, headlines(syntheticResults()).length);
    assertEquals((await capture([a, b, "--format=csv"])).out.split("\n")[0].split(",")[0], "key");
    for (
      const [args, says] of [
        [[a, join(a, "nope")], "does not exist"],
        [[a, join(a, RESULTS_FILE)], "is not a folder"],
        [[a, await Deno.makeTempDir()], "is not a run folder"],
        [[a], "at least two run folders"],
        [[a, b, "--format", "xml"], "--format must be one of"],
        [[a, b, "--bogus"], "Unknown flag --bogus"],
      ] as const
    ) {
      const r = await capture([...args]);
      assertEquals(r.code, 2, `${args.join(" ")}: exit ${r.code}`);
      assert(r.err.startsWith("error: ") && !r.err.includes("\n") && r.err.includes(says), r.err);
    }
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});
