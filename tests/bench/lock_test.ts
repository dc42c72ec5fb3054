import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { acquireDeviceLock, lockHolder, lockPath } from "../../bench/lock.ts";
import { thisProcess } from "../../bench/process.ts";
import { assertValidResults } from "../../bench/schema.ts";
import { UserError } from "../../common/errors.ts";
import { bench, runFolders, TEST_LOCK_DIR, TINY_FLAGS } from "./run_bench.ts";
import { Child, untilFile } from "./child.ts";

const DEVICE = { vendor: "65541", device: "0", description: "llvmpipe (LLVM 15.0.6, 256 bits)" };

/** A pid that no process has: a child that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), { args: ["eval", ""], stdout: "null", stderr: "null" }).spawn();
  await child.status;
  return child.pid;
}

Deno.test("the device lock: one holder, a clear refusal with --no-wait, stale locks taken over, release", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench_lock_" });
  try {
    const first = await acquireDeviceLock(DEVICE, { wait: false, dir });
    const path = lockPath(DEVICE, dir);
    assertEquals(JSON.parse(await Deno.readTextFile(path)).pid, Deno.pid);
    assertEquals((await lockHolder(DEVICE, dir))?.pid, Deno.pid);
    const e = await assertRejects(() => acquireDeviceLock(DEVICE, { wait: false, dir }), UserError);
    for (const part of [`pid ${Deno.pid}`, "llvmpipe", "--no-wait", "--allow-concurrent"]) {
      assertStringIncludes(e.message, part);
    }
    assert(!e.message.includes("\n"));
    // Another device has its own lock.
    (await acquireDeviceLock({ ...DEVICE, device: "1" }, { wait: false, dir })).release();
    first.release();
    assertEquals(await lockHolder(DEVICE, dir), null);
    // A holder that is gone (its pid exited, or the pid now belongs to a process started at another time) is stale.
    for (const stale of [{ pid: await deadPid() }, { pid: 1, start_ticks: "123456789012" }]) {
      await Deno.writeTextFile(path, JSON.stringify({ ...thisProcess(), ...stale, device: "x", run: null }));
      assertEquals(await lockHolder(DEVICE, dir), null);
      const taken = await acquireDeviceLock(DEVICE, { wait: false, dir });
      assertEquals(taken.holder.pid, Deno.pid);
      taken.release();
    }
    // release() leaves a lock that is no longer this process's alone.
    const mine = await acquireDeviceLock(DEVICE, { wait: false, dir });
    const other = { ...thisProcess(), started: "2000-01-01T00:00:00.000Z", device: "x", run: null };
    await Deno.writeTextFile(path, JSON.stringify(other));
    mine.release();
    assertEquals(JSON.parse(await Deno.readTextFile(path)).started, other.started);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a waiting acquire says for whom it waits and takes the lock once it is released", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench_lock_" });
  try {
    const first = await acquireDeviceLock(DEVICE, { wait: false, dir });
    first.setRun("results/2026-11-30_run01");
    const waited: string[] = [];
    const second = acquireDeviceLock(DEVICE, {
      wait: true,
      dir,
      pollMs: 20,
      onWait: (h) => waited.push(`${h.pid} ${h.run}`),
    });
    await new Promise((r) => setTimeout(r, 100));
    assertEquals(waited, [`${Deno.pid} results/2026-11-30_run01`]);
    first.release();
    const lock = await second;
    assertEquals(lock.holder.run, null);
    lock.release();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a second bench on a held GPU: --no-wait stops with exit 2; it waits otherwise; --allow-concurrent is recorded",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const results = await Deno.makeTempDir({ prefix: "bench_lock_runs_" });
    // The test process holds the lock of the adapter the children will get.
    const probe = (await navigator.gpu.requestAdapter({ powerPreference: "high-performance" }))!.info;
    const held = await acquireDeviceLock(probe, { wait: false, dir: TEST_LOCK_DIR });
    try {
      const args = [...TINY_FLAGS, "--configs", "baseline", "--results-dir", results];
      const refused = await bench([...args, "--no-wait"]);
      assertEquals(refused.code, 2, refused.stderr);
      const message = refused.stderr.trim();
      assert(message.startsWith("error: Another benchmark (pid ") && !message.includes("\n"), message);
      assertStringIncludes(message, `pid ${Deno.pid}`);
      assertEquals(runFolders(results), []); // refused before a run folder was made
      // Without --no-wait it waits, saying for whom; once released it runs; SIGTERM then ends it as interrupted.
      const waiter = new Child([...args]);
      await waiter.until((out) => out.includes("waiting for llvmpipe"), 60_000);
      assertStringIncludes(waiter.output, `another benchmark holds it (pid ${Deno.pid}`);
      assertEquals(runFolders(results), []);
      held.release();
      await waiter.until((out) => out.includes("run folder"), 120_000);
      const resultsJson = join(results, runFolders(results)[0], "results.json");
      await untilFile(resultsJson, 60_000);
      assertEquals(await waiter.stop("SIGTERM"), 143);
      const doc = JSON.parse(await Deno.readTextFile(resultsJson));
      assertValidResults(doc);
      assertEquals([doc.status, doc.provenance?.allow_concurrent], ["interrupted", false]);
      // --allow-concurrent runs beside a live holder, says so, and results.json records it.
      const again = await acquireDeviceLock(probe, { wait: false, dir: TEST_LOCK_DIR });
      try {
        const side = new Child([...args, "--allow-concurrent"]);
        await side.until((out) => out.includes("run folder"), 120_000);
        assertStringIncludes(side.output, "--allow-concurrent: running alongside another benchmark");
        const folder = runFolders(results)[1];
        await untilFile(join(results, folder, "results.json"), 60_000);
        assertEquals(await side.stop("SIGINT"), 130);
        const doc2 = JSON.parse(await Deno.readTextFile(join(results, folder, "results.json")));
        assertValidResults(doc2);
        assertEquals(doc2.provenance?.allow_concurrent, true);
      } finally {
        again.release();
      }
    } finally {
      held.release();
      await Deno.remove(results, { recursive: true });
    }
  },
});
