/**
 * Tests of RMSNorm (`rmsnorm.ts`), plain and fused with the residual add, against the f64 reference at awkward
 * sizes, and mutants; its prefill fusions (the split-K sum, the f16 rows) against the dispatches they replace, bit for
 * bit, and against the references.
 * @module
 */

import { rmsnorm, type RmsnormFusion, rmsnormKernelFor, rmsnormReference } from "./rmsnorm.ts";
import { subgroupWidth } from "../reduce.ts";
import { rowScale, rowScaleReference } from "../matmul/row_scale.ts";
import { splitKReduce } from "../matmul/split_k_reduce.ts";
import type { Dispatch, Gpu, Kernel } from "../runtime.ts";
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

/** One case of the prefill fusions: S partials (1: plain rows), the f16 rows or not, in place or from `res`. */
interface FusedCase {
  rows: number;
  dim: number;
  splitK: number;
  half: boolean;
  from: boolean;
  workgroupSize?: number;
}

/**
 * Runs a fused RMSNorm (`kernel`: the generated one unless a mutant) and the dispatches it replaces (split_k_reduce,
 * then rmsnorm, then row_scale_half) on the same inputs; returns both outputs and the references' inputs.
 */
async function runFused(gpu: Gpu, c: FusedCase, kernel?: Kernel) {
  const rng = new Rng(c.rows * 131 + c.dim * 7 + c.splitK * 3 + (c.half ? 1 : 0) + (c.from ? 2 : 0));
  const partials = rng.normals(c.splitK * c.rows * c.dim, 3);
  const w = rng.normals(c.dim, 0.5, 1);
  const base = rng.normals(c.rows * c.dim);
  // rows of every magnitude for the exponents, each row's largest element in the last lane of its last vec4
  for (let m = 0; m < c.rows; m++) {
    const scale = [1, 3e4, 1e-3, 1e5][m % 4];
    for (let i = 0; i < c.dim; i++) base[m * c.dim + i] *= scale;
    base[m * c.dim + c.dim - 1] = 60 * scale;
  }
  const ctl = ctlBuffer(gpu);
  const pb = gpu.upload("partials", partials), wb = gpu.upload("w", w);
  const run = async (fused: boolean) => {
    const out = gpu.upload("out", base), res = gpu.upload("res", base);
    const sum = c.splitK > 1 && !fused ? poisoned(gpu, c.rows * c.dim, "sum") : undefined;
    const e = gpu.upload("e", new Int32Array(c.rows).fill(-12345));
    const xh = gpu.upload("xh", new Uint32Array((c.rows * c.dim) / 2).fill(0x7e017e01));
    const half = c.half ? { exponents: e, xHalf: xh } : undefined;
    const args = { ctl, weight: wb, out, rows: c.rows, dim: c.dim, eps: 1e-6, workgroupSize: c.workgroupSize };
    const residual = c.from ? { residualFrom: res } : { residual: true };
    const ds: Dispatch[] = fused ? [rmsnorm(gpu, { ...args, ...residual, x: pb, splitK: c.splitK, half }, kernel)] : [
      ...(sum ? [splitKReduce(gpu, { ctl, partials: pb, y: sum, rows: c.rows, n: c.dim, splitK: c.splitK })] : []),
      rmsnorm(gpu, { ...args, ...residual, x: sum ?? pb }),
      ...(half ? [rowScale(gpu, { ctl, x: out, exponents: e, xHalf: xh, rows: c.rows, k: c.dim })] : []),
    ];
    gpu.run(ds);
    const got = {
      out: await gpu.readF32(out, c.rows * c.dim),
      e: new Int32Array(await gpu.read(e, 0, c.rows * 4)),
      xh: new Uint16Array(await gpu.read(xh, 0, c.rows * c.dim * 2)),
    };
    for (const b of [out, res, e, xh, ...(sum ? [sum] : [])]) b.destroy();
    return got;
  };
  const fused = await run(true), apart = await run(false);
  for (const b of [ctl, pb, wb]) b.destroy();
  return { fused, apart, partials, w, base };
}

/** Fails unless the fused kernel stores what the dispatches it replaces store, bit for bit, and the references. */
async function checkFused(gpu: Gpu, c: FusedCase, kernel?: Kernel): Promise<void> {
  const { fused, apart, partials, w, base } = await runFused(gpu, c, kernel);
  const what = `rmsnorm fused ${JSON.stringify(c)}`;
  const same = (a: ArrayLike<number>, b: ArrayLike<number>, name: string) => {
    for (let i = 0; i < a.length; i++) {
      if (!Object.is(a[i], b[i])) throw new Error(`${what}: ${name}[${i}] = ${a[i]}, apart ${b[i]}`);
    }
  };
  same(new Uint32Array(fused.out.buffer), new Uint32Array(apart.out.buffer), "out bits");
  if (c.half) {
    same(fused.e, apart.e, "e");
    same(fused.xh, apart.xh, "xh");
    same(fused.e, rowScaleReference(fused.out, c.rows, c.dim), "e against the reference");
  }
  // the partials summed in f32 in split order, as the kernel sums them, then the f64 reference
  const x = new Float32Array(c.rows * c.dim);
  for (let s = 0; s < c.splitK; s++) {
    for (let i = 0; i < x.length; i++) x[i] = Math.fround(x[i] + partials[s * x.length + i]);
  }
  const want = rmsnormReference(x, w, c.rows, c.dim, 1e-6, base);
  assertClose(fused.out, want, TOL, what);
}

const FUSED_SHAPES: [number, number][] = [[1, 4], [3, 260], [5, 4096]];

gpuTest(
  "rmsnorm fused with the split-K sum and the f16 rows stores what split_k_reduce, rmsnorm and row_scale_half store",
  async (gpu) => {
    for (const [rows, dim] of FUSED_SHAPES) {
      for (const splitK of [1, 2, 3, 4]) {
        for (const half of [false, true]) {
          if (splitK === 1 && !half) continue; // the unfused kernel, tested above
          for (const from of [false, true]) await checkFused(gpu, { rows, dim, splitK, half, from });
        }
      }
    }
    // several strides a thread
    await checkFused(gpu, { rows: 3, dim: 1028, splitK: 4, half: true, from: false, workgroupSize: 32 });
  },
);

gpuTest("rmsnorm's prefill fusions: checks catch broken kernels", async (gpu) => {
  const subgroups = subgroupWidth(gpu) > 0;
  const kernelFor = (fusion: RmsnormFusion) => rmsnormKernelFor(subgroups, true, false, fusion);
  const both = { splitK: true, half: true };
  const top = subgroups ? "sg_max" : "best"; // the row maximum's atomic takes each subgroup's maximum, or each thread's
  const cases: [RmsnormFusion, string, string][] = [
    [{ splitK: true }, "v += x[s * stride + i]", "v += x[i]"], // every partial read from the first
    [{ splitK: true }, "let slice = nwg.x * n;", "let slice = nwg.x * D;"], // slice stride in values, not vec4
    [{ splitK: true }, "s < SPLIT_K; s++", "s + 1u < SPLIT_K; s++"], // the last partial left out
    [{ half: true }, `atomicMax(&row_max, ${top})`, "atomicMax(&row_max, 0u)"], // exponent of a zero row
    // only the first lane of each subgroup counts
    ...(subgroups
      ? [[{ half: true }, "let sg_max = subgroupMax(best);", "let sg_max = best;"] as [RmsnormFusion, string, string]]
      : []),
    [{ half: true }, "max(b.z, b.w)", "max(b.z, b.z)"], // a lane left out of the row's maximum
    [both, "xh[ob + i] = row_scale_pack(out[ob + i], f)", "xh[ob + i] = row_scale_pack(out[ob + i], 1.0)"], // unscaled
    [both, "o = out[ob + i] + v;", "o = v;"], // the exponent of the normed rows, not of the residual stored
  ];
  for (const [fusion, from, to] of cases) {
    const kernel = mutate(kernelFor(fusion), from, to);
    // 67 vec4 a row: the row's largest element (its last) is held by thread 66, not the first lane of a subgroup
    const c = { rows: 5, dim: 268, splitK: fusion.splitK ? 3 : 1, half: fusion.half ?? false, from: false };
    await assertCaught(() => checkFused(gpu, c, kernel), `${from} -> ${to}`);
  }
});
