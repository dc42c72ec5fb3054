/**
 * The seven panels of a run as Chart.js configurations, built from a results document alone, and the run's header
 * text. graph.ts draws them into graph.png with @napi-rs/canvas; report.html draws the same configurations in the
 * browser (this module is bundled into the page), so the two show the same series, labels and headline numbers.
 *
 *   TTFT distribution (KDE)          | decode step latency per position (median, p10-p90 band)
 *   decode tokens/s per position     | PoE tokens/s per gamma (effective, user-visible)
 *   PoE acceptance per draft position | PoE tokens per call per gamma (accepted, resampled)
 *   PoE tokens/s against acceptance (every spread, the cost model's curve, decode lines)
 *
 * and, when the run's config sets their knob, TTFT by prompt length (`prompt_lengths`) and decode by KV length
 * (`decode_contexts`). PyTorch peers (results.json's `peers`) are dashed reference lines on the TTFT and decode panels.
 * A run on several WebGPU runtimes (`--webgpu deno,dawn`) shows them side by side: every series of a configuration
 * once per runtime, labelled "baseline · dawn", the second runtime in a darker shade of the configuration's colour.
 *
 * Only types come from chart.js here: the values are Chart.js's own (graph.ts imports the npm package, the page
 * inlines its UMD build).
 * @module
 */

import type { ChartConfiguration, ChartDataset } from "chart.js";
import type { ConfigurationName } from "./config.ts";
import type { Clock, ConfigurationResult, PoeGammaResult, ResultsDocument } from "./results_types.ts";
import {
  configurationsOf,
  decodeHeadline,
  formatFigure,
  type Metric,
  METRICS,
  type Peer,
  peersOf,
  resultLabel,
  runtimeOf,
  runtimesOf,
} from "./headline.ts";
import { kde } from "./stats.ts";
import { acceptanceRateOf, modelTpsAt } from "./poe_model.ts";

/** A Chart.js configuration of any of the panels' types. */
export type AnyChartConfig = ChartConfiguration<"line" | "bar", unknown, unknown>;

/** Names of the panels, in reading order (two per row). */
export const PANEL_NAMES = [
  "ttft_kde",
  "decode_latency",
  "decode_tps",
  "poe_tps",
  "poe_acceptance",
  "poe_tokens",
  "poe_ceiling",
] as const;

/** Names of the panels drawn only when the run's config sets their knob (after PANEL_NAMES). */
export const OPTIONAL_PANEL_NAMES = ["ttft_by_length", "decode_contexts"] as const;

/** One of PANEL_NAMES or OPTIONAL_PANEL_NAMES. */
export type PanelName = typeof PANEL_NAMES[number] | typeof OPTIONAL_PANEL_NAMES[number];

/** One panel: its chart, or (no data) why not. */
export interface Panel {
  name: PanelName;
  title: string;
  /** The chart, or null when the run has no data for it. */
  config: AnyChartConfig | null;
  /** Why there is no chart ("no data: hydra_poe was not in configs"), or null. */
  why: string | null;
}

/** How a panel is drawn: "static" = a fixed-size canvas, no animation (graph.png); "page" = resizes with the page. */
export type ChartMode = "static" | "page";

/** Colour of each configuration's series. */
export const CONFIG_COLORS: Record<ConfigurationName, string> = {
  baseline: "#1f77b4",
  hydra_naive: "#ff7f0e",
  hydra_poe: "#2ca02c",
};
const GAMMA_COLORS = ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22", "#1f77b4", "#d62728"];

/** How the panels name and colour the results of a run (one look per document). */
interface Look {
  /** "baseline", or with several runtimes "baseline · dawn" (headline.ts resultLabel). */
  label(c: ConfigurationResult): string;
  /** "" with one runtime, else " · dawn": what tells a runtime's series of a shared series name apart. */
  suffix(c: ConfigurationResult): string;
  /** The configuration's colour, darker for every runtime after the first. */
  color(c: ConfigurationResult): string;
  /** The position of the result's runtime in the run's (0 for the first). */
  runtimeIndex(c: ConfigurationResult): number;
}

/** The look of `doc`'s results. */
function lookOf(doc: ResultsDocument): Look {
  const runtimes = runtimesOf(doc);
  const index = (c: ConfigurationResult) => Math.max(0, runtimes.indexOf(runtimeOf(c)));
  return {
    label: (c) => resultLabel(doc, c),
    suffix: (c) => runtimes.length > 1 ? ` · ${runtimeOf(c)}` : "",
    color: (c) => shade(CONFIG_COLORS[c.name], index(c)),
    runtimeIndex: index,
  };
}

/** `hex` darkened for the runtime at `index` (index 0: `hex` itself). */
function shade(hex: string, index: number): string {
  if (index === 0) return hex;
  const n = parseInt(hex.slice(1), 16), f = 0.55 ** index;
  const part = (shift: number) => Math.round(((n >> shift) & 255) * f).toString(16).padStart(2, "0");
  return `#${part(16)}${part(8)}${part(0)}`;
}

/** Width / height of a panel (graph.png draws 900 x 540). */
export const PANEL_ASPECT = 900 / 540;

/** Axis-label wording of a clock. */
function clockWords(clocks: Set<Clock>): string {
  if (clocks.size === 0) return "";
  if (clocks.size > 1) return "GPU and wall time mixed";
  return clocks.has("gpu") ? "GPU time" : "wall time, GPU waits included";
}

/** A number for a label: 3 significant digits, thousands grouped. */
export function fmt(v: number, digits = 3): string {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1000 ? Math.round(v).toLocaleString("en-US") : v.toPrecision(digits);
}

function hexAlpha(hex: string, alpha: number): string {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

/** Common options: no animation (the first frame is the final one), title and subtitle, legend filter. */
function baseOptions(mode: ChartMode, title: string, subtitle: string) {
  const sizing = mode === "static"
    ? { responsive: false, devicePixelRatio: 1 }
    : { responsive: true, maintainAspectRatio: true, aspectRatio: PANEL_ASPECT };
  return {
    animation: false as const,
    ...sizing,
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

/** A dashed line without point markers (a median, a model's curve, a reference level). */
function dashedLine(
  label: string,
  data: { x: number; y: number }[],
  color: string,
  width: number,
  dash = [6, 4],
): ChartDataset<"line", { x: number; y: number }[]> {
  return { label, data, borderColor: color, borderDash: dash, borderWidth: width, pointRadius: 0 };
}

/** A line chart of `datasets` under the panel's title and subtitle, with the given axes. */
function lineChart(
  mode: ChartMode,
  title: string,
  subtitle: string,
  datasets: ChartDataset<"line", { x: number; y: number }[]>[],
  scales: Record<string, unknown>,
): AnyChartConfig {
  return {
    type: "line",
    data: { datasets },
    options: { ...baseOptions(mode, title, subtitle), scales },
  } as AnyChartConfig;
}

function ttftChart(
  mode: ChartMode,
  confs: ConfigurationResult[],
  peers: readonly Peer[],
  look: Look,
): AnyChartConfig | null {
  if (confs.length === 0) return null;
  const datasets: ChartDataset<"line", { x: number; y: number }[]>[] = [];
  const clocks = new Set<Clock>();
  let top = 0;
  for (const c of confs) {
    const d = kde(c.ttft.filtered_ms, 240);
    const peak = Math.max(...d.y);
    top = Math.max(top, peak);
    const color = look.color(c);
    clocks.add(c.ttft.clock);
    datasets.push({
      label:
        `${look.label(c)}: median ${formatFigure("ttft_ms", c.ttft.median_ms)} ms, p10-p90 ${fmt(c.ttft.p10_ms)}-` +
        `${fmt(c.ttft.p90_ms)} (n=${c.ttft.n})`,
      data: d.x.map((x, i) => ({ x, y: d.y[i] })),
      borderColor: color,
      backgroundColor: hexAlpha(color, 0.12),
      fill: "origin",
      borderWidth: 2.5,
      pointRadius: 0,
    });
    datasets.push(dashedLine("", [{ x: c.ttft.median_ms, y: 0 }, { x: c.ttft.median_ms, y: peak }], color, 1.5));
  }
  datasets.push(...peerLines(peers, "ttft_ms", (v) => [{ x: v, y: 0 }, { x: v, y: top }]));
  return lineChart(mode, "Time to first token", "Gaussian KDE of the filtered samples; dashed: median", datasets, {
    x: axis(`TTFT (ms, ${clockWords(clocks)})`, { type: "linear" }),
    y: axis("density (1/ms)", { beginAtZero: true }),
  });
}

function decodeConfs(confs: ConfigurationResult[]): ConfigurationResult[] {
  return confs.filter((c) => c.decode !== null && c.decode.positions.length > 0);
}

function decodeLatencyChart(
  mode: ChartMode,
  confs: ConfigurationResult[],
  peers: readonly Peer[],
  look: Look,
): AnyChartConfig | null {
  const withDecode = decodeConfs(confs);
  if (withDecode.length === 0) return null;
  const datasets: ChartDataset<"line", { x: number; y: number }[]>[] = [];
  const clocks = new Set<Clock>();
  for (const c of withDecode) {
    const color = look.color(c);
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
        label: `${look.label(c)} median (headline ${
          formatFigure("decode_ms_per_token", decodeHeadline(c.decode!).median_ms)
        } ms)`,
        data: ps.map((p) => ({ x: p.position, y: p.median_ms })),
        borderColor: color,
        backgroundColor: color,
        borderWidth: 2.5,
        pointRadius: 3,
      },
    );
  }
  datasets.push(...peerLines(peers, "decode_ms_per_token", acrossPositions(withDecode)));
  return lineChart(mode, "Decode step latency per position", "median per position; shaded: p10-p90", datasets, {
    x: axis("generated position (tokens after the prompt)", { type: "linear" }),
    y: axis(`step latency (ms, ${clockWords(clocks)})`, { beginAtZero: true }),
  });
}

function decodeTpsChart(
  mode: ChartMode,
  confs: ConfigurationResult[],
  peers: readonly Peer[],
  look: Look,
): AnyChartConfig | null {
  const withDecode = decodeConfs(confs);
  if (withDecode.length === 0) return null;
  const datasets: ChartDataset<"line", { x: number; y: number }[]>[] = withDecode.map((c) => {
    const tps = decodeHeadline(c.decode!).tokens_per_s;
    const pct = c.roofline_tps > 0 ? ` (${formatFigure("roofline_share", tps / c.roofline_tps)})` : "";
    return {
      label: `${look.label(c)}: ${formatFigure("decode_tokens_per_s", tps)} tok/s (median over positions); roofline ` +
        `${fmt(c.roofline_tps)} tok/s${pct}`,
      data: c.decode!.positions.map((p) => ({ x: p.position, y: p.tokens_per_s })),
      borderColor: look.color(c),
      backgroundColor: look.color(c),
      borderWidth: 2.5,
      pointRadius: 3,
    };
  });
  datasets.push(...peerLines(peers, "decode_tokens_per_s", acrossPositions(withDecode)));
  return lineChart(
    mode,
    "Decode throughput per position",
    "tokens/s = 1000 / median step latency; roofline: copy bandwidth / weight bytes per step",
    datasets,
    {
      x: axis("generated position (tokens after the prompt)", { type: "linear" }),
      y: axis("tokens/s", { beginAtZero: true }),
    },
  );
}

/** The hydra_poe results with PoE figures, one per runtime (in run order). */
function poesOf(confs: ConfigurationResult[]): { conf: ConfigurationResult; gammas: PoeGammaResult[] }[] {
  return confs.filter((c) => c.name === "hydra_poe" && c.poe !== null && c.poe.length > 0)
    .map((c) => ({ conf: c, gammas: c.poe! }));
}

/** How the PoE weights are described under a panel. */
export function weightsNote(conf: ConfigurationResult): string {
  if (conf.weights === "synthetic") return "weights: synthetic LoRA ensemble (acceptance is not that of trained heads)";
  if (conf.weights === "random") return "weights: random";
  const base = conf.weights.base.split(/[\\/]/).filter((s) => s).pop() ?? conf.weights.base;
  return `weights: ${base} + per-head adapters`;
}

function poeTpsChart(mode: ChartMode, confs: ConfigurationResult[], look: Look): AnyChartConfig | null {
  const poes = poesOf(confs);
  if (poes.length === 0) return null;
  const gammas = [...new Set(poes.flatMap((p) => p.gammas.map((g) => g.gamma)))].sort((a, b) => a - b);
  const labels = gammas.map((g) => `γ = ${g}`);
  const at = (p: (typeof poes)[number], f: (g: PoeGammaResult) => number) =>
    gammas.map((gamma) => {
      const g = p.gammas.find((x) => x.gamma === gamma);
      return g ? f(g) : NaN;
    });
  const datasets: ChartDataset<"bar" | "line", number[]>[] = poes.flatMap((p) => {
    const i = look.runtimeIndex(p.conf), suffix = look.suffix(p.conf);
    return [
      {
        type: "bar" as const,
        label: `effective (accepted tokens/s)${suffix}`,
        data: at(p, (g) => g.effective_tps),
        backgroundColor: shade("#2ca02c", i),
      },
      {
        type: "bar" as const,
        label: `user-visible (output tokens/s)${suffix}`,
        data: at(p, (g) => g.user_visible_tps),
        backgroundColor: shade("#98df8a", i),
      },
    ];
  });
  const baselines = confs.filter((c) => c.name === "baseline" && c.decode && c.decode.positions.length > 0);
  for (const baseline of baselines) {
    const tps = decodeHeadline(baseline.decode!).tokens_per_s;
    datasets.push({
      type: "line",
      label: `${look.label(baseline)} decode (${
        formatFigure("decode_tokens_per_s", tps)
      } tok/s, median over positions)`,
      data: labels.map(() => tps),
      borderColor: look.color(baseline),
      borderDash: [8, 5],
      borderWidth: 2,
      pointRadius: 0,
    });
  }
  return {
    type: "bar",
    data: { labels, datasets },
    options: {
      ...baseOptions(
        mode,
        "PoE throughput per gamma",
        `whole generate calls, median call time; ${weightsNote(poes[0].conf)}`,
      ),
      scales: { x: axis("draft length gamma"), y: axis("tokens/s", { beginAtZero: true }) },
    },
  } as AnyChartConfig;
}

function poeAcceptanceChart(
  mode: ChartMode,
  confs: ConfigurationResult[],
  beta: number,
  look: Look,
): AnyChartConfig | null {
  const poes = poesOf(confs);
  if (poes.length === 0) return null;
  const datasets: ChartDataset<"line", { x: number; y: number }[]>[] = poes.flatMap((p) =>
    p.gammas.map((g, i) => ({
      label: `γ = ${g.gamma}${look.suffix(p.conf)} (resample rate ${(100 * g.resample_rate).toFixed(1)}%)`,
      data: g.acceptance_per_position.map((a, j) => ({ x: j + 1, y: a })),
      borderColor: shade(GAMMA_COLORS[i % GAMMA_COLORS.length], look.runtimeIndex(p.conf)),
      backgroundColor: shade(GAMMA_COLORS[i % GAMMA_COLORS.length], look.runtimeIndex(p.conf)),
      borderWidth: 2.5,
      pointRadius: 4,
    }))
  );
  const maxGamma = Math.max(...poes.flatMap((p) => p.gammas.map((g) => g.gamma)));
  return lineChart(
    mode,
    "PoE acceptance per draft position",
    `fraction of rounds whose i-th draft the jury accepted (beta ${beta}); ${weightsNote(poes[0].conf)}`,
    datasets,
    {
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
  );
}

function poeTokensChart(mode: ChartMode, confs: ConfigurationResult[], look: Look): AnyChartConfig | null {
  const poes = poesOf(confs);
  if (poes.length === 0) return null;
  const gammas = [...new Set(poes.flatMap((p) => p.gammas.map((g) => g.gamma)))].sort((a, b) => a - b);
  const at = (p: (typeof poes)[number], f: (g: PoeGammaResult) => number) =>
    gammas.map((gamma) => {
      const g = p.gammas.find((x) => x.gamma === gamma);
      return g ? f(g) : NaN;
    });
  const several = poes.length > 1;
  const datasets = poes.flatMap((p) => {
    const i = look.runtimeIndex(p.conf), suffix = look.suffix(p.conf);
    // One stack per runtime (with one runtime, the default stack as before).
    const stack = several ? { stack: `tokens${suffix}` } : {};
    return [
      {
        label: `accepted (draft or prefill)${suffix}`,
        data: at(p, (g) => g.avg_accepted_tokens_per_call),
        backgroundColor: shade("#2ca02c", i),
        ...stack,
      },
      {
        label: `resampled (jury's token at a rejected draft)${suffix}`,
        data: at(p, (g) => g.avg_output_tokens_per_call - g.avg_accepted_tokens_per_call),
        backgroundColor: shade("#d62728", i),
        ...stack,
      },
      {
        label: `rounds${suffix}`,
        data: at(p, (g) => g.avg_rounds_per_call),
        backgroundColor: shade("#7f7f7f", i),
        stack: `rounds${suffix}`,
      },
    ];
  });
  const perRuntime = (f: (g: PoeGammaResult) => string) =>
    poes.map((p) => p.gammas.map(f).join("/") + (several ? ` (${look.suffix(p.conf).slice(3)})` : "")).join(", ");
  return {
    type: "bar",
    data: { labels: gammas.map((g) => `γ = ${g}`), datasets },
    options: {
      ...baseOptions(
        mode,
        "PoE tokens per call",
        `mean per call over ${perRuntime((g) => String(g.n_calls))} calls; sync points per call: ` +
          perRuntime((g) => fmt(g.sync_points_per_call, 2)),
      ),
      scales: {
        x: axis("draft length gamma", { stacked: true }),
        y: axis("tokens (or rounds) per call", { stacked: true, beginAtZero: true }),
      },
    },
  } as AnyChartConfig;
}

/** Acceptance rates at which the cost model's curve is drawn: 0, 0.02, ..., 1. */
const CURVE_ALPHAS = Array.from({ length: 51 }, (_, i) => i / 50);

/**
 * PoE user-visible tokens/s against the draft acceptance rate: per gamma the measured points (one per spread of the
 * synthetic ensemble) and the cost model's curve (the configured spread's step costs; geometric acceptance, one sync,
 * no no-op round: bench/poe_model.ts), with the decode tokens/s of baseline and hydra_naive as horizontal lines.
 */
function poeCeilingChart(
  mode: ChartMode,
  confs: ConfigurationResult[],
  spread: number,
  look: Look,
): AnyChartConfig | null {
  const poes = poesOf(confs);
  if (poes.length === 0) return null;
  const datasets: ChartDataset<"line", { x: number; y: number }[]>[] = [];
  let spreadWords = "";
  for (const poe of poes) {
    const spreads = [{ spread, gammas: poe.gammas }, ...(poe.conf.poe_spreads ?? [])];
    const spreadList = spreads.map((s) => s.spread).sort((a, b) => a - b).join(", ");
    spreadWords = spreads.length > 1 ? ` (spreads ${spreadList})` : "";
    const suffix = look.suffix(poe.conf);
    poe.gammas.forEach((g, i) => {
      const color = shade(GAMMA_COLORS[i % GAMMA_COLORS.length], look.runtimeIndex(poe.conf));
      const points = spreads.map((s) => s.gammas.find((x) => x.gamma === g.gamma)).filter((x) => x !== undefined);
      datasets.push({
        label: `γ = ${g.gamma}${suffix} measured${spreadWords}`,
        data: points.map((x) => ({ x: acceptanceRateOf(x), y: x.user_visible_tps })),
        borderColor: color,
        backgroundColor: color,
        showLine: false,
        pointRadius: 5,
      });
      const m = g.cost_model;
      if (!m) return;
      const curve = CURVE_ALPHAS.map((a) => ({ x: a, y: modelTpsAt(m, g.gamma, g.avg_output_tokens_per_call, a) }));
      datasets.push(
        dashedLine(`γ = ${g.gamma}${suffix} cost model (${fmt(m.ceiling_tps)} tok/s at 1)`, curve, color, 2),
      );
    });
  }
  for (const c of decodeConfs(confs)) {
    const tps = decodeHeadline(c.decode!).tokens_per_s;
    const label = `${look.label(c)} decode (${formatFigure("decode_tokens_per_s", tps)} tok/s)`;
    datasets.push(dashedLine(label, [{ x: 0, y: tps }, { x: 1, y: tps }], look.color(c), 2, [10, 5]));
  }
  return lineChart(
    mode,
    "PoE throughput against acceptance",
    `points: whole calls (wall time); dashed: cost model (geometric acceptance, 1 sync); ${weightsNote(poes[0].conf)}`,
    datasets,
    {
      x: axis("draft acceptance rate (accepted / judged drafts)", { type: "linear", min: 0, max: 1 }),
      y: axis("user-visible tokens/s", { beginAtZero: true }),
    },
  );
}

/** Why a panel about configurations `names` has no data: not configured, failed (with the error), or unfinished. */
function missingWhy(doc: ResultsDocument, names: readonly ConfigurationName[]): string {
  const label = names.join(" and ");
  const configured = names.filter((n) => doc.config.configs.includes(n));
  if (configured.length === 0) return `no data: ${label} ${names.length > 1 ? "were" : "was"} not in configs`;
  const failed = doc.failure?.configuration;
  if (doc.status === "failed" && failed && configured.includes(failed)) {
    const msg = doc.failure!.message;
    const on = runtimesOf(doc).length > 1 && doc.failure?.runtime ? ` on ${doc.failure.runtime}` : "";
    return `no data: ${failed}${on} failed (${msg.length > 70 ? msg.slice(0, 67) + "..." : msg})`;
  }
  return doc.status === "running" ? `no data yet: ${label} still running` : `no data: ${label} did not finish`;
}

/** The panels of `doc` (a validated results document), in PANEL_NAMES order. */
export function chartPanels(doc: ResultsDocument, mode: ChartMode): Panel[] {
  const confs = configurationsOf(doc);
  const peers = peersOf(doc);
  const look = lookOf(doc);
  const decodeWhy = missingWhy(doc, ["baseline", "hydra_naive"]);
  const poeWhy = missingWhy(doc, ["hydra_poe"]);
  const panel = (i: number, title: string, config: AnyChartConfig | null, why: string): Panel => ({
    name: PANEL_NAMES[i],
    title,
    config,
    why: config ? null : why,
  });
  return [
    panel(0, "Time to first token", ttftChart(mode, confs, peers, look), missingWhy(doc, doc.config.configs)),
    panel(1, "Decode step latency per position", decodeLatencyChart(mode, confs, peers, look), decodeWhy),
    panel(2, "Decode throughput per position", decodeTpsChart(mode, confs, peers, look), decodeWhy),
    panel(3, "PoE throughput per gamma", poeTpsChart(mode, confs, look), poeWhy),
    panel(4, "PoE acceptance per draft position", poeAcceptanceChart(mode, confs, doc.config.poe_beta, look), poeWhy),
    panel(5, "PoE tokens per call", poeTokensChart(mode, confs, look), poeWhy),
    // synthetic_spread: absent from the config of runs made before it, which ran at 1
    panel(
      6,
      "PoE throughput against acceptance",
      poeCeilingChart(mode, confs, doc.config.synthetic_spread ?? 1, look),
      poeWhy,
    ),
    ...sweepPanels(doc, mode, confs, decodeWhy, look),
  ];
}

/** "OLMo-2 7B" etc., or the checkpoint folder's name. */
export function modelWords(doc: ResultsDocument): string {
  const w = doc.config.weights;
  if (w) return `checkpoint ${w.base.split(/[\\/]/).filter((s) => s).pop() ?? w.base}`;
  return doc.config.size === "tiny" ? "tiny test model" : `OLMo-2 ${doc.config.size.toUpperCase()}`;
}

/** The device a run measured, in words. */
export function deviceWords(doc: ResultsDocument): string {
  const a = doc.environment.adapter;
  return a.description || [a.vendor, a.architecture, a.device].filter((s) => s).join(" ") || "unknown GPU";
}

/** The header of graph.png and report.html: a title, two lines of details, and a note when the run is incomplete. */
export function runHeader(doc: ResultsDocument): { title: string; lines: string[]; incomplete: string | null } {
  const env = doc.environment;
  const a = env.adapter;
  const c = doc.config;
  const clock = env.timestamp_query ? "GPU time from timestamp queries" : "wall time (no timestamp-query)";
  return {
    title: `${modelWords(doc)} on ${deviceWords(doc)}, ${env.date.slice(0, 10)}`,
    lines: [
      `run ${doc.run} · prompt ${c.prompt_length} tokens · gen ${c.gen_length} (every ${c.step_interval}th timed) · ` +
      (c.kv_dtype ? `KV cache ${c.kv_dtype} · ` : "") +
      (c.prefill_math === "f16" ? "prefill GEMM f16 · " : "") +
      `Hydra ${c.n_heads} heads × ${c.heads_depth} blocks · PoE beta ${c.poe_beta}, temperature ${c.poe_temperature}, ` +
      `${c.poe_max_new_tokens} tokens per call`,
      `${clock} · copy bandwidth ${fmt(env.copy_bandwidth_gbps)} GB/s · Deno ${env.deno.deno} · ${env.os.os} ` +
      `${env.os.arch} · commit ${env.commit ? env.commit.slice(0, 10) : "unknown"} · ${a.vendor} ${a.architecture}`
        .trim(),
      ...runtimeLines(doc),
    ],
    incomplete: doc.status === "complete"
      ? null
      : doc.status === "failed"
      ? `INCOMPLETE: failed${doc.failure?.configuration ? ` in ${doc.failure.configuration}` : ""}${
        doc.failure?.configuration && doc.failure.runtime && runtimesOf(doc).length > 1
          ? ` on ${doc.failure.runtime}`
          : ""
      }`
      : doc.status === "interrupted"
      ? `INCOMPLETE: interrupted${doc.failure?.message ? ` (${doc.failure.message})` : ""}`
      : "INCOMPLETE: run still in progress",
  };
}

/**
 * The header's line on the WebGPU runtimes, when the run used any but Deno's alone (runs before the `webgpu` knob and
 * deno-only runs keep the header they had): each runtime, its version, toggles and adapter.
 */
function runtimeLines(doc: ResultsDocument): string[] {
  const runtimes = doc.environment.runtimes;
  if (!runtimes || runtimesOf(doc).join() === "deno") return [];
  const one = (r: NonNullable<typeof runtimes>[number]) =>
    `${r.runtime} (${r.version}${r.toggles.length ? `; toggles ${r.toggles.join(" ")}` : ""}) on ${
      r.adapter.description || r.adapter.vendor
    }, copy ${fmt(r.copy_bandwidth_gbps)} GB/s`;
  return [`WebGPU: ${runtimes.map(one).join(" · ")}`];
}

// ---- PyTorch peers: reference lines (results.json's `peers`) ----

/** Colours of the peers' dashed reference lines, by the peer's index. */
const PEER_COLORS = ["#333333", "#d62728", "#9467bd", "#8c564b"];

/** A peer's figure of `metric` (ttft_ms, decode ms/token or tokens/s), or undefined when it has none. */
function peerFigure(p: Peer, metric: Metric): number | undefined {
  const ms = metric === "ttft_ms" ? p.ttft_ms : p.decode_ms_per_token;
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) return undefined;
  if (metric !== "decode_tokens_per_s") return ms;
  return ms > 0 ? 1000 / ms : undefined;
}

/** One dashed line per peer with a `metric` figure, drawn through the points `at(value)`. */
function peerLines(
  peers: readonly Peer[],
  metric: Metric,
  at: (value: number) => { x: number; y: number }[],
): ChartDataset<"line", { x: number; y: number }[]>[] {
  return peers.flatMap((p, i) => {
    const v = peerFigure(p, metric);
    if (v === undefined) return [];
    const color = PEER_COLORS[i % PEER_COLORS.length];
    return [{
      label: `peer ${p.name}: ${formatFigure(metric, v)} ${METRICS[metric].unit}`,
      data: at(v),
      borderColor: color,
      backgroundColor: color,
      borderDash: [3, 3],
      borderWidth: 2,
      pointRadius: 0,
    }];
  });
}

/** A horizontal line at y = value across the timed positions of the decode panels. */
function acrossPositions(confs: ConfigurationResult[]): (value: number) => { x: number; y: number }[] {
  const xs = confs.flatMap((c) => c.decode!.positions.map((p) => p.position));
  return (y) => [{ x: Math.min(...xs), y }, { x: Math.max(...xs), y }];
}

// ---- The length sweeps (prompt_lengths, decode_contexts): optional panels ----

/** What a sweep panel plots. */
interface SweepSpec {
  name: typeof OPTIONAL_PANEL_NAMES[number];
  title: string;
  subtitle: string;
  /** Its entries in a configuration's results: x, and the stats with tokens_per_s. */
  entries: (c: ConfigurationResult) => { x: number; median_ms: number; tokens_per_s: number; clock: Clock }[];
  x: string;
  latency: string;
  tps: string;
}

const SWEEPS: Readonly<Record<SweepSpec["name"], SweepSpec>> = {
  ttft_by_length: {
    name: "ttft_by_length",
    title: "TTFT by prompt length",
    subtitle: "median TTFT (solid, left axis) and prefill tokens/s = prompt length / TTFT (dashed, right axis)",
    entries: (c) => (c.ttft_by_length ?? []).map((e) => ({ ...e, x: e.prompt_length })),
    x: "prompt length (tokens)",
    latency: "TTFT",
    tps: "prefill tokens/s",
  },
  decode_contexts: {
    name: "decode_contexts",
    title: "Decode by KV length",
    subtitle: "median step latency (solid, left axis) and tokens/s = 1000 / it (dashed, right axis)",
    entries: (c) => (c.decode_contexts ?? []).map((e) => ({ ...e, x: e.context })),
    x: "KV length (tokens in the cache before the step)",
    latency: "step latency",
    tps: "tokens/s",
  },
};

/** A sweep panel: per configuration its median latency (left axis) and tokens/s (right axis) against length. */
function sweepChart(
  mode: ChartMode,
  confs: ConfigurationResult[],
  spec: SweepSpec,
  look: Look,
): AnyChartConfig | null {
  const withSweep = confs.filter((c) => spec.entries(c).length > 0);
  if (withSweep.length === 0) return null;
  const clocks = new Set<Clock>();
  const datasets: ChartDataset<"line", { x: number; y: number }[]>[] = withSweep.flatMap((c) => {
    const es = spec.entries(c), color = look.color(c);
    es.forEach((e) => clocks.add(e.clock));
    const line = { borderColor: color, backgroundColor: color, borderWidth: 2.5, pointRadius: 3 };
    return [
      {
        ...line,
        label: `${look.label(c)} ${spec.latency}`,
        yAxisID: "y",
        data: es.map((e) => ({ x: e.x, y: e.median_ms })),
      },
      {
        ...line,
        label: `${look.label(c)} ${spec.tps}`,
        yAxisID: "y1",
        borderDash: [8, 5],
        data: es.map((e) => ({ x: e.x, y: e.tokens_per_s })),
      },
    ];
  });
  return {
    type: "line",
    data: { datasets },
    options: {
      ...baseOptions(mode, spec.title, spec.subtitle),
      scales: {
        x: axis(spec.x, { type: "linear" }),
        y: axis(`${spec.latency} (ms, ${clockWords(clocks)})`, { beginAtZero: true, position: "left" }),
        y1: axis(spec.tps, { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } }),
      },
    },
  } as AnyChartConfig;
}

/** The sweep panels whose knob the run's config sets, each with its chart or why it has none. */
function sweepPanels(
  doc: ResultsDocument,
  mode: ChartMode,
  confs: ConfigurationResult[],
  why: string,
  look: Look,
): Panel[] {
  // `?? []`: a results.json from before these knobs, read without readRun (which fills them in)
  const set = {
    ttft_by_length: (doc.config.prompt_lengths ?? []).length > 0,
    decode_contexts: (doc.config.decode_contexts ?? []).length > 0,
  };
  return OPTIONAL_PANEL_NAMES.filter((n) => set[n]).map((n) => {
    const config = sweepChart(mode, confs, SWEEPS[n], look);
    return { name: n, title: SWEEPS[n].title, config, why: config ? null : why };
  });
}
