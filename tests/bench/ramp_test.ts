/**
 * The clock ramp before a measurement that follows an idle GPU (bench/configurations.ts): when it applies, how long it
 * lasts, and that it keeps submitting the measured pass, in growing batches, until its time is spent; and the second
 * measurement, after a ramp, of one whose samples spread too far.
 */

import { assert, assertEquals } from "@std/assert";
import {
  measureSteady,
  RAMP_AFTER_IDLE_MS,
  RAMP_WARMUPS,
  rampClocks,
  rampMsAfter,
  spreadTooFar,
} from "../../bench/configurations.ts";
import { summarize } from "../../bench/stats.ts";
import type { TimedStats } from "../../bench/results_types.ts";
import { gpuTest } from "../../kernels/testing/harness.ts";

Deno.test("a measurement ramps the clocks only after an idle GPU, for RAMP_WARMUPS warm-up budgets", () => {
  assertEquals(rampMsAfter(RAMP_AFTER_IDLE_MS + 1, 200), RAMP_WARMUPS * 200);
  assertEquals(rampMsAfter(Number.POSITIVE_INFINITY, 50), RAMP_WARMUPS * 50); // the process's first measurement
  assertEquals(rampMsAfter(RAMP_AFTER_IDLE_MS, 200), 0); // right after another measurement
  assertEquals(rampMsAfter(5000, 0), 0); // warmup_ms 0: no warm-up of any kind
});

gpuTest("rampClocks submits the measured pass, untimed, in growing batches until its time is spent", async (gpu) => {
  let encoded = 0;
  const encode = (encoder: GPUCommandEncoder, pass: GPUComputePassDescriptor) => {
    assertEquals(pass.timestampWrites, undefined);
    encoder.beginComputePass(pass).end();
    encoded++;
  };
  const t0 = performance.now();
  const passes = await rampClocks(gpu, "empty", encode, 120);
  assert(performance.now() - t0 >= 120, "the ramp ended early");
  assertEquals(passes, encoded);
  // an empty pass takes far less than the 50 ms a submission aims at, so the batches grow past one pass
  assert(passes > 8, `${passes} passes in 120 ms: the batch did not grow`);
  assertEquals(await rampClocks(gpu, "empty", encode, 0), 0);
});

// The 1B's 2,048-token TTFT on Dawn in results/2026-12-01_run02 (clocks rising), and a steady one (run21); the same in
// results/2026-12-02_run04, three clock steps that the factor 1.2 let through (Tukey's filter drops the 43.27).
const RISING = [58.79, 58.8, 58.78, 58.7, 53.1, 35.9, 35.86, 35.84, 35.9, 35.88];
const STEADY = [37.61, 37.63, 37.69, 37.62, 37.64];
const STEPS = [43.27, 29.18, 29.18, 29.23, 27.25, 27.25, 27.25, 27.27, 27.25, 25.59, 25.66, 25.69, 25.55];
const stats = (raw: number[]): TimedStats => ({ ...summarize(raw), clock: "gpu" });

Deno.test("a measurement spreads too far when its slowest kept sample exceeds its fastest by RESAMPLE_SPREAD", () => {
  assert(spreadTooFar(stats(RISING)));
  assert(spreadTooFar(stats(STEPS)));
  assert(!spreadTooFar(stats(STEADY)));
  assert(!spreadTooFar({ min_ms: 10, max_ms: 10.5 }));
  assert(spreadTooFar({ min_ms: 10, max_ms: 10.51 }));
});

Deno.test("a measurement that spreads too far is taken again after a ramp, the first one's samples kept aside", async () => {
  const events: string[] = [];
  const queue = [RISING, STEADY];
  const measure = (onMeasured?: (result: TimedStats) => void) => {
    const result = stats(queue.shift()!);
    events.push(onMeasured ? "measure (ticks)" : "measure");
    onMeasured?.(result);
    return Promise.resolve(result);
  };
  const ramp = () => Promise.resolve(events.push("ramp"));
  const got = await measureSteady(measure, ramp, () => events.push("tick"));
  assertEquals(events, ["measure (ticks)", "tick", "ramp", "measure"]);
  assertEquals(got.raw_ms, STEADY);
  assertEquals(got.discarded_ms, RISING);
  // a steady first measurement is the result: no ramp, nothing discarded
  events.length = 0;
  queue.push(STEADY);
  const steady = await measureSteady(measure, ramp);
  assertEquals(events, ["measure"]);
  assertEquals(steady.discarded_ms, undefined);
});
