/**
 * The clock ramp before a measurement that follows an idle GPU (bench/configurations.ts): when it applies, how long it
 * lasts, and that it keeps submitting the measured pass, in growing batches, until its time is spent.
 */

import { assert, assertEquals } from "@std/assert";
import { RAMP_AFTER_IDLE_MS, RAMP_WARMUPS, rampClocks, rampMsAfter } from "../../bench/configurations.ts";
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
