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
}

async function runReduce(gpu: Gpu, splitK: number, rows: number, n: number, o: Options = {}) {
  const epilogue = o.epilogue ?? Epilogue.PLAIN;
  const nw = epilogue === Epilogue.SWIGLU ? 2 * n : n;
  const partials = new Rng(splitK * 1009 + rows * 31 + n + epilogue).normals(splitK * rows * nw);
  const ctl = ctlBuffer(gpu, { ACTIVE: o.active ?? 1 });
  const pb = gpu.upload("partials", partials), y = poisoned(gpu, rows * n);
  gpu.run([splitKReduce(gpu, { ctl, partials: pb, y, rows, n, splitK, epilogue, gated: o.gated }, o.kernel)]);
  const got = await gpu.readF32(y, rows * n);
  for (const b of [ctl, pb, y]) b.destroy();
  return { got, want: splitKReduceReference(partials, splitK, rows, n, epilogue) };
}

async function checkReduce(gpu: Gpu, splitK: number, rows: number, n: number, o: Options = {}): Promise<Float32Array> {
  const { got, want } = await runReduce(gpu, splitK, rows, n, o);
  assertClose(got, want, TOL, `split_k_reduce S=${splitK} rows=${rows} N=${n} epilogue=${o.epilogue ?? 0}`);
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
  ];
  for (const [width, epilogue, from, to] of cases) {
    const kernel = mutate(splitKReduceKernelFor({ epilogue, width }), from, to);
    await assertCaught(() => checkReduce(gpu, 4, 37, width === 4 ? 300 : 65, { epilogue, kernel }), from);
  }
});
