/**
 * report.html: self-contained (Chart.js and the page script inline, the results as embedded JSON, nothing fetched),
 * written by `deno task graph`, and, opened in headless Chromium, free of console errors, with every chart drawn and
 * the summary table holding the stored headline figures. The browser tests are skipped, saying so, where Chromium is
 * not installed.
 */

import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { main as graphMain } from "../../bench/graph_main.ts";
import { renderReport, REPORT_FILE, writeReport } from "../../bench/report.ts";
import { RESULTS_FILE } from "../../bench/results.ts";
import type { ResultsDocument } from "../../bench/results_types.ts";
import { summaryText } from "../../bench/summary.ts";
import { assertReportShows, browserSkipReason, type PageReading } from "./browser.ts";
import { syntheticResults, withSweepsAndPeers } from "./synthetic.ts";

const SKIP = browserSkipReason();
if (SKIP) console.log(`report.html browser tests ${SKIP}`);

/** The JSON embedded in a report. */
function embedded(html: string): unknown {
  const m = /<script type="application\/json" id="results-json">([^]*?)<\/script>/.exec(html);
  if (!m) throw new Error("no embedded results");
  return JSON.parse(m[1]);
}

/** A synthetic run with a peer and a failure message holding markup, to prove neither breaks the page. */
function withPeer(): ResultsDocument {
  const doc = syntheticResults();
  (doc as unknown as { peers: unknown[] }).peers = [
    {
      name: "torch_cuda_graph",
      decode_ms_per_token: 9.092,
      ttft_ms: 40.5,
      command: "python3 tools/peers/torch_decode_peer.py 7b",
      log: "peer_torch_cuda_graph.log",
      note: "static KV cache",
    },
  ];
  return doc;
}

async function writeRun(doc: ResultsDocument): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "report_test" });
  await Deno.writeTextFile(join(dir, RESULTS_FILE), JSON.stringify(doc));
  return dir;
}

Deno.test("report.html is one self-contained file: the results embedded as JSON, Chart.js inline, no URL loaded", async () => {
  const doc = withPeer();
  doc.status = "failed";
  doc.failure = { configuration: null, message: "</script><script>alert(1)</script>" };
  const html = await renderReport(doc);
  assertEquals(embedded(html), JSON.parse(JSON.stringify(doc)));
  assertStringIncludes(html, "Chart.js 4.6.1");
  // Nothing is loaded from elsewhere: no src or href attributes, no stylesheet imports.
  assertEquals(/\s(src|href)\s*=/i.test(html.replace(/<script>[^]*?<\/script>/g, "")), false);
  assertEquals(/@import|<link\b/i.test(html), false);
  // The markup in the failure message stays inside the JSON (escaped), so exactly three scripts exist.
  assertEquals(html.match(/<script\b/g)?.length, 3);
});

Deno.test("deno task graph DIR writes report.html beside graph.png", async () => {
  const dir = await writeRun(syntheticResults());
  const quiet = console.log;
  console.log = () => {};
  try {
    assertEquals(await graphMain([dir]), 0);
  } finally {
    console.log = quiet;
  }
  const html = await Deno.readTextFile(join(dir, REPORT_FILE));
  assertEquals(embedded(html), JSON.parse(await Deno.readTextFile(join(dir, RESULTS_FILE))));
  await Deno.remove(dir, { recursive: true });
});

/**
 * A browser test (skipped, saying so, without Chromium): writes the run of `makeDoc()`, asserts what every report must
 * show (`assertReportShows`), then `check`s the page it read.
 */
function reportTest(
  name: string,
  makeDoc: () => ResultsDocument,
  check: (r: PageReading, doc: ResultsDocument) => void,
): void {
  Deno.test({
    name: `${name}${SKIP ? ` (${SKIP})` : ""}`,
    ignore: SKIP !== null,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const doc = makeDoc();
      const dir = await writeRun(doc);
      try {
        check(await assertReportShows(await writeReport(dir), doc), doc);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

reportTest(
  "report.html in headless Chromium: no console errors, every chart drawn, the summary shows results.json's " +
    "headline figures, peers and device",
  withPeer,
  (r, doc) => {
    assertStringIncludes(r.summaryText, "peer torch_cuda_graph");
    assertStringIncludes(
      summaryText(doc),
      "peer torch_cuda_graph: command python3 tools/peers/torch_decode_peer.py 7b; log peer_torch_cuda_graph.log; " +
        "note static KV cache.",
    );
    assertEquals(r.panels.filter((p) => p.chart).length, 7);
    assertEquals(r.panels[6].name, "poe_ceiling"); // PoE tok/s against acceptance, the cost model's curves
  },
);

reportTest("report.html of a failed run that reached only the baseline explains the empty panels", () => {
  const doc = syntheticResults(["baseline", "hydra_poe"]);
  delete doc.configurations.hydra_poe;
  doc.status = "failed";
  doc.failure = { configuration: "hydra_poe", message: "out of memory" };
  return doc;
}, (r) => {
  assertEquals(r.panels.filter((p) => p.chart).map((p) => p.name), ["ttft_kde", "decode_latency", "decode_tps"]);
  assert(r.panels[3].text.includes("hydra_poe failed (out of memory)"));
});

const REFERENCE_RUN = new URL("../../results/2026-11-28_run02/results.json", import.meta.url);

reportTest(
  "report.html of the 7B reference run (results/2026-11-28_run02, written before the stored decode headline) " +
    "shows the figures computed the same way",
  () => JSON.parse(Deno.readTextFileSync(REFERENCE_RUN)) as ResultsDocument,
  (r, doc) => {
    assertEquals(doc.configurations.baseline!.decode!.median_ms, undefined, "the reference run gained the field");
    // 16 positions: the headline is the mean of the 8th and 9th smallest per-position medians (type 7).
    const medians = doc.configurations.baseline!.decode!.positions.map((p) => p.median_ms).sort((a, b) => a - b);
    const tps = r.figures.find((f) => f.key === "baseline.decode_tokens_per_s")!;
    assertEquals(tps.value, 1000 / ((medians[7] + medians[8]) / 2));
    assertEquals(tps.text, "122.4");
  },
);

reportTest(
  "report.html of a run with the length sweeps and two peers draws the sweep panels and lists the peers",
  () => withSweepsAndPeers(syntheticResults()),
  (r) => {
    assertEquals(r.panels.filter((p) => p.chart).length, 9);
    assertEquals(r.panels.slice(-2).map((p) => p.name), ["ttft_by_length", "decode_contexts"]);
    for (const peer of ["peer torch", "peer hf"]) assertStringIncludes(r.summaryText, peer);
    assert(r.figures.some((f) => f.key === "peer.hf.ttft_ms" && f.value === 41.5), "the hf peer's TTFT");
    assertStringIncludes(r.summaryText, "110.0"); // the torch peer's 1000 / 9.092 tok/s
  },
);
