import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { benchmark, repetitionCounts } from "../../bench/harness.ts";

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
