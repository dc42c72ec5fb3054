/**
 * Tests of `linear` (`linear.ts`): it picks the matvec or a GEMM by row count and device, passes each its knobs, and
 * all match the reference; `prefillMath` f16 takes the f16-multiply GEMM where no tensor cores run; HYDRA_PREFILL_GEMM
 * forces the prefill GEMM, and forcing one that cannot run (or f16 without shader-f16) is a UserError; split-K is
 * automatic where a GEMM has too few tiles (the measured rule), and splitK or HYDRA_SPLIT_K override it; a few rows past
 * the matvec's take the FMA GEMMs' small-M tiles.
 * @module
 */

import { assertEquals, assertThrows } from "@std/assert";
import { packBf16, roundBf16Array } from "../bf16.ts";
import { GEMM_KERNEL_NAME } from "./gemm.ts";
import { SPLIT_K_REDUCE_KERNEL_NAME } from "./split_k_reduce.ts";
import { GEMM_TENSOR_KERNEL_NAME, tensorGemmUnsupported, type TensorTiles } from "./gemm_tensor.ts";
import {
  byWaves,
  linear,
  type LinearArgs,
  linearPlan,
  PREFILL_GEMM_ENV,
  type PrefillGemm,
  prefillGemmFor,
  SMALL_M_ROWS,
  SPLIT_K_ENV,
  splitKFor,
  TAIL_SPLIT_ENV,
  tailSplitFor,
  TENSOR_SMALL_M_ROWS,
  TENSOR_SMALL_M_SWIGLU_MIN_K,
  TENSOR_TILES,
  TENSOR_TILES_192,
  TENSOR_TILES_LARGE_M,
  TENSOR_TILES_SMALL_M,
  TENSOR_TILES_SMALL_M_96,
  TENSOR_TILES_SMALL_M_SWIGLU,
  TENSOR_TILES_SWIGLU_192,
  tensorTilesFor,
} from "./linear.ts";
import { ROW_SCALE_HALF_KERNEL } from "./row_scale.ts";
import { UserError } from "../../common/errors.ts";
import { Epilogue, MATVEC_KERNEL_NAME, MATVEC_MAX_ROWS, matvecReference } from "./matvec.ts";
import type { Dispatch, Gpu } from "../runtime.ts";
import { assertClose, ctlBuffer, gpuTest, poisoned, Rng, type Tolerance } from "../testing/harness.ts";

// Tolerance of matvec_test.ts and gemm_test.ts (bf16 weights exact on both sides, f32 vs f64 accumulation).
const TOL = { atol: 2e-4, rtol: 1e-4 };
// The f16-multiply GEMM's (`f16GemmTolerance`, flushK 8: 2 * 4 * 2^-11 of sum |x w|) at these inputs' largest
// sum |x w| (~10 at K = 264: normals times weights of std 1/sqrt(K)).
const F16_TOL: Tolerance = { atol: 4e-2 };

type Knobs = Omit<LinearArgs, "ctl" | "weight" | "x" | "y" | "rows" | "k" | "n">;

/** Runs `linear` on seeded inputs, checks it against the reference and returns the dispatches it recorded. */
async function checkLinear(
  gpu: Gpu,
  rows: number,
  k: number,
  n: number,
  knobs: Knobs = {},
  tol: Tolerance = TOL,
): Promise<Dispatch[]> {
  const rng = new Rng(rows * 7919 + k * 31 + n);
  const nw = knobs.epilogue === Epilogue.SWIGLU ? 2 * n : n;
  const w = roundBf16Array(rng.normals(nw * k, 1 / Math.sqrt(k)));
  const x = rng.normals(rows * k);
  const ctl = ctlBuffer(gpu);
  const wb = gpu.upload("w", packBf16(w, k)), xb = gpu.upload("x", x), y = poisoned(gpu, rows * n);
  const dispatches = linear(gpu, { ctl, weight: wb, x: xb, y, rows, k, n, ...knobs });
  gpu.run(dispatches);
  const got = await gpu.readF32(y, rows * n);
  for (const b of [ctl, wb, xb, y]) b.destroy();
  assertClose(got, matvecReference(w, x, rows, k, n, knobs.epilogue), tol, `linear rows=${rows} K=${k} N=${n}`);
  return dispatches;
}

function assertKernel(ds: Dispatch[], name: string, rows: number): void {
  const labels = ds.map((d) => d.label);
  if (ds.length !== 1 || !labels[0].startsWith(name)) {
    throw new Error(`linear ran ${labels.join(", ")} for ${rows} rows, expected ${name}`);
  }
}

gpuTest("linear runs the matvec up to MATVEC_MAX_ROWS rows and the f32 GEMM above, both correct", async (gpu) => {
  // The f32 GEMM's tolerance: forced, so that the test means the same on a device with the tensor-core GEMM.
  for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
    for (const rows of [1, MATVEC_MAX_ROWS]) {
      assertKernel(await checkLinear(gpu, rows, 24, 7, { epilogue }), MATVEC_KERNEL_NAME, rows);
    }
    for (const rows of [MATVEC_MAX_ROWS + 1, 130]) {
      assertKernel(await checkLinear(gpu, rows, 24, 7, { epilogue, prefillGemm: "fma" }), GEMM_KERNEL_NAME, rows);
    }
  }
});

gpuTest("linear picks the tensor-core GEMM exactly where it can run, and HYDRA_PREFILL_GEMM overrides", (gpu) => {
  const args = { ctl: gpu.buffer("ctl", 16), rows: 33, k: 64, n: 32 } as LinearArgs;
  const unsupported = tensorGemmUnsupported(gpu);
  const auto = prefillGemmFor(gpu, args);
  if (auto !== (unsupported === null ? "tensor" : "fma")) throw new Error(`automatic choice ${auto} (${unsupported})`);
  // Shapes it does not take (N not a multiple of 16, K not of 16) go to the f32 GEMM.
  if (prefillGemmFor(gpu, { ...args, n: 7 }) !== "fma") throw new Error("N = 7 went to the tensor-core GEMM");
  if (prefillGemmFor(gpu, { ...args, k: 24 }) !== "fma") throw new Error("K = 24 went to the tensor-core GEMM");
  const before = Deno.env.get(PREFILL_GEMM_ENV);
  try {
    Deno.env.set(PREFILL_GEMM_ENV, "fma");
    if (prefillGemmFor(gpu, args) !== "fma") throw new Error(`${PREFILL_GEMM_ENV}=fma was not obeyed`);
    if (prefillGemmFor(gpu, { ...args, prefillMath: "f16" }) !== "fma") {
      throw new Error(`${PREFILL_GEMM_ENV}=fma did not take precedence over prefillMath f16`);
    }
    Deno.env.set(PREFILL_GEMM_ENV, "fma16");
    if (prefillGemmFor(gpu, args) !== "fma16") throw new Error(`${PREFILL_GEMM_ENV}=fma16 was not obeyed`);
    Deno.env.set(PREFILL_GEMM_ENV, "tensor");
    if (unsupported === null) {
      if (prefillGemmFor(gpu, args) !== "tensor") throw new Error(`${PREFILL_GEMM_ENV}=tensor was not obeyed`);
      const labels = linear(gpu, { ...args, weight: args.ctl, x: args.ctl, y: args.ctl }).map((d) => d.label);
      if (!labels[0]?.startsWith(ROW_SCALE_HALF_KERNEL.name) || !labels[1]?.startsWith(GEMM_TENSOR_KERNEL_NAME)) {
        throw new Error(`forced tensor GEMM recorded ${labels.join(", ")}`);
      }
    } else {
      let error: unknown = null;
      try {
        prefillGemmFor(gpu, args);
      } catch (e) {
        error = e;
      }
      if (!(error instanceof UserError) || !error.message.includes(PREFILL_GEMM_ENV)) {
        throw new Error(`forcing the tensor GEMM here gave ${error}, not a UserError naming ${PREFILL_GEMM_ENV}`);
      }
    }
    Deno.env.set(PREFILL_GEMM_ENV, "bogus");
    let error: unknown = null;
    try {
      prefillGemmFor(gpu, args);
    } catch (e) {
      error = e;
    }
    if (!(error instanceof UserError)) throw new Error(`${PREFILL_GEMM_ENV}=bogus gave ${error}, not a UserError`);
  } finally {
    if (before === undefined) Deno.env.delete(PREFILL_GEMM_ENV);
    else Deno.env.set(PREFILL_GEMM_ENV, before);
  }
  args.ctl.destroy();
  return Promise.resolve();
});

gpuTest(
  "linear takes the f16-multiply GEMM for prefillMath f16 where no tensor cores run, and for fma16",
  async (gpu) => {
    const args = { ctl: gpu.buffer("ctl", 16), rows: 33, k: 64, n: 32 } as LinearArgs;
    const tensor = tensorGemmUnsupported(gpu) === null;
    // The tensor-core GEMM keeps precedence where it runs; prefillMath decides between the FMA GEMMs elsewhere.
    const want = tensor ? "tensor" : "fma16";
    if (prefillGemmFor(gpu, { ...args, prefillMath: "f16" }) !== want) {
      throw new Error(
        `prefillMath f16 did not pick ${want}`,
      );
    }
    if (prefillGemmFor(gpu, { ...args, prefillMath: "f32" }) !== (tensor ? "tensor" : "fma")) {
      throw new Error("prefillMath f32 did not pick the f32 GEMM");
    }
    for (const knobs of [{ prefillMath: "f16" as const }, { prefillGemm: "fma16" as const }]) {
      if (tensor && !knobs.prefillGemm) continue;
      for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
        const ds = await checkLinear(gpu, 33, 264, 37, { ...knobs, epilogue }, F16_TOL);
        const labels = ds.map((d) => d.label);
        if (
          !/^row_scale(_sg)?$/.test(labels[0] ?? "") || !labels[1]?.startsWith(GEMM_KERNEL_NAME) ||
          !labels[1].includes("f16")
        ) {
          throw new Error(`${JSON.stringify(knobs)} recorded ${labels.join(", ")}`);
        }
      }
    }
    // Up to MATVEC_MAX_ROWS rows it is still the matvec.
    assertKernel(await checkLinear(gpu, MATVEC_MAX_ROWS, 24, 7, { prefillMath: "f16" }), MATVEC_KERNEL_NAME, 16);
    // A device without shader-f16 (this one, as it would look without the feature): f16 is a UserError naming the knob.
    const noF16 = Object.create(gpu, { has: { value: (f: string) => f !== "shader-f16" && gpu.has(f) } }) as Gpu;
    for (
      const [knobs, names] of [[{ prefillMath: "f16" }, "prefill_math"], [
        { prefillGemm: "fma16" },
        PREFILL_GEMM_ENV,
      ]] as const
    ) {
      let error: unknown = null;
      try {
        prefillGemmFor(noF16, { ...args, ...knobs });
      } catch (e) {
        error = e;
      }
      if (!(error instanceof UserError) || !error.message.includes(names)) {
        throw new Error(`${JSON.stringify(knobs)} without shader-f16 gave ${error}, not a UserError naming ${names}`);
      }
    }
    args.ctl.destroy();
  },
);

gpuTest("linear leaves its reduction and pre-pass to the norms beside it only as its plan says", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const args = (rows: number, more: Partial<LinearArgs> = {}): LinearArgs => ({
    ctl,
    weight: ctl,
    x: ctl,
    y: ctl,
    rows,
    k: 256,
    n: 64,
    splitK: 2,
    ...more,
  });
  try {
    // split 2 ways: the partials stay in the plan's scratch, no reduction recorded
    const plan = linearPlan(gpu, args(40));
    if (plan.splitK !== 2 || !plan.partials) throw new Error(`plan: ${JSON.stringify(plan)}`);
    const labels = (a: LinearArgs) => linear(gpu, a).map((d) => d.label);
    if (!labels(args(40)).some((l) => l.startsWith("split_k_reduce"))) throw new Error("no reduction by default");
    const left = labels(args(40, { leavePartials: true }));
    if (left.some((l) => l.startsWith("split_k_reduce"))) throw new Error(`leavePartials recorded ${left}`);
    // the tensor-core GEMM reads the plan's f16 rows without its pre-pass; any other buffers are refused
    if (plan.kernel === "tensor") {
      const half = plan.halfRows!;
      const fed = labels(args(40, { halfRowsWritten: half }));
      if (fed.some((l) => l.startsWith("row_scale"))) throw new Error(`halfRowsWritten recorded ${fed}`);
    } else if (plan.halfRows) throw new Error(`the ${plan.kernel} GEMM planned f16 rows`);
    const elsewhere = { exponents: ctl, xHalf: ctl };
    assertThrows(() => linear(gpu, args(40, { halfRowsWritten: elsewhere })), Error, "f16 rows were written elsewhere");
    assertThrows(() => linear(gpu, args(40, { leavePartials: true, epilogue: Epilogue.SWIGLU })), Error, "SwiGLU");
    assertThrows(() => linear(gpu, args(4, { leavePartials: true })), Error, "matvec");
    if (linearPlan(gpu, args(4)).kernel !== "matvec") throw new Error("4 rows planned past the matvec");
  } finally {
    ctl.destroy();
  }
  return Promise.resolve();
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
  const [small] = await checkLinear(gpu, 3, 264, 37, knobs);
  const [large] = await checkLinear(gpu, 33, 264, 37, { ...knobs, prefillGemm: "fma" });
  if (small.workgroups[0] !== 10) throw new Error(`matvec ignored its knobs: ${small.workgroups} workgroups`);
  if (large.workgroups[0] !== 25) throw new Error(`gemm ignored its knobs: ${large.workgroups} workgroups`);
});

gpuTest("linear splits K where a prefill GEMM has too few tiles, as measured, and the knobs override it", (gpu) => {
  const fma = { tileM: 64, tileN: 64, stepK: 16 }, tensor = { tileM: 64, tileN: 64, stepK: 64 };
  const ctl = ctlBuffer(gpu);
  const at = (rows: number, k: number, n: number, epilogue: number = Epilogue.PLAIN): LinearArgs => ({
    ctl,
    weight: ctl,
    x: ctl,
    y: ctl,
    rows,
    k,
    n,
    epilogue,
  });
  // 7B shapes at M = 128: qkv 384 tiles, gate_up 344, down and o 128 (linear.ts: the H200 measurements).
  const cases: [LinearArgs, typeof fma, PrefillGemm, number][] = [
    [at(128, 4096, 12288), fma, "fma", 4],
    [at(128, 4096, 11008, Epilogue.SWIGLU), fma, "fma", 4],
    [at(128, 11008, 4096), fma, "fma", 4],
    [at(512, 11008, 4096), fma, "fma", 2], // 512 tiles: 4 ways would be 2,048 workgroups
    [at(2048, 4096, 12288), fma, "fma", 1], // 6,144 tiles fill the GPU
    [at(128, 11008, 4096), tensor, "tensor", 1], // the tensor-core GEMM: 128 tiles of 64 x 64 fill one wave
    [at(128, 11008, 4096), { tileM: 128, tileN: 128, stepK: 64 }, "tensor", 4], // 32 tiles of linear's: 4 ways
    [at(128, 4096, 12288), { tileM: 128, tileN: 128, stepK: 64 }, "tensor", 1], // qkv's 96: measured fastest unsplit
    [at(128, 4096, 11008, Epilogue.SWIGLU), { ...tensor, stepK: 32 }, "tensor", 1],
    [at(128, 256, 4096), fma, "fma", 1], // K too short to share
    [at(128, 4096 + 16, 64), fma, "fma", 1], // 4,112 / 2 is no whole number of k steps of 16
  ];
  for (const [a, tiles, which, want] of cases) {
    const got = splitKFor(gpu, a, which, tiles);
    if (got !== want) throw new Error(`${which} ${a.rows}x${a.k}x${a.n}: split ${got}, expected ${want}`);
  }
  if (splitKFor(gpu, { ...at(128, 4096, 12288), splitK: 1 }, "fma", fma) !== 1) throw new Error("splitK: 1 ignored");
  Deno.env.set(SPLIT_K_ENV, "8");
  try {
    if (splitKFor(gpu, { ...at(128, 4096, 12288), splitK: 1 }, "fma", fma) !== 8) {
      throw new Error(`${SPLIT_K_ENV}=8 did not win over splitK`);
    }
  } finally {
    Deno.env.delete(SPLIT_K_ENV);
  }
  ctl.destroy();
  return Promise.resolve();
});

gpuTest(
  "linear gives a few rows past the matvec's small-M tiles (24 or 32 rows), split up to 8 ways, correct",
  async (gpu) => {
    // The tile a row count gets: 8 threads of ceil(rows / 8) rows; above SMALL_M_ROWS linear's former tiles.
    const tileOf = (rows: number) =>
      rows <= 24 ? "_t8x16_b3x4_" : rows <= SMALL_M_ROWS ? "_t8x16_b4x4_" : rows <= 64 ? "_t16x8_b4x4_" : "";
    for (const rows of [MATVEC_MAX_ROWS + 1, 23, 25, SMALL_M_ROWS, SMALL_M_ROWS + 1]) {
      for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
        const [d] = await checkLinear(gpu, rows, 24, 7, { epilogue, prefillGemm: "fma" });
        if (!d.label.startsWith(GEMM_KERNEL_NAME) || !d.label.includes(tileOf(rows))) {
          throw new Error(`${rows} rows ran ${d.label}, expected the tile ${tileOf(rows)}`);
        }
      }
    }
    // Split 8 ways (K = 4,096 leaves 512 a split, one output tile): the GEMM into the partials, then the reduction;
    // the f16-multiply GEMM takes the same tiles after its row-scale pre-pass.
    const split = await checkLinear(gpu, 23, 4096, 37, { prefillGemm: "fma" });
    if (
      split.length !== 2 || !split[0].label.includes("_t8x16_b3x4_") ||
      split[0].workgroups.reduce((a, b) => a * b) !== 8
    ) {
      throw new Error(`23 rows at K = 4,096 recorded ${split.map((d) => `${d.label} ${d.workgroups}`).join(", ")}`);
    }
    if (gpu.has("shader-f16")) {
      const ds = await checkLinear(gpu, 23, 264, 37, { prefillGemm: "fma16", epilogue: Epilogue.SWIGLU }, F16_TOL);
      if (!ds[1]?.label.includes("f16") || !ds[1].label.includes("_t8x16_b3x4_")) {
        throw new Error(`fma16 at 23 rows recorded ${ds.map((d) => d.label).join(", ")}`);
      }
    }
    // The automatic factor at 7B and 1B shapes with the small tiles (24 x 64): 8 ways where K / 8 >= 256, else 4.
    const ctl = ctlBuffer(gpu);
    const at = (rows: number, k: number, n: number): LinearArgs => ({ ctl, weight: ctl, x: ctl, y: ctl, rows, k, n });
    const small = { tileM: 24, tileN: 64, stepK: 16 };
    for (
      const [a, want] of [[at(23, 4096, 12288), 8], [at(23, 11008, 4096), 8], [at(23, 2048, 6144), 8], [
        at(23, 1024, 2048),
        4,
      ]] as const
    ) {
      const got = splitKFor(gpu, a, "fma", small);
      if (got !== want) throw new Error(`${a.rows}x${a.k}x${a.n}: split ${got}, expected ${want}`);
    }
    if (splitKFor(gpu, at(33, 4096, 12288), "fma", { tileM: 64, tileN: 64, stepK: 16 }) !== 4) {
      throw new Error("33 rows took the small-M split factors");
    }
    ctl.destroy();
  },
);

Deno.test("tensorTilesFor orders the tiles of products past 128 rows by the wave model, where they fit", () => {
  const device = (bytes: number, languageFeatures = ["buffer_view"]) =>
    ({
      device: { limits: { maxComputeWorkgroupStorageSize: bytes } },
      entry: { wgslLanguageFeatures: new Set(languageFeatures) },
    }) as unknown as Gpu;
  const h200 = device(49152);
  const product = (rows: number, k: number, n: number, epilogue: number = Epilogue.PLAIN) =>
    ({ rows, k, n, epilogue }) as unknown as LinearArgs;
  // what the H200 measured fastest (session AB; 512 rows: session X), shape by shape
  const cases: [string, LinearArgs, TensorTiles][] = [
    ["7B qkv, 2,048", product(2048, 4096, 12288), TENSOR_TILES_192],
    ["7B down, 2,048", product(2048, 11008, 4096), TENSOR_TILES_192],
    ["7B o, 2,048", product(2048, 4096, 4096), TENSOR_TILES_192],
    ["1B qkv, 2,048", product(2048, 2048, 6144), TENSOR_TILES_192],
    ["1B down, 2,048 (one wave of 128 against two of 176)", product(2048, 8192, 2048), TENSOR_TILES_LARGE_M],
    // 3 waves of 384 256-row workgroups against 5 of 576 192-row ones (session AD: 500.2 against 515.5 us)
    ["7B qkv, 1,024", product(1024, 4096, 12288), TENSOR_TILES_LARGE_M],
    ["7B down, 1,024", product(1024, 11008, 4096), TENSOR_TILES_LARGE_M],
    ["7B qkv, 512", product(512, 4096, 12288), TENSOR_TILES.plain],
    ["7B down, 512", product(512, 11008, 4096), TENSOR_TILES.plain],
    ["7B gate_up, 2,048", product(2048, 4096, 11008, Epilogue.SWIGLU), TENSOR_TILES_SWIGLU_192],
    ["7B gate_up, 1,024", product(1024, 4096, 11008, Epilogue.SWIGLU), TENSOR_TILES_SWIGLU_192],
    ["1B gate_up, 2,048", product(2048, 2048, 8192, Epilogue.SWIGLU), TENSOR_TILES_SWIGLU_192],
  ];
  for (const [what, a, want] of cases) assertEquals(tensorTilesFor(h200, a), want, what);
  // the model itself: 8 waves of 1,056 192-row workgroups beat 6 of 768 256-row ones; one more SM and 768 fit 5.8
  assertEquals(byWaves(2048, 12288, Epilogue.PLAIN)[0], TENSOR_TILES_192);
  assertEquals(byWaves(2048, 2048, Epilogue.PLAIN, 128)[0], TENSOR_TILES_LARGE_M);
  assertEquals(byWaves(2048, 2048, Epilogue.PLAIN, 176)[0], TENSOR_TILES_192); // 176 SMs: one wave each
  // without buffer views the 192-row tile needs 58,368 bytes and the 256-row one 47,104: that one
  const at2048 = product(2048, 4096, 12288);
  assertEquals(tensorTilesFor(device(49152, []), at2048), {
    ...TENSOR_TILES_LARGE_M,
    wideStores: false,
    sharedEpilogue: false,
  });
  // 46,000 bytes of workgroup memory and no buffer views: no room for that either, the 128-row one (45,056) fits
  assertEquals(tensorTilesFor(device(46000, []), at2048), TENSOR_TILES.plain);
  // 30,000 bytes: none of them (30,720 with buffer views for the 256-row one); the 128-row one with k steps of 16
  assertEquals(tensorTilesFor(device(30000), at2048), { ...TENSOR_TILES.plain, stepK: 16, buffers: 1 });
  // knobs the caller gives win
  assertEquals(tensorTilesFor(h200, { ...at2048, stepK: 16 })?.stepK, 16);
});

Deno.test("tensorTilesFor takes 16- and 12-subgroup tiles for products of at most 128 rows", () => {
  const device = (languageFeatures: string[]) =>
    ({
      device: { limits: { maxComputeWorkgroupStorageSize: 49152 } },
      entry: { wgslLanguageFeatures: new Set(languageFeatures) },
    }) as unknown as Gpu;
  const views = device(["buffer_view"]);
  const swiglu = (rows: number) => ({ rows, k: 4096, n: 11008, epilogue: Epilogue.SWIGLU }) as unknown as LinearArgs;
  const plain = (rows: number) => ({ ...swiglu(rows), epilogue: Epilogue.PLAIN, n: 12288 }) as LinearArgs;
  for (const rows of [1, 17, TENSOR_SMALL_M_ROWS]) {
    assertEquals(tensorTilesFor(views, swiglu(rows)), TENSOR_TILES_SMALL_M_SWIGLU);
    // the 7B's qkv: 128 workgroups of 128 x 96 fill a wave of the 132 SMs; its down and o (N = 4,096: 43) and the
    // 1B's qkv (N = 6,144: 64) do not
    assertEquals(tensorTilesFor(views, plain(rows)), TENSOR_TILES_SMALL_M_96);
    assertEquals(tensorTilesFor(views, { ...plain(rows), n: 4096 }), TENSOR_TILES_SMALL_M);
    assertEquals(tensorTilesFor(views, { ...plain(rows), k: 2048, n: 6144 }), TENSOR_TILES_SMALL_M);
  }
  assertEquals(tensorTilesFor(views, swiglu(TENSOR_SMALL_M_ROWS + 1)), TENSOR_TILES_SWIGLU_192);
  // without buffer views neither 16-subgroup tile fits (58,368 and 53,248 bytes): the 8-subgroup tiles
  assertEquals(tensorTilesFor(device([]), swiglu(TENSOR_SMALL_M_ROWS)), TENSOR_TILES.swiglu);
  assertEquals(tensorTilesFor(device([]), { ...plain(TENSOR_SMALL_M_ROWS), n: 4096 }), TENSOR_TILES.plain);
  // the 128 x 96 tile fits without them (44,544 bytes)
  assertEquals(tensorTilesFor(device([]), plain(TENSOR_SMALL_M_ROWS)), {
    ...TENSOR_TILES_SMALL_M_96,
    wideStores: false,
    sharedEpilogue: false,
  });
  // the 1B's gate_up (K = 2,048) keeps the 8-subgroup tile: measured slower with the small one
  assertEquals(
    tensorTilesFor(views, { ...swiglu(TENSOR_SMALL_M_ROWS), k: TENSOR_SMALL_M_SWIGLU_MIN_K / 2 }),
    TENSOR_TILES.swiglu,
  );
});

Deno.test("tailSplitFor splits the last wave where the wave model says it saves time: the 7B's down and gate_up", () => {
  const plain = TENSOR_TILES_192, swiglu = TENSOR_TILES_SWIGLU_192;
  const cases: [string, number, number, number, number, TensorTiles, number, unknown][] = [
    // 352 tiles of 192 x 128: 2 full waves (the first 24 column tiles), the last 8 split 3 ways (2 waves of a third)
    ["7B down, 2,048", 2048, 11008, 4096, Epilogue.PLAIN, plain, 248, { columns: 3072, splitK: 3 }],
    // 1,892 tiles of 192 x 64: 14 full waves (168 column tiles), the last 4 split 3 ways (one wave of a third)
    ["7B gate_up, 2,048", 2048, 4096, 11008, Epilogue.SWIGLU, swiglu, 257, { columns: 10752, splitK: 3 }],
    // the same tail over K = 4,096: two thirds of a 107 us tile saved, less than the reduction and dispatches cost
    ["7B o, 2,048", 2048, 4096, 4096, Epilogue.PLAIN, plain, 248, null],
    ["7B qkv, 2,048 (8 full waves)", 2048, 4096, 12288, Epilogue.PLAIN, plain, 248, null],
    ["1B gate_up, 2,048 (a 52 us tile)", 2048, 2048, 8192, Epilogue.SWIGLU, swiglu, 257, null],
    ["one partial wave", 128, 4096, 4096, Epilogue.PLAIN, plain, 248, null],
  ];
  for (const [what, rows, k, n, epilogue, tiles, rate, want] of cases) {
    assertEquals(tailSplitFor(rows, n, k, epilogue, tiles, rate), want, what);
  }
  // the same product on 176 SMs: 352 tiles are two full waves, nothing to split
  assertEquals(tailSplitFor(2048, 4096, 11008, Epilogue.PLAIN, plain, 248, 176), null);
});

gpuTest(
  "linear splits the tensor-core GEMM's last wave apart as told, correct, and HYDRA_TAIL_SPLIT=0 turns it off",
  async (gpu) => {
    if (tensorGemmUnsupported(gpu) !== null) {
      // no tensor-core GEMM (Deno, lavapipe): never a tail split
      const plan = linearPlan(gpu, { rows: 2048, k: 11008, n: 4096 });
      if (plan.tailSplit) throw new Error(`a tail split planned for the ${plan.kernel} GEMM`);
      return;
    }
    // 200 rows, K = 320 (5 k steps of 64: 1, 2 and 2 a split), N = 384: the columns from 256 split 3 ways
    for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
      const tailSplit = { columns: 256, splitK: 3 };
      const ds = await checkLinear(gpu, 200, 320, 384, { epilogue, tailSplit }, F16_TOL);
      const labels = ds.map((d) => d.label);
      if (
        !(labels.length === 4 && labels[1].startsWith(GEMM_TENSOR_KERNEL_NAME) && !labels[1].includes("_split") &&
          labels[2].endsWith("_split3") && labels[3].startsWith(SPLIT_K_REDUCE_KERNEL_NAME))
      ) {
        throw new Error(`a tail split recorded ${labels.join(", ")}`);
      }
    }
    // the 7B's down at 2,048 rows: split automatically, unless HYDRA_TAIL_SPLIT=0
    const down = { rows: 2048, k: 11008, n: 4096 };
    assertEquals(linearPlan(gpu, down).tailSplit, { columns: 3072, splitK: 3 });
    Deno.env.set(TAIL_SPLIT_ENV, "0");
    try {
      assertEquals(linearPlan(gpu, down).tailSplit, undefined);
      Deno.env.set(TAIL_SPLIT_ENV, "2");
      assertThrows(() => linearPlan(gpu, down), UserError, TAIL_SPLIT_ENV);
    } finally {
      Deno.env.delete(TAIL_SPLIT_ENV);
    }
  },
);
