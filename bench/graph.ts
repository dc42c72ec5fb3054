/**
 * graph.png from a results.json: the Chart.js panels of charts.ts (two per row under a header: six, plus the length
 * sweeps' when the run has them) drawn with @napi-rs/canvas.
 *
 * This module (and graph_main.ts, report.ts) are the only ones that import the canvas and chart libraries: they are
 * native and ~35 MB, so they stay off the GPU path. Render here from a results.json brought back from the GPU machine.
 * @module
 */

import { Chart, type ChartItem, registerables } from "chart.js";
import { type Canvas, createCanvas, GlobalFonts, type SKRSContext2D } from "@napi-rs/canvas";
import { join } from "@std/path";
import { UserError } from "../common/errors.ts";
import { type AnyChartConfig, chartPanels, PANEL_NAMES, runHeader } from "./charts.ts";
import type { ResultsDocument } from "./results_types.ts";
import { readRun } from "./run_folder.ts";

Chart.register(...registerables);

/** Pixel rectangle of one panel. */
export interface PanelRect {
  name: string;
  x: number;
  y: number;
  width: number;
  height: number;
}

const PANEL_W = 900;
const PANEL_H = 540;
const HEADER_H = 112;

/** The image's layout: its size and where the header and each panel are. */
export interface GraphLayout {
  width: number;
  height: number;
  header: PanelRect;
  panels: PanelRect[];
}

/** The layout of panels `names` in reading order, two per row under the header. */
export function graphLayout(names: readonly string[]): GraphLayout {
  return {
    width: 2 * PANEL_W,
    height: HEADER_H + Math.ceil(names.length / 2) * PANEL_H,
    header: { name: "header", x: 0, y: 0, width: 2 * PANEL_W, height: HEADER_H },
    panels: names.map((name, i) => ({
      name,
      x: (i % 2) * PANEL_W,
      y: HEADER_H + Math.floor(i / 2) * PANEL_H,
      width: PANEL_W,
      height: PANEL_H,
    })),
  };
}

/**
 * The layout of a run without optional panels (PANEL_NAMES), for tests and for anyone cropping the image; a run whose
 * config sets prompt_lengths or decode_contexts has their panels in further rows (`graphLayout`).
 */
export const GRAPH_LAYOUT: GraphLayout = graphLayout(PANEL_NAMES);

/** File name of the graph inside a run folder. */
export const GRAPH_FILE = "graph.png";

const FONT_FAMILY = "GraphSans";
const TEXT_COLOR = "#222222";

/** Font files tried in order (GRAPH_FONT first): DejaVu Sans on Debian/Ubuntu, Fedora, Arch; Arial on macOS/Windows. */
function fontCandidates(): { regular: string; bold?: string }[] {
  const env = Deno.env.get("GRAPH_FONT");
  const dejavu = (dir: string) => ({ regular: `${dir}/DejaVuSans.ttf`, bold: `${dir}/DejaVuSans-Bold.ttf` });
  return [
    ...(env ? [{ regular: env }] : []),
    dejavu("/usr/share/fonts/truetype/dejavu"),
    dejavu("/usr/share/fonts/dejavu"),
    dejavu("/usr/share/fonts/TTF"),
    dejavu("/usr/share/fonts/dejavu-sans-fonts"),
    {
      regular: "/System/Library/Fonts/Supplemental/Arial.ttf",
      bold: "/System/Library/Fonts/Supplemental/Arial Bold.ttf",
    },
    { regular: "C:\\Windows\\Fonts\\arial.ttf", bold: "C:\\Windows\\Fonts\\arialbd.ttf" },
  ];
}

function fileExists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

let fontReady = false;

/**
 * Registers a font file under one family name and checks that text renders with it: without a font, canvas text
 * silently disappears. Throws UserError when no font is found.
 */
function ensureFont(): void {
  if (fontReady) return;
  const found = fontCandidates().find((c) => fileExists(c.regular));
  if (!found || !GlobalFonts.registerFromPath(found.regular, FONT_FAMILY)) {
    throw new UserError(
      "No font file was found for the graph's text: install DejaVu Sans (Debian/Ubuntu: `sudo apt-get install " +
        "fonts-dejavu-core`) or set GRAPH_FONT to the path of a .ttf file.",
    );
  }
  if (found.bold && fileExists(found.bold)) GlobalFonts.registerFromPath(found.bold, FONT_FAMILY);
  const probe = createCanvas(64, 32).getContext("2d");
  probe.font = `16px ${FONT_FAMILY}`;
  if (!(probe.measureText("Ag").width > 0)) {
    throw new UserError(`The font ${found.regular} renders no text; set GRAPH_FONT to another .ttf file.`);
  }
  Chart.defaults.font.family = FONT_FAMILY;
  Chart.defaults.font.size = 14;
  Chart.defaults.color = TEXT_COLOR;
  fontReady = true;
}

/** Draws a panel that has no data: its title and why. */
function drawEmptyPanel(ctx: SKRSContext2D, title: string, why: string): void {
  ctx.fillStyle = TEXT_COLOR;
  ctx.textAlign = "center";
  ctx.font = `bold 18px ${FONT_FAMILY}`;
  ctx.fillText(title, PANEL_W / 2, 32);
  ctx.fillStyle = "#777777";
  ctx.font = `16px ${FONT_FAMILY}`;
  ctx.fillText(why, PANEL_W / 2, PANEL_H / 2);
}

/** Renders one panel on its own canvas (Chart.js sizes itself to the canvas it is given). */
function renderPanel(title: string, config: AnyChartConfig | string): Canvas {
  const canvas = createCanvas(PANEL_W, PANEL_H);
  const ctx = canvas.getContext("2d");
  if (typeof config === "string") {
    drawEmptyPanel(ctx, title, config);
    return canvas;
  }
  const chart = new Chart(ctx as unknown as ChartItem, config);
  // Chart.destroy() clears the canvas, so the pixels are copied out first (the caller draws this canvas elsewhere).
  const copy = createCanvas(PANEL_W, PANEL_H);
  copy.getContext("2d").drawImage(canvas, 0, 0);
  chart.destroy();
  return copy;
}

function drawHeader(ctx: SKRSContext2D, doc: ResultsDocument, width: number): void {
  const h = runHeader(doc);
  ctx.textAlign = "left";
  ctx.fillStyle = TEXT_COLOR;
  ctx.font = `bold 26px ${FONT_FAMILY}`;
  ctx.fillText(h.title, 24, 38);
  ctx.font = `15px ${FONT_FAMILY}`;
  // A third line (the WebGPU runtimes of a run on several) fits the header at tighter spacing.
  const [top, step] = h.lines.length > 2 ? [62, 19] : [66, 24];
  h.lines.forEach((line, i) => ctx.fillText(line, 24, top + step * i));
  if (h.incomplete) {
    ctx.textAlign = "right";
    ctx.fillStyle = "#c62828";
    ctx.font = `bold 18px ${FONT_FAMILY}`;
    ctx.fillText(h.incomplete, width - 24, 38);
  }
}

/** Renders graph.png of a validated results document and returns the PNG bytes. */
export async function renderGraph(doc: ResultsDocument): Promise<Uint8Array> {
  ensureFont();
  const panels = chartPanels(doc, "static");
  const layout = graphLayout(panels.map((p) => p.name));
  const canvas = createCanvas(layout.width, layout.height);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, layout.width, layout.height);
  drawHeader(ctx, doc, layout.width);
  panels.forEach((p, i) => {
    const rect = layout.panels[i];
    ctx.drawImage(renderPanel(p.title, p.config ?? p.why!), rect.x, rect.y);
  });
  ctx.strokeStyle = "#cccccc";
  ctx.lineWidth = 1;
  for (const r of layout.panels) ctx.strokeRect(r.x + 0.5, r.y + 0.5, r.width - 1, r.height - 1);
  return new Uint8Array(await canvas.encode("png"));
}

/**
 * Reads `<dir>/results.json`, checks it against the schema, and writes `<dir>/graph.png` (atomically: temp file +
 * rename). Returns the PNG's path. Throws UserError for a missing folder or file, invalid JSON or a schema mismatch.
 */
export async function writeGraph(dir: string): Promise<string> {
  const png = await renderGraph(await readRun(dir));
  const out = join(dir, GRAPH_FILE);
  const tmp = `${out}.${Deno.pid}.tmp`;
  await Deno.writeFile(tmp, png);
  await Deno.rename(tmp, out);
  return out;
}
