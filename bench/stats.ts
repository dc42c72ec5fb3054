/**
 * Pure statistics of timing samples: quantiles, Tukey's outlier filter, the summary the harness reports, and a
 * Gaussian kernel density estimate for the graphs.
 *
 * Quantile definition: linear interpolation between order statistics, Hyndman & Fan type 7 (the default of NumPy's
 * `quantile`, R's `quantile` and Excel's PERCENTILE.INC): for sorted x[0..n-1], h = (n - 1) q and
 * Q(q) = x[floor(h)] + (h - floor(h)) (x[floor(h) + 1] - x[floor(h)]). So Q(0) = min, Q(1) = max, Q(0.5) = median.
 * @module
 */

import type { BenchStats } from "./results_types.ts";

function checkSamples(values: readonly number[], what: string): void {
  if (values.length === 0) throw new Error(`${what}: no samples`);
  for (const v of values) if (!Number.isFinite(v)) throw new Error(`${what}: sample ${v} is not a finite number`);
}

/** The q-quantile (0 <= q <= 1) of `sorted`, which must be sorted ascending (type 7, see the module comment). */
export function quantileSorted(sorted: readonly number[], q: number): number {
  if (!(q >= 0 && q <= 1)) throw new Error(`quantile: q must be in [0, 1], got ${q}`);
  if (sorted.length === 0) throw new Error("quantile: no samples");
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
}

/** The q-quantile (0 <= q <= 1) of `values` in any order (type 7). */
export function quantile(values: readonly number[], q: number): number {
  checkSamples(values, "quantile");
  return quantileSorted([...values].sort((a, b) => a - b), q);
}

/** Tukey's fences: samples outside [Q1 - k IQR, Q3 + k IQR] are outliers (k = 1.5). */
export function tukeyFences(values: readonly number[], k = 1.5): { low: number; high: number } {
  checkSamples(values, "tukeyFences");
  const sorted = [...values].sort((a, b) => a - b);
  const q1 = quantileSorted(sorted, 0.25), q3 = quantileSorted(sorted, 0.75);
  const iqr = q3 - q1;
  return { low: q1 - k * iqr, high: q3 + k * iqr };
}

/**
 * The samples within Tukey's fences (k = 1.5 x IQR beyond the quartiles), in their original order. Never empty: the
 * median always lies within the fences.
 */
export function tukeyFilter(values: readonly number[], k = 1.5): number[] {
  const { low, high } = tukeyFences(values, k);
  return values.filter((v) => v >= low && v <= high);
}

/** Arithmetic mean. */
export function mean(values: readonly number[]): number {
  checkSamples(values, "mean");
  let s = 0;
  for (const v of values) s += v;
  return s / values.length;
}

/**
 * The harness's summary of `raw` samples (ms). Outliers are dropped first (Tukey 1.5 x IQR), and median, mean, p10,
 * p90, min and max are those of the kept samples: a repetition hit by a GC pause, a preempted thread or a stray
 * ~11 ms GPU wait says nothing about the code being measured, and would move the mean and the extremes. Both sample
 * lists are returned, so nothing is hidden; `n` is the number of raw samples.
 */
export function summarize(raw: readonly number[]): BenchStats {
  checkSamples(raw, "summarize");
  const filtered = tukeyFilter(raw);
  const sorted = [...filtered].sort((a, b) => a - b);
  return {
    median_ms: quantileSorted(sorted, 0.5),
    mean_ms: mean(sorted),
    p10_ms: quantileSorted(sorted, 0.1),
    p90_ms: quantileSorted(sorted, 0.9),
    min_ms: sorted[0],
    max_ms: sorted[sorted.length - 1],
    raw_ms: [...raw],
    filtered_ms: filtered,
    n: raw.length,
  };
}

/** Sample standard deviation (n - 1 denominator); 0 for one sample. */
export function stddev(values: readonly number[]): number {
  if (values.length < 2) return 0;
  const m = mean(values);
  let s = 0;
  for (const v of values) s += (v - m) ** 2;
  return Math.sqrt(s / (values.length - 1));
}

/**
 * Silverman's rule-of-thumb bandwidth, 0.9 min(sd, IQR / 1.34) n^(-1/5). When the samples have no spread (all equal,
 * or a single one) it falls back to 1% of their magnitude (1e-3 for zeros), so the density is a narrow visible peak.
 */
export function silvermanBandwidth(values: readonly number[]): number {
  checkSamples(values, "silvermanBandwidth");
  const sd = stddev(values);
  const sorted = [...values].sort((a, b) => a - b);
  const iqr = quantileSorted(sorted, 0.75) - quantileSorted(sorted, 0.25);
  const spread = iqr > 0 ? Math.min(sd, iqr / 1.34) : sd;
  const h = 0.9 * spread * values.length ** -0.2;
  return h > 0 ? h : Math.max(1e-3, 0.01 * Math.abs(mean(values)));
}

/** A density curve sampled on a grid: y[i] is the density at x[i] (per unit of x, e.g. 1/ms). */
export interface Density {
  x: number[];
  y: number[];
  bandwidth: number;
}

/**
 * Gaussian kernel density estimate of `samples` at `points` evenly spaced x values from min - 3h to max + 3h
 * (h = `bandwidth`, Silverman's rule by default). The curve integrates to 1 over that range up to ~0.3% (the kernel
 * mass beyond 3h).
 */
export function kde(samples: readonly number[], points = 200, bandwidth?: number): Density {
  checkSamples(samples, "kde");
  if (!Number.isInteger(points) || points < 2) throw new Error(`kde: points must be an integer >= 2, got ${points}`);
  const h = bandwidth ?? silvermanBandwidth(samples);
  if (!(h > 0)) throw new Error(`kde: bandwidth must be > 0, got ${h}`);
  let lo = Infinity, hi = -Infinity;
  for (const v of samples) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  lo -= 3 * h;
  hi += 3 * h;
  const norm = 1 / (samples.length * h * Math.sqrt(2 * Math.PI));
  const x: number[] = [], y: number[] = [];
  for (let i = 0; i < points; i++) {
    const xi = lo + (hi - lo) * i / (points - 1);
    let s = 0;
    for (const v of samples) s += Math.exp(-0.5 * ((xi - v) / h) ** 2);
    x.push(xi);
    y.push(s * norm);
  }
  return { x, y, bandwidth: h };
}

/**
 * The complementary error function, Chebyshev fit of Numerical Recipes (`erfcc`, 2nd ed. section 6.2): relative error
 * below 1.2e-7 for every x, so a p-value is exact to far more digits than it is printed with (two). Hand-written
 * rather than a package because stats.ts is on the GPU path, which is staged offline without extra npm packages.
 */
export function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(
    -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 +
                          t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
  );
  return x >= 0 ? r : 2 - r;
}

/** P(Z >= z) for a standard normal Z. */
export function normalSf(z: number): number {
  return 0.5 * erfc(z / Math.SQRT2);
}

/** Result of `mannWhitneyU`. */
export interface MannWhitneyResult {
  /** U of the first sample: the number of pairs (x_i, y_j) with x_i > y_j, ties counting one half (SciPy's statistic). */
  u: number;
  /** Two-sided p-value. */
  p: number;
  /** "exact": the permutation distribution of U; "asymptotic": the normal approximation. */
  method: "exact" | "asymptotic";
}

/** Average ranks (1-based) of `values`, ties sharing their mean rank, and the tie term sum(t^3 - t) over tie groups. */
function ranks(values: readonly number[]): { ranks: number[]; tieTerm: number } {
  const order = values.map((v, i) => [v, i] as const).sort((a, b) => a[0] - b[0]);
  const r = new Array<number>(values.length);
  let tieTerm = 0;
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
    const t = j - i + 1;
    for (let k = i; k <= j; k++) r[order[k][1]] = (i + j) / 2 + 1;
    tieTerm += t ** 3 - t;
    i = j + 1;
  }
  return { ranks: r, tieTerm };
}

/**
 * P(U >= u) under the null hypothesis, samples of sizes m and n without ties: the count of arrangements with each U
 * is the coefficient list of the Gaussian binomial [m + n choose m]_q, built as prod_i (1 - q^(n+i)) / (1 - q^i).
 */
function exactSf(u: number, m: number, n: number): number {
  const [a, b] = m <= n ? [m, n] : [n, m];
  const counts = new Float64Array(a * b + a + 2);
  counts[0] = 1;
  for (let i = 1; i <= a; i++) {
    const up = b + i;
    for (let k = counts.length - 1; k >= up; k--) counts[k] -= counts[k - up];
    for (let k = i; k < counts.length; k++) counts[k] += counts[k - i];
  }
  let total = 0, tail = 0;
  for (let k = 0; k <= a * b; k++) {
    total += counts[k];
    if (k >= u) tail += counts[k];
  }
  return tail / total;
}

/**
 * Two-sided Mann-Whitney U test of samples `x` and `y` (any order, finite numbers), as SciPy's
 * `scipy.stats.mannwhitneyu(x, y)` with its defaults computes it: "auto" uses the exact distribution when one sample
 * has at most 8 values and there are no ties, else the normal approximation with the tie correction and a continuity
 * correction of 0.5. When every value is the same (no spread at all), p is 1.
 */
export function mannWhitneyU(
  x: readonly number[],
  y: readonly number[],
  method: "auto" | "exact" | "asymptotic" = "auto",
): MannWhitneyResult {
  checkSamples(x, "mannWhitneyU (first sample)");
  checkSamples(y, "mannWhitneyU (second sample)");
  const n1 = x.length, n2 = y.length, n = n1 + n2;
  const { ranks: r, tieTerm } = ranks([...x, ...y]);
  let r1 = 0;
  for (let i = 0; i < n1; i++) r1 += r[i];
  const u1 = r1 - n1 * (n1 + 1) / 2;
  const uMax = Math.max(u1, n1 * n2 - u1);
  const useExact = method === "exact" || (method === "auto" && Math.min(n1, n2) <= 8 && tieTerm === 0);
  if (useExact) {
    if (tieTerm !== 0) throw new Error("mannWhitneyU: the exact method needs samples without ties");
    return { u: u1, p: Math.min(1, 2 * exactSf(uMax, n1, n2)), method: "exact" };
  }
  const mu = n1 * n2 / 2;
  const variance = n1 * n2 / 12 * ((n + 1) - tieTerm / (n * (n - 1)));
  if (!(variance > 0)) return { u: u1, p: 1, method: "asymptotic" };
  const z = (uMax - mu - 0.5) / Math.sqrt(variance);
  return { u: u1, p: Math.min(1, Math.max(0, 2 * normalSf(z))), method: "asymptotic" };
}
