/**
 * Tests of RMSNorm (`rmsnorm.ts`), plain and fused with the residual add, against the f64 reference at awkward
 * sizes, and mutants.
 * @module
 */

import { rmsnorm, rmsnormKernelFor, rmsnormReference } from "./rmsnorm.ts";
import { subgroupWidth } from "../reduce.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, poisoned, Rng } from "../testing/harness.ts";
import type { ErrorReport } from "../testing/harness.ts";

// f32 kernel vs f64 reference: the only differences are f32 rounding in a sum of D squares and inverseSqrt's
// few-ulp error, so 1e-5 relative (plus 1e-6 absolute for values near zero) is far above what a correct kernel shows.
const TOL = { atol: 1e-6, rtol: 1e-5 };

/** Runs one RMSNorm case on the GPU and compares it with the reference. */
async function checkRmsnorm(
  gpu: Gpu,
  rows: number,
  dim: number,
  opts: {
    residual?: boolean;
    xRowOffset?: number;
    seed?: number;
    kernel?: Kernel;
    workgroupSize?: number;
    subgroups?: boolean;
  } = {},
): Promise<ErrorReport> {
  const rng = new Rng(opts.seed ?? rows * 7919 + dim);
  const off = opts.xRowOffset ?? 0;
  const x = rng.normals((rows + off) * dim, 3);
  const w = rng.normals(dim, 0.5, 1);
  const base = opts.residual ? rng.normals(rows * dim) : undefined;
  const ctl = ctlBuffer(gpu);
  const xb = gpu.upload("x", x), wb = gpu.upload("w", w);
  const out = base ? gpu.upload("out", base) : poisoned(gpu, rows * dim);
  gpu.run([
    rmsnorm(gpu, {
      ctl,
      x: xb,
      weight: wb,
      out,
      rows,
      dim,
      eps: 1e-6,
      residual: opts.residual,
      xRowOffset: off,
      workgroupSize: opts.workgroupSize,
      subgroups: opts.subgroups,
    }, opts.kernel),
  ]);
  const got = await gpu.readF32(out, rows * dim);
  const want = rmsnormReference(x, w, rows, dim, 1e-6, base, off);
  for (const b of [ctl, xb, wb, out]) b.destroy();
  return assertClose(got, want, TOL, `rmsnorm rows=${rows} dim=${dim} ${JSON.stringify(opts)}`);
}

gpuTest("rmsnorm matches the reference at awkward sizes", async (gpu) => {
  for (const [rows, dim] of [[1, 1], [1, 7], [3, 255], [2, 257], [5, 1000], [1, 2048], [4, 4096]]) {
    await checkRmsnorm(gpu, rows, dim);
  }
});

gpuTest("rmsnorm fused with the residual add matches the reference", async (gpu) => {
  for (const [rows, dim] of [[1, 3], [3, 300], [2, 2048]]) await checkRmsnorm(gpu, rows, dim, { residual: true });
});

gpuTest(
  "rmsnorm with the residual from another buffer stores res + normed rows and leaves res as it was",
  async (gpu) => {
    for (const [rows, dim] of [[1, 3], [3, 300], [2, 4096]]) {
      const rng = new Rng(rows * 31 + dim);
      const x = rng.normals(rows * dim, 3), w = rng.normals(dim, 0.5, 1), res = rng.normals(rows * dim);
      const ctl = ctlBuffer(gpu);
      const xb = gpu.upload("x", x), wb = gpu.upload("w", w), rb = gpu.upload("res", res);
      const out = poisoned(gpu, rows * dim);
      gpu.run([rmsnorm(gpu, { ctl, x: xb, weight: wb, out, rows, dim, eps: 1e-6, residualFrom: rb })]);
      const got = await gpu.readF32(out, rows * dim), resAfter = await gpu.readF32(rb, rows * dim);
      for (const b of [ctl, xb, wb, rb, out]) b.destroy();
      assertClose(got, rmsnormReference(x, w, rows, dim, 1e-6, res), TOL, `rmsnorm from res rows=${rows} dim=${dim}`);
      assertClose(resAfter, res, { atol: 0, rtol: 0 }, "res is read only");
    }
  },
);

gpuTest("rmsnorm reads rows from an offset (last position only)", async (gpu) => {
  await checkRmsnorm(gpu, 1, 130, { xRowOffset: 6 });
});

gpuTest("rmsnorm agrees across workgroup sizes and both reduction paths", async (gpu) => {
  const paths = subgroupWidth(gpu) > 0 ? [false, true] : [false];
  for (const subgroups of paths) {
    for (const workgroupSize of [32, 64, 256, 1024]) {
      for (const [rows, dim] of [[1, 1], [2, 33], [1, 4096], [3, 5000]]) {
        await checkRmsnorm(gpu, rows, dim, { workgroupSize, subgroups, residual: dim % 2 === 0 });
      }
    }
  }
});

/** Asserts that each mutant of the vec4 or scalar kernel fails the check at a width that takes that path. */
async function assertMutantsCaught(gpu: Gpu, vec4: boolean, cases: [string, string][]): Promise<void> {
  const dim = vec4 ? 256 : 257;
  for (const [from, to] of cases) {
    const kernel = mutate(rmsnormKernelFor(subgroupWidth(gpu) > 0, vec4), from, to);
    await assertCaught(async () => {
      await checkRmsnorm(gpu, 3, dim, { kernel });
      await checkRmsnorm(gpu, 2, 300, { kernel, residual: true });
    }, `${from} -> ${to}`);
  }
}

gpuTest(
  "rmsnorm's vec4 path (width a multiple of 4) checks catch broken kernels",
  (gpu) =>
    assertMutantsCaught(gpu, true, [
      ["dot(v, v)", "dot(v.xyz, v.xyz)"], // a lane of each vec4 left out of the sum
      ["let xb = (m + X_ROW_OFFSET) * n;", "let xb = (m + X_ROW_OFFSET) * D;"], // row stride in values, not vec4
    ]),
);

gpuTest("rmsnorm checks catch broken kernels", (gpu) =>
  assertMutantsCaught(gpu, false, [
    ["total / f32(D)", "total / f32(D - 1u)"], // wrong mean
    [
      "for (var i = t; i < n; i += WG) {\n    let v = x[xb + i] * inv",
      "for (var i = t; i + 1u < n; i += WG) {\n    let v = x[xb + i] * inv",
    ], // last element skipped
    ["out[ob + i] += v", "out[ob + i] = v"], // residual dropped
  ]));
