/**
 * `deno task compare RUN_A RUN_B [RUN_C ...]`: the headline figures (headline.ts) of several runs side by side, each
 * with its ratio to the first run and whether the difference from the first run is significant: a two-sided
 * Mann-Whitney U test (stats.ts) on the raw samples results.json stores behind each figure (TTFT repetitions, the
 * decode steps of every timed position, PoE calls), significant when p < 0.01. Warns when the runs differ in device,
 * config or commit. Output: a Markdown table (default), CSV or JSON.
 * @module
 */

import { deviceWords } from "./charts.ts";
import { formatFigure, type Headline, headlines, type Metric, METRICS } from "./headline.ts";
import type { ResultsDocument } from "./results_types.ts";
import { mannWhitneyU } from "./stats.ts";
import { csvTable, markdownTable } from "./table.ts";

/** Significance level of the comparison. */
export const ALPHA = 0.01;

/** Output formats of `deno task compare`. */
export const COMPARE_FORMATS = ["markdown", "csv", "json"] as const;
/** One of COMPARE_FORMATS. */
export type CompareFormat = typeof COMPARE_FORMATS[number];

/** A run as compare names it. */
export interface ComparedRun {
  /** "A", "B", ... in the order given. */
  label: string;
  /** The folder as given on the command line. */
  dir: string;
  run: string;
  device: string;
  commit: string | null;
  date: string;
  status: ResultsDocument["status"];
}

/** One headline figure across the runs (null where a run lacks it). */
export interface ComparedMetric {
  key: string;
  subject: string;
  metric: Metric;
  unit: string;
  better: "lower" | "higher";
  values: (number | null)[];
  /** value / the first run's value; null for the first run and where either is missing. */
  ratios: (number | null)[];
  /** Two-sided Mann-Whitney p against the first run; null for the first run and where samples are missing. */
  p_values: (number | null)[];
  /** p < ALPHA; null where there is no p. */
  significant: (boolean | null)[];
}

/** The whole comparison. */
export interface Comparison {
  alpha: number;
  runs: ComparedRun[];
  warnings: string[];
  metrics: ComparedMetric[];
}

const LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";

function label(i: number): string {
  return i < LETTERS.length ? LETTERS[i] : `R${i + 1}`;
}

function short(commit: string | null): string {
  return commit ? commit.slice(0, 10) : "unknown";
}

/** Config knobs whose values differ from the first run's (results_dir, where a run was written, never matters). */
function configDiffs(docs: readonly ResultsDocument[]): string[] {
  const first = docs[0].config as unknown as Record<string, unknown>;
  const keys = new Set(docs.flatMap((d) => Object.keys(d.config)));
  keys.delete("results_dir");
  const out: string[] = [];
  for (const k of keys) {
    const values = docs.map((d) => JSON.stringify((d.config as unknown as Record<string, unknown>)[k]));
    if (values.some((v) => v !== JSON.stringify(first[k]))) {
      out.push(`${k} (${values.map((v, i) => `${label(i)} ${v}`).join(", ")})`);
    }
  }
  return out;
}

function warningsOf(runs: ComparedRun[], docs: readonly ResultsDocument[]): string[] {
  const w: string[] = [];
  const adapters = docs.map((d) => JSON.stringify(d.environment.adapter));
  if (new Set(adapters).size > 1) {
    w.push(`The runs measured different devices: ${runs.map((r) => `${r.label} ${r.device}`).join("; ")}.`);
  }
  const diffs = configDiffs(docs);
  if (diffs.length > 0) w.push(`The runs used different configs: ${diffs.join("; ")}.`);
  if (new Set(runs.map((r) => r.commit)).size > 1) {
    w.push(`The runs are of different commits: ${runs.map((r) => `${r.label} ${short(r.commit)}`).join(", ")}.`);
  }
  for (const r of runs) {
    if (r.status !== "complete") w.push(`Run ${r.label} (${r.run}) is incomplete (status ${r.status}).`);
  }
  return w;
}

/** Compares `runs` (folder as given + its validated results document); the first is the reference. */
export function compareRuns(runs: readonly { dir: string; doc: ResultsDocument }[]): Comparison {
  if (runs.length < 2) throw new Error("compareRuns: needs at least two runs");
  const docs = runs.map((r) => r.doc);
  const compared: ComparedRun[] = runs.map((r, i) => ({
    label: label(i),
    dir: r.dir,
    run: r.doc.run,
    device: deviceWords(r.doc),
    commit: r.doc.environment.commit,
    date: r.doc.environment.date,
    status: r.doc.status,
  }));
  const perRun = docs.map((d) => new Map(headlines(d).map((h) => [h.key, h])));
  const keys: Headline[] = [];
  const seen = new Set<string>();
  for (const m of perRun) {
    for (const h of m.values()) {
      if (!seen.has(h.key)) {
        seen.add(h.key);
        keys.push(h);
      }
    }
  }
  const metrics = keys.map((k): ComparedMetric => {
    const hs = perRun.map((m) => m.get(k.key) ?? null);
    const ref = hs[0];
    const p_values = hs.map((h, i) => {
      if (i === 0 || !h?.samples?.length || !ref?.samples?.length) return null;
      return mannWhitneyU(ref.samples, h.samples).p;
    });
    return {
      key: k.key,
      subject: k.subject,
      metric: k.metric,
      unit: METRICS[k.metric].unit,
      better: METRICS[k.metric].better,
      values: hs.map((h) => h?.value ?? null),
      ratios: hs.map((h, i) => (i === 0 || !h || !ref || ref.value === 0 ? null : h.value / ref.value)),
      p_values,
      significant: p_values.map((p) => (p === null ? null : p < ALPHA)),
    };
  });
  return { alpha: ALPHA, runs: compared, warnings: warningsOf(compared, docs), metrics };
}

/** A p-value with two significant digits (scientific below 1e-4). */
export function formatP(p: number): string {
  if (p === 0) return "0";
  return p < 1e-4 ? p.toExponential(1) : Number(p.toPrecision(2)).toString();
}

function metricName(m: ComparedMetric): string {
  return `${m.subject} · ${METRICS[m.metric].label} (${m.unit})`;
}

function valueText(m: ComparedMetric, i: number): string {
  const v = m.values[i];
  return v === null ? "–" : formatFigure(m.metric, v);
}

function ratioText(r: number | null): string {
  return r === null ? "–" : `${r.toFixed(3)}x`;
}

function pText(m: ComparedMetric, i: number, alpha: number): string {
  const p = m.p_values[i];
  if (p === null) return "n/a";
  return `${p < alpha ? "yes" : "no"}, p=${formatP(p)}`;
}

/** The comparison as Markdown: the runs, the warnings, one table, and how significance was decided. */
export function comparisonMarkdown(c: Comparison): string {
  const a = c.runs[0].label;
  const columns = ["metric", a];
  for (const r of c.runs.slice(1)) columns.push(r.label, `${r.label}/${a}`, `significant? (${r.label} vs ${a})`);
  const rows = c.metrics.map((m) => {
    const row = [metricName(m), valueText(m, 0)];
    for (let i = 1; i < c.runs.length; i++) row.push(valueText(m, i), ratioText(m.ratios[i]), pText(m, i, c.alpha));
    return row;
  });
  const lines = c.runs.map((r) =>
    `- **${r.label}**: ${r.dir} (run ${r.run}, ${r.device}, commit ${short(r.commit)}, ${r.date.slice(0, 10)})`
  );
  return [
    ...lines,
    "",
    ...c.warnings.map((w) => `**warning**: ${w}`),
    ...(c.warnings.length ? [""] : []),
    markdownTable(columns, rows),
    "",
    `significant?: two-sided Mann-Whitney U test against ${a} on the raw samples behind each figure (TTFT ` +
    `repetitions, decode steps of every timed position, PoE calls), significant when p < ${c.alpha}; n/a where no ` +
    "samples are stored (share of roofline, peers).",
  ].join("\n");
}

/** The comparison as CSV: one row per metric; values, ratios and p-values per run (warnings go to stderr). */
export function comparisonCsv(c: Comparison): string {
  const columns = ["key", "subject", "metric", "unit"];
  c.runs.forEach((r, i) => {
    columns.push(`value_${r.label} (${r.run})`);
    if (i > 0) columns.push(`ratio_${r.label}`, `p_${r.label}`, `significant_${r.label}`);
  });
  const rows = c.metrics.map((m) => {
    const row = [m.key, m.subject, METRICS[m.metric].label, m.unit];
    c.runs.forEach((_, i) => {
      row.push(m.values[i] === null ? "" : String(m.values[i]));
      if (i > 0) {
        row.push(m.ratios[i] === null ? "" : String(m.ratios[i]));
        row.push(m.p_values[i] === null ? "" : String(m.p_values[i]));
        row.push(m.significant[i] === null ? "" : String(m.significant[i]));
      }
    });
    return row;
  });
  return csvTable(columns, rows);
}

/** The comparison in `format`. */
export function formatComparison(c: Comparison, format: CompareFormat): string {
  if (format === "json") return JSON.stringify(c, null, 2);
  return format === "csv" ? comparisonCsv(c) : comparisonMarkdown(c);
}
