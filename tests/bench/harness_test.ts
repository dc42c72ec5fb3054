import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { benchmark, LONG_PASS_MIN_SAMPLES, LONG_PASS_MS, planSamples, repetitionCounts } from "../../bench/harness.ts";

/** A fake wall clock: the timed functions advance it explicitly, so the tests do not depend on machine load. */
class FakeClock {
  t = 0;
  readonly now = () => this.t;
}

Deno.test("repetitionCounts derives warm-up and repetitions from the budgets, with at least one repetition", () => {
  assertEquals(repetitionCounts(10, 100, 1000), { warmup: 10, reps: 100 });
  assertEquals(repetitionCounts(3, 100, 1000), { warmup: 33, reps: 333 }); // floor, as do_bench
  assertEquals(repetitionCounts(5000, 100, 1000), { warmup: 0, reps: 1 }); // a call longer than the budget: 1 rep
  assertEquals(repetitionCounts(0.001, 100, 1000, 500), { warmup: 500, reps: 500 }); // capped
  assertEquals(repetitionCounts(0, 0, 1000, 64), { warmup: 0, reps: 64 }); // below the clock's resolution
  assertThrows(() => repetitionCounts(1, -1, 10), Error, "warmupMs");
  assertThrows(() => repetitionCounts(1, 0, 0), Error, "repMs");
  assertThrows(() => repetitionCounts(1, 0, 10, 0), Error, "maxReps");
});

Deno.test("benchmark spends the budgets: estimate calls, then warm-ups and repetitions sized from the estimate", async () => {
  const clock = new FakeClock();
  let calls = 0;
  const r = await benchmark(() => {
    calls++;
    clock.t += 10;
  }, { warmupMs: 25, repMs: 95, now: clock.now });
  // Estimate calls stop once they exceed the 25 ms warm-up budget: 3 calls of 10 ms. Then floor(25 / 10) = 2
  // warm-ups and floor(95 / 10) = 9 timed repetitions.
  assertEquals(r.estimate_ms, 10);
  assertEquals(r.warmup_n, 2);
  assertEquals(r.n, 9);
  assertEquals(calls, 3 + 2 + 9);
  assertEquals(r.clock, "wall");
  assertEquals(r.raw_ms, new Array(9).fill(10));
  assertEquals(r.median_ms, 10);
});

Deno.test("benchmark runs one repetition when a single call exceeds the whole budget", async () => {
  const clock = new FakeClock();
  let calls = 0;
  const r = await benchmark(() => {
    calls++;
    clock.t += 500;
  }, { warmupMs: 100, repMs: 200, now: clock.now });
  assertEquals(r.n, 1);
  assertEquals(r.warmup_n, 0);
  assertEquals(calls, 2); // one estimate call (already past the warm-up budget) + one timed repetition
});

Deno.test("benchmark does not time setup, and runs it before every call", async () => {
  const clock = new FakeClock();
  const log: string[] = [];
  const r = await benchmark(() => {
    log.push("fn");
    clock.t += 2;
  }, {
    warmupMs: 0,
    repMs: 100,
    setup: () => {
      log.push("setup");
      clock.t += 48;
    },
    now: clock.now,
  });
  // Samples are the 2 ms of fn alone; the budget counts setup too: estimate 50 ms -> floor(100 / 50) = 2 repetitions.
  assertEquals(r.raw_ms, [2, 2]);
  assertEquals(r.estimate_ms, 50);
  assertEquals(log, ["setup", "fn", "setup", "fn", "setup", "fn"]);
});

Deno.test("benchmark takes a returned number as the sample (GPU time) instead of the wall time", async () => {
  const clock = new FakeClock();
  const gpuTimes = [9, 1.5, 1.25, 1.75, 1.5, 1.0, 30];
  let i = 0;
  const r = await benchmark(() => {
    clock.t += 11; // the wall time of a call is dominated by its readback
    return gpuTimes[i++];
  }, { warmupMs: 0, repMs: 66, now: clock.now });
  // One estimate call (warm-up budget 0) returns 9; then floor(66 / 11) = 6 repetitions return the rest.
  assertEquals(r.clock, "gpu");
  assertEquals(r.raw_ms, [1.5, 1.25, 1.75, 1.5, 1.0, 30]);
  assertEquals(r.filtered_ms, [1.5, 1.25, 1.75, 1.5, 1.0]); // 30 is beyond Q3 + 1.5 IQR
  assertEquals(r.median_ms, 1.5);
  assertEquals(r.max_ms, 1.75);
});

Deno.test("benchmark measures real wall time with performance.now when fn returns nothing", async () => {
  const r = await benchmark(async () => {
    await new Promise((resolve) => setTimeout(resolve, 3));
  }, { warmupMs: 0, repMs: 20 });
  assertEquals(r.clock, "wall");
  assert(r.n >= 1);
  // setTimeout(3) never fires early; an upper bound would depend on the machine's load
  for (const s of r.raw_ms) assert(s >= 2.5, `sample ${s} ms is shorter than the 3 ms timer`);
});

Deno.test("benchmark rejects a function that mixes returned times and wall time, or returns junk", async () => {
  let i = 0;
  await assertRejects(
    () => benchmark(() => (i++ % 2 === 0 ? 1 : undefined), { warmupMs: 0, repMs: 10, maxReps: 4 }),
    Error,
    "some calls",
  );
  await assertRejects(() => benchmark(() => NaN, { warmupMs: 0, repMs: 10 }), Error, "returned NaN");
  await assertRejects(() => benchmark(() => -1, { warmupMs: 0, repMs: 10 }), Error, "returned -1");
  await assertRejects(
    () => benchmark((() => "5") as unknown as () => number, { warmupMs: 0, repMs: 10 }),
    Error,
    "returned string",
  );
  await assertRejects(() => benchmark(() => 1, { warmupMs: 0, repMs: 0 }), Error, "repMs");
});

Deno.test("benchmark calls onMeasured once, after the last timed repetition, with the result it returns", async () => {
  const clock = new FakeClock();
  let calls = 0;
  const seen: { calls: number; n: number }[] = [];
  const r = await benchmark(() => {
    calls++;
    clock.t += 10;
  }, { warmupMs: 25, repMs: 95, now: clock.now, onMeasured: (m) => seen.push({ calls, n: m.n }) });
  assertEquals(seen, [{ calls: 3 + 2 + 9, n: r.n }]);
});

Deno.test("planSamples: short passes keep 8 passes a sample and the minimum; a long pass is a sample alone", () => {
  const ttft = { repMs: 1000, passesPerSample: 8, minSamples: 10 };
  // short passes (a decode step, a short prefill): unchanged
  assertEquals(planSamples(2.2, ttft), { passes: 8, minReps: 10 });
  assertEquals(planSamples(LONG_PASS_MS - 0.01, ttft), { passes: 8, minReps: 10 });
  // a 7B prefill of 128 tokens (~80 ms): one pass a sample; the budget affords 12, so the minimum of 10 stands
  assertEquals(planSamples(80, ttft), { passes: 1, minReps: 10 });
  // a 7B prefill of 2,048 tokens (~1.3 s) with rep_ms 1000: the budget affords none, the floor of 3 holds
  assertEquals(planSamples(1300, ttft), { passes: 1, minReps: LONG_PASS_MIN_SAMPLES });
  assertEquals(LONG_PASS_MIN_SAMPLES, 3);
  // in between, the budget caps the minimum: 1000 / 200 = 5 samples
  assertEquals(planSamples(200, ttft), { passes: 1, minReps: 5 });
  assertEquals(planSamples(200, { ...ttft, repMs: 5000 }), { passes: 1, minReps: 10 }); // never above minSamples
  // a decode step asks for no minimum: a long one still gets 1, not the floor
  assertEquals(planSamples(50, { repMs: 1000, passesPerSample: 8, minSamples: 1 }), { passes: 1, minReps: 1 });
  assertThrows(() => planSamples(NaN, ttft), Error, "passMs");
  assertThrows(() => planSamples(1, { ...ttft, minSamples: 0 }), Error, "minSamples");
});

Deno.test("a 1.3 s pass with rep_ms 1000 costs seconds: the harness runs the planned 3 samples of one pass", async () => {
  // The plan feeds the harness (as configurations.ts does): with fake timings, count the passes the GPU would run.
  const clock = new FakeClock();
  const passMs = 1300;
  const plan = planSamples(passMs, { repMs: 1000, passesPerSample: 8, minSamples: 10 });
  let passes = 1; // the probe pass that measured passMs
  const r = await benchmark(() => {
    passes += plan.passes;
    clock.t += plan.passes * passMs + 11;
    return passMs;
  }, { warmupMs: 200, repMs: 1000, minReps: plan.minReps, now: clock.now });
  assertEquals(r.n, 3);
  assertEquals(passes, 1 + 1 + 3); // probe, one estimate call, three samples
  assert(clock.t < 10_000, `took ${clock.t} ms`);
  // Before: 8 passes a sample and at least 10 samples, 88 passes, ~2 minutes.
});
