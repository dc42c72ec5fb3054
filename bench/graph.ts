/**
 * graph.png from a results.json: six Chart.js panels (a 2 x 3 grid under a header) drawn with @napi-rs/canvas.
 *
 *   TTFT distribution (KDE)          | decode step latency per position (median, p10-p90 band)
 *   decode tokens/s per position     | PoE tokens/s per gamma (effective, user-visible)
 *   PoE acceptance per draft position | PoE tokens per call per gamma (accepted, resampled)
 *
 * This module (and graph_main.ts) are the only ones that import the canvas and chart libraries: they are native and
 * ~35 MB, so they stay off the GPU path. Render here from a results.json brought back from the GPU machine.
 * @module
 */

import { Chart, type ChartConfiguration, type ChartDataset, type ChartItem, registerables } from "chart.js";
import { isDirectory } from "../common/files.ts";
import { type Canvas, createCanvas, GlobalFonts, type SKRSContext2D } from "@napi-rs/canvas";
import { join } from "@std/path";
import { UserError } from "../common/errors.ts";
import { CONFIGURATION_NAMES, type ConfigurationName } from "./config.ts";
import type { Clock, ConfigurationResult, PoeGammaResult, ResultsDocument } from "./results_types.ts";
import { RESULTS_FILE } from "./results.ts";
import { validateResults } from "./schema.ts";
import { kde } from "./stats.ts";

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
const PANEL_NAMES = [
  "ttft_kde",
  "decode_latency",
  "decode_tps",
  "poe_tps",
  "poe_acceptance",
  "poe_tokens",
] as const;

/** The image's size and where each panel and the header are, for tests and for anyone cropping the image. */
export const GRAPH_LAYOUT: { width: number; height: number; header: PanelRect; panels: PanelRect[] } = {
  width: 2 * PANEL_W,
  height: HEADER_H + 3 * PANEL_H,
  header: { name: "header", x: 0, y: 0, width: 2 * PANEL_W, height: HEADER_H },
  panels: PANEL_NAMES.map((name, i) => ({
    name,
    x: (i % 2) * PANEL_W,
    y: HEADER_H + Math.floor(i / 2) * PANEL_H,
    width: PANEL_W,
    height: PANEL_H,
  })),
};

/** File name of the graph inside a run folder. */
export const GRAPH_FILE = "graph.png";

const FONT_FAMILY = "GraphSans";
const CONFIG_COLORS: Record<ConfigurationName, string> = {
  baseline: "#1f77b4",
  hydra_naive: "#ff7f0e",
  hydra_poe: "#2ca02c",
};
const GAMMA_COLORS = ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22", "#1f77b4", "#d62728"];
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

/** Axis-label wording of a clock. */
function clockWords(clocks: Set<Clock>): string {
  if (clocks.size === 0) return "";
  if (clocks.size > 1) return "GPU and wall time mixed";
  return clocks.has("gpu") ? "GPU time" : "wall time, GPU waits included";
}

function fmt(v: number, digits = 3): string {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1000 ? Math.round(v).toLocaleString("en-US") : v.toPrecision(digits);
}

function hexAlpha(hex: string, alpha: number): string {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

/** The configurations present in the document, in run order. */
function present(doc: ResultsDocument): ConfigurationResult[] {
  return CONFIGURATION_NAMES.flatMap((n) => doc.configurations[n] ? [doc.configurations[n]!] : []);
}

/** Common options: static rendering (no animation, no resize), title and subtitle, legend filter. */
function baseOptions(title: string, subtitle: string) {
  return {
    animation: false as const,
    responsive: false,
    devicePixelRatio: 1,
    layout: { padding: { left: 12, right: 20, top: 8, bottom: 8 } },
    plugins: {
      title: {
        display: true,
        text: title,
        font: { size: 18, weight: "bold" as const },
        padding: { top: 6, bottom: 2 },
      },
      subtitle: { display: subtitle !== "", text: subtitle, font: { size: 13 }, padding: { bottom: 8 } },
      legend: {
        labels: {
          // datasets with an empty label (bands, median markers) stay out of the legend
          filter: (item: { text: string }) => item.text !== "",
          boxWidth: 18,
          font: { size: 13 },
        },
      },
    },
  };
}

function axis(title: string, extra: Record<string, unknown> = {}) {
  return { title: { display: true, text: title, font: { size: 14 } }, grid: { color: "#e6e6e6" }, ...extra };
}

type AnyConfig = ChartConfiguration<"line" | "bar", unknown, unknown>;

function ttftChart(confs: ConfigurationResult[]): AnyConfig | null {
  if (confs.length === 0) return null;
  const datasets: ChartDataset<"line", { x: number; y: number }[]>[] = [];
  const clocks = new Set<Clock>();
  for (const c of confs) {
    const d = kde(c.ttft.filtered_ms, 240);
    const peak = Math.max(...d.y);
    const color = CONFIG_COLORS[c.name];
    clocks.add(c.ttft.clock);
    datasets.push({
      label: `${c.name}: median ${fmt(c.ttft.median_ms)} ms, p10-p90 ${fmt(c.ttft.p10_ms)}-${fmt(c.ttft.p90_ms)}` +
        ` (n=${c.ttft.n})`,
      data: d.x.map((x, i) => ({ x, y: d.y[i] })),
      borderColor: color,
      backgroundColor: hexAlpha(color, 0.12),
      fill: "origin",
      borderWidth: 2.5,
      pointRadius: 0,
    });
    datasets.push({
      label: "",
      data: [{ x: c.ttft.median_ms, y: 0 }, { x: c.ttft.median_ms, y: peak }],
      borderColor: color,
      borderDash: [6, 4],
      borderWidth: 1.5,
      pointRadius: 0,
    });
  }
  return {
    type: "line",
    data: { datasets },
    options: {
      ...baseOptions("Time to first token", "Gaussian KDE of the filtered samples; dashed: median"),
      scales: {
        x: axis(`TTFT (ms, ${clockWords(clocks)})`, { type: "linear" }),
        y: axis("density (1/ms)", { beginAtZero: true }),
      },
    },
  } as AnyConfig;
}

function decodeConfs(confs: ConfigurationResult[]): ConfigurationResult[] {
  return confs.filter((c) => c.decode !== null && c.decode.positions.length > 0);
}

function decodeLatencyChart(confs: ConfigurationResult[]): AnyConfig | null {
  const withDecode = decodeConfs(confs);
  if (withDecode.length === 0) return null;
  const datasets: ChartDataset<"line", { x: number; y: number }[]>[] = [];
  const clocks = new Set<Clock>();
  for (const c of withDecode) {
    const color = CONFIG_COLORS[c.name];
    const ps = c.decode!.positions;
    ps.forEach((p) => clocks.add(p.clock));
    datasets.push(
      {
        label: "",
        data: ps.map((p) => ({ x: p.position, y: p.p90_ms })),
        borderWidth: 0,
        pointRadius: 0,
        backgroundColor: hexAlpha(color, 0.18),
        fill: "+1",
      },
      { label: "", data: ps.map((p) => ({ x: p.position, y: p.p10_ms })), borderWidth: 0, pointRadius: 0 },
      {
        label: `${c.name} median`,
        data: ps.map((p) => ({ x: p.position, y: p.median_ms })),
        borderColor: color,
        backgroundColor: color,
        borderWidth: 2.5,
        pointRadius: 3,
      },
    );
  }
  return {
    type: "line",
    data: { datasets },
    options: {
      ...baseOptions("Decode step latency per position", "median per position; shaded: p10-p90"),
      scales: {
        x: axis("generated position (tokens after the prompt)", { type: "linear" }),
        y: axis(`step latency (ms, ${clockWords(clocks)})`, { beginAtZero: true }),
      },
    },
  } as AnyConfig;
}

function decodeTpsChart(confs: ConfigurationResult[]): AnyConfig | null {
  const withDecode = decodeConfs(confs);
  if (withDecode.length === 0) return null;
  const datasets: ChartDataset<"line", { x: number; y: number }[]>[] = withDecode.map((c) => {
    const ps = c.decode!.positions;
    const sorted = ps.map((p) => p.tokens_per_s).sort((a, b) => a - b);
    const mid = sorted[Math.floor(sorted.length / 2)];
    const pct = c.roofline_tps > 0 ? ` (${(100 * mid / c.roofline_tps).toFixed(0)}%)` : "";
    return {
      label: `${c.name}: ${fmt(mid)} tok/s (median over positions); roofline ${fmt(c.roofline_tps)} tok/s${pct}`,
      data: ps.map((p) => ({ x: p.position, y: p.tokens_per_s })),
      borderColor: CONFIG_COLORS[c.name],
      backgroundColor: CONFIG_COLORS[c.name],
      borderWidth: 2.5,
      pointRadius: 3,
    };
  });
  return {
    type: "line",
    data: { datasets },
    options: {
      ...baseOptions(
        "Decode throughput per position",
        "tokens/s = 1000 / median step latency; roofline: copy bandwidth / weight bytes per step",
      ),
      scales: {
        x: axis("generated position (tokens after the prompt)", { type: "linear" }),
        y: axis("tokens/s", { beginAtZero: true }),
      },
    },
  } as AnyConfig;
}

function poeOf(confs: ConfigurationResult[]): { conf: ConfigurationResult; gammas: PoeGammaResult[] } | null {
  const c = confs.find((c) => c.name === "hydra_poe" && c.poe !== null && c.poe.length > 0);
  return c ? { conf: c, gammas: c.poe! } : null;
}

function weightsNote(conf: ConfigurationResult): string {
  if (conf.weights === "synthetic") return "weights: synthetic LoRA ensemble (acceptance is not that of trained heads)";
  if (conf.weights === "random") return "weights: random";
  const base = conf.weights.base.split(/[\\/]/).filter((s) => s).pop() ?? conf.weights.base;
  return `weights: ${base} + per-head adapters`;
}

function poeTpsChart(confs: ConfigurationResult[]): AnyConfig | null {
  const poe = poeOf(confs);
  if (!poe) return null;
  const labels = poe.gammas.map((g) => `γ = ${g.gamma}`);
  const datasets: ChartDataset<"bar" | "line", number[]>[] = [
    {
      type: "bar",
      label: "effective (accepted tokens/s)",
      data: poe.gammas.map((g) => g.effective_tps),
      backgroundColor: "#2ca02c",
    },
    {
      type: "bar",
      label: "user-visible (output tokens/s)",
      data: poe.gammas.map((g) => g.user_visible_tps),
      backgroundColor: "#98df8a",
    },
  ];
  const baseline = confs.find((c) => c.name === "baseline" && c.decode && c.decode.positions.length > 0);
  if (baseline) {
    const tps = baseline.decode!.positions.map((p) => p.tokens_per_s).sort((a, b) => a - b);
    const mid = tps[Math.floor(tps.length / 2)];
    datasets.push({
      type: "line",
      label: `baseline decode (${fmt(mid)} tok/s, median over positions)`,
      data: labels.map(() => mid),
      borderColor: CONFIG_COLORS.baseline,
      borderDash: [8, 5],
      borderWidth: 2,
      pointRadius: 0,
    });
  }
  return {
    type: "bar",
    data: { labels, datasets },
    options: {
      ...baseOptions("PoE throughput per gamma", `whole generate calls, median call time; ${weightsNote(poe.conf)}`),
      scales: { x: axis("draft length gamma"), y: axis("tokens/s", { beginAtZero: true }) },
    },
  } as AnyConfig;
}

function poeAcceptanceChart(confs: ConfigurationResult[], beta: number): AnyConfig | null {
  const poe = poeOf(confs);
  if (!poe) return null;
  const datasets: ChartDataset<"line", { x: number; y: number }[]>[] = poe.gammas.map((g, i) => ({
    label: `γ = ${g.gamma} (resample rate ${(100 * g.resample_rate).toFixed(1)}%)`,
    data: g.acceptance_per_position.map((a, j) => ({ x: j + 1, y: a })),
    borderColor: GAMMA_COLORS[i % GAMMA_COLORS.length],
    backgroundColor: GAMMA_COLORS[i % GAMMA_COLORS.length],
    borderWidth: 2.5,
    pointRadius: 4,
  }));
  const maxGamma = Math.max(...poe.gammas.map((g) => g.gamma));
  return {
    type: "line",
    data: { datasets },
    options: {
      ...baseOptions(
        "PoE acceptance per draft position",
        `fraction of rounds whose i-th draft the jury accepted (beta ${beta}); ${weightsNote(poe.conf)}`,
      ),
      scales: {
        x: axis("draft position i", {
          type: "linear",
          min: 0.5,
          max: maxGamma + 0.5,
          // one tick per draft position (the padded range would otherwise put the ticks at 0.5, 1.5, ...)
          afterBuildTicks: (scale: { ticks: { value: number }[] }) => {
            scale.ticks = Array.from({ length: maxGamma }, (_, i) => ({ value: i + 1 }));
          },
        }),
        y: axis("acceptance (fraction of rounds)", { min: 0, max: 1 }),
      },
    },
  } as AnyConfig;
}

function poeTokensChart(confs: ConfigurationResult[]): AnyConfig | null {
  const poe = poeOf(confs);
  if (!poe) return null;
  const labels = poe.gammas.map((g) => `γ = ${g.gamma}`);
  return {
    type: "bar",
    data: {
      labels,
      datasets: [
        {
          label: "accepted (draft or prefill)",
          data: poe.gammas.map((g) => g.avg_accepted_tokens_per_call),
          backgroundColor: "#2ca02c",
        },
        {
          label: "resampled (jury's token at a rejected draft)",
          data: poe.gammas.map((g) => g.avg_output_tokens_per_call - g.avg_accepted_tokens_per_call),
          backgroundColor: "#d62728",
        },
        {
          label: "rounds",
          data: poe.gammas.map((g) => g.avg_rounds_per_call),
          backgroundColor: "#7f7f7f",
          stack: "rounds",
        },
      ],
    },
    options: {
      ...baseOptions(
        "PoE tokens per call",
        `mean per call over ${poe.gammas.map((g) => g.n_calls).join("/")} calls; sync points per call: ` +
          poe.gammas.map((g) => fmt(g.sync_points_per_call, 2)).join("/"),
      ),
      scales: {
        x: axis("draft length gamma", { stacked: true }),
        y: axis("tokens (or rounds) per call", { stacked: true, beginAtZero: true }),
      },
    },
  } as AnyConfig;
}

/** Why a panel about configurations `names` has no data: not configured, failed (with the error), or unfinished. */
function missingWhy(doc: ResultsDocument, names: ConfigurationName[]): string {
  const label = names.join(" and ");
  const configured = names.filter((n) => doc.config.configs.includes(n));
  if (configured.length === 0) return `no data: ${label} ${names.length > 1 ? "were" : "was"} not in configs`;
  const failed = doc.failure?.configuration;
  if (doc.status === "failed" && failed && configured.includes(failed)) {
    const msg = doc.failure!.message;
    return `no data: ${failed} failed (${msg.length > 70 ? msg.slice(0, 67) + "..." : msg})`;
  }
  return doc.status === "running" ? `no data yet: ${label} still running` : `no data: ${label} did not finish`;
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
function renderPanel(title: string, config: AnyConfig | string): Canvas {
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

/** "OLMo-2 7B" etc., or the checkpoint folder's name. */
function modelWords(doc: ResultsDocument): string {
  const w = doc.config.weights;
  if (w) return `checkpoint ${w.base.split(/[\\/]/).filter((s) => s).pop() ?? w.base}`;
  return doc.config.size === "tiny" ? "tiny test model" : `OLMo-2 ${doc.config.size.toUpperCase()}`;
}

function drawHeader(ctx: SKRSContext2D, doc: ResultsDocument): void {
  const env = doc.environment;
  const a = env.adapter;
  const device = a.description || [a.vendor, a.architecture, a.device].filter((s) => s).join(" ") || "unknown GPU";
  const day = env.date.slice(0, 10);
  const c = doc.config;
  ctx.textAlign = "left";
  ctx.fillStyle = TEXT_COLOR;
  ctx.font = `bold 26px ${FONT_FAMILY}`;
  ctx.fillText(`${modelWords(doc)} on ${device}, ${day}`, 24, 38);
  ctx.font = `15px ${FONT_FAMILY}`;
  const clock = env.timestamp_query ? "GPU time from timestamp queries" : "wall time (no timestamp-query)";
  ctx.fillText(
    `run ${doc.run} · prompt ${c.prompt_length} tokens · gen ${c.gen_length} (every ${c.step_interval}th timed) · ` +
      `Hydra ${c.n_heads} heads × ${c.heads_depth} blocks · PoE beta ${c.poe_beta}, temperature ${c.poe_temperature}, ` +
      `${c.poe_max_new_tokens} tokens per call`,
    24,
    66,
  );
  ctx.fillText(
    `${clock} · copy bandwidth ${fmt(env.copy_bandwidth_gbps)} GB/s · Deno ${env.deno.deno} · ${env.os.os} ` +
      `${env.os.arch} · commit ${env.commit ? env.commit.slice(0, 10) : "unknown"} · ${a.vendor} ${a.architecture}`
        .trim(),
    24,
    90,
  );
  if (doc.status !== "complete") {
    ctx.textAlign = "right";
    ctx.fillStyle = "#c62828";
    ctx.font = `bold 18px ${FONT_FAMILY}`;
    const what = doc.status === "failed"
      ? `INCOMPLETE: failed${doc.failure?.configuration ? ` in ${doc.failure.configuration}` : ""}`
      : "INCOMPLETE: run still in progress";
    ctx.fillText(what, GRAPH_LAYOUT.width - 24, 38);
  }
}

/** Renders graph.png of a validated results document and returns the PNG bytes. */
export async function renderGraph(doc: ResultsDocument): Promise<Uint8Array> {
  ensureFont();
  const confs = present(doc);
  const decodeWhy = missingWhy(doc, ["baseline", "hydra_naive"]);
  const poeWhy = missingWhy(doc, ["hydra_poe"]);
  const panels: [string, AnyConfig | string][] = [
    ["Time to first token", ttftChart(confs) ?? missingWhy(doc, [...CONFIGURATION_NAMES])],
    ["Decode step latency per position", decodeLatencyChart(confs) ?? decodeWhy],
    ["Decode throughput per position", decodeTpsChart(confs) ?? decodeWhy],
    ["PoE throughput per gamma", poeTpsChart(confs) ?? poeWhy],
    ["PoE acceptance per draft position", poeAcceptanceChart(confs, doc.config.poe_beta) ?? poeWhy],
    ["PoE tokens per call", poeTokensChart(confs) ?? poeWhy],
  ];
  const canvas = createCanvas(GRAPH_LAYOUT.width, GRAPH_LAYOUT.height);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, GRAPH_LAYOUT.width, GRAPH_LAYOUT.height);
  drawHeader(ctx, doc);
  panels.forEach(([title, config], i) => {
    const rect = GRAPH_LAYOUT.panels[i];
    ctx.drawImage(renderPanel(title, config), rect.x, rect.y);
  });
  ctx.strokeStyle = "#cccccc";
  ctx.lineWidth = 1;
  for (const r of GRAPH_LAYOUT.panels) ctx.strokeRect(r.x + 0.5, r.y + 0.5, r.width - 1, r.height - 1);
  return new Uint8Array(await canvas.encode("png"));
}

/**
 * Reads `<dir>/results.json`, checks it against the schema, and writes `<dir>/graph.png` (atomically: temp file +
 * rename). Returns the PNG's path. Throws UserError for a missing folder or file, invalid JSON or a schema mismatch.
 */
export async function writeGraph(dir: string): Promise<string> {
  if (!(await isDirectory(dir))) {
    throw new UserError(`The run folder ${dir} does not exist; pass a folder such as results/2025-01-31_run01.`);
  }
  const path = join(dir, RESULTS_FILE);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UserError(`${path} does not exist; pass a run folder written by \`deno task bench\`.`);
    }
    throw new UserError(`${path} could not be read (${(e as Error).message}); check its permissions.`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(
      `${path} is not valid JSON (${(e as Error).message}); the run may have been cut off mid-write.`,
    );
  }
  const problems = validateResults(json);
  if (problems.length > 0) {
    throw new UserError(
      `${path} does not match the results schema (${problems.length} problem${problems.length > 1 ? "s" : ""}, ` +
        `first: ${problems[0]}); regenerate it with this version of the suite.`,
    );
  }
  const png = await renderGraph(json as ResultsDocument);
  const out = join(dir, GRAPH_FILE);
  const tmp = `${out}.${Deno.pid}.tmp`;
  await Deno.writeFile(tmp, png);
  await Deno.rename(tmp, out);
  return out;
}
