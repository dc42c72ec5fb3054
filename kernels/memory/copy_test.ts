/**
 * Tests of the vec4 copy (`copy.ts`: the bandwidth roofline, and the model's copies of activations and trunk states):
 * every word of the source lands in the destination bit for bit and nothing around the destination is written, at
 * awkward counts and per-thread strides, into a region at an offset, gated, and mutants.
 * @module
 */

import { copyKernel, copyVec4 } from "./copy.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, poisoned, Rng } from "../testing/harness.ts";

// A copy moves u32 words, so the destination must equal the source bit for bit (NaN payloads included): tolerance
// zero, compared as u32 words.
const EXACT = { atol: 0 };

/** vec4s after the copied ones, in the source (random) and in the destination (poisoned, must stay untouched). */
const PAD = 2;

interface CopyCase {
  /** vec4s copied. */
  count: number;
  perThread?: number;
  /** Where the destination region starts in its buffer, in vec4s (0: the whole buffer is bound). */
  dstOffset?: number;
  gated?: boolean;
  /** ctl[ACTIVE] (only a kernel built `gated` reads it). */
  active?: number;
  kernel?: Kernel;
}

/**
 * Copies `count` vec4s of random words into a NaN-poisoned destination that has PAD more vec4s after the region (and
 * `dstOffset` before it), and returns every word of the destination buffer with what it must hold.
 */
async function runCopy(gpu: Gpu, c: CopyCase): Promise<{ got: Uint32Array; want: Uint32Array }> {
  const rng = new Rng(c.count * 7919 + (c.perThread ?? 0) * 31 + (c.dstOffset ?? 0));
  // Any bit pattern, NaNs included: a copy that went through f32 could change a NaN's payload.
  const src = new Uint32Array((c.count + PAD) * 4).map(() => rng.int(2 ** 32));
  const before = c.dstOffset ?? 0;
  const words = (before + c.count + PAD) * 4;
  const ctl = ctlBuffer(gpu, { ACTIVE: c.active ?? 1 });
  const srcb = gpu.upload("src", src), dst = poisoned(gpu, words, "dst");
  const region = before === 0 ? dst : { buffer: dst, offset: before * 16, size: c.count * 16 };
  gpu.run([
    copyVec4(
      gpu,
      { ctl, src: srcb, dst: region, vec4Count: c.count, perThread: c.perThread, gated: c.gated },
      c.kernel,
    ),
  ]);
  const got = await gpu.readU32(dst, words);
  for (const b of [ctl, srcb, dst]) b.destroy();
  const want = new Uint32Array(new Float32Array(words).fill(NaN).buffer);
  if (!c.gated || c.active !== 0) want.set(src.subarray(0, c.count * 4), before * 4);
  return { got, want };
}

async function checkCopy(gpu: Gpu, c: CopyCase): Promise<void> {
  const { got, want } = await runCopy(gpu, c);
  const { kernel: _, ...shown } = c;
  assertClose(got, want, EXACT, `copy ${JSON.stringify(shown)} (destination words, region and padding)`);
}

gpuTest("copy moves every word bit for bit at awkward counts, and nothing past them", async (gpu) => {
  // 1024 vec4s is one workgroup at the default 4 per thread: 1023 and 1025 end just inside and just past it.
  for (const count of [1, 3, 255, 1023, 1025, 4097]) {
    for (const perThread of [undefined, 1, 3]) await checkCopy(gpu, { count, perThread });
  }
});

gpuTest("copy into a region at an offset leaves the rest of the buffer untouched", async (gpu) => {
  // The model saves trunk states this way: row i of a buffer, bound at its byte offset.
  const align = gpu.device.limits.minStorageBufferOffsetAlignment / 16;
  for (const count of [1, 7, 1025]) await checkCopy(gpu, { count, dstOffset: align });
  await checkCopy(gpu, { count: 5, dstOffset: 3 * align });
});

gpuTest("copy built gated writes nothing while ACTIVE is 0 and copies while it is 1", async (gpu) => {
  const { got } = await runCopy(gpu, { count: 1025, gated: true, active: 0 });
  if (!new Float32Array(got.buffer).every(Number.isNaN)) throw new Error("a gated-off copy wrote its destination");
  await checkCopy(gpu, { count: 1025, gated: true, active: 1 });
});

gpuTest("copy checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["if (i < COUNT) {", "if (i + 1u < COUNT) {"], // the last vec4 left out
    ["if (i < COUNT) { dst[i] = src[i]; }", "dst[i] = src[i];"], // no range check: writes past the region
    ["let i = base + j * WG;", "let i = base + j;"], // a thread's vec4s contiguous: the workgroup's ranges overlap
    ["flat_workgroup(wid, nwg) * WG * PER_THREAD + t", "flat_workgroup(wid, nwg) * WG + t"], // workgroups overlap
  ];
  for (const [from, to] of cases) {
    const kernel = mutate(copyKernel, from, to);
    await assertCaught(async () => {
      await checkCopy(gpu, { count: 3, kernel });
      await checkCopy(gpu, { count: 4097, kernel });
    }, `${from} -> ${to}`);
  }
});
