/**
 * Tests of `linear` (`linear.ts`): it picks the matvec or the GEMM by row count, passes each its knobs, and both
 * match the reference.
 * @module
 */

import { packBf16, roundBf16Array } from "../bf16.ts";
import { GEMM_KERNEL_NAME } from "./gemm.ts";
import { linear, type LinearArgs } from "./linear.ts";
import { Epilogue, MATVEC_KERNEL_NAME, MATVEC_MAX_ROWS, matvecReference } from "./matvec.ts";
import type { Dispatch, Gpu } from "../runtime.ts";
import { assertClose, ctlBuffer, gpuTest, poisoned, Rng } from "../testing/harness.ts";

// Tolerance of matvec_test.ts and gemm_test.ts (bf16 weights exact on both sides, f32 vs f64 accumulation).
const TOL = { atol: 2e-4, rtol: 1e-4 };

type Knobs = Omit<LinearArgs, "ctl" | "weight" | "x" | "y" | "rows" | "k" | "n">;

/** Runs `linear` on seeded inputs, checks it against the reference and returns the dispatch it recorded. */
async function checkLinear(gpu: Gpu, rows: number, k: number, n: number, knobs: Knobs = {}): Promise<Dispatch> {
  const rng = new Rng(rows * 7919 + k * 31 + n);
  const nw = knobs.epilogue === Epilogue.SWIGLU ? 2 * n : n;
  const w = roundBf16Array(rng.normals(nw * k, 1 / Math.sqrt(k)));
  const x = rng.normals(rows * k);
  const ctl = ctlBuffer(gpu);
  const wb = gpu.upload("w", packBf16(w, k)), xb = gpu.upload("x", x), y = poisoned(gpu, rows * n);
  const dispatch = linear(gpu, { ctl, weight: wb, x: xb, y, rows, k, n, ...knobs });
  gpu.run([dispatch]);
  const got = await gpu.readF32(y, rows * n);
  for (const b of [ctl, wb, xb, y]) b.destroy();
  assertClose(got, matvecReference(w, x, rows, k, n, knobs.epilogue), TOL, `linear rows=${rows} K=${k} N=${n}`);
  return dispatch;
}

function assertKernel(d: Dispatch, name: string, rows: number): void {
  if (!d.label.startsWith(name)) throw new Error(`linear ran ${d.label} for ${rows} rows, expected ${name}`);
}

gpuTest("linear runs the matvec up to MATVEC_MAX_ROWS rows and the GEMM above, both correct", async (gpu) => {
  for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
    for (const rows of [1, MATVEC_MAX_ROWS]) {
      assertKernel(await checkLinear(gpu, rows, 24, 7, { epilogue }), MATVEC_KERNEL_NAME, rows);
    }
    for (const rows of [MATVEC_MAX_ROWS + 1, 130]) {
      assertKernel(await checkLinear(gpu, rows, 24, 7, { epilogue }), GEMM_KERNEL_NAME, rows);
    }
  }
});

gpuTest("linear passes each kernel its own tuning knobs", async (gpu) => {
  const knobs: Knobs = {
    rowsPerThread: 1,
    rowsPerWorkgroup: 4,
    workgroupSize: 64,
    threadsM: 4,
    threadsN: 8,
    blockM: 2,
    blockN: 1,
  };
  // matvec: ceil(37 / 4) = 10 workgroups; gemm: tiles of 8 x 8 -> ceil(33 / 8) * ceil(37 / 8) = 25 workgroups.
  const small = await checkLinear(gpu, 3, 264, 37, knobs);
  const large = await checkLinear(gpu, 33, 264, 37, knobs);
  if (small.workgroups[0] !== 10) throw new Error(`matvec ignored its knobs: ${small.workgroups} workgroups`);
  if (large.workgroups[0] !== 25) throw new Error(`gemm ignored its knobs: ${large.workgroups} workgroups`);
});
