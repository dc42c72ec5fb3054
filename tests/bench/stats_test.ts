import { assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import {
  kde,
  mannWhitneyU,
  quantile,
  silvermanBandwidth,
  summarize,
  tukeyFences,
  tukeyFilter,
} from "../../bench/stats.ts";
import { Rng } from "../../kernels/testing/harness.ts";

Deno.test("quantile is type 7 (NumPy's default): linear between order statistics, any input order", () => {
  // Values from numpy.quantile([...], q) with the default method "linear".
  assertEquals(quantile([4, 1, 3, 2], 0.25), 1.75);
  assertEquals(quantile([4, 1, 3, 2], 0.5), 2.5);
  assertAlmostEquals(quantile([10, 9, 8, 7, 6, 5, 4, 3, 2, 1], 0.1), 1.9, 1e-12);
  assertAlmostEquals(quantile([10, 9, 8, 7, 6, 5, 4, 3, 2, 1], 0.9), 9.1, 1e-12);
  assertEquals(quantile([5, 1, 9], 0), 1);
  assertEquals(quantile([5, 1, 9], 1), 9);
  assertEquals(quantile([42], 0.37), 42);
  assertThrows(() => quantile([], 0.5), Error, "no samples");
  assertThrows(() => quantile([1, 2], 1.5), Error, "q must be in [0, 1]");
  assertThrows(() => quantile([1, NaN], 0.5), Error, "not a finite number");
});

Deno.test("tukeyFilter drops samples beyond 1.5 IQR of the quartiles and keeps the order of the rest", () => {
  const samples = [10.2, 10.0, 55, 10.1, 9.9, 10.3, 1.0, 10.0, 10.1];
  // Q1 = 10.0, Q3 = 10.2 (type 7), IQR 0.2: the fences are 9.7 and 10.5, so 55 and 1.0 go.
  const { low, high } = tukeyFences(samples);
  assertAlmostEquals(low, 9.7, 1e-12);
  assertAlmostEquals(high, 10.5, 1e-12);
  assertEquals(tukeyFilter(samples), [10.2, 10.0, 10.1, 9.9, 10.3, 10.0, 10.1]);
  // Without outliers nothing is dropped; identical samples survive (IQR 0).
  assertEquals(tukeyFilter([3, 1, 2, 4]), [3, 1, 2, 4]);
  assertEquals(tukeyFilter([7, 7, 7]), [7, 7, 7]);
  // Q1 2, Q3 4, IQR 2: the high fence is 7. A value on the fence is kept, one just beyond it dropped.
  assertEquals(tukeyFilter([1, 2, 3, 4, 7]), [1, 2, 3, 4, 7]);
  assertEquals(tukeyFilter([1, 2, 3, 4, 7.01]), [1, 2, 3, 4]);
});

Deno.test("summarize reports the filtered samples' statistics and keeps both sample lists", () => {
  const raw = [10, 11, 12, 13, 14, 15, 16, 17, 18, 100];
  const s = summarize(raw);
  assertEquals(s.raw_ms, raw);
  assertEquals(s.filtered_ms, [10, 11, 12, 13, 14, 15, 16, 17, 18]);
  assertEquals(s.n, 10);
  assertEquals(s.median_ms, 14);
  assertEquals(s.mean_ms, 14);
  assertEquals(s.min_ms, 10);
  assertEquals(s.max_ms, 18);
  assertAlmostEquals(s.p10_ms, 10.8, 1e-12);
  assertAlmostEquals(s.p90_ms, 17.2, 1e-12);
  // summarize does not keep a reference to the caller's array
  raw[0] = 0;
  assertEquals(s.raw_ms[0], 10);
});

Deno.test("kde integrates to 1 and peaks at the samples' centre", () => {
  const rng = new Rng(7);
  const samples = Array.from({ length: 200 }, () => 40 + 2 * rng.normal());
  const d = kde(samples, 400);
  let area = 0;
  for (let i = 1; i < d.x.length; i++) area += 0.5 * (d.y[i] + d.y[i - 1]) * (d.x[i] - d.x[i - 1]);
  // Trapezoid rule on 400 points of a smooth curve, minus the <= 0.3% of kernel mass beyond min/max +- 3h.
  assertAlmostEquals(area, 1, 5e-3);
  const peakX = d.x[d.y.indexOf(Math.max(...d.y))];
  assertAlmostEquals(peakX, 40, 1); // the mode of N(40, 2) samples, within half a standard deviation
  // Silverman's rule for n = 200, sd ~ 2: 0.9 * 2 * 200^-0.2 ~ 0.62
  assertAlmostEquals(d.bandwidth, 0.62, 0.12);
});

Deno.test("kde of samples without spread is a finite narrow peak", () => {
  const d = kde([12, 12, 12], 50);
  assertEquals(d.bandwidth, silvermanBandwidth([12, 12, 12]));
  assertAlmostEquals(d.bandwidth, 0.12, 1e-12); // 1% of the value
  for (const y of d.y) assertEquals(Number.isFinite(y), true);
  assertThrows(() => kde([], 10), Error, "no samples");
  assertThrows(() => kde([1], 1), Error, "points");
});

/** `p` equals SciPy's `expected` to the relative accuracy of the normal tail (erfc: 1.2e-7). */
function assertP(p: number, expected: number): void {
  assertAlmostEquals(p, expected, 2e-7 * expected, `p ${p}, SciPy ${expected}`);
}

Deno.test("mannWhitneyU matches scipy.stats.mannwhitneyu (SciPy 1.17.1), exact and asymptotic, with ties", () => {
  // SciPy's documented example (males vs females): U = 17, exact p = 0.1111, asymptotic p = 0.11134688653314041.
  const males = [19, 22, 16, 29, 24], females = [20, 11, 17, 12];
  const auto = mannWhitneyU(males, females);
  assertEquals([auto.u, auto.method], [17, "exact"]);
  assertAlmostEquals(auto.p, 1 / 9, 1e-15); // 2 * 7 of the C(9, 4) = 126 arrangements
  assertP(mannWhitneyU(males, females, "asymptotic").p, 0.11134688653314041);
  // R's wilcox.test(x, y) depression example (unpaired): W = 58, ties, p = 0.1329 (SciPy 0.13291945818531892).
  const x = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30];
  const y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29];
  const r = mannWhitneyU(x, y);
  assertEquals([r.u, r.method], [58, "asymptotic"]);
  assertP(r.p, 0.13291945818531892);
  // Ties across the samples; swapping them gives U2 = n1 n2 - U1 and the same p.
  const a = [1, 2, 2, 3, 3, 3, 4, 5, 9], b = [2, 3, 4, 4, 5, 6, 6, 7, 8, 8];
  assertEquals(mannWhitneyU(a, b).u, 23);
  assertEquals(mannWhitneyU(b, a).u, 67);
  assertP(mannWhitneyU(a, b).p, 0.07641725184558575);
  assertP(mannWhitneyU(b, a).p, 0.07641725184558575);
  // Exact, no ties, 7 vs 8 values: p = 0.0006216006216006216.
  const e = mannWhitneyU([3.1, 2.9, 3.25, 3.0, 3.2, 2.8, 3.4], [3.6, 3.5, 3.9, 3.7, 3.3, 3.8, 4.0, 3.45]);
  assertEquals([e.u, e.method], [1, "exact"]);
  assertAlmostEquals(e.p, 0.0006216006216006216, 1e-15);
  assertAlmostEquals(mannWhitneyU([5], [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]).p, 0.9090909090909092, 1e-15);
  // Far tail: 30 vs 30 disjoint values, p = 3.019859359162157e-11.
  const lo = Array.from({ length: 30 }, (_, i) => i);
  assertP(mannWhitneyU(lo, lo.map((v) => v + 30)).p, 3.019859359162157e-11);
  // No spread at all: no evidence of a difference.
  assertEquals(mannWhitneyU([1, 1, 1], [1, 1, 1]).p, 1);
  assertThrows(() => mannWhitneyU([], [1]), Error, "no samples");
  assertThrows(() => mannWhitneyU([1, 1], [1, 2], "exact"), Error, "ties");
});
