/**
 * Tests of the read barrier (`read_barrier.ts`): it leaves every buffer as it was, splits wide groups by the device's
 * limit, and rejects a buffer listed twice.
 * @module
 */

import { assertEquals, assertThrows } from "@std/assert";
import { READ_BARRIER_MAX_WIDTH, readBarrier, readBarrierWidth } from "./read_barrier.ts";
import { ctlBuffer, gpuTest } from "../testing/harness.ts";
import { range } from "../codegen.ts";

gpuTest("readBarrier binds up to the device's width a dispatch, runs and changes nothing", async (gpu) => {
  const width = readBarrierWidth(gpu);
  // capped: a device may grant a million storage buffers a stage, and a kernel of that many bindings hangs its compiler
  assertEquals(width, Math.min(READ_BARRIER_MAX_WIDTH, gpu.device.limits.maxStorageBuffersPerShaderStage - 1));
  for (const n of [1, 2, width, width + 1, 2 * width + 3]) {
    const ctl = ctlBuffer(gpu);
    const data = range(n).map((i) => Float32Array.from({ length: 3 + i }, (_, j) => i * 10 + j + 0.5));
    const buffers = data.map((d, i) => gpu.upload(`b${i}`, d));
    const ds = readBarrier(gpu, { ctl, buffers });
    assertEquals(ds.length, Math.ceil(n / width), `${n} buffers`);
    assertEquals(ds.map((d) => d.workgroups), ds.map(() => [1, 1, 1]));
    gpu.device.pushErrorScope("validation");
    gpu.run(ds);
    await gpu.finish();
    assertEquals((await gpu.device.popErrorScope())?.message, undefined, `${n} buffers: no validation error`);
    for (const [i, b] of buffers.entries()) assertEquals(await gpu.readF32(b, data[i].length), data[i]);
    for (const b of [ctl, ...buffers]) b.destroy();
  }
});

gpuTest("readBarrier rejects a buffer listed twice", (gpu) => {
  const ctl = ctlBuffer(gpu), b = gpu.buffer("b", 16);
  assertThrows(() => readBarrier(gpu, { ctl, buffers: [b, b] }), Error, "listed twice");
  ctl.destroy();
  b.destroy();
  return Promise.resolve();
});
