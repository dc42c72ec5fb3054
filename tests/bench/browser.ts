/// <reference lib="dom" />
/**
 * Opens a report.html in headless Chromium (Debian's `chromium` package, driven by playwright-core) and reports what
 * a reader would see: console errors, requests that left the file, each chart's pixels, the summary's figures, and
 * whether hovering shows a tooltip and clicking a legend entry hides its series. Used by report_test.ts and the bench
 * end-to-end test.
 */

import { chromium } from "playwright-core";
import { assert, assertEquals } from "@std/assert";
import { toFileUrl } from "@std/path";
import { chartPanels } from "../../bench/charts.ts";
import { formatFigure, headlines } from "../../bench/headline.ts";
import type { ResultsDocument } from "../../bench/results_types.ts";

/** Chromium's path (CHROMIUM_PATH, else Debian's /usr/bin/chromium), or null when it is not installed. */
export function chromiumPath(): string | null {
  const path = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";
  try {
    return Deno.statSync(path).isFile ? path : null;
  } catch {
    return null;
  }
}

/** Why the browser tests are skipped, or null when they run. */
export function browserSkipReason(): string | null {
  return chromiumPath() ? null : "skipped: Chromium not found at /usr/bin/chromium (apt-get install chromium, or set " +
    "CHROMIUM_PATH)";
}

/** What the page showed. */
export interface PageReading {
  consoleErrors: string[];
  /** URLs the page tried to load other than the report file itself. */
  foreignRequests: string[];
  /** document.body.dataset.report: "ready" once the script drew everything. */
  state: string | undefined;
  /** Per panel section: its name, whether it holds a Chart.js chart, and its canvas's painted / coloured pixels. */
  panels: { name: string; chart: boolean; painted: number; coloured: number; text: string }[];
  /** Every figure of the summary table: its key, the stored value it carries, and its text. */
  figures: { key: string; value: number; text: string }[];
  /** The summary table's text. */
  summaryText: string;
  /** Whether hovering the first data point of the first chart raised a tooltip. */
  tooltip: boolean;
  /** Whether clicking the first legend entry of the first chart hid its dataset (and a second click showed it). */
  toggled: boolean;
}

const LAUNCH_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Opens `htmlPath` in a fresh headless Chromium profile and reads the page. */
export async function readReportPage(htmlPath: string): Promise<PageReading> {
  const profile = await Deno.makeTempDir({ prefix: "report_chromium" });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath()!,
    headless: true, // playwright passes --headless
    args: LAUNCH_ARGS,
    viewport: { width: 1400, height: 1000 },
  });
  try {
    const url = toFileUrl(htmlPath).href;
    const foreignRequests: string[] = [];
    await context.route("**/*", (route) => {
      const u = route.request().url();
      if (u === url) return route.continue();
      foreignRequests.push(u);
      return route.abort();
    });
    const page = await context.newPage();
    const consoleErrors: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") consoleErrors.push(m.text());
    });
    page.on("pageerror", (e) => consoleErrors.push(`uncaught: ${e.message}`));
    await page.goto(url, { waitUntil: "load" });
    await page.waitForFunction(() => document.body.dataset.report !== undefined, undefined, { timeout: 20_000 });
    const reading = await page.evaluate(() => {
      // deno-lint-ignore no-explicit-any
      const ChartJs = (globalThis as any).Chart;
      const panels = [...document.querySelectorAll<HTMLElement>("section.panel")].map((box) => {
        const canvas = box.querySelector("canvas");
        let painted = 0, coloured = 0;
        if (canvas) {
          const data = canvas.getContext("2d")!.getImageData(0, 0, canvas.width, canvas.height).data;
          for (let i = 0; i < data.length; i += 4) {
            if (data[i + 3] === 0) continue;
            painted++;
            const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
            if (data[i + 3] > 128 && Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured++;
          }
        }
        return {
          name: box.dataset.panel ?? "",
          chart: canvas !== null && ChartJs.getChart(canvas) !== undefined,
          painted,
          coloured,
          text: box.textContent ?? "",
        };
      });
      const figures = [...document.querySelectorAll<HTMLElement>("#summary span.figure")].map((s) => ({
        key: s.dataset.key ?? "",
        value: Number(s.dataset.value),
        text: s.textContent ?? "",
      }));
      return {
        state: document.body.dataset.report,
        panels,
        figures,
        summaryText: document.getElementById("summary")?.textContent ?? "",
      };
    });
    // Interaction on the first chart: hover its first data point, click its first legend entry (twice).
    const first = page.locator("section.panel canvas").first();
    let tooltip = false, toggled = false;
    if (await first.count() > 0) {
      const box = (await first.boundingBox())!;
      const at = await first.evaluate((canvas) => {
        // deno-lint-ignore no-explicit-any
        const chart = (globalThis as any).Chart.getChart(canvas);
        const index = chart.data.datasets.findIndex((d: { label: string }) => d.label !== "");
        const point = chart.getDatasetMeta(index).data[Math.floor(chart.getDatasetMeta(index).data.length / 2)];
        const hit = chart.legend.legendHitBoxes[0];
        return { index, point: { x: point.x, y: point.y }, legend: { x: hit.left + 5, y: hit.top + hit.height / 2 } };
      });
      // Chart.js handles pointer events on the next animation frame: poll (up to ~100 frames) for the change.
      const until = (what: "tooltip" | "visible" | "hidden"): Promise<boolean> =>
        first.evaluate(async (canvas, [what, index]) => {
          // deno-lint-ignore no-explicit-any
          const chart = (globalThis as any).Chart.getChart(canvas);
          const test = () =>
            what === "tooltip"
              ? chart.tooltip.getActiveElements().length > 0
              : chart.isDatasetVisible(index) === (what === "visible");
          for (let i = 0; i < 100 && !test(); i++) await new Promise((r) => requestAnimationFrame(r));
          return test();
        }, [what, at.index] as const);
      await page.mouse.move(box.x + at.point.x, box.y + at.point.y);
      tooltip = await until("tooltip");
      await page.mouse.click(box.x + at.legend.x, box.y + at.legend.y);
      const hidden = await until("hidden");
      await page.mouse.click(box.x + at.legend.x, box.y + at.legend.y);
      toggled = hidden && await until("visible");
    }
    return { consoleErrors, foreignRequests, tooltip, toggled, ...reading };
  } finally {
    await context.close();
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}

/**
 * Asserts that the report of `doc` at `htmlPath` shows what a reader relies on: no console errors, no request off
 * the file, every panel with data drawn as a chart with coloured series (and every panel without data explained),
 * the summary holding every headline figure of results.json with its stored value and formatted text, and the
 * device and commit; hovering shows a tooltip and the legend toggles a series.
 */
export async function assertReportShows(htmlPath: string, doc: ResultsDocument): Promise<PageReading> {
  const r = await readReportPage(htmlPath);
  assertEquals(r.consoleErrors, [], "console errors in report.html");
  assertEquals(r.foreignRequests, [], "report.html requested something besides itself");
  assertEquals(r.state, "ready", "the page script did not finish");
  const expected = chartPanels(doc, "page");
  assertEquals(r.panels.map((p) => p.name), expected.map((p) => p.name));
  expected.forEach((p, i) => {
    const seen = r.panels[i];
    if (p.config) {
      assert(seen.chart, `panel ${p.name} has no chart`);
      // axes, ticks and labels alone paint thousands of pixels; a data series thousands of coloured ones
      assert(seen.painted > 5000, `panel ${p.name}: only ${seen.painted} painted pixels`);
      assert(seen.coloured > 500, `panel ${p.name}: only ${seen.coloured} coloured pixels: no data drawn`);
    } else {
      assert(!seen.chart, `panel ${p.name} should have no chart`);
      assert(seen.text.includes(p.why!), `panel ${p.name} does not say why it is empty: ${seen.text}`);
    }
  });
  const shown = new Map(r.figures.map((f) => [f.key, f]));
  for (const h of headlines(doc)) {
    const f = shown.get(h.key);
    if (!f) throw new Error(`the summary table lacks ${h.key}`);
    assertEquals(f.value, h.value, `${h.key}: the table carries ${f.value}, results.json ${h.value}`);
    assertEquals(f.text, formatFigure(h.metric, h.value), `${h.key} is shown as ${f.text}`);
  }
  if (doc.environment.commit) assert(r.summaryText.includes(doc.environment.commit), "the commit is not shown");
  assert(r.summaryText.includes(doc.environment.adapter.description), "the device is not shown");
  assert(r.tooltip, "hovering a data point shows no tooltip");
  assert(r.toggled, "clicking a legend entry does not toggle its series");
  return r;
}
