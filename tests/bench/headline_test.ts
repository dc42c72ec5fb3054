/**
 * One headline figure per configuration (issue 9): stored in results.json, computed the same way for runs written
 * before it was stored, checked by the validator, and the very number that graph.png's labels and data, the
 * end-of-run summary, report.html's table (report_test.ts) and compare show. The log line is checked against
 * results.json in the bench end-to-end test.
 */

import { assert, assertAlmostEquals, assertEquals } from "@std/assert";
import { chartPanels } from "../../bench/charts.ts";
import { compareRuns } from "../../bench/compare.ts";
import { decodeHeadline, formatFigure, headlines, medianOverPositions } from "../../bench/headline.ts";
import { readRun } from "../../bench/run_folder.ts";
import { validateResults } from "../../bench/schema.ts";
import type { ResultsDocument } from "../../bench/results_types.ts";
import { runSummary, summaryText } from "../../bench/summary.ts";
import { syntheticResults } from "./synthetic.ts";

// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

Deno.test("decode headline: the type-7 median over positions of the per-position medians, and 1000 / it", () => {
  const doc = syntheticResults();
  const decode = doc.configurations.baseline!.decode!;
  const sorted = decode.positions.map((p) => p.median_ms).sort((a, b) => a - b);
  assertEquals(sorted.length % 2, 0, "an even count, where the median is between two positions");
  const expected = (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  assertEquals(decode.median_ms, expected);
  assertEquals(decode.tokens_per_s, 1000 / expected);
  assertEquals(medianOverPositions(decode.positions), expected);
  // Not the upper median the log used to print, nor the median of per-position tokens/s the graph used to label.
  assert(sorted[sorted.length / 2] !== expected);
  // Stored values are what readers get; without them (older runs) the same figure is computed.
  assertEquals(decodeHeadline({ ...decode, median_ms: 5, tokens_per_s: 200 }), { median_ms: 5, tokens_per_s: 200 });
  const { median_ms: _m, tokens_per_s: _t, ...old } = decode;
  assertEquals(decodeHeadline(old), { median_ms: expected, tokens_per_s: 1000 / expected });
});

Deno.test("the reference runs under results/ (without the stored headline) still load, and get it computed", async () => {
  for (const run of ["2026-11-28_run01", "2026-11-28_run02"]) {
    const doc = await readRun(new URL(`../../results/${run}`, import.meta.url).pathname);
    const decode = doc.configurations.baseline!.decode!;
    assertEquals(decode.median_ms, undefined);
    const h = decodeHeadline(decode);
    assertEquals(h.median_ms, medianOverPositions(decode.positions));
    assertEquals(h.tokens_per_s, 1000 / h.median_ms);
  }
});

Deno.test("validateResults checks the stored decode headline against the positions", () => {
  const problems = (edit: (d: Json) => void) => {
    const d = structuredClone(syntheticResults()) as Json;
    edit(d);
    return validateResults(d);
  };
  const base = (d: Json) => d.configurations.baseline.decode;
  assertEquals(problems(() => {}), []);
  assertEquals(problems((d) => (delete base(d).median_ms, delete base(d).tokens_per_s)), []);
  assert(problems((d) => base(d).median_ms *= 1.01).some((p) => p.includes("decode.median_ms")));
  assert(problems((d) => base(d).tokens_per_s = 1).some((p) => p.includes("decode.tokens_per_s")));
  assert(problems((d) => delete base(d).tokens_per_s).some((p) => p.includes("decode.tokens_per_s")));
});

/** The labels of a chart's datasets. */
function labels(doc: ResultsDocument, panel: string): string[] {
  const p = chartPanels(doc, "static").find((p) => p.name === panel)!;
  return p.config!.data.datasets.map((d) => String(d.label));
}

Deno.test("graph.png's labels and data, the summary and compare show the stored headline figures", () => {
  const doc = syntheticResults();
  const all = headlines(doc);
  const value = (key: string) => all.find((h) => h.key === key)!;
  const panels = chartPanels(doc, "static");
  for (const name of ["baseline", "hydra_naive"] as const) {
    const c = doc.configurations[name]!;
    const tps = value(`${name}.decode_tokens_per_s`);
    assertEquals(tps.value, c.decode!.tokens_per_s);
    const label = labels(doc, "decode_tps").find((l) => l.startsWith(`${name}:`))!;
    assert(label.includes(`${formatFigure("decode_tokens_per_s", tps.value)} tok/s`), label);
    const share = value(`${name}.roofline_share`);
    assertAlmostEquals(share.value, c.decode!.tokens_per_s! / c.roofline_tps, 1e-12);
    assert(label.includes(`(${formatFigure("roofline_share", share.value)})`), label);
    const ttft = labels(doc, "ttft_kde").find((l) => l.startsWith(`${name}:`))!;
    assert(ttft.includes(`median ${formatFigure("ttft_ms", c.ttft.median_ms)} ms`), ttft);
  }
  // The PoE panel: bars are the stored per-gamma figures; the dashed line is the baseline's headline tokens/s.
  const poe = doc.configurations.hydra_poe!.poe!;
  const poePanel = panels.find((p) => p.name === "poe_tps")!.config!;
  assertEquals(poePanel.data.datasets[0].data, poe.map((g) => g.effective_tps));
  assertEquals(poePanel.data.datasets[1].data, poe.map((g) => g.user_visible_tps));
  const line = poePanel.data.datasets[2];
  assertEquals(new Set(line.data as number[]), new Set([doc.configurations.baseline!.decode!.tokens_per_s]));

  // The summary: every headline figure, formatted, in its row.
  const text = summaryText(doc);
  const rows = text.split("\n");
  for (const h of all) {
    const subject = h.subject;
    const row = rows.find((r) => r.startsWith(`| ${subject} `));
    if (!row) throw new Error(`no summary row for ${subject}`);
    assert(row.includes(formatFigure(h.metric, h.value)), `${h.key}: ${formatFigure(h.metric, h.value)} not in ${row}`);
  }
  assertEquals(runSummary(doc).rows.length, 2 + poe.length);

  // compare: the same figures, key for key.
  const c = compareRuns([{ dir: "a", doc }, { dir: "b", doc }]);
  assertEquals(c.metrics.map((m) => [m.key, m.values[0]]), all.map((h) => [h.key, h.value]));
});
