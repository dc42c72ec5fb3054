/**
 * report.html: one self-contained page per run folder, written by every run and by `deno task graph DIR`. It holds
 * the run's results.json (as JSON, in a `<script type="application/json">`), the Chart.js UMD build of the npm
 * package in the import map, and report_page.ts bundled for the browser; it loads nothing else, so it opens from
 * disk, offline, anywhere. The page draws everything from the embedded JSON: the header, the summary table and the
 * panels of graph.png as interactive charts (hover for values, click the legend to toggle a series).
 *
 * The page script is bundled when the report is written, with `deno bundle` (esbuild; Deno fetches it from npm on
 * first use), from the same TypeScript modules the terminal summary and graph.png use. Like graph.png, the report is
 * written where the chart packages are installed (not on the offline GPU machine: `deno task graph DIR` there after).
 * @module
 */

import { Chart } from "chart.js";
import { dirname, fromFileUrl, join } from "@std/path";
import { UserError } from "../common/errors.ts";
import { readRun } from "./run_folder.ts";
import type { ResultsDocument } from "./results_types.ts";

/** File name of the report inside a run folder. */
export const REPORT_FILE = "report.html";

/** The Chart.js version the page inlines (the import map's); the report says which one it carries. */
export const CHART_JS_VERSION = Chart.version;

const ROOT = fromFileUrl(new URL("../", import.meta.url));

/** The minified UMD build of the chart.js package the import map resolves (it sits beside the ES module build). */
export async function chartJsUmd(): Promise<string> {
  const entry = import.meta.resolve("chart.js");
  if (!entry.startsWith("file:")) {
    throw new UserError(
      `The chart.js package resolved to ${entry}, not a file; run with a node_modules folder (deno.json sets ` +
        `"nodeModulesDir": "auto") to write report.html.`,
    );
  }
  const path = join(dirname(fromFileUrl(entry)), "chart.umd.min.js");
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new UserError(`Cannot read Chart.js's UMD build ${path} (${(e as Error).message}); reinstall chart.js.`);
  }
}

let bundled: Promise<string> | null = null;

/** report_page.ts and what it imports, bundled into one browser script (computed once per process). */
export function pageScript(): Promise<string> {
  bundled ??= (async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "--platform",
        "browser",
        "--format",
        "iife",
        "--config",
        join(ROOT, "deno.json"),
        join(ROOT, "bench", "report_page.ts"),
      ],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      bundled = null;
      const why = new TextDecoder().decode(out.stderr).trim().split("\n").pop() ?? "";
      throw new UserError(
        `\`deno bundle\` could not build report.html's script (${why}); it needs esbuild, which Deno fetches from ` +
          `npm on first use: run \`deno task graph DIR\` where npm is reachable.`,
      );
    }
    return new TextDecoder().decode(out.stdout);
  })();
  return bundled;
}

/** `text` for an inline `<script>`: it must not contain "</script", which would end the element early. */
function inlineScript(text: string, what: string): string {
  if (/<\/script/i.test(text)) throw new Error(`${what} contains "</script" and cannot be inlined`);
  return text;
}

const STYLE = `
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #222;
    margin: 24px auto; max-width: 1500px; padding: 0 16px; }
  h1 { font-size: 1.6em; margin: 0 0 6px; }
  h2 { font-size: 1.25em; margin: 28px 0 8px; }
  p.meta { margin: 2px 0; color: #444; font-size: 0.92em; }
  p.note { margin: 4px 0; color: #555; font-size: 0.88em; }
  .incomplete { color: #c62828; font-weight: bold; }
  table.summary { border-collapse: collapse; font-variant-numeric: tabular-nums; }
  table.summary caption { caption-side: top; text-align: left; padding: 4px 0; color: #444; }
  table.summary th, table.summary td { border: 1px solid #ddd; padding: 5px 10px; text-align: right; }
  table.summary thead th { background: #f4f4f4; }
  table.summary tbody th { text-align: left; font-weight: 600; white-space: nowrap; }
  span.figure { font-weight: 600; }
  div.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; }
  section.panel { position: relative; border: 1px solid #ddd; padding: 6px; min-width: 0; }
  section.empty { display: flex; flex-direction: column; align-items: center; justify-content: center; color: #777;
    aspect-ratio: 900 / 540; }
  section.empty h3 { color: #222; }
`;

/** The HTML of the report of `doc` (a validated results document). */
export async function renderReport(doc: ResultsDocument): Promise<string> {
  const [chartJs, script] = await Promise.all([chartJsUmd(), pageScript()]);
  // "<" escaped, so no string in the results (a failure message, a path) can close the <script> element.
  const json = JSON.stringify(doc).replaceAll("<", "\\u003c");
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="hydra-bench report.ts; Chart.js ${CHART_JS_VERSION}">
<title>hydra-bench ${doc.run}</title>
<style>${STYLE}</style>
</head>
<body>
<main id="report"></main>
<noscript><p>This report draws its tables and graphs with JavaScript; the run's numbers are in results.json beside it.</p></noscript>
<script type="application/json" id="results-json">${json}</script>
<script>/* Chart.js ${CHART_JS_VERSION} (MIT License, https://www.chartjs.org), UMD build */
${inlineScript(chartJs, "Chart.js")}</script>
<script>${inlineScript(script, "the report script")}</script>
</body>
</html>
`;
}

/**
 * Reads `<dir>/results.json` and writes `<dir>/report.html` (atomically: temp file + rename). Returns its path.
 * Throws UserError for a folder that is not a run.
 */
export async function writeReport(dir: string): Promise<string> {
  const html = await renderReport(await readRun(dir));
  const out = join(dir, REPORT_FILE);
  const tmp = `${out}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, html);
  await Deno.rename(tmp, out);
  return out;
}
