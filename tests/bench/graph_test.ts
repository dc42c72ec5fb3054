/**
 * graph.png: a valid PNG of the documented size whose header and seven panels all hold drawn content (charts with
 * coloured data where there is data, an explanation where there is none). Needs the npm canvas and chart packages,
 * so it runs where `deno task graph` runs, not on the GPU machine.
 */

import { assert, assertEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { createCanvas, loadImage } from "@napi-rs/canvas";
import { GRAPH_FILE, GRAPH_LAYOUT, graphLayout, type PanelRect, renderGraph, writeGraph } from "../../bench/graph.ts";
import { chartPanels, PANEL_NAMES, runHeader } from "../../bench/charts.ts";
import { main } from "../../bench/graph_main.ts";
import { RESULTS_FILE } from "../../bench/results.ts";
import type { ResultsDocument } from "../../bench/results_types.ts";
import { UserError } from "../../common/errors.ts";
import { syntheticResults, withSweepsAndPeers } from "./synthetic.ts";

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Width and height from the IHDR chunk, after checking the signature and that IHDR comes first. */
function pngSize(png: Uint8Array): { width: number; height: number } {
  assertEquals([...png.subarray(0, 8)], PNG_SIGNATURE, "PNG signature");
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  assertEquals(view.getUint32(8), 13, "IHDR length");
  assertEquals(new TextDecoder().decode(png.subarray(12, 16)), "IHDR");
  return { width: view.getUint32(16), height: view.getUint32(20) };
}

/** Pixel counts in `rect` (2 px in from its border, which the compositor draws): non-white, and coloured. */
function inkIn(pixels: Uint8ClampedArray, width: number, rect: PanelRect): { ink: number; colour: number } {
  let ink = 0, colour = 0;
  for (let y = rect.y + 2; y < rect.y + rect.height - 2; y++) {
    for (let x = rect.x + 2; x < rect.x + rect.width - 2; x++) {
      const i = 4 * (y * width + x);
      const [r, g, b] = [pixels[i], pixels[i + 1], pixels[i + 2]];
      if (r < 235 || g < 235 || b < 235) ink++;
      if (Math.max(r, g, b) - Math.min(r, g, b) > 60) colour++; // saturated: a data series, not grey text or grid
    }
  }
  return { ink, colour };
}

async function decode(png: Uint8Array): Promise<Uint8ClampedArray> {
  const image = await loadImage(png);
  const canvas = createCanvas(image.width, image.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  return ctx.getImageData(0, 0, image.width, image.height).data;
}

Deno.test("graph.png of a complete run: valid PNG, every panel drawn with data", async () => {
  const png = await renderGraph(syntheticResults());
  assertEquals(pngSize(png), { width: GRAPH_LAYOUT.width, height: GRAPH_LAYOUT.height });
  const pixels = await decode(png);
  // The header is text only: ~1% of its area is ink when the font works; 0 when text silently vanished.
  const header = inkIn(pixels, GRAPH_LAYOUT.width, GRAPH_LAYOUT.header);
  assert(header.ink > 2000, `header has ${header.ink} ink pixels: is the title text rendered?`);
  for (const rect of GRAPH_LAYOUT.panels) {
    const { ink, colour } = inkIn(pixels, GRAPH_LAYOUT.width, rect);
    // axes, labels and grid alone give thousands of ink pixels; a data series thousands of coloured ones
    assert(ink > 5000, `panel ${rect.name} has only ${ink} ink pixels`);
    assert(colour > 1000, `panel ${rect.name} has only ${colour} coloured pixels: no data drawn`);
  }
});

Deno.test("graph.png of a failed run that reached only the baseline explains the empty panels", async () => {
  const doc: ResultsDocument = syntheticResults(["baseline", "hydra_poe"]);
  delete doc.configurations.hydra_poe;
  doc.status = "failed";
  doc.failure = { configuration: "hydra_poe", message: "out of memory" };
  const png = await renderGraph(doc);
  const pixels = await decode(png);
  const byName = Object.fromEntries(GRAPH_LAYOUT.panels.map((r) => [r.name, inkIn(pixels, GRAPH_LAYOUT.width, r)]));
  for (const name of ["ttft_kde", "decode_latency", "decode_tps"]) assert(byName[name].colour > 1000, name);
  for (const name of ["poe_tps", "poe_acceptance", "poe_tokens", "poe_ceiling"]) {
    // the title and one line of explanation are ~1500 ink pixels; an empty panel without them has none
    assert(byName[name].ink > 800, `empty panel ${name} shows no explanation`);
    assertEquals(byName[name].colour, 0, `empty panel ${name} should hold no data series`);
  }
  // the red INCOMPLETE note in the header
  assert(inkIn(pixels, GRAPH_LAYOUT.width, GRAPH_LAYOUT.header).colour > 200, "no INCOMPLETE note in the header");
});

Deno.test("writeGraph and `deno task graph` write graph.png and fail clearly on bad input", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(join(dir, RESULTS_FILE), JSON.stringify(syntheticResults()));
  assertEquals(await writeGraph(dir), join(dir, GRAPH_FILE));
  pngSize(await Deno.readFile(join(dir, GRAPH_FILE)));

  await assertRejects(() => writeGraph(join(dir, "nope")), UserError, "does not exist");
  const empty = await Deno.makeTempDir();
  await assertRejects(() => writeGraph(empty), UserError, `${RESULTS_FILE} does not exist`);
  await Deno.writeTextFile(join(empty, RESULTS_FILE), '{"schema_version": 1,');
  await assertRejects(() => writeGraph(empty), UserError, "is not valid JSON");
  await Deno.writeTextFile(join(empty, RESULTS_FILE), '{"schema_version": 1}');
  await assertRejects(() => writeGraph(empty), UserError, "does not match the results schema");

  const quiet = console.error;
  console.error = () => {};
  try {
    assertEquals(await main([join(dir, "nope")]), 2);
    assertEquals(await main([]), 2);
  } finally {
    console.error = quiet;
  }
});

Deno.test("graph.png of a run with the length sweeps and peers: two more panels in a fourth row, peers drawn", async () => {
  const doc = withSweepsAndPeers(syntheticResults());
  const names = chartPanels(doc, "static").map((p) => p.name);
  assertEquals(names, [...PANEL_NAMES, "ttft_by_length", "decode_contexts"]);
  const layout = graphLayout(names);
  const png = await renderGraph(doc);
  assertEquals(pngSize(png), { width: layout.width, height: layout.height });
  assertEquals(layout.height, GRAPH_LAYOUT.height + 540);
  const pixels = await decode(png);
  for (const rect of layout.panels) {
    const { ink, colour } = inkIn(pixels, layout.width, rect);
    assert(ink > 5000, `panel ${rect.name} has only ${ink} ink pixels`);
    assert(colour > 1000, `panel ${rect.name} has only ${colour} coloured pixels: no data drawn`);
  }
  // The peers are dashed reference lines on the TTFT and decode panels (torch measures no TTFT: no line there).
  const lines = (name: string) =>
    chartPanels(doc, "static").find((p) => p.name === name)!.config!.data.datasets
      .filter((d) => d.label?.startsWith("peer "))
      .map((d) => [d.label, (d.data as { x: number; y: number }[]).map((p) => [p.x, p.y])]);
  const xs = [0, 120]; // the timed positions span 0..120
  assertEquals(lines("decode_latency"), [
    ["peer torch: 9.092 ms/token", xs.map((x) => [x, 9.092])],
    ["peer hf: 24.100 ms/token", xs.map((x) => [x, 24.1])],
  ]);
  assertEquals(lines("decode_tps"), [
    ["peer torch: 110.0 tok/s", xs.map((x) => [x, 1000 / 9.092])],
    ["peer hf: 41.5 tok/s", xs.map((x) => [x, 1000 / 24.1])],
  ]);
  const ttft = lines("ttft_kde");
  assertEquals(ttft.length, 1);
  assertEquals(ttft[0][0], "peer hf: 41.500 ms");
  assertEquals((ttft[0][1] as number[][]).map(([x]) => x), [41.5, 41.5]); // vertical: TTFT is the x axis
});

Deno.test("graph.png of a run whose sweeps did not finish explains their panels", async () => {
  const doc = withSweepsAndPeers(syntheticResults(["baseline", "hydra_naive"]));
  delete doc.configurations.hydra_naive;
  delete doc.configurations.baseline;
  doc.status = "failed";
  doc.failure = { configuration: "baseline", message: "device lost" };
  const panels = chartPanels(doc, "static");
  const sweeps = panels.filter((p) => p.name === "ttft_by_length" || p.name === "decode_contexts");
  assertEquals(sweeps.map((p) => [p.config, p.why]), [
    [null, "no data: baseline failed (device lost)"],
    [null, "no data: baseline failed (device lost)"],
  ]);
  const layout = graphLayout(panels.map((p) => p.name));
  const pixels = await decode(await renderGraph(doc));
  for (const rect of layout.panels.slice(-2)) {
    const { ink, colour } = inkIn(pixels, layout.width, rect);
    assert(ink > 800, `empty panel ${rect.name} shows no explanation`);
    assertEquals(colour, 0, `empty panel ${rect.name} should hold no data series`);
  }
});

Deno.test("the header says why a run is incomplete: failed where, interrupted how, or still running", () => {
  const doc: ResultsDocument = syntheticResults(["baseline"]);
  assertEquals(runHeader(doc).incomplete, null);
  doc.status = "failed";
  doc.failure = { configuration: "hydra_poe", message: "out of memory" };
  assertEquals(runHeader(doc).incomplete, "INCOMPLETE: failed in hydra_poe");
  doc.status = "interrupted";
  doc.failure = { configuration: null, message: "interrupted by SIGTERM" };
  assertEquals(runHeader(doc).incomplete, "INCOMPLETE: interrupted (interrupted by SIGTERM)");
  doc.status = "running";
  doc.failure = null;
  assertEquals(runHeader(doc).incomplete, "INCOMPLETE: run still in progress");
});
