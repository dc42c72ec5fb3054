/**
 * Tests of the split-K reduction (`split_k_reduce.ts`): random partials against the CPU reference at awkward M and N
 * (1, 7, 37 rows; N not a multiple of 4: the scalar kernel; N a multiple of 4: the vec4 one), every S, both
 * epilogues, the gate, bit-for-bit determinism, rejected arguments and mutants that break it.
 * @module
 */

import { assertThrows } from "@std/assert";
import { SPLIT_KS } from "./gemm.ts";
import { Epilogue } from "./matvec.ts";
import { splitKReduce, splitKReduceKernelFor, splitKReduceReference } from "./split_k_reduce.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, poisoned, Rng } from "../testing/harness.ts";

// f32 sums of at most 8 O(1) terms against f64 (and silu of them): error a few 2^-24 of the terms.
const TOL = { atol: 1e-5, rtol: 1e-5 };

interface Options {
  epilogue?: number;
  kernel?: Kernel;
  gated?: boolean;
  active?: number;
  /** The first column of y the partials hold (they cover columns nBegin..n - 1). */
  nBegin?: number;
}

async function runReduce(gpu: Gpu, splitK: number, rows: number, n: number, o: Options = {}) {
  const epilogue = o.epilogue ?? Epilogue.PLAIN;
  const nBegin = o.nBegin ?? 0;
  const nw = (epilogue === Epilogue.SWIGLU ? 2 : 1) * (n - nBegin);
  const partials = new Rng(splitK * 1009 + rows * 31 + n + epilogue).normals(splitK * rows * nw);
  const ctl = ctlBuffer(gpu, { ACTIVE: o.active ?? 1 });
  const pb = gpu.upload("partials", partials), y = poisoned(gpu, rows * n);
  const a = { ctl, partials: pb, y, rows, n, splitK, epilogue, gated: o.gated, nBegin: o.nBegin };
  gpu.run([splitKReduce(gpu, a, o.kernel)]);
  const got = await gpu.readF32(y, rows * n);
  for (const b of [ctl, pb, y]) b.destroy();
  return { got, want: splitKReduceReference(partials, splitK, rows, n, epilogue, nBegin) };
}

async function checkReduce(gpu: Gpu, splitK: number, rows: number, n: number, o: Options = {}): Promise<Float32Array> {
  const { got, want } = await runReduce(gpu, splitK, rows, n, o);
  const nBegin = o.nBegin ?? 0;
  const what = `split_k_reduce S=${splitK} rows=${rows} N=${n} nBegin=${nBegin} epilogue=${o.epilogue ?? 0}`;
  // y's columns before nBegin are not the reduction's: they keep the poison (NaN)
  const mine = (i: number) => i % n >= nBegin;
  if (!got.every((v, i) => mine(i) || Number.isNaN(v))) throw new Error(`${what}: wrote a column before nBegin`);
  assertClose(got.filter((_, i) => mine(i)), want.filter((_, i) => mine(i)), TOL, what);
  return got;
}

const SHAPES: [number, number][] = [[1, 1], [7, 13], [37, 65], [1, 8], [7, 300], [37, 4100]];

gpuTest("split_k_reduce sums the partials of every S (1..8) at awkward sizes (scalar and vec4)", async (gpu) => {
  for (let splitK = 1; splitK <= Math.max(...SPLIT_KS); splitK++) {
    for (const [rows, n] of SHAPES) await checkReduce(gpu, splitK, rows, n);
  }
});

gpuTest("split_k_reduce SwiGLU computes silu(sum gate) * sum up", async (gpu) => {
  for (const splitK of SPLIT_KS) {
    for (const [rows, n] of SHAPES) await checkReduce(gpu, splitK, rows, n, { epilogue: Epilogue.SWIGLU });
  }
});

gpuTest("split_k_reduce over columns nBegin.. writes only those, from partials of their width", async (gpu) => {
  // [rows, n, nBegin]: vec4 (n and nBegin multiples of 4) and scalar; one column, and all but one
  const cases: [number, number, number][] = [[7, 300, 128], [37, 4100, 4096], [1, 65, 13], [7, 13, 12], [7, 8, 4]];
  for (const [rows, n, nBegin] of cases) {
    for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
      for (const splitK of [1, 3]) await checkReduce(gpu, splitK, rows, n, { epilogue, nBegin });
    }
  }
});

gpuTest("split_k_reduce gives the same bits every run", async (gpu) => {
  const a = await checkReduce(gpu, 8, 37, 300, { epilogue: Epilogue.SWIGLU });
  const b = await checkReduce(gpu, 8, 37, 300, { epilogue: Epilogue.SWIGLU });
  if (!a.every((v, i) => Object.is(v, b[i]))) throw new Error("two runs differ");
});

gpuTest("split_k_reduce built GATED writes nothing while ACTIVE is 0 and computes while it is 1", async (gpu) => {
  const { got } = await runReduce(gpu, 4, 7, 13, { gated: true, active: 0 });
  if (!got.every(Number.isNaN)) throw new Error("a gated-off reduction wrote its output");
  await checkReduce(gpu, 4, 7, 13, { gated: true, active: 1 });
});

gpuTest("split_k_reduce rejects arguments it cannot handle", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const base = { ctl, partials: ctl, y: ctl, rows: 7, n: 8, splitK: 2 };
  const bad: [string, Partial<Parameters<typeof splitKReduce>[1]>, Kernel?][] = [
    ["S = 0", { splitK: 0 }],
    ["S = 16", { splitK: 16 }],
    ["S = 2.5", { splitK: 2.5 }],
    ["no rows", { rows: 0 }],
    ["no columns", { n: 0 }],
    ["nBegin = N", { nBegin: 8 }],
    ["nBegin < 0", { nBegin: -4 }],
    ["an unknown epilogue", { epilogue: 7 }],
    ["a kernel for the other epilogue", {}, splitKReduceKernelFor({ epilogue: Epilogue.SWIGLU, width: 4 })],
    ["a scalar kernel where N allows vec4", {}, splitKReduceKernelFor({ width: 1 })],
  ];
  for (const [what, change, kernel] of bad) {
    assertThrows(
      () => splitKReduce(gpu, { ...base, ...change }, kernel),
      Error,
      undefined,
      `split_k_reduce accepted ${what}`,
    );
  }
  ctl.destroy();
  return Promise.resolve();
});

gpuTest("split_k_reduce checks catch broken kernels", async (gpu) => {
  // [width, epilogue, from, to]: each mutant is wrong in every schedule.
  const cases: [1 | 4, number, string, string][] = [
    [1, Epilogue.PLAIN, "s < SPLIT_K", "s + 1u < SPLIT_K"], // last split dropped
    [4, Epilogue.PLAIN, "(s * M + m) * row + c", "(s * M + m) * row"], // every column reads the first
    [1, Epilogue.PLAIN, "let row = cols;", "let row = cols + 1u;"], // partial rows read at the wrong stride
    [4, Epilogue.SWIGLU, "u += p[at + cols];", "u += p[at];"], // up read from the gate columns
    [1, Epilogue.SWIGLU, "g / (1.0 + exp(-g)) * u", "g * u"], // no SiLU
    [4, Epilogue.PLAIN, "N_BEGIN / WIDTH + c", "c"], // the columns written from 0, not nBegin
    [1, Epilogue.SWIGLU, "let cols = (N - N_BEGIN) / WIDTH;", "let cols = N / WIDTH;"], // partials of full width
  ];
  for (const [width, epilogue, from, to] of cases) {
    const kernel = mutate(splitKReduceKernelFor({ epilogue, width }), from, to);
    const nBegin = width === 4 ? 128 : 13;
    await assertCaught(() => checkReduce(gpu, 4, 37, width === 4 ? 300 : 65, { epilogue, kernel, nBegin }), from);
  }
});
