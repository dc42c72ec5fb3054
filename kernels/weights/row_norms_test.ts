/**
 * Tests of the row-norm kernel (`row_norms.ts`) against the f64 reference: awkward rows, row lengths and parts, one
 * row with a large norm in each part, the tree and subgroup paths, and mutants.
 * @module
 */

import { assertThrows } from "@std/assert";
import { packBf16, roundBf16Array } from "../bf16.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { subgroupWidth } from "../reduce.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, Rng } from "../testing/harness.ts";
import { rowNormMax, rowNormMaxKernelFor, rowNormMaxReference } from "./row_norms.ts";

/** Runs one dispatch over a random bf16 [rows, k] weight whose row `big` (if any) is 40x the others, and compares. */
async function check(gpu: Gpu, rows: number, k: number, partRows: number, kernel?: Kernel, big?: number) {
  const rng = new Rng(rows * 31 + k * 7 + partRows);
  const w = rng.normals(rows * k, 0.02);
  if (big !== undefined) { for (let i = 0; i < k; i++) w[big * k + i] *= 40; }
  const values = roundBf16Array(w);
  const parts = Math.ceil(rows / partRows);
  const ctl = ctlBuffer(gpu), weight = gpu.upload("w", packBf16(values, k));
  const out = gpu.upload("out", new Uint32Array(parts + 1)); // one sentinel word past the parts
  try {
    gpu.run([rowNormMax(gpu, { ctl, weight, rows, k, partRows, out }, kernel)]);
    const got = await gpu.readF32(out, parts + 1);
    if (got[parts] !== 0) throw new Error(`row_norm_max wrote past its ${parts} parts`);
    // f32 sums of up to k squares against f64: a relative k 2^-24 at most
    const want = rowNormMaxReference(values, rows, k, partRows);
    assertClose(got.subarray(0, parts), want, { atol: 0, rtol: 1e-5 }, `row_norm_max ${rows} x ${k} / ${partRows}`);
  } finally {
    for (const b of [ctl, weight, out]) b.destroy();
  }
}

gpuTest("row_norm_max gives each part's largest row norm at awkward sizes", async (gpu) => {
  for (const [rows, k, partRows] of [[1, 2, 1], [3, 6, 2], [37, 130, 10], [64, 1026, 32], [20, 4096, 20]]) {
    await check(gpu, rows, k, partRows);
    await check(gpu, rows, k, partRows, undefined, rows - 1); // the last row the largest
  }
  const paths = subgroupWidth(gpu) > 0 ? [true, false] : [false];
  for (const subgroups of paths) await check(gpu, 9, 262, 4, rowNormMaxKernelFor(subgroups), 5);
});

gpuTest("row_norm_max's checks catch broken kernels", async (gpu) => {
  const kernel = rowNormMaxKernelFor(subgroupWidth(gpu) > 0);
  const cases: [string, string][] = [
    ["atomicMax(&out[n / PART_ROWS]", "atomicMax(&out[0u]"], // every row into part 0
    ["s += lo * lo + hi * hi;", "s += lo * lo;"], // the high halves left out
    ["bitcast<u32>(sqrt(total))", "bitcast<u32>(total)"], // the square, not the norm
    ["i < K / 2u; i += WG", "i < K / 4u; i += WG"], // half the row
  ];
  for (const [from, to] of cases) {
    await assertCaught(async () => {
      await check(gpu, 12, 130, 5, mutate(kernel, from, to), 2);
      await check(gpu, 12, 130, 5, mutate(kernel, from, to), 9);
    }, `${from} -> ${to}`);
  }
});

gpuTest("rowNormMax refuses odd rows, no rows and a short output", (gpu) => {
  const ctl = ctlBuffer(gpu), weight = gpu.buffer("w", 64), out = gpu.buffer("out", 4);
  try {
    assertThrows(() => rowNormMax(gpu, { ctl, weight, rows: 2, k: 3, partRows: 1, out }), Error, "even");
    assertThrows(() => rowNormMax(gpu, { ctl, weight, rows: 0, k: 4, partRows: 1, out }), Error, "rows");
    assertThrows(() => rowNormMax(gpu, { ctl, weight, rows: 16, k: 4, partRows: 1, out }), Error, "parts");
  } finally {
    for (const b of [ctl, weight, out]) b.destroy();
  }
  return Promise.resolve();
});
