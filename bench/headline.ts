/**
 * The headline figures of a run: one number per configuration and metric (per gamma for PoE), read from results.json
 * and nowhere else. The run's log, graph.png, report.html, the end-of-run summary and `deno task compare` all show
 * these values, so they cannot disagree (before, the log took the upper median of the per-position medians, the graph
 * the median of per-position tokens/s, and a reader the type-7 median: three numbers for one run).
 *
 * - TTFT: `ttft.median_ms`.
 * - Decode (baseline, hydra_naive): `decode.median_ms`, the median (type 7, stats.ts) over the timed positions of each
 *   position's median step time, and `decode.tokens_per_s` = 1000 / decode.median_ms. Both are stored since these
 *   fields were added; for older runs (the reference runs under results/) they are computed here, the same way, when
 *   absent.
 * - Share of the roofline: decode.tokens_per_s / roofline_tps.
 * - PoE per gamma: `median_ms` (ms per call), `effective_tps`, `user_visible_tps`.
 * - Peers (optional `peers` array of results.json): `decode_ms_per_token` (tokens/s = 1000 / it) and `ttft_ms`.
 *
 * Pure functions without imports of values but stats.ts: report.html bundles this module for the browser.
 * @module
 */

import type { ConfigurationResult, DecodePosition, DecodeResult, ResultsDocument } from "./results_types.ts";
import { quantile } from "./stats.ts";

/** The headline of a decode benchmark. */
export interface DecodeHeadline {
  /** Median over positions of the per-position median step time, ms. */
  median_ms: number;
  /** 1000 / median_ms. */
  tokens_per_s: number;
}

/** The median (type 7) over positions of each position's median_ms. */
export function medianOverPositions(positions: readonly Pick<DecodePosition, "median_ms">[]): number {
  return quantile(positions.map((p) => p.median_ms), 0.5);
}

/** A decode result with its headline fields, as the runner stores it. */
export function decodeResult(genLength: number, stepInterval: number, positions: DecodePosition[]): DecodeResult {
  const median = medianOverPositions(positions);
  return {
    gen_length: genLength,
    step_interval: stepInterval,
    median_ms: median,
    tokens_per_s: 1000 / median,
    positions,
  };
}

/** The stored headline of `decode`, or for a run written before those fields existed, the same figures computed. */
export function decodeHeadline(decode: DecodeResult): DecodeHeadline {
  if (typeof decode.median_ms === "number" && typeof decode.tokens_per_s === "number") {
    return { median_ms: decode.median_ms, tokens_per_s: decode.tokens_per_s };
  }
  const median = medianOverPositions(decode.positions);
  return { median_ms: median, tokens_per_s: 1000 / median };
}

/** A peer measured in the same run (another implementation, e.g. a tuned PyTorch decode), when results.json has one. */
export interface Peer {
  name: string;
  decode_ms_per_token?: number;
  ttft_ms?: number;
  [key: string]: unknown;
}

/** The `peers` array of results.json (`--peers`, bench/peers.ts), keeping only entries with a name; [] when absent. */
export function peersOf(doc: ResultsDocument): Peer[] {
  const peers = (doc as { peers?: unknown }).peers;
  if (!Array.isArray(peers)) return [];
  return peers.filter((p): p is Peer =>
    typeof p === "object" && p !== null && typeof (p as { name?: unknown }).name === "string"
  );
}

/** The WebGPU runtimes of a run, in the order it ran them (config.webgpu; `deno` for runs made before the knob). */
export function runtimesOf(doc: ResultsDocument): string[] {
  return doc.config.webgpu ?? ["deno"];
}

/** The runtime a result ran on (`deno` for runs made before the `webgpu` knob). */
export function runtimeOf(c: ConfigurationResult): string {
  return c.runtime ?? "deno";
}

/**
 * Where results.json keeps configuration `name` on `runtime` when the run used `runtimes`: under its name with one
 * runtime (every run before the `webgpu` knob too), else `<name>@<runtime>`.
 */
export function resultKey(name: string, runtime: string, runtimes: readonly string[]): string {
  return runtimes.length > 1 ? `${name}@${runtime}` : name;
}

/** The key of result `c` of `doc` (see resultKey): also the scope of its headline keys. */
export function keyOf(doc: ResultsDocument, c: ConfigurationResult): string {
  return resultKey(c.name, runtimeOf(c), runtimesOf(doc));
}

/** How graphs, tables and the log name result `c` of `doc`: its name, with ` · <runtime>` when the run had several. */
export function resultLabel(doc: ResultsDocument, c: ConfigurationResult): string {
  return runtimesOf(doc).length > 1 ? `${c.name} · ${runtimeOf(c)}` : c.name;
}

/** The configurations present in the document, in the order the run ran them (runtime by runtime). */
export function configurationsOf(doc: ResultsDocument): ConfigurationResult[] {
  const runtimes = runtimesOf(doc);
  const order = [
    ...runtimes.flatMap((r) => doc.config.configs.map((n) => resultKey(n, r, runtimes))),
    ...Object.keys(doc.configurations),
  ];
  return [...new Set(order)].flatMap((k) => {
    const c = doc.configurations[k];
    return c ? [c] : [];
  });
}

/** What a headline figure measures. */
export type Metric =
  | "ttft_ms"
  | "decode_ms_per_token"
  | "decode_tokens_per_s"
  | "roofline_share"
  | "poe_ms_per_call"
  | "poe_effective_tps"
  | "poe_user_visible_tps";

/** Label, unit and direction of each metric. */
export const METRICS: Readonly<Record<Metric, { label: string; unit: string; better: "lower" | "higher" }>> = {
  ttft_ms: { label: "TTFT", unit: "ms", better: "lower" },
  decode_ms_per_token: { label: "decode", unit: "ms/token", better: "lower" },
  decode_tokens_per_s: { label: "decode", unit: "tok/s", better: "higher" },
  roofline_share: { label: "share of roofline", unit: "%", better: "higher" },
  poe_ms_per_call: { label: "call", unit: "ms/call", better: "lower" },
  poe_effective_tps: { label: "effective", unit: "tok/s", better: "higher" },
  poe_user_visible_tps: { label: "user-visible", unit: "tok/s", better: "higher" },
};

/** One headline figure. */
export interface Headline {
  /**
   * Stable id, e.g. "baseline.decode_tokens_per_s", "hydra_poe.gamma2.poe_effective_tps", "peer.torch.ttft_ms"; a
   * run on several runtimes scopes it by resultKey: "baseline@dawn.decode_tokens_per_s".
   */
  key: string;
  /** What was measured: "baseline", "hydra_poe γ=2", "baseline · dawn" (several runtimes), "peer torch". */
  subject: string;
  /** The configuration, or null for a peer. */
  configuration: string | null;
  /** The WebGPU runtime of the configuration (null for a peer). */
  runtime: string | null;
  gamma: number | null;
  metric: Metric;
  value: number;
  /**
   * The raw samples behind the figure, in ms (TTFT repetitions; decode steps of every timed position; PoE calls), for
   * significance tests (rank tests: the same for a figure and its reciprocal); null when none are stored (peers,
   * roofline share).
   */
  samples: readonly number[] | null;
}

/** `value` as the summary, the report and compare print it: ms with 3 decimals (1 from 1000 on), tok/s with 1, % (1 decimal below 10%). */
export function formatFigure(metric: Metric, value: number): string {
  if (!Number.isFinite(value)) return String(value);
  const unit = METRICS[metric].unit;
  if (unit === "%") return `${(100 * value).toFixed(Math.abs(value) < 0.1 ? 1 : 0)}%`;
  if (unit === "tok/s") return value.toFixed(1);
  return value.toFixed(Math.abs(value) < 1000 ? 3 : 1);
}

/** Every headline figure of `doc`, configurations in run order, then peers. */
export function headlines(doc: ResultsDocument): Headline[] {
  const out: Headline[] = [];
  const add = (
    subject: string,
    c: ConfigurationResult | null,
    gamma: number | null,
    metric: Metric,
    value: number,
    samples: readonly number[] | null,
  ) => {
    const scope = c === null ? `peer.${subject.replace(/^peer /, "")}` : keyOf(doc, c);
    const key = `${scope}${gamma === null ? "" : `.gamma${gamma}`}.${metric}`;
    const configuration = c?.name ?? null, runtime = c ? runtimeOf(c) : null;
    out.push({ key, subject, configuration, runtime, gamma, metric, value, samples });
  };
  for (const c of configurationsOf(doc)) {
    const label = resultLabel(doc, c);
    add(label, c, null, "ttft_ms", c.ttft.median_ms, c.ttft.raw_ms);
    if (c.decode) {
      const h = decodeHeadline(c.decode);
      const steps = c.decode.positions.flatMap((p) => p.raw_ms);
      add(label, c, null, "decode_ms_per_token", h.median_ms, steps);
      add(label, c, null, "decode_tokens_per_s", h.tokens_per_s, steps);
      if (c.roofline_tps > 0) add(label, c, null, "roofline_share", h.tokens_per_s / c.roofline_tps, null);
    }
    for (const g of c.poe ?? []) {
      const subject = `${label} γ=${g.gamma}`;
      add(subject, c, g.gamma, "poe_ms_per_call", g.median_ms, g.raw_ms);
      add(subject, c, g.gamma, "poe_effective_tps", g.effective_tps, g.raw_ms);
      add(subject, c, g.gamma, "poe_user_visible_tps", g.user_visible_tps, g.raw_ms);
    }
  }
  for (const p of peersOf(doc)) {
    if (typeof p.ttft_ms === "number") add(`peer ${p.name}`, null, null, "ttft_ms", p.ttft_ms, null);
    if (typeof p.decode_ms_per_token === "number" && p.decode_ms_per_token > 0) {
      add(`peer ${p.name}`, null, null, "decode_ms_per_token", p.decode_ms_per_token, null);
      add(`peer ${p.name}`, null, null, "decode_tokens_per_s", 1000 / p.decode_ms_per_token, null);
    }
  }
  return out;
}
