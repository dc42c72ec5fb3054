/**
 * Tests of the on-GPU LoRA merge (`lora_merge.ts`): bf16 results within one ulp of the f64 reference and almost
 * all bit-exact, and mutants.
 * @module
 */

import { assertThrows } from "@std/assert";
import { f32ToBf16Bits, packBf16, roundBf16Array, unpackBf16 } from "../bf16.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { loraMerge, loraMergeKernel, loraMergeReference } from "./lora_merge.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, Rng } from "../testing/harness.ts";

// Tolerance. The outputs are bf16; the GPU accumulates the rank-R sum in f32 (in any order, maybe with fused
// multiply-adds), the reference in f64, so the f32 value before the final bf16 rounding can differ by a few f32 ulps.
// That changes the bf16 result only when the value lies within those few f32 ulps of a bf16 rounding tie, i.e. with
// probability ~ 2^-16 * R per element, and then by exactly one bf16 ulp. So: every element within 1 bf16 ulp, and at
// least 99% bit-exact (in practice all of them are). Rounding by truncation instead of to nearest-even moves about half
// of the elements by one ulp and fails the 99% rule; index and scale bugs move most elements by many ulps.
const MAX_ULPS = 1;
const MIN_EXACT = 0.99;
// Coarse check first (with assertClose's worst-element report): one bf16 ulp is at most 2^-7 of the value.
const COARSE = { atol: 0, rtol: 2 ** -7 };

/** Distance in bf16 ulps between two bf16 values (as f32): adjacent bf16 values are 1 apart, +0 and -0 are 0. */
function bf16UlpDistance(x: number, y: number): number {
  const ordinal = (v: number) => {
    const bits = f32ToBf16Bits(v);
    return bits & 0x8000 ? -(bits & 0x7fff) : bits;
  };
  return Math.abs(ordinal(x) - ordinal(y));
}

/**
 * Merges a random rank-`rank` delta into a random [n, k] bf16 weight on the GPU and compares with the reference. The
 * delta is about as large as the weight (std 0.02 each), so an element the kernel fails to rewrite (it is updated in
 * place, so it cannot be poisoned) keeps its old value, many ulps away from the merged one.
 */
async function checkLoraMerge(
  gpu: Gpu,
  n: number,
  k: number,
  rank: number,
  opts: { kernel?: Kernel; scale?: number; workgroupSize?: number } = {},
): Promise<void> {
  const rng = new Rng(n * 65537 + k * 257 + rank);
  const scale = opts.scale ?? 2; // lora_alpha / r, e.g. 32 / 16
  const w = roundBf16Array(rng.normals(n * k, 0.02));
  const a = rng.normals(rank * k, 1);
  const b = rng.normals(n * rank, 0.01 / Math.sqrt(rank));
  const ctl = ctlBuffer(gpu);
  const ab = gpu.upload("lora_A", a), bb = gpu.upload("lora_B", b), wb = gpu.upload("w", packBf16(w, k));
  gpu.run([
    loraMerge(
      gpu,
      { ctl, a: ab, b: bb, weight: wb, n, k, rank, scale, workgroupSize: opts.workgroupSize },
      opts.kernel,
    ),
  ]);
  const got = unpackBf16(await gpu.readU32(wb, n * k / 2));
  for (const buf of [ctl, ab, bb, wb]) buf.destroy();
  const want = loraMergeReference(w, a, b, n, k, rank, scale);
  const what = `lora merge N=${n} K=${k} R=${rank}`;
  assertClose(got, want, COARSE, what);
  let exact = 0, worst = 0;
  for (let i = 0; i < got.length; i++) {
    const d = bf16UlpDistance(got[i], want[i]);
    if (d === 0) exact++;
    worst = Math.max(worst, d);
  }
  if (worst > MAX_ULPS) throw new Error(`${what}: an element is ${worst} bf16 ulps from the reference`);
  if (exact < MIN_EXACT * got.length) throw new Error(`${what}: only ${exact}/${got.length} elements are bit-exact`);
}

gpuTest("lora merge matches the reference (within one bf16 ulp, >= 99% bit-exact) at awkward sizes", async (gpu) => {
  for (const n of [1, 5, 33]) {
    for (const k of [2, 10, 264]) {
      for (const rank of [1, 4, 16]) await checkLoraMerge(gpu, n, k, rank);
    }
  }
});

gpuTest("lora merge over a 2-D grid of workgroups", async (gpu) => {
  // 33 * 4000 words with one thread per workgroup: 132000 workgroups, more than 65535 in one dimension.
  await checkLoraMerge(gpu, 33, 8000, 2, { workgroupSize: 1 });
});

gpuTest("lora merge rejects an odd K and rank 0", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const base = { ctl, a: ctl, b: ctl, weight: ctl, n: 4, k: 8, rank: 2, scale: 1 };
  assertThrows(() => loraMerge(gpu, { ...base, k: 9 }), Error, "odd");
  assertThrows(() => loraMerge(gpu, { ...base, rank: 0 }), Error, "rank 0");
  ctl.destroy();
  return Promise.resolve();
});

gpuTest("lora merge checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u;", "return u >> 16u;"], // truncation instead of RNE
    ["acc += b[n * R + r]", "acc += b[r * N + n]"], // lora_B read transposed
    ["bf16x2(w[g]) + SCALE * acc", "bf16x2(w[g]) + acc"], // scale dropped
    ["for (var r = 0u; r < R; r++)", "for (var r = 0u; r + 1u < R; r++)"], // last rank skipped
  ];
  for (const [from, to] of cases) {
    const kernel = mutate(loraMergeKernel, from, to);
    await assertCaught(() => checkLoraMerge(gpu, 33, 264, 4, { kernel }), `${from} -> ${to}`);
  }
});
