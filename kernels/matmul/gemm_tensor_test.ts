/**
 * Tests of the tensor-core GEMM (`gemm_tensor.ts`) with its row-scale pre-pass, against the f64 reference under the
 * tolerance its f16 rounding allows (`tensorGemmTolerance`): awkward M and N, K from 32 to 4096, both epilogues, tile
 * variants, x magnitudes up to 1e5 and down to 1e-6, the gate, split-K (with `split_k_reduce.ts`), f16 weights read
 * from global memory (`halfWeights`), mutants. They need Dawn with subgroup matrices (HYDRA_WEBGPU=dawn on an NVIDIA
 * GPU); elsewhere they are registered as ignored, the reason in their names. The generator and shape checks, and the
 * compile check on Dawn's null backend, run everywhere.
 * @module
 */

import { packBf16, roundBf16Array } from "../bf16.ts";
import {
  checkTensorShape,
  gemmTensor,
  gemmTensorKernelFor,
  gemmTensorWorkgroupBytes,
  resolveTensorTiles,
  tensorGemmTolerance,
  tensorGemmUnsupported,
  tensorSubgroupSize,
  type TensorTiles,
} from "./gemm_tensor.ts";
import {
  TENSOR_TILES,
  TENSOR_TILES_192,
  TENSOR_TILES_LARGE_M,
  TENSOR_TILES_SMALL_M,
  TENSOR_TILES_SMALL_M_SWIGLU,
  TENSOR_TILES_SWIGLU_192,
} from "./linear.ts";
import { Epilogue, matvecReference } from "./matvec.ts";
import { rowScale } from "./row_scale.ts";
import { halfWeights } from "../weights/half_weights.ts";
import { packWeights } from "../weights/pack_weights.ts";
import { splitKReduce } from "./split_k_reduce.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import {
  assertCaught,
  assertWorkgroupVariablesAligned,
  ctlBuffer,
  dawnGpuTest,
  mutate,
  poisoned,
  Rng,
  workgroupVariables,
} from "../testing/harness.ts";
import { assertTintCompiles } from "../testing/tint.ts";

/** A GPU test of the tensor-core GEMM, or where it cannot run, an ignored test that says why. */
const tensorTest = await dawnGpuTest(tensorGemmUnsupported);

interface CheckOptions extends TensorTiles {
  epilogue?: number;
  kernel?: Kernel;
  gated?: boolean;
  active?: number;
  /** Largest |x|: every third row is scaled to reach it, one element per row is +-it (default: plain normals). */
  bigX?: number;
  /** The output columns [begin, end) to compute (gemmTensor's `columns`): the others must keep the poison. */
  columns?: readonly [number, number];
}

/** Seeded x: normals; with `bigX`, rows of three kinds: plain, scaled by 1e-6, and with one element at +-bigX. */
function inputRows(rng: Rng, rows: number, k: number, bigX?: number): Float32Array {
  const x = rng.normals(rows * k);
  if (bigX === undefined) return x;
  for (let m = 0; m < rows; m++) {
    if (m % 3 === 1) { for (let i = 0; i < k; i++) x[m * k + i] *= 1e-6; // scaled up into f16's normal range
     }
    if (m % 3 === 2) x[m * k + ((m * 7919) % k)] = m % 2 ? -bigX : bigX; // past f16's 65504 unless scaled down
  }
  return x;
}

/**
 * The tolerance of every output: tensorGemmTolerance of its dot product, and for SWIGLU silu(g) * u propagated
 * (|silu'| <= 1.1): 1.1 |u| tol(g) + |silu(g)| tol(u).
 */
function tolerances(w: Float32Array, x: Float32Array, rows: number, k: number, n: number, epilogue: number) {
  const tol = new Float64Array(rows * n);
  const dot = (m: number, row: number) => {
    let s = 0, abs = 0, absX = 0;
    for (let i = 0; i < k; i++) {
      const p = x[m * k + i] * w[row * k + i];
      s += p;
      abs += Math.abs(p);
      absX += Math.abs(x[m * k + i]);
    }
    return { s, tol: tensorGemmTolerance(abs, absX) };
  };
  for (let m = 0; m < rows; m++) {
    for (let j = 0; j < n; j++) {
      const g = dot(m, j);
      if (epilogue === Epilogue.SWIGLU) {
        const u = dot(m, j + n);
        const silu = g.s / (1 + Math.exp(-g.s));
        tol[m * n + j] = 1.1 * Math.abs(u.s) * g.tol + Math.abs(silu) * u.tol;
      } else {
        tol[m * n + j] = g.tol;
      }
    }
  }
  return tol;
}

/** Runs pre-pass + GEMM on seeded inputs into a NaN-poisoned output; returns it, the reference and tolerances. */
async function runTensor(gpu: Gpu, rows: number, k: number, n: number, o: CheckOptions = {}) {
  const epilogue = o.epilogue ?? Epilogue.PLAIN;
  const rng = new Rng(rows * 1_000_003 + k * 1009 + n + epilogue * 7);
  const nw = epilogue === Epilogue.SWIGLU ? 2 * n : n;
  const w = roundBf16Array(rng.normals(nw * k, 1 / Math.sqrt(k)));
  const x = inputRows(rng, rows, k, o.bigX);
  const ctl = ctlBuffer(gpu, { ACTIVE: o.active ?? 1 });
  const wb = gpu.upload("w", packBf16(w, k)), xb = gpu.upload("x", x), y = poisoned(gpu, rows * n);
  // halfWeights: the GEMM reads an f16 copy of the weights (half_weights.ts).
  const wh = o.halfWeights ? gpu.buffer("w f16", nw * k * 2) : undefined;
  // packedWeights: the GEMM reads a packed copy (pack_weights.ts).
  const wp = o.packedWeights ? gpu.buffer("w packed", nw * k * 2) : undefined;
  const exponents = gpu.buffer("exponents", rows * 4);
  const xHalf = gpu.buffer("xh", rows * k * 2);
  const { kernel, active: _, bigX: __, ...args } = o;
  // Split-K: the GEMM into a NaN-poisoned partial scratch, then the reduction into y.
  const splitK = o.splitK ?? 1, nBegin = o.columns?.[0] ?? 0;
  const partials = splitK > 1 ? poisoned(gpu, splitK * rows * (nw / n) * (n - nBegin), "partials") : undefined;
  gpu.run([
    ...(wh ? [halfWeights(gpu, { ctl, src: wb, dst: wh, words: (nw * k) / 2 })] : []), // never gated
    ...(wp ? [packWeights(gpu, { ctl, src: wb, dst: wp, rows: nw, k })] : []), // never gated
    rowScale(gpu, { ctl, x: xb, exponents, xHalf, rows, k, gated: o.gated }),
    gemmTensor(
      gpu,
      { ctl, weight: wh ?? wp ?? wb, x: xHalf, y: partials ?? y, exponents, rows, k, n, ...args },
      kernel,
    ),
    ...(partials ? [splitKReduce(gpu, { ctl, partials, y, rows, n, splitK, epilogue, gated: o.gated, nBegin })] : []),
  ]);
  const got = await gpu.readF32(y, rows * n);
  for (
    const b of [
      ctl,
      wb,
      xb,
      xHalf,
      y,
      exponents,
      ...(partials ? [partials] : []),
      ...(wh ? [wh] : []),
      ...(wp ? [wp] : []),
    ]
  ) {
    b.destroy();
  }
  return { got, want: matvecReference(w, x, rows, k, n, epilogue), tol: tolerances(w, x, rows, k, n, epilogue) };
}

/** Fails unless every output is within its tolerance; returns the worst error over tolerance. */
async function checkTensor(gpu: Gpu, rows: number, k: number, n: number, o: CheckOptions = {}): Promise<number> {
  const { got, want, tol } = await runTensor(gpu, rows, k, n, o);
  const [begin, end] = o.columns ?? [0, n], mine = (i: number) => i % n >= begin && i % n < end;
  if (!got.every((v, i) => mine(i) || Number.isNaN(v))) {
    throw new Error(`gemm_tensor rows=${rows} K=${k} N=${n}: wrote a column outside [${begin}, ${end})`);
  }
  let failures = 0, worst = 0, at = 0;
  for (let i = 0; i < got.length; i++) {
    if (!mine(i)) continue;
    const r = Math.abs(got[i] - want[i]) / tol[i];
    if (!(r <= 1)) failures++;
    if (!(r <= worst)) [worst, at] = [Number.isNaN(r) ? Infinity : r, i];
  }
  if (failures > 0) {
    const { kernel: _, ...shown } = o;
    throw new Error(
      `gemm_tensor rows=${rows} K=${k} N=${n} ${JSON.stringify(shown)}: ${failures}/${got.length} outside tolerance ` +
        `(worst ${worst.toFixed(2)} x tol at [${at}]: got ${got[at]}, want ${want[at]}, tol ${tol[at]})`,
    );
  }
  return worst;
}

/**
 * Each subject's own kernel passes `check` first (so no mutant counts as caught for a reason of the setup); then each
 * mutant (`from` -> `to`, in every subject whose kernel holds `from`, and in at least one) must fail it.
 */
async function assertMutantsCaught<S extends { kernel: Kernel }>(
  subjects: readonly S[],
  cases: readonly [string, string][],
  check: (s: S, kernel: Kernel) => Promise<unknown>,
  what = "",
): Promise<void> {
  for (const s of subjects) await check(s, s.kernel);
  for (const [from, to] of cases) {
    const kernels = subjects.filter(({ kernel }) => kernel.source.includes(from));
    if (kernels.length === 0) throw new Error(`"${from}" occurs in no kernel`);
    await assertCaught(async () => {
      for (const s of kernels) await check(s, mutate(s.kernel, from, to));
    }, `${what}${from} -> ${to}`);
  }
}

tensorTest("gemm_tensor matches the reference at awkward M, N and K", async (gpu) => {
  // M = 1, 17, 37 (odd), 64 (one tile), 130 (a partial third); N = 16 (a quarter tile) .. 256; K = 32 (one k step)
  // .. 128 (four).
  for (const [rows, k, n] of [[1, 32, 16], [17, 32, 16], [37, 96, 256], [64, 64, 48], [130, 128, 80], [3, 64, 112]]) {
    await checkTensor(gpu, rows, k, n);
  }
});

tensorTest("gemm_tensor SwiGLU epilogue computes silu(gate) * up", async (gpu) => {
  for (const [rows, k, n] of [[1, 32, 16], [17, 96, 48], [37, 64, 256], [130, 32, 80]]) {
    await checkTensor(gpu, rows, k, n, { epilogue: Epilogue.SWIGLU, stepK: 16 });
  }
});

tensorTest("gemm_tensor holds x up to 1e5 and down to 1e-6 over the 7B's d_model (K = 4096)", async (gpu) => {
  const worst = await checkTensor(gpu, 37, 4096, 256, { bigX: 1e5 });
  await checkTensor(gpu, 37, 4096, 128, { bigX: 1e5, epilogue: Epilogue.SWIGLU, stepK: 16 });
  console.log(`  worst error at K = 4096 with |x| <= 1e5: ${worst.toFixed(3)} of the tolerance`);
});

tensorTest("gemm_tensor tile variants agree with the reference", async (gpu) => {
  const variants: TensorTiles[] = [
    { stepK: 16 },
    { stepK: 64 }, // linear's choice for plain products (kernels/matmul/linear.ts)
    { stepK: 64, fragsM: 1, fragsN: 1 },
    { subgroupsM: 1, subgroupsN: 1, fragsM: 1, fragsN: 1 },
    { subgroupsM: 4, subgroupsN: 1, fragsM: 1, fragsN: 4, stepK: 16 },
    { subgroupsM: 2, subgroupsN: 4, fragsM: 4, fragsN: 2, stepK: 16 },
    { subgroupsM: 1, subgroupsN: 2, fragsM: 2, fragsN: 4, stepK: 16 },
    { buffers: 1 },
    TENSOR_TILES.plain, // linear's tiles (SwiGLU: no room; it takes the next)
    TENSOR_TILES.swiglu,
    { subgroupsM: 4, subgroupsN: 2, ahead: 2 },
    { ahead: 2, stepK: 64 },
    // the weights as f16 from global memory: N = 144 leaves a partial tile whose last rows are clamped into N
    { halfWeights: true },
    { halfWeights: true, buffers: 1, stepK: 64 },
    { halfWeights: true, ahead: 2 },
    { ...TENSOR_TILES.plain, halfWeights: true },
    { subgroupsM: 2, subgroupsN: 2, fragsM: 4, fragsN: 4, stepK: 64, buffers: 1, halfWeights: true },
    { ...TENSOR_TILES.plain, stepK: 128, halfWeights: true }, // k steps of 128: only x is staged
    // producer subgroups that only stage: one (every staging slot guarded), 4 and 8 beside 8 multiplying subgroups
    { producers: 1 },
    { subgroupsM: 2, subgroupsN: 4, fragsM: 4, fragsN: 2, stepK: 32, buffers: 2, producers: 4 },
    { subgroupsM: 4, subgroupsN: 2, fragsM: 2, fragsN: 2, stepK: 32, buffers: 2, producers: 8 },
    TENSOR_TILES_LARGE_M, // linear's for plain products of 2,048 rows or more (through one buffer)
    // no k tile carried across the products, one and two buffers
    { ...TENSOR_TILES.plain, ahead: 0 },
    { ...TENSOR_TILES.swiglu, ahead: 0 },
    { ...TENSOR_TILES.plain, stepK: 32, buffers: 2, ahead: 0 },
    { halfWeights: true, ahead: 0 },
    // the staged tiles stored as vec4<u32> through a buffer view
    { ...TENSOR_TILES.plain, wideStores: true },
    { ...TENSOR_TILES.swiglu, ahead: 0, wideStores: true },
    { wideStores: true },
    { ...TENSOR_TILES_LARGE_M, wideStores: false, sharedEpilogue: false }, // linear's without buffer views
    { halfWeights: true, wideStores: true },
    { subgroupsM: 2, subgroupsN: 4, fragsM: 4, fragsN: 2, stepK: 32, buffers: 2, producers: 4, wideStores: true },
    // the epilogue's matrices in the staging memory: after one and two buffers, two tiles in flight, producers
    { ...TENSOR_TILES.plain, wideStores: true, sharedEpilogue: true },
    { ...TENSOR_TILES.swiglu, wideStores: true, sharedEpilogue: true },
    {
      subgroupsM: 2,
      subgroupsN: 2,
      fragsM: 4,
      fragsN: 4,
      stepK: 32,
      buffers: 1,
      wideStores: true,
      sharedEpilogue: true,
    },
    { ahead: 2, wideStores: true, sharedEpilogue: true },
    { stepK: 16, buffers: 1, wideStores: true, sharedEpilogue: true }, // the staged tiles smaller than the matrices
    { producers: 2, wideStores: true, sharedEpilogue: true },
    { ...TENSOR_TILES.swiglu, wideStores: true, sharedEpilogue: true, buffers: 2, ahead: 1 },
    // linear's 12- and 16-subgroup tiles: 192 x 128 and 192 x 64 (SwiGLU) past 128 rows, 128 x 96 (SwiGLU) and 128 x
    // 128 (16 subgroups) up to 128 rows; and the first two with no k tile carried across the products
    TENSOR_TILES_192,
    TENSOR_TILES_SWIGLU_192,
    TENSOR_TILES_SMALL_M_SWIGLU,
    TENSOR_TILES_SMALL_M,
    { ...TENSOR_TILES_192, ahead: 0 },
    { ...TENSOR_TILES_SWIGLU_192, ahead: 0 },
    // two k tiles in flight through one buffer
    { ahead: 2, buffers: 1 },
    { ...TENSOR_TILES_SMALL_M, ahead: 2 },
    { ...TENSOR_TILES_SMALL_M_SWIGLU, ahead: 2 },
    // the weights packed in blocks (pack_weights.ts): k steps of 16, 32 and 64, with linear's tiles
    { packedWeights: true },
    { stepK: 16, buffers: 1, packedWeights: true },
    { ...TENSOR_TILES.plain, packedWeights: true },
    { ...TENSOR_TILES_SMALL_M, packedWeights: true },
    { ...TENSOR_TILES_SMALL_M_SWIGLU, ahead: 2, packedWeights: true },
    { ...TENSOR_TILES_192, packedWeights: true },
    { ...TENSOR_TILES_SWIGLU_192, packedWeights: true },
    // the last slice of a k step multiplied after the barrier that ends it (1) or after the next (2), in every loop
    { ...TENSOR_TILES_192, deferLast: 1 },
    { ...TENSOR_TILES_SWIGLU_192, deferLast: 1 },
    { ...TENSOR_TILES_SMALL_M, deferLast: 1 },
    { ...TENSOR_TILES_SMALL_M_SWIGLU, deferLast: 1 },
    { ...TENSOR_TILES_192, deferLast: 2 },
    { ...TENSOR_TILES_SMALL_M, deferLast: 2 },
    { ...TENSOR_TILES.plain, deferLast: 1 },
    { ...TENSOR_TILES.plain, deferLast: 2 },
    { deferLast: 1 },
    { ahead: 0, deferLast: 1 },
    { buffers: 1, ahead: 0, deferLast: 2 },
    { ahead: 2, deferLast: 1 },
    { ...TENSOR_TILES_SMALL_M, ahead: 2, deferLast: 1 }, // two tiles in flight through one buffer
    { ...TENSOR_TILES_SMALL_M, ahead: 2, deferLast: 2 },
    { halfWeights: true, deferLast: 1 },
  ];
  const limit = gpu.device.limits.maxComputeWorkgroupStorageSize;
  for (const tiles of variants) {
    for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
      if (gemmTensorWorkgroupBytes(tiles, epilogue) > limit) {
        console.log(
          `  skipped ${JSON.stringify(tiles)} epilogue ${epilogue}: more than ${limit} B of workgroup memory`,
        );
        continue;
      }
      await checkTensor(gpu, 37, 128, 144, { ...tiles, epilogue, bigX: 1e5 });
    }
  }
});

tensorTest("gemm_tensor built GATED writes nothing while ACTIVE is 0 and computes while it is 1", async (gpu) => {
  const { got } = await runTensor(gpu, 17, 64, 32, { gated: true, active: 0 });
  if (!got.every(Number.isNaN)) throw new Error("a gated-off gemm_tensor wrote its output");
  await checkTensor(gpu, 17, 64, 32, { gated: true, active: 1 });
});

tensorTest("gemm_tensor checks catch broken kernels", async (gpu) => {
  // Each mutant applies to the plain and SwiGLU kernels where `from` occurs; every one computes a wrong result in every
  // schedule.
  const cases: [string, string][] = [
    ["y[m * N + n] = ldexp(v, e[m])", "y[m * N + n] = ldexp(v, e[m] + 1i)"], // wrong scale back (plain)
    ["* ldexp(up, x)", "* ldexp(up, x + 1i)"], // wrong scale back of the up product (SwiGLU)
    ["xs[i + 7u] = d.y;", "xs[i + 7u] = d.x;"], // one of every 8 staged x elements is its neighbour
    ["return Slot((m0 + r) * (K / 8u) + c,", "return Slot((m0 + r) * (K / 8u),"], // x read at the tile's first 8 k
    ["let xb = (buf ^ 1u) * X_BUF;", "let xb = buf * X_BUF;"], // next x tile staged over the one being read
    ["buf ^= 1u;", "buf = 0u;"], // every k step multiplies buffer 0 while the tiles go to buffer 1
    [
      "subgroupMatrixLoad<Right, col_major>(&ws, wb + (sn + 0u)",
      "subgroupMatrixLoad<Right, row_major>(&ws, wb + (sn + 0u)",
    ],
    ["k0 < K; k0 += TILE_K", "k0 + TILE_K < K; k0 += TILE_K"], // last k step dropped
    ["(sm + 0u) * XS + 16u, XS)", "(sm + 0u) * XS + 0u, XS)"], // second 16 of a k step reads the first 16's x
    ["select(n, n + N, r >= TILE_N)", "select(n, n + TILE_N, r >= TILE_N)"], // up rows read from the wrong place
    ["put(m0, n0, sm + 0u, sn + 16u,", "put(m0, n0, sm + 0u, sn + 0u,"], // a result matrix stored over another (plain)
  ];
  // k steps of 32 where the device's workgroup memory allows (SWIGLU needs 34,816 bytes), else 16; each unmutated
  // kernel passes first, so that no mutant counts as caught for a reason of the setup.
  const limit = gpu.device.limits.maxComputeWorkgroupStorageSize;
  const subjects = [Epilogue.PLAIN, Epilogue.SWIGLU].map((epilogue) => {
    const stepK = gemmTensorWorkgroupBytes({ stepK: 32 }, epilogue) <= limit ? 32 : 16;
    return { epilogue, stepK, kernel: gemmTensorKernelFor({ epilogue, stepK, subgroupSize: tensorSubgroupSize(gpu) }) };
  });
  // 37 rows (a partial tile), K = 96 (three k steps of 32: a dropped one is a third of each sum), N = 48.
  const check = (s: (typeof subjects)[number], kernel: Kernel) =>
    checkTensor(gpu, 37, 96, 48, { epilogue: s.epilogue, stepK: s.stepK, kernel, bigX: 1e5 });
  await assertMutantsCaught(subjects, cases, check);
});

tensorTest("gemm_tensor split-K (S = 2, 4, 8) with the reduction matches the reference", async (gpu) => {
  // K = 256: 8 k steps of 32, split 2, 4 and 8 ways; 37 rows (a partial tile), N = 48.
  for (const splitK of [2, 4, 8]) {
    await checkTensor(gpu, 37, 256, 48, { splitK, bigX: 1e5 });
    await checkTensor(gpu, 37, 256, 48, { splitK, stepK: 16, epilogue: Epilogue.SWIGLU, bigX: 1e5 });
  }
  await checkTensor(gpu, 130, 4096, 80, { splitK: 4, stepK: 64, bigX: 1e5 });
  await checkTensor(gpu, 37, 256, 48, { splitK: 4, halfWeights: true, bigX: 1e5 });
  await checkTensor(gpu, 37, 256, 48, { splitK: 2, stepK: 16, halfWeights: true, epilogue: Epilogue.SWIGLU });
  await checkTensor(gpu, 37, 256, 48, { splitK: 2, producers: 2, bigX: 1e5 });
  await checkTensor(gpu, 37, 256, 48, { splitK: 4, producers: 4, stepK: 16, epilogue: Epilogue.SWIGLU, bigX: 1e5 });
  await checkTensor(gpu, 37, 256, 48, { splitK: 2, packedWeights: true, bigX: 1e5 });
  await checkTensor(gpu, 130, 4096, 80, {
    splitK: 4,
    stepK: 64,
    buffers: 1,
    packedWeights: true,
    epilogue: Epilogue.SWIGLU,
  });
});

tensorTest(
  "gemm_tensor split-K shares uneven k steps out by whole steps, and computes a range of columns",
  async (gpu) => {
    // K = 208: 13 k steps of 16, split 3 ways (4, 4, 5) and 8 (1 or 2 each)
    for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
      await checkTensor(gpu, 37, 208, 48, { splitK: 3, stepK: 16, epilogue, bigX: 1e5 });
      await checkTensor(gpu, 37, 208, 48, { splitK: 8, stepK: 16, epilogue, bigX: 1e5 });
    }
    // linear's tail split on its 192-row tiles: the full waves' columns unsplit (by the grid), the last wave's split 3
    // ways over K = 320 (5 k steps of 64: 1, 2, 2), the SwiGLU's last tile partial (N = 208 of 64-column tiles)
    for (const [tiles, n, begin] of [[TENSOR_TILES_192, 384, 256], [TENSOR_TILES_SWIGLU_192, 208, 128]] as const) {
      const epilogue = tiles === TENSOR_TILES_SWIGLU_192 ? Epilogue.SWIGLU : Epilogue.PLAIN;
      await checkTensor(gpu, 200, 320, n, { ...tiles, epilogue, columns: [0, begin], bigX: 1e5 });
      await checkTensor(gpu, 200, 320, n, { ...tiles, epilogue, splitK: 3, columns: [begin, n], bigX: 1e5 });
    }
    // the columns' mutants: the split's tiles counted from column 0, its partials at full width
    const subgroupSize = tensorSubgroupSize(gpu);
    const cases: [string, string][] = [
      ["let tile = first_tile + flat % tiles;", "let tile = flat % tiles;"],
      ["+ c + n - N_BEGIN]", "+ c + n]"],
    ];
    for (const [from, to] of cases) {
      for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
        const kernel = mutate(gemmTensorKernelFor({ epilogue, stepK: 16, splitK: 3, subgroupSize }), from, to);
        // 64-column tiles: the columns from 64 are the last two, one of them partial
        const o = { epilogue, stepK: 16, splitK: 3, columns: [64, 144] as const, bigX: 1e5 };
        await checkTensor(gpu, 37, 208, 144, o);
        await assertCaught(() => checkTensor(gpu, 37, 208, 144, { ...o, kernel }), `columns: ${from} -> ${to}`);
      }
    }
  },
);

tensorTest(
  "gemm_tensor with packed weights: its checks catch a wrong block stride and a row-major read",
  async (gpu) => {
    const subgroupSize = tensorSubgroupSize(gpu);
    // K = 192: three blocks of 64 k; N = 48: three blocks of 16 rows
    const cases: [TensorTiles, string, string, string][] = [
      [{ stepK: 32, packedWeights: true }, "(k0 / 64u) * 128u", "(k0 / 64u) * 64u", "a k block's stride halved"],
      [
        { stepK: 64, buffers: 1, packedWeights: true },
        "(row % 16u) * 8u",
        "(row % 16u) * 24u",
        "block rows read K apart",
      ],
    ];
    for (const [tiles, from, to, what] of cases) {
      for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
        const kernel = mutate(gemmTensorKernelFor({ ...tiles, epilogue, subgroupSize }), from, to);
        await checkTensor(gpu, 37, 192, 48, { ...tiles, epilogue, bigX: 1e5 });
        await assertCaught(() => checkTensor(gpu, 37, 192, 48, { ...tiles, epilogue, kernel }), what);
      }
    }
    let threw = false;
    try {
      await checkTensor(gpu, 17, 96, 16, { stepK: 32, packedWeights: true });
    } catch (e) {
      threw = (e as Error).message.includes("multiple of 64");
    }
    if (!threw) throw new Error("packed weights with K = 96 (not whole blocks) were accepted");
  },
);

tensorTest("gemm_tensor with f16 weights from global memory: its checks catch broken kernels", async (gpu) => {
  // 37 rows, K = 96, N = 48 with 64-column tiles: the second subgroup's second right matrix starts at row 48, past N,
  // and is clamped to rows 32..47 (its columns are not stored).
  const cases: [string, string][] = [
    ["min(n0 + sn + 0u, N - 16u) * K;", "min(n0 + sn + 0u, N - 32u) * K;"], // a block clamped that lies inside N
    ["let ur0 = (N + min(", "let ur0 = (0u + min("], // the up product reads the gate rows
    ["(&w, wr0 + k0 + 16u, K)", "(&w, wr0 + k0 + 0u, K)"], // the second 16 k of a step reads the first 16's weights
  ];
  const subgroupSize = tensorSubgroupSize(gpu);
  const subjects = [Epilogue.PLAIN, Epilogue.SWIGLU].map((epilogue) => ({
    epilogue,
    kernel: gemmTensorKernelFor({ epilogue, halfWeights: true, subgroupSize }),
  }));
  const check = (s: (typeof subjects)[number], kernel: Kernel) =>
    checkTensor(gpu, 37, 96, 48, { epilogue: s.epilogue, halfWeights: true, kernel, bigX: 1e5 });
  await assertMutantsCaught(subjects, cases, check, "halfWeights: ");
});

tensorTest("gemm_tensor split-K checks catch broken kernels", async (gpu) => {
  // S = 4; as in gemm_test.ts: splits 1 and 3 reduce the k ranges of 0 and 2, or store into their slots.
  const cases: [string, string][] = [
    ["let k_begin = (split * q", "let k_begin = ((split / 2u) * 2u * q"],
    ["y[(split * M + m)", "y[((split / 2u) * 2u * M + m)"],
  ];
  const subgroupSize = tensorSubgroupSize(gpu);
  for (const [from, to] of cases) {
    await assertCaught(async () => {
      for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
        const kernel = mutate(gemmTensorKernelFor({ epilogue, stepK: 16, splitK: 4, subgroupSize }), from, to);
        await checkTensor(gpu, 37, 256, 48, { epilogue, stepK: 16, splitK: 4, kernel, bigX: 1e5 });
      }
    }, `split-K: ${from} -> ${to}`);
  }
});

Deno.test("gemm_tensor split-K: K must hold S k steps; S = 1 is the kernel without split-K", () => {
  checkTensorShape({ rows: 3, k: 11008, n: 16, stepK: 64, splitK: 4 }); // 172 k steps: 43 per split
  checkTensorShape({ rows: 3, k: 11008, n: 16, stepK: 64, splitK: 3 }); // 57, 57 and 58
  checkTensorShape({ rows: 3, k: 192, n: 16, stepK: 64, splitK: 3 }); // one each
  const bad = [{ k: 11008, splitK: 5, stepK: 64 }, { k: 11008, splitK: 16, stepK: 16 }, {
    k: 192,
    splitK: 4,
    stepK: 64,
  }];
  for (const b of bad) {
    let threw = false;
    try {
      checkTensorShape({ rows: 3, n: 16, ...b });
    } catch {
      threw = true;
    }
    if (!threw) throw new Error(`accepted ${JSON.stringify(b)}`);
  }
  for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
    const plain = gemmTensorKernelFor({ epilogue }), one = gemmTensorKernelFor({ epilogue, splitK: 1 });
    if (plain.source !== one.source || /split|k_end/.test(plain.source)) throw new Error("S = 1 differs");
    if (!gemmTensorKernelFor({ epilogue, splitK: 2 }).name.endsWith("_split2")) throw new Error("name lacks S");
  }
});

Deno.test("gemm_tensor takes N a multiple of 16 and K a multiple of its k step, and rejects the rest", () => {
  for (const ok of [{ rows: 1, k: 32, n: 16 }, { rows: 37, k: 11008, n: 4096 }, { rows: 5, k: 48, n: 16, stepK: 16 }]) {
    checkTensorShape(ok);
  }
  const bad = [{ rows: 0, k: 32, n: 16 }, { rows: 3, k: 48, n: 16 }, { rows: 3, k: 32, n: 24 }, {
    rows: 3,
    k: 64,
    n: 16,
    stepK: 128,
  }];
  for (const shape of bad) {
    let threw = false;
    try {
      checkTensorShape(shape);
      resolveTensorTiles(shape);
    } catch {
      threw = true;
    }
    if (!threw) throw new Error(`accepted ${JSON.stringify(shape)}`);
  }
  const refused = [
    { fragsM: 0 },
    { subgroupsN: 9 },
    { stepK: 8 },
    { producers: 9 },
    { producers: 2, buffers: 1 },
    {
      producers: 2,
      ahead: 2,
    },
    { producers: 2, halfWeights: true },
    { ahead: 3 },
    { producers: 2, ahead: 0 },
    { packedWeights: true, halfWeights: true },
    { packedWeights: true, stepK: 128 },
  ];
  for (const tiles of refused) {
    let threw = false;
    try {
      gemmTensorKernelFor(tiles);
    } catch {
      threw = true;
    }
    if (!threw) throw new Error(`generated tiles ${JSON.stringify(tiles)}`);
  }
});

Deno.test("gemm_tensor kernels keep accumulators and staged operands out of function-scope arrays", () => {
  // As for gemm.ts: the only arrays are the bindings and the workgroup buffers; result matrices are named variables.
  for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
    const { name, source } = gemmTensorKernelFor({ epilogue, fragsM: 4, fragsN: 4 });
    const arrays = source.split("\n").filter((l) => l.includes("array<"));
    const stray = arrays.filter((l) => !/^(@group\(0\) @binding\(\d\) var<storage|var<workgroup>)/.test(l));
    if (arrays.length !== 8 || stray.length > 0) throw new Error(`${name} declares arrays: ${stray.join(" | ")}`);
  }
});

tensorTest(
  "gemm_tensor with two k tiles in flight handles odd step counts, and its checks catch a dropped step",
  async (gpu) => {
    // K = 96: three k steps of 32, the loop's second half skipped in its last iteration; K = 32: one step.
    // two buffers, and one (two barriers a step)
    for (const buffers of [2, 1]) {
      for (const [rows, k, n] of [[37, 96, 48], [17, 32, 16], [130, 4096, 80]]) {
        await checkTensor(gpu, rows, k, n, { ahead: 2, buffers, bigX: 1e5 });
        await checkTensor(gpu, rows, k, n, { ahead: 2, buffers, stepK: 16, epilogue: Epilogue.SWIGLU, bigX: 1e5 });
      }
      await checkTensor(gpu, 37, 256, 48, { ahead: 2, buffers, splitK: 2, bigX: 1e5 });
      const kernel = mutate(
        gemmTensorKernelFor({ ahead: 2, buffers, subgroupSize: tensorSubgroupSize(gpu) }),
        "if (k0 + TILE_K < K) {",
        "if (k0 + 2u * TILE_K < K) {",
      );
      await assertCaught(
        () => checkTensor(gpu, 37, 128, 48, { ahead: 2, buffers, kernel }),
        `the last odd step dropped (${buffers} buffers)`,
      );
    }
  },
);

tensorTest(
  "gemm_tensor with no k tile carried across the products (ahead 0) matches, and its checks catch a tile not staged",
  async (gpu) => {
    // K = 96: three k steps of 32; K = 32: one (nothing staged in the loop with two buffers).
    for (const buffers of [1, 2]) {
      for (const [rows, k, n] of [[37, 96, 48], [17, 32, 16], [130, 4096, 80]]) {
        await checkTensor(gpu, rows, k, n, { ahead: 0, buffers, bigX: 1e5 });
        await checkTensor(gpu, rows, k, n, { ahead: 0, buffers, stepK: 16, epilogue: Epilogue.SWIGLU, bigX: 1e5 });
      }
      await checkTensor(gpu, 37, 256, 48, { ahead: 0, buffers, splitK: 2, bigX: 1e5 });
    }
    // each mutant applies to the kernel whose loop has its line: two buffers (the first two) or one (the third)
    const cases: [string, string][] = [
      ["if (k0 + TILE_K < K) {", "if (k0 + 2u * TILE_K < K) {"], // the last tile never staged
      ["let xb = (buf ^ 1u) * X_BUF;", "let xb = buf * X_BUF;"], // staged over the tile being read
      ["px0 = load_x(sx0, k0);", "px0 = load_x(sx0, k0 + TILE_K);"], // x read a k tile ahead
    ];
    const subgroupSize = tensorSubgroupSize(gpu);
    const subjects = [1, 2].map((buffers) => ({
      buffers,
      kernel: gemmTensorKernelFor({ buffers, ahead: 0, subgroupSize }),
    }));
    const check = (s: (typeof subjects)[number], kernel: Kernel) =>
      checkTensor(gpu, 37, 128, 48, { buffers: s.buffers, ahead: 0, kernel, bigX: 1e5 });
    await assertMutantsCaught(subjects, cases, check, "ahead 0: ");
  },
);

tensorTest(
  "gemm_tensor with the last slice deferred past the barrier handles odd step counts, and its checks catch a lost slice",
  async (gpu) => {
    // K = 96: three k steps of 32 (two tiles in flight: the loop's second half skipped in its last iteration); K = 32:
    // one step, whose slice is multiplied only after the loop; K = 16 with k steps of 16: the deferred slice is the step
    for (
      const [deferLast, tiles] of [[1, TENSOR_TILES_SMALL_M], [2, TENSOR_TILES_SMALL_M], [1, {}], [2, {
        buffers: 1,
      }]] as const
    ) {
      for (const [rows, k, n] of [[37, 96, 48], [17, 32, 16], [130, 4096, 80]]) {
        await checkTensor(gpu, rows, k, n, { ...tiles, stepK: 32, deferLast, bigX: 1e5 });
        await checkTensor(gpu, rows, k, n, { ...tiles, stepK: 16, deferLast, epilogue: Epilogue.SWIGLU, bigX: 1e5 });
      }
      await checkTensor(gpu, 37, 256, 48, { ...tiles, stepK: 32, deferLast, splitK: 2, bigX: 1e5 });
    }
    const cases: [string, string][] = [
      // the deferred slice multiplied after the loop dropped (the last step's slice lost)
      ["\n  acc0_0 = subgroupMatrixMultiplyAccumulate(da0, db0, acc0_0);", "\n"],
      // the deferred slice read at the step's first 16 k instead of its last
      [
        "da0 = subgroupMatrixLoad<Left, row_major>(xs, (sm + 0u) * XS + 16u, XS);",
        "da0 = subgroupMatrixLoad<Left, row_major>(xs, (sm + 0u) * XS + 0u, XS);",
      ],
      // the deferred products in the loop dropped (every step but the last loses its last slice)
      ["\n    acc0_1 = subgroupMatrixMultiplyAccumulate(da0, db1, acc0_1);", "\n"],
    ];
    const subgroupSize = tensorSubgroupSize(gpu);
    const subjects = ([1, 2] as const).map((deferLast) => ({
      deferLast,
      kernel: gemmTensorKernelFor({ ...TENSOR_TILES_SMALL_M, stepK: 32, deferLast, subgroupSize }),
    }));
    const check = (s: (typeof subjects)[number], kernel: Kernel) =>
      checkTensor(gpu, 37, 128, 48, { ...TENSOR_TILES_SMALL_M, stepK: 32, deferLast: s.deferLast, kernel, bigX: 1e5 });
    await assertMutantsCaught(subjects, cases, check, "deferLast: ");
  },
);

tensorTest(
  "gemm_tensor with wide stores (one vec4 store a staged item): its checks catch broken kernels",
  async (gpu) => {
    const cases: [string, string][] = [
      ["v[i / 8u] = p;", "v[i / 8u] = p.yxzw;"], // x's elements 0, 1 swapped with 2, 3
      ["vec4<u32>(half2(p.x), half2(p.y),", "vec4<u32>(half2(p.y), half2(p.x),"], // weights likewise
      ["(&staged, X_HALVES * 2u);\n  v[i / 8u] =", "(&staged, 0u);\n  v[i / 8u] ="], // weights staged over x
    ];
    const subgroupSize = tensorSubgroupSize(gpu);
    const subjects = [Epilogue.PLAIN, Epilogue.SWIGLU].map((epilogue) => ({
      epilogue,
      kernel: gemmTensorKernelFor({ epilogue, stepK: 16, wideStores: true, subgroupSize }),
    }));
    const check = (s: (typeof subjects)[number], kernel: Kernel) =>
      checkTensor(gpu, 37, 96, 48, { epilogue: s.epilogue, stepK: 16, wideStores: true, kernel, bigX: 1e5 });
    await assertMutantsCaught(subjects, cases, check, "wideStores: ");
    for (const [rows, k, n] of [[1, 64, 16], [130, 4096, 80]]) {
      await checkTensor(gpu, rows, k, n, { ...TENSOR_TILES.plain, wideStores: true, bigX: 1e5 });
    }
  },
);

tensorTest(
  "gemm_tensor with the epilogue in the staging memory: correct at awkward sizes, and its checks catch broken kernels",
  async (gpu) => {
    // k steps of 32: the SwiGLU's 256 weight rows fit (30,720 bytes)
    const tiles = { ...TENSOR_TILES.plain, stepK: 32, wideStores: true, sharedEpilogue: true };
    const cases: [string, string][] = [
      // each subgroup stores its matrix into its neighbour's slot: the results land in the wrong rows and columns
      ["subgroupMatrixStore<row_major>(es, sg * 256u,", "subgroupMatrixStore<row_major>(es, (sg ^ 1u) * 256u,"],
    ];
    const subgroupSize = tensorSubgroupSize(gpu);
    const subjects = [Epilogue.PLAIN, Epilogue.SWIGLU].map((epilogue) => ({
      epilogue,
      kernel: gemmTensorKernelFor({ ...tiles, epilogue, subgroupSize }),
    }));
    const check = (s: (typeof subjects)[number], kernel: Kernel) =>
      checkTensor(gpu, 37, 128, 144, { ...tiles, epilogue: s.epilogue, kernel, bigX: 1e5 });
    await assertMutantsCaught(subjects, cases, check, "sharedEpilogue: ");
    for (const [rows, k, n] of [[1, 64, 16], [130, 4096, 80], [129, 192, 272]]) {
      await checkTensor(gpu, rows, k, n, { ...tiles, bigX: 1e5 });
    }
  },
);

Deno.test({
  name:
    "gemm_tensor kernels compile under Dawn's WGSL compiler (its null backend: no GPU needed), a broken one fails, and every workgroup variable is a multiple of 16 bytes",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const tiles: TensorTiles[] = [
      {},
      { buffers: 1 },
      { ahead: 2 },
      { stepK: 16, splitK: 4 },
      TENSOR_TILES.plain,
      TENSOR_TILES.swiglu,
      { ...TENSOR_TILES.plain, splitK: 4 },
      { halfWeights: true },
      { halfWeights: true, ahead: 2, splitK: 2 },
      { ...TENSOR_TILES.plain, halfWeights: true },
      { ...TENSOR_TILES.plain, stepK: 128, halfWeights: true },
      { producers: 1 },
      { subgroupsM: 2, subgroupsN: 4, fragsM: 4, fragsN: 2, stepK: 32, buffers: 2, producers: 4, splitK: 2 },
      TENSOR_TILES_LARGE_M,
      { ahead: 0 },
      { ...TENSOR_TILES.plain, ahead: 0, splitK: 4 },
      { wideStores: true },
      { ...TENSOR_TILES.plain, ahead: 0, wideStores: true, splitK: 2 },
      { halfWeights: true, wideStores: true },
      { producers: 2, wideStores: true },
      { wideStores: true, sharedEpilogue: true },
      { ...TENSOR_TILES.plain, ahead: 0, wideStores: true, sharedEpilogue: true, splitK: 2 },
      { stepK: 16, buffers: 1, wideStores: true, sharedEpilogue: true },
      { producers: 2, wideStores: true, sharedEpilogue: true },
      TENSOR_TILES_SMALL_M_SWIGLU,
      { ...TENSOR_TILES_SMALL_M_SWIGLU, splitK: 2 },
      TENSOR_TILES_192,
      { ...TENSOR_TILES_SWIGLU_192, splitK: 2 },
      { ...TENSOR_TILES_SWIGLU_192, splitK: 3 },
      { ...TENSOR_TILES_192, splitK: 3 },
      { ...TENSOR_TILES_SMALL_M, splitK: 4 },
      { ...TENSOR_TILES_SMALL_M, ahead: 2 },
      { ...TENSOR_TILES_SMALL_M_SWIGLU, ahead: 2, packedWeights: true, splitK: 2 },
      { ...TENSOR_TILES_192, packedWeights: true },
      { ...TENSOR_TILES_192, deferLast: 1 },
      { ...TENSOR_TILES_SMALL_M, deferLast: 2, splitK: 2 },
      { ...TENSOR_TILES_SMALL_M_SWIGLU, deferLast: 1, splitK: 4 },
      { halfWeights: true, deferLast: 1 },
    ];
    const kernels = tiles.flatMap((t) =>
      [Epilogue.PLAIN, Epilogue.SWIGLU].map((epilogue) => gemmTensorKernelFor({ ...t, epilogue }))
    );
    // the matrix loads' rows stay 16-byte aligned whatever order the driver lays the workgroup variables out in, and
    // the variables take the bytes gemmTensorWorkgroupBytes reports (the fit checks read it)
    tiles.forEach((t, i) =>
      [Epilogue.PLAIN, Epilogue.SWIGLU].forEach((epilogue, e) => {
        const kernel = kernels[2 * i + e];
        assertWorkgroupVariablesAligned(kernel);
        const sum = workgroupVariables(kernel).reduce((a, [, bytes]) => a + bytes, 0);
        if (sum !== gemmTensorWorkgroupBytes(t, epilogue)) {
          throw new Error(
            `${kernel.name}: ${sum} bytes, gemmTensorWorkgroupBytes ${gemmTensorWorkgroupBytes(t, epilogue)}`,
          );
        }
      })
    );
    const broken = mutate(
      kernels[0],
      "acc0_0 = subgroupMatrixMultiplyAccumulate(a0, b0",
      "acc0_0 = subgroupMatrixMultiplyAccumulate(b0, a0",
    );
    await assertTintCompiles(
      t,
      kernels,
      { K: 4096, N: 4096, M: 128 },
      broken,
      "a kernel with its left and right matrices swapped",
    );
  },
});
