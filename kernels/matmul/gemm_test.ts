/**
 * Tests of the generated tiled GEMM (`gemm.ts`) against the reference: awkward M, N and K, both epilogues, every
 * k-loop pipeline and tuning knob, the 2-D grid, gating, rejected shapes and mutants that break it deterministically;
 * then its f16-multiply variant (math "f16", with the row-scale pre-pass) under the tolerance its f16 rounding allows
 * (`f16GemmTolerance`), on rows up to 1e5 and down to 1e-6, all-zero rows, weights at the overflow limit, and mutants;
 * then split-K (`splitK`, f32 and f16 math) through `linear` (GEMM into the partial scratch + `split_k_reduce.ts`), its
 * errors and mutants.
 * @module
 */

import { assertThrows } from "@std/assert";
import { packBf16, roundBf16Array } from "../bf16.ts";
import {
  f16GemmTolerance,
  gemm,
  GEMM_DEFAULT_TILES,
  GEMM_FLUSH_KS,
  GEMM_PIPELINES,
  type GemmArgs,
  gemmKernelFor,
  gemmReference,
  type GemmTiles,
  gemmWorkgroupBytes,
  gemmXShift,
} from "./gemm.ts";
import { rowScale, rowScaleExponent } from "./row_scale.ts";
import { Epilogue } from "./matvec.ts";
import { linear, SPLIT_K_ENV } from "./linear.ts";
import { SPLIT_K_REDUCE_KERNEL_NAME, splitKReduce } from "./split_k_reduce.ts";
import { UserError } from "../../common/errors.ts";
import type { Dispatch, Gpu, Kernel } from "../runtime.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, poisoned, Rng } from "../testing/harness.ts";
import type { ErrorReport } from "../testing/harness.ts";

// As in matvec_test.ts: the weights are exactly bf16 on both sides and the only difference is f32 (one fused
// multiply-add chain per output, in k order) vs f64 accumulation over K products of O(1) terms, whose error grows like
// sqrt(K) * 2^-24 * |term|: below 1e-4 even at K = 4096, below 1e-5 at the K <= 264 used here. atol 2e-4 + rtol 1e-4
// leaves a wide margin; a wrong index, a dropped k tile or a stale tile moves outputs by O(1).
const TOL = { atol: 2e-4, rtol: 1e-4 };

// Tiles every WebGPU adapter can run: this CPU adapter grants more than the default 16384 bytes of workgroup memory.
const PORTABLE_BYTES = 16384;

interface CheckOptions extends GemmTiles {
  epilogue?: number;
  /** The output columns [begin, end) to compute (gemm's `columns`): the others must keep the poison. */
  columns?: readonly [number, number];
  kernel?: Kernel;
  gated?: boolean;
  /** Control block ACTIVE slot (with `gated`). */
  active?: number;
}

/** Runs the GEMM on seeded inputs into a NaN-poisoned output and returns what it wrote and the reference. */
async function runGemm(gpu: Gpu, rows: number, k: number, n: number, opts: CheckOptions = {}) {
  const rng = new Rng(rows * 1_000_003 + k * 1009 + n + (opts.epilogue ?? 0) * 7);
  const nw = opts.epilogue === Epilogue.SWIGLU ? 2 * n : n;
  const w = roundBf16Array(rng.normals(nw * k, 1 / Math.sqrt(k)));
  const x = rng.normals(rows * k);
  const { kernel, active, ...args } = opts;
  if (gemmWorkgroupBytes(args, args.epilogue) > PORTABLE_BYTES) throw new Error(`${JSON.stringify(args)} not portable`);
  const ctl = ctlBuffer(gpu, { ACTIVE: active ?? 1 });
  const wb = gpu.upload("w", packBf16(w, k)), xb = gpu.upload("x", x), y = poisoned(gpu, rows * n);
  const scratch: GPUBuffer[] = [];
  gpu.run(record(gpu, { ctl, weight: wb, x: xb, y, rows, k, n, ...args }, kernel, scratch));
  const got = await gpu.readF32(y, rows * n);
  for (const b of [ctl, wb, xb, y, ...scratch]) b.destroy();
  return { got, want: gemmReference(w, x, rows, k, n, opts.epilogue) };
}

/**
 * The dispatches of one product: the GEMM; with splitK > 1, `linear` forced to this GEMM (the GEMM into its shared
 * partial scratch, then the reduction), or for a mutant `kernel` those two by hand, through a NaN-poisoned scratch
 * (pushed to `scratch` for the caller to destroy).
 */
function record(gpu: Gpu, a: GemmArgs, kernel: Kernel | undefined, scratch: GPUBuffer[]): Dispatch[] {
  const splitK = a.splitK ?? 1;
  if (splitK === 1) return [gemm(gpu, a, kernel)];
  if (!kernel && !a.columns) {
    const { exponents: _, math, ...rest } = a;
    const ds = linear(gpu, { ...rest, prefillGemm: math === "f16" ? "fma16" : "fma" });
    const labels = ds.map((d) => d.label).join(", ");
    if (!(ds.length === (math === "f16" ? 3 : 2) && labels.includes(`_split${splitK}`))) {
      throw new Error(`linear with splitK ${splitK} recorded ${labels}`);
    }
    if (!ds[ds.length - 1].label.startsWith(SPLIT_K_REDUCE_KERNEL_NAME)) throw new Error(`no reduction: ${labels}`);
    return ds;
  }
  const nBegin = a.columns?.[0] ?? 0;
  const partials = poisoned(
    gpu,
    splitK * a.rows * (a.epilogue === Epilogue.SWIGLU ? 2 : 1) * (a.n - nBegin),
    "partials",
  );
  scratch.push(partials);
  const { ctl, y, rows, n, epilogue, gated } = a;
  return [
    gemm(gpu, { ...a, y: partials }, kernel),
    splitKReduce(gpu, { ctl, partials, y, rows, n, splitK, epilogue, gated, nBegin }),
  ];
}

/**
 * The outputs of `got` in the columns `columns` [begin, end) of its rows of n, after checking that every other output
 * kept the poison (NaN); `want` likewise, without the check.
 */
function inColumns(got: Float32Array, want: Float32Array, n: number, columns?: readonly [number, number]) {
  if (!columns) return { got, want };
  const [begin, end] = columns, mine = (i: number) => i % n >= begin && i % n < end;
  if (!got.every((v, i) => mine(i) || Number.isNaN(v))) throw new Error(`wrote a column outside [${begin}, ${end})`);
  return { got: got.filter((_, i) => mine(i)), want: want.filter((_, i) => mine(i)) };
}

async function checkGemm(gpu: Gpu, rows: number, k: number, n: number, opts: CheckOptions = {}): Promise<ErrorReport> {
  const { got, want } = inColumns(
    ...Object.values(await runGemm(gpu, rows, k, n, opts)) as [Float32Array, Float32Array],
    n,
    opts.columns,
  );
  const { kernel: _, ...shown } = opts;
  return assertClose(got, want, TOL, `gemm rows=${rows} K=${k} N=${n} ${JSON.stringify(shown)}`);
}

const ROWS = [17, 33, 64, 130];
const COLS = [1, 7, 65, 300];
const KS = [8, 24, 264];

gpuTest("gemm matches the reference for every M x N of the awkward sizes", async (gpu) => {
  // Every (M, N) pair, K cycling through 8 (one partial k tile), 24 (a full and a partial one) and 264 (16.5 tiles).
  let i = 0;
  for (const rows of ROWS) for (const n of COLS) await checkGemm(gpu, rows, KS[i++ % KS.length], n);
});

gpuTest("gemm accumulates over the 7B's d_model (K = 4096)", async (gpu) => {
  await checkGemm(gpu, 33, 4096, 65);
  await checkGemm(gpu, 33, 4096, 65, { pipeline: "serial" });
});

gpuTest("gemm SwiGLU epilogue computes silu(gate) * up", async (gpu) => {
  // Every M, N and K at least once (each shape is a pipeline to compile, slow on a CPU adapter).
  for (const [rows, k, n] of [[17, 8, 1], [33, 24, 7], [64, 264, 65], [130, 8, 300], [17, 264, 300], [130, 24, 65]]) {
    await checkGemm(gpu, rows, k, n, { epilogue: Epilogue.SWIGLU });
  }
});

gpuTest("gemm also handles 1..16 rows", async (gpu) => {
  for (const rows of [1, 5, 16]) await checkGemm(gpu, rows, 24, 65);
});

gpuTest("gemm k-loop pipelines (serial, prefetch, double buffer) agree with the reference", async (gpu) => {
  // 32 x 32 tiles, so the double buffer fits 16 KiB with SWIGLU; K = 264 is 33 k tiles of 8 and 16.5 tiles of 16,
  // K = 8 a single one (the prefetch of the next tile reads nothing), K = 24 a full and a partial tile of 16.
  for (const pipeline of GEMM_PIPELINES) {
    for (const tileK of [8, 16]) {
      const tiles: GemmTiles = { pipeline, tileK, threadsM: 8, threadsN: 8, blockM: 4, blockN: 4 };
      await checkGemm(gpu, 130, 264, 65, tiles);
      await checkGemm(gpu, 33, tileK === 8 ? 8 : 24, 300, tiles);
      await checkGemm(gpu, 64, 264, 33, { ...tiles, epilogue: Epilogue.SWIGLU });
    }
  }
});

gpuTest("gemm tuning knobs keep it correct", async (gpu) => {
  const variants: GemmTiles[] = [
    { tileK: 8, threadsM: 8, threadsN: 8, blockM: 1, blockN: 1 },
    { tileK: 24, threadsM: 4, threadsN: 16, blockM: 8, blockN: 2 },
    { tileK: 16, threadsM: 8, threadsN: 8, blockM: 8, blockN: 8 },
    { tileK: 32, threadsM: 16, threadsN: 4, blockM: 3, blockN: 5, pipeline: "serial" },
    { tileK: 8, threadsM: 1, threadsN: 64, blockM: 2, blockN: 1 },
    { tileK: 32, threadsM: 16, threadsN: 8, blockM: 2, blockN: 4 },
    { tileK: 16, threadsM: 16, threadsN: 8, blockM: 2, blockN: 2, pipeline: "double" },
    { tileK: 8, threadsM: 8, threadsN: 16, blockM: 4, blockN: 2, pipeline: "double" },
  ];
  for (const tiles of variants) {
    await checkGemm(gpu, 33, 264, 65, tiles);
    await checkGemm(gpu, 130, 24, 7, { ...tiles, epilogue: Epilogue.SWIGLU });
  }
});

Deno.test("gemm default tiles fit the WebGPU default of 16384 bytes of workgroup memory", () => {
  for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
    const bytes = gemmWorkgroupBytes(GEMM_DEFAULT_TILES, epilogue);
    if (bytes > PORTABLE_BYTES) throw new Error(`default tiles need ${bytes} bytes with epilogue ${epilogue}`);
  }
});

Deno.test("gemm kernels keep accumulators and staged operands out of function-scope arrays", () => {
  // A function-scope array indexed in a loop can be placed in local memory (10x slower on an H100): the only arrays
  // are the bindings and the workgroup staging buffers.
  for (const pipeline of GEMM_PIPELINES) {
    for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
      const { name, source } = gemmKernelFor({ pipeline, epilogue, blockM: 8, blockN: 8 });
      const arrays = source.split("\n").filter((l) => l.includes("array<"));
      const stray = arrays.filter((l) => !/^(@group\(0\) @binding\(\d\) var<storage|var<workgroup>)/.test(l));
      if (arrays.length !== 6 || stray.length > 0) throw new Error(`${name} declares arrays: ${stray.join(" | ")}`);
    }
  }
});

gpuTest("gemm covers more than 65535 workgroups (2-D grid)", async (gpu) => {
  // 1 x 1 tiles: 17 x 3900 = 66300 workgroups, more than one grid dimension holds.
  const tiles = { threadsM: 1, threadsN: 1, blockM: 1, blockN: 1, tileK: 8 };
  await checkGemm(gpu, 17, 8, 3900, tiles);
});

gpuTest("gemm built GATED writes nothing while ACTIVE is 0 and computes while it is 1", async (gpu) => {
  const { got } = await runGemm(gpu, 17, 24, 7, { gated: true, active: 0 });
  if (!got.every(Number.isNaN)) throw new Error("a gated-off gemm wrote its output");
  await checkGemm(gpu, 17, 24, 7, { gated: true, active: 1 });
});

gpuTest("gemm rejects shapes and tiles it cannot handle", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const bad: [string, Partial<Parameters<typeof gemm>[1]>, Kernel?][] = [
    ["K not a multiple of 8", { k: 12 }],
    ["no rows", { rows: 0 }],
    ["tileK not a multiple of 8", { tileK: 12 }],
    ["block too large", { blockN: 9 }],
    ["too many threads", { threadsM: 64, threadsN: 64 }],
    ["too much workgroup memory", { tileK: 512, blockM: 8, blockN: 8 }],
    ["an unknown pipeline", { pipeline: "async" as GemmTiles["pipeline"] }],
    ["a kernel generated for other tiles", {}, gemmKernelFor({ blockM: 2 })],
    ["a kernel generated for the other epilogue", { epilogue: Epilogue.SWIGLU }, gemmKernelFor()],
  ];
  for (const [what, change, kernel] of bad) {
    assertThrows(
      () => gemm(gpu, { ctl, weight: ctl, x: ctl, y: ctl, rows: 17, k: 16, n: 4, ...change }, kernel),
      Error,
      undefined,
      `gemm accepted ${what}`,
    );
  }
  ctl.destroy();
  return Promise.resolve();
});

gpuTest("gemm checks catch broken kernels", async (gpu) => {
  // [tiles, from, to]: each mutation applies to the plain and SwiGLU kernels of the tiles where `from` occurs. Every
  // mutant computes a wrong result in every schedule, with no data race: a dropped barrier is a race that a GPU may
  // not expose (an H200 ran the serial pipeline without its "tiles consumed" barrier correctly), so it proves nothing.
  const small: GemmTiles = { threadsM: 8, threadsN: 8 }; // 32 x 32: the double buffer fits 16 KiB
  const cases: [GemmTiles, string, string][] = [
    [{}, "k0 < K; k0 += TILE_K", "k0 + TILE_K < K; k0 += TILE_K"], // last (partial) k tile dropped
    [{}, "bf16_lo(a), bf16_hi(a)", "bf16_hi(a), bf16_lo(a)"], // swapped bf16 halves
    [{}, "return x[s.src + k0 / 4u]", "return x[s.src + k0 / 8u]"], // x tiles read at the weights' k offset
    [{}, "select(n, n + N, r >= TILE_N)", "select(n, n + TILE_N, r >= TILE_N)"], // up rows read from the wrong place
    [{}, "a1_2 = fma4(xv, w2, a1_2)", "a1_2 = fma4(xv, w1, a1_2)"], // one register of the block takes a wrong column
    [{}, "put(m + 16u, n + 32u, a1_2", "put(m + 16u, n + 16u, a1_2"], // one register stored to a wrong column
    [{}, "px0 = load_x(sx0, k0 + TILE_K)", "px0 = load_x(sx0, k0)"], // prefetches the current x tile again
    [{ pipeline: "serial" }, "pw0 = load_w(sw0, k0);", "pw0 = load_w(sw0, k0 + TILE_K);"], // weights a k tile ahead
    [{ ...small, pipeline: "double" }, "stage_w(sw0.dst, pw0)", "stage_w(WS_LEN + sw0.dst, pw0)"], // first tile, wrong buffer
    [{ ...small, pipeline: "double" }, "cur = next;", "cur = 0u;"], // buffers never swapped: the first k tile every step
  ];
  for (const [tiles, from, to] of cases) {
    const kernels = [Epilogue.PLAIN, Epilogue.SWIGLU]
      .map((epilogue) => ({ epilogue, kernel: gemmKernelFor({ ...tiles, epilogue }) }))
      .filter(({ kernel }) => kernel.source.includes(from));
    if (kernels.length === 0) throw new Error(`"${from}" occurs in no kernel of ${JSON.stringify(tiles)}`);
    await assertCaught(async () => {
      for (const { epilogue, kernel } of kernels) {
        const mutant = mutate(kernel, from, to);
        await checkGemm(gpu, 33, 264, 65, { ...tiles, epilogue, kernel: mutant });
      }
    }, `${JSON.stringify(tiles)}: ${from} -> ${to}`);
  }
});

// ---- math "f16": f16 products, partials flushed into f32 every flushK k, rows scaled by the row-scale pre-pass ----

interface F16Options extends CheckOptions {
  /** Rows of four kinds (m % 4): plain normals; scaled by 1e-6; one element +-bigX; all zero. Default: plain. */
  bigX?: number;
  /** Every weight +-this (sign random), and every x 1.99 (the overflow limit of X_SHIFT). */
  flatW?: number;
}

/** Seeded x for the f16 tests (see F16Options). */
function f16Rows(rng: Rng, rows: number, k: number, o: F16Options): Float32Array {
  const x = rng.normals(rows * k);
  if (o.flatW !== undefined) return x.fill(1.99);
  if (o.bigX === undefined) return x;
  for (let m = 0; m < rows; m++) {
    const row = x.subarray(m * k, (m + 1) * k);
    if (m % 4 === 1) row.forEach((v, i) => (row[i] = v * 1e-6));
    if (m % 4 === 2) row[(m * 7919) % k] = m % 8 === 2 ? o.bigX : -o.bigX;
    if (m % 4 === 3) row.fill(0);
  }
  return x;
}

/**
 * Runs row-scale + f16 GEMM on seeded inputs into a NaN-poisoned output; returns it, the f64 reference, each output's
 * tolerance (`f16GemmTolerance`; SWIGLU: silu(g) * u propagated, |silu'| <= 1.1) and sum |x w| (for relative errors).
 */
async function runF16(gpu: Gpu, rows: number, k: number, n: number, o: F16Options = {}) {
  const epilogue = o.epilogue ?? Epilogue.PLAIN;
  const rng = new Rng(rows * 1_000_003 + k * 1009 + n + epilogue * 7 + 5);
  const nw = epilogue === Epilogue.SWIGLU ? 2 * n : n;
  const w = o.flatW === undefined
    ? roundBf16Array(rng.normals(nw * k, 1 / Math.sqrt(k)))
    : Float32Array.from({ length: nw * k }, () => (rng.int(2) ? o.flatW! : -o.flatW!));
  const x = f16Rows(rng, rows, k, o);
  const { kernel, active, bigX: _b, flatW: _f, ...args } = o;
  const tiles = { ...args, math: "f16" as const };
  const flushK = tiles.flushK ?? GEMM_DEFAULT_TILES.flushK;
  const ctl = ctlBuffer(gpu, { ACTIVE: active ?? 1 });
  const wb = gpu.upload("w", packBf16(w, k)), xb = gpu.upload("x", x), y = poisoned(gpu, rows * n);
  const exponents = gpu.buffer("exponents", rows * 4);
  const scratch: GPUBuffer[] = [];
  gpu.run([
    rowScale(gpu, { ctl, x: xb, exponents, rows, k, gated: o.gated }),
    ...record(gpu, { ctl, weight: wb, x: xb, y, exponents, rows, k, n, ...tiles }, kernel, scratch),
  ]);
  const got = await gpu.readF32(y, rows * n);
  for (const b of [ctl, wb, xb, y, exponents, ...scratch]) b.destroy();
  const tol = new Float64Array(rows * n), scale = new Float64Array(rows * n);
  for (let m = 0; m < rows; m++) {
    const xr = x.subarray(m * k, (m + 1) * k);
    const rowScaleOf = 2 ** (rowScaleExponent(xr) + gemmXShift(flushK));
    const dot = (row: number) => {
      let s = 0, sumAbsProducts = 0, sumAbsX = 0, sumAbsW = 0;
      for (let i = 0; i < k; i++) {
        const p = xr[i] * w[row * k + i];
        s += p;
        sumAbsProducts += Math.abs(p);
        sumAbsX += Math.abs(xr[i]);
        sumAbsW += Math.abs(w[row * k + i]);
      }
      return {
        s,
        abs: sumAbsProducts,
        tol: f16GemmTolerance({ sumAbsProducts, sumAbsX, sumAbsW, scale: rowScaleOf, k }, flushK),
      };
    };
    for (let j = 0; j < n; j++) {
      const g = dot(j);
      if (epilogue === Epilogue.SWIGLU) {
        const u = dot(j + n), silu = g.s / (1 + Math.exp(-g.s));
        tol[m * n + j] = 1.1 * Math.abs(u.s) * g.tol + Math.abs(silu) * u.tol + 1e-30;
        scale[m * n + j] = 1.1 * Math.abs(u.s) * g.abs + Math.abs(silu) * u.abs;
      } else {
        [tol[m * n + j], scale[m * n + j]] = [g.tol, g.abs];
      }
    }
  }
  return { got, want: gemmReference(w, x, rows, k, n, epilogue), tol, scale };
}

/** Worst error of the f16 GEMM over its tolerance and relative to sum |x w| (the figure ARCHITECTURE.md quotes). */
interface F16Error {
  overTol: number;
  rel: number;
}

/** Fails unless every output is within its tolerance (NaN and inf included); returns the worst errors. */
async function checkF16(gpu: Gpu, rows: number, k: number, n: number, o: F16Options = {}): Promise<F16Error> {
  const { got, want, tol, scale } = await runF16(gpu, rows, k, n, o);
  let failures = 0, overTol = 0, rel = 0, at = 0;
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    const r = err / tol[i];
    if (!(r <= 1)) failures++;
    if (!(r <= overTol)) [overTol, at] = [Number.isNaN(r) ? Infinity : r, i];
    if (scale[i] > 0) rel = Math.max(rel, err / scale[i]);
  }
  if (failures > 0) {
    const { kernel: _, ...shown } = o;
    throw new Error(
      `gemm f16 rows=${rows} K=${k} N=${n} ${JSON.stringify(shown)}: ${failures}/${got.length} outside tolerance; ` +
        `worst at [${at}]: got ${got[at]}, want ${want[at]}, tol ${tol[at].toExponential(3)}`,
    );
  }
  return { overTol, rel };
}

/** The worst of several checks' errors. */
const worstOf = (es: F16Error[]): F16Error => ({
  overTol: Math.max(...es.map((e) => e.overTol)),
  rel: Math.max(...es.map((e) => e.rel)),
});

gpuTest("gemm f16 matches the f64 reference within its f16 tolerance at awkward sizes", async (gpu) => {
  const errs: F16Error[] = [];
  // M = 17, 37, 130 (partial M tiles), N not a multiple of the tile, K = 32 (2 k tiles), 264 (16.5) and 1000.
  for (const [rows, k, n] of [[17, 32, 7], [37, 264, 65], [130, 1000, 300], [17, 264, 1], [130, 32, 65]]) {
    errs.push(await checkF16(gpu, rows, k, n));
  }
  const e = worstOf(errs);
  console.log(
    `  gemm f16 (flushK 8) worst error: ${e.overTol.toFixed(3)} of the tolerance, ${
      e.rel.toExponential(2)
    } of sum |x w|`,
  );
});

gpuTest("gemm f16 holds rows up to 1e5, down to 1e-6 and all-zero over the 7B's d_model (K = 4096)", async (gpu) => {
  const e = worstOf([
    await checkF16(gpu, 37, 4096, 65, { bigX: 1e5 }),
    await checkF16(gpu, 17, 4096, 33, { bigX: 1e5, epilogue: Epilogue.SWIGLU }),
  ]);
  console.log(
    `  gemm f16 at K = 4096, |x| <= 1e5: ${e.overTol.toFixed(3)} of the tolerance, ${
      e.rel.toExponential(2)
    } of sum |x w|`,
  );
});

gpuTest("gemm f16 SwiGLU epilogue scales gate and up back before silu(gate) * up", async (gpu) => {
  for (const [rows, k, n] of [[17, 32, 7], [37, 264, 65], [130, 32, 300]]) {
    await checkF16(gpu, rows, k, n, { epilogue: Epilogue.SWIGLU, bigX: 1e5 });
  }
});

gpuTest("gemm f16 every flush length, pipeline and the 128x64 / 64x128 tiles agree with the reference", async (gpu) => {
  const variants: GemmTiles[] = [
    ...GEMM_FLUSH_KS.map((flushK) => ({ flushK, tileK: Math.max(16, flushK) })),
    { pipeline: "serial" },
    { pipeline: "double", threadsM: 8, threadsN: 8, tileK: 8 },
    { blockM: 8, tileK: 32, flushK: 16 }, // 128 x 64
    { blockN: 8 }, // 64 x 128
    { threadsM: 16, threadsN: 8 }, // linear's tiles for N <= 4096
  ];
  for (const tiles of variants) {
    await checkF16(gpu, 37, 264, 65, { ...tiles, bigX: 1e5 });
    await checkF16(gpu, 130, 32, 7, { ...tiles, epilogue: Epilogue.SWIGLU, bigX: 1e5 });
  }
});

gpuTest("gemm f16 keeps weights up to 63 finite (the overflow limit of X_SHIFT)", async (gpu) => {
  // Every x at its row's largest staged value and every |w| = 63: each vec4 lane's partial reaches 2^9 * 63 and the
  // pairwise sum at the flush 2^10 * 63 = 64512, just below f16's 65504, at every flush length.
  for (const flushK of GEMM_FLUSH_KS) await checkF16(gpu, 17, 64, 7, { flushK, tileK: 32, flatW: 63 });
  // One less of X_SHIFT doubles them: the flush overflows to inf.
  const kernel = gemmKernelFor({ math: "f16", tileK: 32 });
  const shift = `const X_SHIFT: i32 = ${gemmXShift(8)}i;`;
  await assertCaught(
    () =>
      checkF16(gpu, 17, 64, 7, {
        tileK: 32,
        flatW: 63,
        kernel: mutate(kernel, shift, `const X_SHIFT: i32 = ${gemmXShift(8) - 1}i;`),
      }),
    "X_SHIFT one less",
  );
});

gpuTest("gemm f16 built GATED writes nothing while ACTIVE is 0 and computes while it is 1", async (gpu) => {
  const { got } = await runF16(gpu, 17, 32, 7, { gated: true, active: 0 });
  if (!got.every(Number.isNaN)) throw new Error("a gated-off f16 gemm wrote its output");
  await checkF16(gpu, 17, 32, 7, { gated: true, active: 1 });
});

gpuTest("gemm f16 rejects flush lengths and bindings it cannot handle", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const base = { ctl, weight: ctl, x: ctl, y: ctl, rows: 17, k: 16, n: 4 };
  const bad: [string, Partial<Parameters<typeof gemm>[1]>][] = [
    ["a flush length that does not divide tileK", { math: "f16", flushK: 32, tileK: 16, exponents: ctl }],
    ["a flush length not a power of two", { math: "f16", flushK: 12, tileK: 24, exponents: ctl }],
    ["no row exponents", { math: "f16" }],
    ["row exponents for the f32 GEMM", { exponents: ctl }],
    ["an unknown math", { math: "bf16" as GemmTiles["math"], exponents: ctl }],
  ];
  for (const [what, change] of bad) {
    assertThrows(() => gemm(gpu, { ...base, ...change }), Error, undefined, `gemm accepted ${what}`);
  }
  ctl.destroy();
  return Promise.resolve();
});

gpuTest("gemm f16 checks catch broken kernels", async (gpu) => {
  // Each mutant is deterministic (no race): it breaks the plain and SwiGLU kernels of the tiles where `from` occurs.
  const cases: [GemmTiles, string, string][] = [
    [{}, "return e[m] + X_SHIFT;", "return e[m];"], // outputs scaled back without X_SHIFT
    [{}, "return ldexp(1.0, -(e[m] + X_SHIFT));", "return ldexp(1.0, -(e[m] + X_SHIFT - 1i));"], // x staged 2x
    [{}, "pa1_2 = xv * w2;", "pa1_2 = fma(xv, w2, pa1_2);"], // one partial never reset: flushed k counted again
    [{}, "a1_2 += flush(pa1_2);", ""], // one partial never flushed
    [{}, "let h = p.xy + p.zw;", "let h = p.xy + p.xy;"], // two lanes dropped at the flush
    [{}, "let xv = xs[xk + 1u];", "let xv = xs[xk + 0u];"], // the second vec4 of a flush reads the first one's k
    [{}, "kk += FLUSH_K / 4u", "kk += FLUSH_K / 2u"], // every other flush block skipped
    [{}, "ws[i + 1u] = vec4<f16>(bf16x4(p.z, p.w));", "ws[i + 1u] = vec4<f16>(bf16x4(p.x, p.y));"], // w k 4..7 lost
  ];
  for (const [tiles, from, to] of cases) {
    const kernels = [Epilogue.PLAIN, Epilogue.SWIGLU]
      .map((epilogue) => ({ epilogue, kernel: gemmKernelFor({ ...tiles, math: "f16", epilogue }) }))
      .filter(({ kernel }) => kernel.source.includes(from));
    if (kernels.length === 0) throw new Error(`"${from}" occurs in no f16 kernel of ${JSON.stringify(tiles)}`);
    await assertCaught(async () => {
      for (const { epilogue, kernel } of kernels) {
        await checkF16(gpu, 33, 264, 65, { ...tiles, epilogue, kernel: mutate(kernel, from, to), bigX: 1e5 });
      }
    }, `f16 ${JSON.stringify(tiles)}: ${from} -> ${to}`);
  }
});

Deno.test("gemm f16 staging takes half the workgroup memory of f32", () => {
  for (const tiles of [{}, { blockM: 8 }, { blockN: 8, pipeline: "double" as const }]) {
    for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
      const f32 = gemmWorkgroupBytes(tiles, epilogue), f16 = gemmWorkgroupBytes({ ...tiles, math: "f16" }, epilogue);
      if (f16 * 2 !== f32) throw new Error(`${JSON.stringify(tiles)}: f16 ${f16} B, f32 ${f32} B`);
    }
  }
});

// ---- split-K: S workgroups per tile, each reducing K / S into the partial scratch, then split_k_reduce.ts ----

// M = 17, 37 and 130 (partial M tiles), N = 7 and 65 (partial N tiles); K = 192 is 12 k tiles of 16: 6 per split at
// S = 2, 3 at S = 4.
const SPLIT_SHAPES: [number, number, number][] = [[17, 192, 7], [37, 192, 65], [130, 192, 65]];

gpuTest("gemm split-K (S = 2, 4) through linear matches the reference, PLAIN and SWIGLU", async (gpu) => {
  for (const splitK of [2, 4]) {
    for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
      for (const [rows, k, n] of SPLIT_SHAPES) await checkGemm(gpu, rows, k, n, { splitK, epilogue });
    }
  }
  // The other pipelines, and k tiles of 32 (K = 256: 2 k tiles per split at S = 4).
  await checkGemm(gpu, 37, 256, 65, { splitK: 4, pipeline: "double", threadsM: 8, threadsN: 8 });
  await checkGemm(gpu, 37, 256, 65, { splitK: 4, tileK: 32, threadsN: 8 });
  await checkGemm(gpu, 37, 256, 65, { splitK: 2, pipeline: "serial", epilogue: Epilogue.SWIGLU });
});

gpuTest("gemm split-K shares uneven k tiles out by whole tiles (S = 3: K = 208 is 13 k tiles of 16)", async (gpu) => {
  for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
    for (const [rows, , n] of SPLIT_SHAPES) await checkGemm(gpu, rows, 208, n, { splitK: 3, epilogue });
  }
  await checkGemm(gpu, 37, 48, 65, { splitK: 3 }); // one k tile a split
  await checkGemm(gpu, 37, 208, 65, { splitK: 8, pipeline: "double", threadsM: 8, threadsN: 8 }); // 1 or 2 a split
});

gpuTest(
  "gemm computes a range of columns: unsplit [0, end) by its grid, split [begin, N) (partials of N - begin)",
  async (gpu) => {
    // 64-column tiles by default (N = 300: 5 tiles, the last partial); 32 with threadsN 8
    for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
      await checkGemm(gpu, 37, 192, 300, { epilogue, columns: [0, 128] });
      await checkGemm(gpu, 37, 192, 300, { epilogue, columns: [0, 300] });
      await checkGemm(gpu, 37, 208, 300, { epilogue, splitK: 3, columns: [128, 300] });
      await checkGemm(gpu, 130, 192, 65, { epilogue, splitK: 2, columns: [64, 65] }); // one column of one tile
    }
    await checkGemm(gpu, 37, 192, 300, { splitK: 4, threadsN: 8, columns: [32, 300] });
    const ctl = ctlBuffer(gpu);
    const base = { ctl, weight: ctl, x: ctl, y: ctl, rows: 17, k: 64, n: 300 };
    const bad: [string, Partial<GemmArgs>][] = [
      ["an unsplit range not from 0", { columns: [64, 300] }],
      ["an unsplit end inside a tile", { columns: [0, 100] }],
      ["a split range that stops before N", { splitK: 2, columns: [64, 256] }],
      ["a split begin inside a tile", { splitK: 2, columns: [32, 300] }],
      ["an empty range", { columns: [0, 0] }],
      ["a range past N", { columns: [0, 320] }],
    ];
    for (const [what, change] of bad) {
      assertThrows(() => gemm(gpu, { ...base, ...change }), Error, "columns", `gemm accepted ${what}`);
    }
    ctl.destroy();
  },
);

gpuTest("gemm f16 split-K (S = 2, 4) through linear holds its f16 tolerance, PLAIN and SWIGLU", async (gpu) => {
  for (const splitK of [2, 4]) {
    for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
      for (const [rows, k, n] of SPLIT_SHAPES) await checkF16(gpu, rows, k, n, { splitK, epilogue, bigX: 1e5 });
    }
  }
});

gpuTest("gemm split-K refuses K that does not split into whole k tiles, and linear says why", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const base = { ctl, weight: ctl, x: ctl, y: ctl, rows: 17, k: 48, n: 4 };
  const bad: [string, Partial<GemmArgs>][] = [
    ["fewer k tiles than splits", { splitK: 4 }], // 3 of 16
    ["S = 5", { splitK: 5, k: 96 }],
    ["S = 16", { splitK: 16, k: 256 }],
  ];
  for (const [what, change] of bad) {
    assertThrows(() => gemm(gpu, { ...base, ...change }), Error, undefined, `gemm accepted ${what}`);
  }
  gemm(gpu, { ...base, splitK: 2 }); // 3 k tiles, 1 and 2 per split: accepted
  const userErrors: [string, () => unknown][] = [
    ["K = 24 split 4 ways", () => linear(gpu, { ...base, k: 24, splitK: 4, prefillGemm: "fma" })],
    // S * rows * N * 4 bytes of scratch past the largest storage binding.
    ["a scratch past the largest binding", () => linear(gpu, { ...base, rows: 2 ** 24, n: 4096, splitK: 8, k: 64 })],
  ];
  for (const [what, f] of userErrors) {
    try {
      f();
      throw new Error(`linear accepted ${what}`);
    } catch (e) {
      if (!(e instanceof UserError)) throw new Error(`linear, ${what}: ${(e as Error).message}, not a UserError`);
    }
  }
  Deno.env.set(SPLIT_K_ENV, "5");
  try {
    linear(gpu, { ...base, k: 64, prefillGemm: "fma" });
    throw new Error(`linear accepted ${SPLIT_K_ENV}=5`);
  } catch (e) {
    if (!(e instanceof UserError && e.message.includes(SPLIT_K_ENV))) throw e;
  } finally {
    Deno.env.delete(SPLIT_K_ENV);
  }
  ctl.destroy();
  return Promise.resolve();
});

gpuTest("gemm split-K takes HYDRA_SPLIT_K for A/B runs", async (gpu) => {
  Deno.env.set(SPLIT_K_ENV, "2");
  try {
    const rows = 37, k = 64, n = 8;
    const ctl = ctlBuffer(gpu), y = poisoned(gpu, rows * n);
    const ds = linear(gpu, { ctl, weight: ctl, x: ctl, y, rows, k, n, prefillGemm: "fma" });
    if (!ds[0].label.endsWith("_split2")) throw new Error(`${SPLIT_K_ENV}=2 recorded ${ds.map((d) => d.label)}`);
    for (const b of [ctl, y]) b.destroy();
  } finally {
    Deno.env.delete(SPLIT_K_ENV);
  }
  await Promise.resolve();
});

gpuTest("gemm split-K checks catch broken kernels", async (gpu) => {
  // S = 4: each mutant breaks every schedule. Splits 1 and 3 reduce the k range of splits 0 and 2 (k tiles counted
  // twice, two ranges never), or store into the slots of 0 and 2 (a race between equal-shape partials; slots 1 and 3
  // keep the scratch's NaN).
  const cases: [string, string][] = [
    ["let k_begin = (split * q", "let k_begin = ((split / 2u) * 2u * q"],
    ["y[(split * M + m)", "y[((split / 2u) * 2u * M + m)"],
  ];
  for (const [from, to] of cases) {
    for (const math of ["f32", "f16"] as const) {
      await assertCaught(async () => {
        for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
          const kernel = mutate(gemmKernelFor({ math, epilogue, splitK: 4 }), from, to);
          if (math === "f32") await checkGemm(gpu, 37, 192, 65, { splitK: 4, epilogue, kernel });
          else await checkF16(gpu, 37, 192, 65, { splitK: 4, epilogue, kernel, bigX: 1e5 });
        }
      }, `${math} split-K: ${from} -> ${to}`);
    }
  }
});

Deno.test("gemm splitK = 1 generates the kernel without split-K, byte for byte", () => {
  for (const math of ["f32", "f16"] as const) {
    for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
      const plain = gemmKernelFor({ math, epilogue }), one = gemmKernelFor({ math, epilogue, splitK: 1 });
      if (plain.source !== one.source || plain.name !== one.name) throw new Error(`${math} ${epilogue}: differ`);
      if (/split|k_end/.test(plain.source)) throw new Error(`${plain.name} mentions split-K`);
    }
  }
});
