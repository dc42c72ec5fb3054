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

/** The configurations present in the document, in the order the run ran them. */
export function configurationsOf(doc: ResultsDocument): ConfigurationResult[] {
  const order = [...doc.config.configs, ...Object.keys(doc.configurations)];
  return [...new Set(order)].flatMap((n) => {
    const c = doc.configurations[n as keyof ResultsDocument["configurations"]];
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
  /** Stable id, e.g. "baseline.decode_tokens_per_s", "hydra_poe.gamma2.poe_effective_tps", "peer.torch.ttft_ms". */
  key: string;
  /** What was measured: "baseline", "hydra_poe γ=2", "peer torch". */
  subject: string;
  /** The configuration, or null for a peer. */
  configuration: string | null;
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
    configuration: string | null,
    gamma: number | null,
    metric: Metric,
    value: number,
    samples: readonly number[] | null,
  ) => {
    const scope = configuration === null ? `peer.${subject.replace(/^peer /, "")}` : configuration;
    const key = `${scope}${gamma === null ? "" : `.gamma${gamma}`}.${metric}`;
    out.push({ key, subject, configuration, gamma, metric, value, samples });
  };
  for (const c of configurationsOf(doc)) {
    add(c.name, c.name, null, "ttft_ms", c.ttft.median_ms, c.ttft.raw_ms);
    if (c.decode) {
      const h = decodeHeadline(c.decode);
      const steps = c.decode.positions.flatMap((p) => p.raw_ms);
      add(c.name, c.name, null, "decode_ms_per_token", h.median_ms, steps);
      add(c.name, c.name, null, "decode_tokens_per_s", h.tokens_per_s, steps);
      if (c.roofline_tps > 0) add(c.name, c.name, null, "roofline_share", h.tokens_per_s / c.roofline_tps, null);
    }
    for (const g of c.poe ?? []) {
      const subject = `${c.name} γ=${g.gamma}`;
      add(subject, c.name, g.gamma, "poe_ms_per_call", g.median_ms, g.raw_ms);
      add(subject, c.name, g.gamma, "poe_effective_tps", g.effective_tps, g.raw_ms);
      add(subject, c.name, g.gamma, "poe_user_visible_tps", g.user_visible_tps, g.raw_ms);
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
