/**
 * Tests of the L2 prefetch (`prefetch.ts`): which words it loads (its check variant against the reference, at ranges
 * that are not whole sectors, grids or unrolls), the clamping of its range, and that it changes nothing.
 * @module
 */

import { assertEquals, assertThrows } from "@std/assert";
import { planPrefetch, prefetch, prefetchReference } from "./prefetch.ts";
import { ctlBuffer, gpuTest } from "../testing/harness.ts";

gpuTest("prefetch loads one word of every 32-byte sector of its range, as the reference does", async (gpu) => {
  const words = Uint32Array.from({ length: 70_001 }, (_, i) => (Math.imul(i + 1, 0x9e3779b9) >>> 0));
  const src = gpu.upload("src", words), ctl = ctlBuffer(gpu);
  try {
    // one sector; a range that ends mid-sector; one past a grid's four loads a thread; most of the buffer; clamped
    for (const [offset, bytes] of [[0, 32], [4, 33], [128, 32 * (4 * 256 + 1)], [64, 270_000], [1000, 1 << 30]]) {
      const plan = planPrefetch(src.size, offset, bytes)!;
      const threads = plan.workgroups * 256;
      const seen = gpu.buffer("seen", threads * 4);
      gpu.run(prefetch(gpu, { ctl, src, offset, bytes, seen }));
      const got = new Uint32Array(await gpu.read(seen, 0, threads * 4));
      seen.destroy();
      assertEquals(got, prefetchReference(words, plan, threads), `offset ${offset}, ${bytes} bytes`);
    }
    // the production variant runs, and the buffer is as it was
    gpu.device.pushErrorScope("validation");
    gpu.run(prefetch(gpu, { ctl, src, bytes: 100_000 }));
    assertEquals((await gpu.device.popErrorScope())?.message, undefined);
    assertEquals(new Uint32Array(await gpu.read(src, 0, src.size)), words);
  } finally {
    src.destroy();
    ctl.destroy();
  }
});

Deno.test("planPrefetch clamps to the buffer, skips empty ranges and rejects unaligned offsets", () => {
  assertEquals(planPrefetch(1000, 0, 64), { first: 0, count: 2, workgroups: 1 });
  assertEquals(planPrefetch(1000, 992, 64)?.count, 1); // 8 bytes left: one sector
  assertEquals(planPrefetch(1000, 1000, 64), null);
  assertEquals(planPrefetch(1000, 0, 0), null);
  assertEquals(planPrefetch(1 << 30, 0, 1 << 30)?.workgroups, 1056); // the grid strides
  assertThrows(() => planPrefetch(1000, 2, 64), Error, "multiple of 4");
});
