/**
 * The benchmark harness, in the manner of triton's `do_bench`: run the function a few times to estimate one call,
 * derive the warm-up and repetition counts from the time budgets, run them, and summarise the samples (stats.ts).
 *
 * A timed function either returns a number, the time it measured itself in ms (in this suite GPU time from timestamp
 * queries; that number is the sample), or returns nothing, and the harness takes performance.now() around the call
 * (wall time, its GPU waits included). `setup` runs before every call, warm-ups included, outside the timed span.
 * @module
 */

import { summarize } from "./stats.ts";
import type { Clock, TimedStats } from "./results_types.ts";

/** A timed call: returns its own measurement in ms, or nothing to be wall-timed. */
export type TimedFn = () => number | void | Promise<number | void>;

/** Options of `benchmark`. */
export interface BenchmarkOptions {
  /** Warm-up budget in ms (wall time), spent after the estimate runs. */
  warmupMs: number;
  /** Budget of the timed repetitions in ms (wall time); at least one repetition always runs. */
  repMs: number;
  /** Runs before every call, untimed (e.g. reset the KV lengths). */
  setup?: () => void | Promise<void>;
  /** Calls used to estimate one call (default 5; fewer when they alone exceed the warm-up budget). */
  estimateRuns?: number;
  /** Upper bound on the timed repetitions, so a fast function cannot produce millions of samples (default 10000). */
  maxReps?: number;
  /** Lower bound on the timed repetitions, for calls longer than the budget whose spread still matters (default 1). */
  minReps?: number;
  /** The wall clock in ms (default performance.now; tests pass a fake one). */
  now?: () => number;
  /** Called with the result when the timed repetitions are done (the runner's progress bar counts these). */
  onMeasured?: (result: BenchmarkResult) => void;
}

/** What `benchmark` returns: the summary and how the budgets were spent. */
export interface BenchmarkResult extends TimedStats {
  /** Wall time of one call (setup included) estimated before the run, ms. */
  estimate_ms: number;
  /** Warm-up calls run after the estimate. */
  warmup_n: number;
}

/**
 * Warm-up and repetition counts for a call estimated at `estimateMs`: floor(warmupMs / estimate) warm-ups and
 * floor(repMs / estimate) repetitions, at least 1 and at most `maxReps` repetitions (as triton's do_bench, which also
 * keeps at least one). A zero or negative estimate (a call below the clock's resolution) counts as the smallest
 * positive duration, so the repetitions hit `maxReps`.
 */
export function repetitionCounts(
  estimateMs: number,
  warmupMs: number,
  repMs: number,
  maxReps = 10_000,
): { warmup: number; reps: number } {
  if (!(warmupMs >= 0) || !Number.isFinite(warmupMs)) throw new Error(`warmupMs must be >= 0, got ${warmupMs}`);
  if (!(repMs > 0) || !Number.isFinite(repMs)) throw new Error(`repMs must be > 0, got ${repMs}`);
  if (!(maxReps >= 1) || !Number.isInteger(maxReps)) throw new Error(`maxReps must be an integer >= 1, got ${maxReps}`);
  const est = Math.max(estimateMs, Number.MIN_VALUE);
  return {
    warmup: Math.min(maxReps, Math.floor(warmupMs / est)),
    reps: Math.max(1, Math.min(maxReps, Math.floor(repMs / est))),
  };
}

/** One call of `fn` after `setup`: the sample (returned ms, or wall ms) and the wall time of setup + call. */
async function timedCall(
  fn: TimedFn,
  setup: BenchmarkOptions["setup"],
  now: () => number,
): Promise<{ sample: number; clock: Clock; wall: number }> {
  const t0 = now();
  if (setup) await setup();
  const t1 = now();
  const returned = await fn();
  const t2 = now();
  if (typeof returned === "number") {
    if (!Number.isFinite(returned) || returned < 0) {
      throw new Error(
        `benchmark: the timed function returned ${returned}; it must return a time in ms >= 0 or nothing`,
      );
    }
    return { sample: returned, clock: "gpu", wall: t2 - t0 };
  }
  if (returned !== undefined) {
    throw new Error(`benchmark: the timed function returned ${typeof returned}; it must return a number or nothing`);
  }
  return { sample: t2 - t1, clock: "wall", wall: t2 - t0 };
}

/**
 * Times `fn` (see the module comment). The estimate uses the median wall time of up to `estimateRuns` calls, setup
 * included, because the budgets are wall-clock budgets: a call that returns 0.05 ms of GPU time still costs its
 * ~11 ms readback, and counting that is what keeps a run within `repMs`. The estimate calls also warm up (the first
 * builds caches and pays one-off costs; the median ignores it). Throws when `fn` sometimes returns a number and
 * sometimes nothing (the samples would mix two clocks).
 */
export async function benchmark(fn: TimedFn, options: BenchmarkOptions): Promise<BenchmarkResult> {
  const { warmupMs, repMs, setup } = options;
  const estimateRuns = options.estimateRuns ?? 5;
  const maxReps = options.maxReps ?? 10_000;
  const now = options.now ?? (() => performance.now());
  repetitionCounts(1, warmupMs, repMs, maxReps); // validates the budgets before anything runs
  if (!(estimateRuns >= 1) || !Number.isInteger(estimateRuns)) {
    throw new Error(`estimateRuns must be an integer >= 1, got ${estimateRuns}`);
  }
  let clock: Clock | null = null;
  const call = async () => {
    const r = await timedCall(fn, setup, now);
    if (clock !== null && r.clock !== clock) {
      throw new Error("benchmark: the timed function returned a number on some calls and nothing on others");
    }
    clock = r.clock;
    return r;
  };

  const estimates: number[] = [];
  let spent = 0;
  while (estimates.length < estimateRuns && (estimates.length === 0 || spent < warmupMs)) {
    const { wall } = await call();
    estimates.push(wall);
    spent += wall;
  }
  estimates.sort((a, b) => a - b);
  const estimate = estimates[Math.floor((estimates.length - 1) / 2)];
  const counts = repetitionCounts(estimate, warmupMs, repMs, maxReps);
  const warmup = counts.warmup, reps = Math.max(counts.reps, options.minReps ?? 1);

  for (let i = 0; i < warmup; i++) await call();
  const samples: number[] = [];
  for (let i = 0; i < reps; i++) samples.push((await call()).sample);
  const result = { ...summarize(samples), clock: clock!, estimate_ms: estimate, warmup_n: warmup };
  options.onMeasured?.(result);
  return result;
}

/**
 * A timed GPU pass at least this long (GPU ms) keeps the GPU busy by itself, so a sample is that one pass. Between
 * samples the CPU waits on Deno's ~11 ms readback with the GPU idle: behind a 20 ms pass that is at most a third of
 * the wall time, against ~80% behind the 2.2 ms 1B decode step whose clocks were measured to drop (see
 * PASSES_PER_SAMPLE in configurations.ts). The threshold itself is a judgement, not measured on the H100.
 */
export const LONG_PASS_MS = 20;

/** Fewest samples of a measurement with long passes: the repetition budget may cap the count down to this, no lower. */
export const LONG_PASS_MIN_SAMPLES = 3;

/** How a GPU measurement is sampled. */
export interface SamplePlan {
  /** Identical passes submitted back to back per sample (their mean GPU time is the sample). */
  passes: number;
  /** Fewest timed samples (the harness's `minReps`). */
  minReps: number;
}

/**
 * The sampling of a GPU measurement whose single pass took `passMs` (GPU time, from a probe pass): short passes get
 * `passesPerSample` back-to-back passes per sample and at least `minSamples` samples, as always. A long pass (at least
 * LONG_PASS_MS) keeps the GPU busy alone, so it is one pass per sample, and the repetition budget caps the samples:
 * the floor is what `repMs` affords, floor(repMs / passMs), but at least LONG_PASS_MIN_SAMPLES and at most
 * `minSamples` (e.g. a 1.3 s 7B prefill of 2,048 tokens with rep_ms 1000: 3 samples of one pass, ~4 s instead of
 * 10 samples of 8 passes, ~100 s).
 */
export function planSamples(
  passMs: number,
  o: { repMs: number; passesPerSample: number; minSamples: number },
): SamplePlan {
  if (!(passMs >= 0) || !Number.isFinite(passMs)) throw new Error(`passMs must be a time >= 0, got ${passMs}`);
  if (!(o.repMs > 0)) throw new Error(`repMs must be > 0, got ${o.repMs}`);
  for (const k of ["passesPerSample", "minSamples"] as const) {
    if (!(Number.isInteger(o[k]) && o[k] >= 1)) throw new Error(`${k} must be an integer >= 1, got ${o[k]}`);
  }
  if (passMs < LONG_PASS_MS) return { passes: o.passesPerSample, minReps: o.minSamples };
  const affordable = Math.floor(o.repMs / passMs);
  return { passes: 1, minReps: Math.min(o.minSamples, Math.max(LONG_PASS_MIN_SAMPLES, affordable)) };
}
