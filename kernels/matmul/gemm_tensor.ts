/**
 * Tensor-core GEMM for prefill on Dawn, through WGSL subgroup matrices (`chromium_experimental_subgroup_matrix`):
 * y[m, n] = sum_k x[m, k] * W[n, k], the function of the tiled f32 GEMM (`gemm.ts`) and the matvec, from the outputs
 * of the `row_scale.ts` half pre-pass: the rows as f16, xh[m, k] = f16(x[m, k] * 2^-e[m]), and their exponents e[m];
 * f16 x f16 products accumulated in f32.
 *
 * A workgroup owns a TILE_M x TILE_N tile of y and is SUBGROUPS_M x SUBGROUPS_N subgroups; each subgroup owns
 * FRAGS_M x FRAGS_N 16x16 result matrices (`subgroup_matrix_result<f32, 16, 16>`). Per step of TILE_K the workgroup
 * stages xh rows (copied) and weight rows (bf16 to f16, exact in f16's normal range) in workgroup memory,
 * k-contiguous; each subgroup then loads its 16x16 left matrices (row-major x) and right matrices (the weight rows
 * read column-major: right[k][n] = W[n, k]) and multiply-accumulates. The global reads of the next k tile are issued
 * before the products of the current one (`ahead: 0`: read and stored before them). With 2 buffers (the generator's
 * default) the workgroup memory holds two k tiles: the next one is staged into the other buffer while this one is
 * multiplied, one barrier a k step; with 1, two barriers a step (staged, consumed). Epilogue: each subgroup stores
 * one result matrix at a time to its slice of workgroup memory, and its invocations scale the rows back by 2^e[m]
 * (exact), apply the SwiGLU for that epilogue, and store the elements inside M x N.
 *
 * Why f16 rows from the pre-pass: with x staged as f32 and converted in the k loop, x was two thirds of the bytes a
 * workgroup staged (every N tile re-reads all of x), and the k loop's time followed the bytes staged (~100 TFLOP/s at
 * M = 2,048 with 64 x 64 tiles: L2-bound, docs/PERF.md). Larger tiles cut the re-reads further: bytes staged per
 * output and k are 2 / TILE_N + 2 / TILE_M.
 *
 * Shapes: any M; N a multiple of 16; K a multiple of TILE_K (16, 32, 64 or 128): the OLMo-2 shapes are (K = 2048, 4096,
 * 8192, 11008 = 172 * 64); xh is [M, K] f16, 8 to a vec4<u32>. Subgroups are taken to be consecutive invocations
 * (local_invocation_index / SUBGROUP_SIZE), true on NVIDIA; `tensorGemmUnsupported` requires a fixed subgroup size
 * (min = max) and the f16 16x16x16 config.
 *
 * `splitK: S > 1` generates the split-K variant, as the f32 GEMM's (`gemm.ts`): S times the workgroups, each reducing
 * its share of the k steps (as even as whole steps allow) and storing its partial tile, scaled back by 2^e[m] and
 * before any SwiGLU, to the `partials [S, M, NW]` scratch that `split_k_reduce.ts` sums. S = 1 is the kernel above,
 * byte for byte. `columns` computes a range of the output columns, as the f32 GEMM's (unsplit [0, end) by the grid,
 * split [begin, N)): linear.ts splits a product's last, partial wave of tiles so (`tailSplitFor`).
 *
 * `producers: P > 0` adds P subgroups that only stage k tiles, one ahead, into the other of two buffers while the
 * others only multiply (one barrier a k step), so that staging could overlap the products: measured about half as fast
 * on the H200 (session X; ARCHITECTURE.md), kept as a tested option.
 *
 * `wideStores` stages through one workgroup `buffer` (WGSL `buffer_view`) and `sharedEpilogue` then stores the
 * epilogue's matrices into it, in place of the dead staged tiles.
 *
 * `halfWeights` reads an f16 copy of the weights (`half_weights.ts`) as right matrices straight from global memory and
 * stages only x: measured about half as fast on the H200 (session W; ARCHITECTURE.md), kept as a tested option.
 *
 * `packedWeights` reads the weights in `pack_weights.ts`'s blocks of 16 rows x 64 k (2 KB each) instead of row-major:
 * 2-5% faster at 128 rows on the H200 (session AC), kept as a tested option, off (it needs a second copy of the
 * weights; ARCHITECTURE.md).
 *
 * `deferLast: 1 | 2` multiplies each k step's last 16-k slice after the barrier that ends the step (1) or after the
 * next one too (2, one-buffer loops), its matrices loaded before it: a barrier drains the tensor pipe, and the deferred
 * products give it work meanwhile. 8-10% faster at linear's 192-row tiles, up to 17% at its 128-row ones (session AD).
 *
 * Error analysis and measurements: ARCHITECTURE.md, "Tensor-core prefill GEMM (Dawn)".
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { Epilogue, type ProductArgs } from "./matvec.ts";
import {
  checkSplitK,
  checkSplitKFactor,
  productBindingsDoc,
  productGrid,
  SPLIT_K_PRIVATES,
  splitKGridDoc,
  splitKPartialIndex,
  stagingHelpers,
  TILE_GRID_DOC,
  tileOrigin,
} from "./gemm.ts";
import { range } from "../codegen.ts";
import { PACK_K, PACK_ROWS } from "../weights/pack_weights.ts";

/** Name prefix of the generated kernels (`gemm_tensor_<epilogue>_k<stepK>_s<M>x<N>_f<M>x<N>_w<subgroup size>`). */
export const GEMM_TENSOR_KERNEL_NAME = "gemm_tensor";

/** Side of the square f16 x f16 -> f32 subgroup matrices used (the config every NVIDIA adapter lists). */
const FRAG = 16;

/** f16 elements a staged row is padded by: rows stay 16-byte aligned (cooperative matrix loads need it). */
const PAD = 8;

/**
 * Tile shape of the tensor-core GEMM: a workgroup computes (16 * subgroupsM * fragsM) x (16 * subgroupsN * fragsN),
 * staging k tiles of stepK in `buffers` workgroup buffers.
 */
export interface TensorTiles {
  /** Subgroups of a workgroup along M (default 2). */
  subgroupsM?: number;
  /** Subgroups of a workgroup along N (default 2). */
  subgroupsN?: number;
  /** 16x16 result matrices per subgroup along M (default 2). */
  fragsM?: number;
  /** 16x16 result matrices per subgroup along N (default 2). */
  fragsN?: number;
  /**
   * k staged per step: 16, 32, 64 or 128 (default 32; 128 fits workgroup memory with `halfWeights`); K must be a
   * multiple of it. (The f32 GEMM's knob is `tileK`.)
   */
  stepK?: number;
  /** Split-K factor, one of SPLIT_KS (default 1); with S > 1, K must hold S k steps and `y` is the scratch. */
  splitK?: number;
  /** Staged k tiles in workgroup memory: 2 (default; one barrier a k step) or 1 (two barriers, half the memory). */
  buffers?: number;
  /**
   * k tiles whose global reads are in flight across the products (default 1): with 2 (and 2 buffers) each tile is read
   * two k steps before it is staged, in a second set of registers, the loop taking two steps an iteration; with 0 each
   * tile is read and stored before any products are taken, so no register carries it across them (fewer registers an
   * invocation, so that more workgroups may share a multiprocessor and hide one another's reads; measured 2-4% faster
   * at linear's 128-row tiles on the H200, session Y). With 2 and one buffer the loop also takes two steps an
   * iteration, each tile staged into the one buffer (two barriers a step) from its register set.
   */
  ahead?: number;
  /**
   * Producer subgroups (default 0): with P > 0 the workgroup has P more subgroups that only stage k tiles (global
   * reads, conversion, workgroup stores) while the subgroupsM x subgroupsN others only multiply, on two buffers: the
   * staging of tile k + 1 was to overlap the products of tile k instead of following them; measured about half as
   * fast (needs `buffers: 2`, `ahead: 1`, bf16 weights).
   */
  producers?: number;
  /**
   * One 16-byte workgroup store per staged vec4 (default false: eight f16 stores): the staged tiles live in one
   * workgroup `buffer` (WGSL `buffer_view`, Dawn) that the stores view as vec4<u32> and the matrix loads as f16.
   * Measured on the H200 (session Y) within 0.5% of the eight stores at linear's tiles, both sizes of M: kept as a
   * tested option, off.
   */
  wideStores?: boolean;
  /**
   * The epilogue's result matrices in the staging memory (default false; needs `wideStores`): after the k loop's last
   * barrier the staged tiles are dead, so each subgroup's 16x16 f32 matrix (1 KB) is stored into a view of the same
   * workgroup buffer instead of a buffer of its own: 1 KB a subgroup less. linear's 256-row tile takes it (30,720
   * bytes instead of 47,104; 1% faster on the H200, docs/PERF.md session AA).
   */
  sharedEpilogue?: boolean;
  /**
   * The weights as f16 pairs (a copy made by `half_weights.ts`) instead of bf16 (default false): each subgroup then
   * loads its right matrices straight from global memory (L1/L2), and only the x rows are staged in workgroup memory.
   */
  halfWeights?: boolean;
  /**
   * The weights in the packed layout of `pack_weights.ts` (default false): blocks of PACK_ROWS rows by PACK_K k, each
   * 2 KB contiguous, so that a k step reads a tile's weight rows as whole blocks instead of one 128-byte segment a row
   * 8 KB and more apart. Needs stepK <= PACK_K and K a multiple of PACK_K.
   */
  packedWeights?: boolean;
  /**
   * The last 16-k slice of each k step multiplied after the barrier that ends the step (default 0: before it): its
   * matrices are loaded before the barrier, as the staged tile requires, and their products issued after it (1), or
   * after the next barrier, the one that stages the next tile (2, one-buffer loops; its matrices then stay live across
   * the staging). Each barrier otherwise finds every subgroup's multiply-accumulates drained and nothing to issue until
   * the next matrix loads return: on the H200 the GEMM's k-loop barriers cost 14-28% of its time (session AD).
   */
  deferLast?: number;
}

/** The default tiles: 64 x 64 per workgroup of 4 subgroups, each 32 x 32 (2 x 2 result matrices), k steps of 32. */
export const GEMM_TENSOR_DEFAULT_TILES: Readonly<Required<TensorTiles>> = {
  subgroupsM: 2,
  subgroupsN: 2,
  fragsM: 2,
  fragsN: 2,
  stepK: 32,
  splitK: 1,
  buffers: 2,
  ahead: 1,
  producers: 0,
  wideStores: false,
  sharedEpilogue: false,
  halfWeights: false,
  packedWeights: false,
  deferLast: 0,
};

/** What `gemmTensorKernelFor` generates a kernel for. */
export interface GemmTensorKernelSpec extends TensorTiles {
  /** `Epilogue.PLAIN` (default) or `Epilogue.SWIGLU`. */
  epilogue?: number;
  /** Invocations per subgroup (default 32, NVIDIA's). */
  subgroupSize?: number;
}

/**
 * Arguments of one tensor-core GEMM dispatch: the product, with `x` the half pre-pass's f16 rows [rows, k] (not the
 * f32 input), the row exponents, and tile knobs.
 */
export interface GemmTensorArgs extends ProductArgs, TensorTiles {
  /** i32 [rows]: the exponents `rowScale` computed for x. */
  exponents: GPUBuffer | BufferSlice;
  /** The output columns [begin, end) to compute (default all; gemm.ts `productGrid` says which ranges). */
  columns?: readonly [number, number];
}

/** The tiles of `a` with defaults filled in (an explicit `undefined` keeps the default), checked. */
export function resolveTensorTiles(a: TensorTiles): Required<TensorTiles> {
  const t = { ...GEMM_TENSOR_DEFAULT_TILES };
  for (const key of Object.keys(GEMM_TENSOR_DEFAULT_TILES) as (keyof TensorTiles)[]) {
    if (a[key] !== undefined) (t as Record<keyof TensorTiles, unknown>)[key] = a[key];
  }
  if (![16, 32, 64, 128].includes(t.stepK)) throw new Error(`gemm_tensor: stepK = ${t.stepK} (16, 32, 64 or 128)`);
  checkSplitKFactor("gemm_tensor", t.splitK);
  if (t.buffers !== 1 && t.buffers !== 2) throw new Error(`gemm_tensor: buffers = ${t.buffers} (1 or 2)`);
  if (!(t.ahead === 0 || t.ahead === 1 || t.ahead === 2)) {
    throw new Error(`gemm_tensor: ahead = ${t.ahead} (0, 1 or 2)`);
  }
  if (!(Number.isInteger(t.producers) && t.producers >= 0 && t.producers <= 8)) {
    throw new Error(`gemm_tensor: producers = ${t.producers} (0..8)`);
  }
  if (t.producers > 0 && (t.buffers !== 2 || t.ahead !== 1 || t.halfWeights)) {
    throw new Error("gemm_tensor: producer subgroups need buffers = 2, ahead = 1 and bf16 weights (halfWeights off)");
  }
  if (typeof t.halfWeights !== "boolean") throw new Error(`gemm_tensor: halfWeights = ${t.halfWeights} (a boolean)`);
  if (typeof t.packedWeights !== "boolean") {
    throw new Error(`gemm_tensor: packedWeights = ${t.packedWeights} (a boolean)`);
  }
  if (t.packedWeights && (t.halfWeights || t.stepK > PACK_K)) {
    throw new Error(`gemm_tensor: packedWeights needs bf16 weights (halfWeights off) and stepK <= ${PACK_K}`);
  }
  if (!(t.deferLast === 0 || t.deferLast === 1 || t.deferLast === 2)) {
    throw new Error(`gemm_tensor: deferLast = ${t.deferLast} (0, 1 or 2)`);
  }
  if (t.deferLast && t.producers) throw new Error("gemm_tensor: deferLast needs producers = 0");
  if (t.deferLast === 2 && t.buffers === 2) {
    throw new Error("gemm_tensor: deferLast = 2 needs one buffer (two buffers have one barrier a step: use 1)");
  }
  if (typeof t.wideStores !== "boolean") throw new Error(`gemm_tensor: wideStores = ${t.wideStores} (a boolean)`);
  if (typeof t.sharedEpilogue !== "boolean") {
    throw new Error(`gemm_tensor: sharedEpilogue = ${t.sharedEpilogue} (a boolean)`);
  }
  if (t.sharedEpilogue && !t.wideStores) {
    throw new Error("gemm_tensor: sharedEpilogue needs wideStores (the staged tiles in one workgroup buffer)");
  }
  for (const key of ["subgroupsM", "subgroupsN", "fragsM", "fragsN"] as const) {
    if (!(Number.isInteger(t[key]) && t[key] >= 1 && t[key] <= 8)) {
      throw new Error(`gemm_tensor: ${key} = ${t[key]} (1..8)`);
    }
  }
  return t;
}

function checkEpilogue(epilogue: number): void {
  if (epilogue !== Epilogue.PLAIN && epilogue !== Epilogue.SWIGLU) {
    throw new Error(`gemm_tensor: unknown epilogue ${epilogue}`);
  }
}

/** The name of the kernel generated for `t`, `epilogue` and `subgroupSize` (it keys the pipeline cache). */
function kernelName(t: Required<TensorTiles>, epilogue: number, subgroupSize: number): string {
  const epi = epilogue === Epilogue.SWIGLU ? "swiglu" : "plain";
  return `${GEMM_TENSOR_KERNEL_NAME}_${epi}_k${t.stepK}_s${t.subgroupsM}x${t.subgroupsN}_f${t.fragsM}x${t.fragsN}` +
    `_b${t.buffers}${t.ahead !== 1 ? `_a${t.ahead}` : ""}${t.producers ? `_p${t.producers}` : ""}${
      t.halfWeights ? "_hw" : ""
    }${t.packedWeights ? "_pw" : ""}${t.deferLast ? `_dl${t.deferLast}` : ""}${t.wideStores ? "_ws" : ""}${
      t.sharedEpilogue ? "_se" : ""
    }_w${subgroupSize}` +
    (t.splitK > 1 ? `_split${t.splitK}` : "");
}

/** Output rows and columns of a workgroup's tile, and its k step. */
export function tensorTileShape(tiles: TensorTiles = {}): { tileM: number; tileN: number; stepK: number } {
  const t = resolveTensorTiles(tiles);
  return { tileM: FRAG * t.subgroupsM * t.fragsM, tileN: FRAG * t.subgroupsN * t.fragsN, stepK: t.stepK };
}

/**
 * The kernel's workgroup memory: `buffers` k tiles of staged x and weight rows (f16 elements: `xHalves`, `wHalves`;
 * halfWeights stages no weights) and one f32 16x16 matrix per multiplying subgroup (`resultBytes`); `bytes` in all
 * (with `sharedEpilogue` the matrices reuse the staged tiles' memory: the larger of the two). The generator declares
 * these sizes and the fit checks read `bytes`.
 */
function workgroupLayout(
  t: Required<TensorTiles>,
  epilogue: number,
): { xHalves: number; wHalves: number; resultBytes: number; bytes: number } {
  const { tileM, tileN } = tensorTileShape(t);
  const stride = t.stepK + PAD;
  const xHalves = tileM * stride * t.buffers;
  const wHalves = t.halfWeights ? 0 : tileN * (epilogue === Epilogue.SWIGLU ? 2 : 1) * stride * t.buffers;
  const staged = 2 * (xHalves + wHalves), resultBytes = 4 * FRAG * FRAG * t.subgroupsM * t.subgroupsN;
  const bytes = t.sharedEpilogue ? Math.max(staged, resultBytes) : staged + resultBytes;
  return { xHalves, wHalves, resultBytes, bytes };
}

/**
 * Workgroup memory (bytes) of the kernel: `buffers` k tiles of staged x and weight rows (f16) and one f32 16x16 matrix
 * per subgroup (with `sharedEpilogue` in the same memory: the larger of the two).
 */
export function gemmTensorWorkgroupBytes(tiles: TensorTiles = {}, epilogue: number = Epilogue.PLAIN): number {
  return workgroupLayout(resolveTensorTiles(tiles), epilogue).bytes;
}

/**
 * Why the tensor-core GEMM cannot run on `gpu`, or null when it can: it needs the `chromium-experimental-subgroup-
 * matrix`, `shader-f16` and `subgroups` features, an f16 x f16 -> f32 16x16x16 subgroup-matrix config, and one fixed
 * subgroup size.
 */
export function tensorGemmUnsupported(gpu: Gpu): string | null {
  for (const f of ["chromium-experimental-subgroup-matrix", "shader-f16", "subgroups"]) {
    if (!gpu.has(f)) return `the device lacks ${f}`;
  }
  const info = gpu.adapter.info as unknown as {
    subgroupMinSize?: number;
    subgroupMaxSize?: number;
    subgroupMatrixConfigs?: readonly {
      componentType: string;
      resultComponentType: string;
      M: number;
      N: number;
      K: number;
    }[];
  };
  const configs = info.subgroupMatrixConfigs ?? [];
  if (
    !configs.some((c) =>
      c.componentType === "f16" && c.resultComponentType === "f32" && c.M === FRAG && c.N === FRAG && c.K === FRAG
    )
  ) {
    return `the adapter lists no f16 x f16 -> f32 ${FRAG}x${FRAG}x${FRAG} subgroup matrix config`;
  }
  const max = info.subgroupMaxSize;
  if (!max) return "the adapter does not report its subgroup size";
  if ((info.subgroupMinSize ?? max) !== max) {
    return `the adapter's subgroup size varies (${info.subgroupMinSize}..${max})`;
  }
  return null;
}

/** The subgroup size the kernels are generated for on `gpu` (its fixed subgroup size). */
export function tensorSubgroupSize(gpu: Gpu): number {
  return (gpu.adapter.info as unknown as { subgroupMaxSize?: number }).subgroupMaxSize ?? 32;
}

/** The WGSL kernel for `spec` (defaults: GEMM_TENSOR_DEFAULT_TILES, PLAIN, subgroups of 32). */
export function gemmTensorKernelFor(spec: GemmTensorKernelSpec = {}): Kernel {
  const t = resolveTensorTiles(spec);
  const epilogue = spec.epilogue ?? Epilogue.PLAIN;
  checkEpilogue(epilogue);
  const sgSize = spec.subgroupSize ?? 32;
  if (!(Number.isInteger(sgSize) && sgSize >= 1 && (FRAG * FRAG) % sgSize === 0)) {
    throw new Error(`gemm_tensor: subgroup size ${sgSize} does not divide ${FRAG * FRAG}`);
  }
  const swiglu = epilogue === Epilogue.SWIGLU;
  const subgroups = t.subgroupsM * t.subgroupsN; // the subgroups that multiply
  const producers = t.producers; // and those that only stage (0: every subgroup does both)
  const threads = sgSize * (subgroups + producers);
  const stagers = producers ? sgSize * producers : threads; // invocations that stage k tiles
  const { tileM, tileN } = tensorTileShape(t);
  const xItems = tileM * (t.stepK / 8); // vec4<u32> (8 f16) of xh staged per k tile
  const hw = t.halfWeights; // right matrices straight from global memory: no weight staged
  const wItems = hw ? 0 : tileN * (swiglu ? 2 : 1) * (t.stepK / 8); // vec4<u32> (8 bf16) of weight staged per k tile
  const xSlots = range(Math.ceil(xItems / stagers));
  const wSlots = range(Math.ceil(wItems / stagers));
  const FI = range(t.fragsM), FJ = range(t.fragsN);
  const perLane = range((FRAG * FRAG) / sgSize); // elements of a 16x16 matrix each invocation of a subgroup stores
  const split = t.splitK > 1;
  const kBegin = split ? "k_begin" : "0u", kEnd = split ? "k_end" : "K"; // this workgroup's k range
  const double = t.buffers === 2;
  const ahead2 = t.ahead === 2;
  const ahead0 = t.ahead === 0;
  const wide = t.wideStores; // the staged tiles in one workgroup buffer, stored as vec4<u32>, loaded as f16
  const sharedEs = t.sharedEpilogue; // the epilogue's matrices in that buffer too, once the k loop is done
  const { xHalves, wHalves, resultBytes, bytes } = workgroupLayout(t, epilogue); // f16 of the staged tiles; bytes

  const { item, indent, guard } = stagingHelpers(stagers, producers ? "st" : "t");
  // The global reads of k tile `k0` into this invocation's registers (zeros outside the matrices).
  // `r`: the register set ("p", or "q" for the second tile in flight with ahead = 2).
  const load = (pad: string, k0: string, r = "p") =>
    indent(pad, [
      ...xSlots.map((s) => `${r}x${s} = load_x(sx${s}, ${k0});`),
      ...wSlots.map((s) => `${r}w${s} = load_w(sw${s}, ${k0});`),
    ]);
  // The registers into workgroup memory (buffer `b`: its offsets xb, wb).
  const store = (pad: string, b: string, r = "p") =>
    indent(pad, [
      "{",
      ...(double ? [`  let xb = ${b} * X_BUF;`, ...(hw ? [] : [`  let wb = ${b} * W_BUF;`])] : []),
      ...xSlots.map((s) => "  " + guard(s, xItems, `stage_x(${double ? "xb + " : ""}sx${s}.dst, ${r}x${s});`)),
      ...wSlots.map((s) => "  " + guard(s, wItems, `stage_w(${double ? "wb + " : ""}sw${s}.dst, ${r}w${s});`)),
      "}",
    ]);
  // The products of the staged k tile, 16 k at a time: the subgroup's left matrices (x rows), right matrices (weight
  // rows, and the up rows for SWIGLU), then every result matrix.
  // `xb`, `wb`: the staged buffer's offsets in the matrix loads, as WGSL prefixes ("" for buffer 0 of one); `kx`: the
  // k tile's first k (halfWeights: the right matrices are read from global memory at rows wr<j> / ur<j>).
  const right = (j: number, q: number, wb: string, kx: string, up: boolean) =>
    hw
      ? `subgroupMatrixLoad<Right, col_major>(&w, ${up ? "ur" : "wr"}${j} + ${kx} + ${q * FRAG}u, K)`
      : `subgroupMatrixLoad<Right, col_major>(${wide ? "ws" : "&ws"}, ${wb}(${up ? "TILE_N + " : ""}sn + ${
        j * FRAG
      }u) * XS + ${q * FRAG}u, XS)`;
  // The products of left matrices a<i> and right matrices b<j> (and v<j>, the up rows), prefixed by `p`.
  const products = (p: string) =>
    FI.flatMap((i) =>
      FJ.flatMap((j) => [
        `  acc${i}_${j} = subgroupMatrixMultiplyAccumulate(${p}a${i}, ${p}b${j}, acc${i}_${j});`,
        ...(swiglu ? [`  up${i}_${j} = subgroupMatrixMultiplyAccumulate(${p}a${i}, ${p}v${j}, up${i}_${j});`] : []),
      ])
    );
  // With deferLast the last slice's matrices go to the registers da<i>, db<j>, dv<j>, multiplied by `deferred`.
  const compute = (xb: string, wb: string, kx: string) =>
    range(t.stepK / FRAG).map((q) => {
      const d = t.deferLast && q === t.stepK / FRAG - 1 ? "d" : "";
      const bind = d ? "" : "let ";
      return indent("    ", [
        "{",
        ...(d ? ["  // the last slice: multiplied after the barrier that ends the step (deferLast)"] : []),
        ...FI.map((i) =>
          `  ${bind}${d}a${i} = subgroupMatrixLoad<Left, row_major>(${wide ? "xs" : "&xs"}, ${xb}(sm + ${
            i * FRAG
          }u) * XS + ${q * FRAG}u, XS);`
        ),
        ...FJ.map((j) => `  ${bind}${d}b${j} = ${right(j, q, wb, kx, false)};`),
        ...(swiglu ? FJ.map((j) => `  ${bind}${d}v${j} = ${right(j, q, wb, kx, true)};`) : []),
        ...(d ? [] : products("")),
        "}",
      ]);
    }).join("\n");
  // The deferred slice's products (deferLast), where `at` (1: after the barrier that ends a step, 2: after the one
  // that stages the next tile) is the option's; zero matrices before the first step.
  const deferred = (pad: string, at: number) =>
    t.deferLast === at
      ? `${indent(pad, ["// the previous step's last slice (deferLast)", ...products("d").map((l) => l.trim())])}\n`
      : "";
  // Result matrix (i, j) of the subgroup: through workgroup memory to y, rows scaled back by 2^e[m]. SWIGLU first
  // takes the gate matrix into registers (g<v>), then the up matrix.
  // Split-K stores the gate (or plain) matrix at column offset 0 of the scratch and the up matrix at N, unscaled by
  // any SwiGLU.
  // With producer subgroups only the multiplying subgroups store results: each stretch between two barriers is guarded
  // (every invocation still meets every barrier).
  const phases = (stretches: string[][]) =>
    stretches.flatMap((lines) => [
      ...(producers ? ["  if (!producer) {", ...lines.map((l) => "  " + l), "  }"] : lines),
      "  workgroupBarrier();",
    ]);
  const epilogueOf = (i: number, j: number) => {
    const at = (v: number) => `sg * ${FRAG * FRAG}u + lane + ${v * sgSize}u`;
    const rc = `sm + ${i * FRAG}u, sn + ${j * FRAG}u`;
    const store = (acc: string) =>
      `  subgroupMatrixStore<row_major>(${sharedEs ? "es" : "&es"}, sg * ${FRAG * FRAG}u, ${acc}, ${FRAG}u);`;
    const part = (acc: string, c: string) => [
      [store(acc)],
      perLane.map((v) => `  put(m0, n0, ${rc}, lane + ${v * sgSize}u, ${c}, es[${at(v)}]);`),
    ];
    if (split) {
      return indent("  ", [
        "{",
        ...phases([...part(`acc${i}_${j}`, "0u"), ...(swiglu ? part(`up${i}_${j}`, "N - N_BEGIN") : [])]),
        "}",
      ]);
    }
    return indent("  ", [
      "{",
      // the gate values cross a barrier: declared before it where the stretches are guarded
      ...(swiglu && producers ? perLane.map((v) => `  var g${v}: f32;`) : []),
      ...phases(
        swiglu
          ? [
            [store(`acc${i}_${j}`)],
            perLane.map((v) => `  ${producers ? "" : "let "}g${v} = es[${at(v)}];`),
            [store(`up${i}_${j}`)],
            perLane.map((v) => `  put_swiglu(m0, n0, ${rc}, lane + ${v * sgSize}u, g${v}, es[${at(v)}]);`),
          ]
          : [[store(`acc${i}_${j}`)], perLane.map((v) => `  put(m0, n0, ${rc}, lane + ${v * sgSize}u, es[${at(v)}]);`)],
      ),
      "}",
    ]);
  };

  // The k loop, after which the accumulators hold this workgroup's sums (its first tile's reads included).
  // Two buffers: the next k tile is staged into the other buffer, which every subgroup finished reading before the
  // previous barrier, while this one is multiplied from buffer buf: its reads issued before the products and stored
  // after them, or with ahead 0 read and stored before them. One buffer: staged, then multiplied, two barriers a step.
  const doubleLoop = () =>
    `${load("  ", kBegin)}
${store("  ", "0u")}
  workgroupBarrier(); // the first k tile staged in buffer 0
  var buf = 0u;
  for (var k0 = ${kBegin}; k0 < ${kEnd}; k0 += TILE_K) {
${deferred("    ", 1)}${
      ahead0
        ? `    // The next k tile read and staged into the other buffer (which every subgroup finished reading before the previous
    // barrier) before this one is multiplied from buffer buf: no register carries it across the products.
    if (k0 + TILE_K < ${kEnd}) {
${load("      ", "k0 + TILE_K")}
${store("      ", "(buf ^ 1u)")}
    }`
        : `    // The next k tile's reads (zeros past K) are in flight while this one is multiplied from buffer buf; then it is
    // staged into the other buffer, which every subgroup finished reading before the previous barrier.
${load("    ", "k0 + TILE_K")}`
    }
    let xb = buf * X_BUF;${hw ? "" : "\n    let wb = buf * W_BUF;"}
${compute("xb + ", "wb + ", "k0")}
${ahead0 ? "" : `${store("    ", "(buf ^ 1u)")}\n`}    workgroupBarrier(); // the next tile staged, this one consumed
    buf ^= 1u;
  }`;
  const singleLoop = () =>
    `${ahead0 ? "" : `${load("  ", kBegin)}\n`}  for (var k0 = ${kBegin}; k0 < ${kEnd}; k0 += TILE_K) {
${deferred("    ", 1)}${
      ahead0
        ? `    // Read and staged with no products between: no register carries a k tile across them.
${load("    ", "k0")}
${store("    ", "0u")}
    workgroupBarrier(); // tiles staged`
        : `${store("    ", "0u")}
    workgroupBarrier(); // tiles staged
    // The next k tile's reads (zeros past K) are in flight while this one is multiplied.
${load("    ", "k0 + TILE_K")}`
    }
${deferred("    ", 2)}${compute("", "", "k0")}
    workgroupBarrier(); // tiles consumed
  }`;
  // Two k tiles in flight: two steps an iteration, buffers 0 and 1.
  // Two k tiles in flight, two k steps an iteration; each tile's reads are issued two steps before it is staged. Two
  // buffers: tile k0 + TILE_K is staged into buffer 1 while buffer 0 is multiplied, and back. One buffer: each tile
  // is staged just before its products (two barriers a step), from register sets p and q in turn.
  const ahead2Loop = () => {
    const staged = (pad: string, r: string, what: string) =>
      double ? "" : `${store(pad, "0u", r)}\n${pad}workgroupBarrier(); // ${what} staged\n${deferred(pad, 2)}`;
    return `${load("  ", kBegin)}
${load("  ", `${kBegin} + TILE_K`, "q")}
${
      double
        ? `${store("  ", "0u")}
  workgroupBarrier(); // the first k tile staged in buffer 0, the second in flight
  // Two k steps an iteration, buffers 0 and 1; each tile's reads are issued two steps before they are staged.
`
        : ""
    }  for (var k0 = ${kBegin}; k0 < ${kEnd}; k0 += 2u * TILE_K) {
${deferred("    ", 1)}${staged("    ", "p", "tile k0")}${load("    ", "k0 + 2u * TILE_K")}
${compute("", "", "k0")}
${
      double
        ? `${store("    ", "1u", "q")}
    workgroupBarrier(); // tile k0 + TILE_K staged in buffer 1, buffer 0 consumed`
        : "    workgroupBarrier(); // tile k0 consumed"
    }
    if (k0 + TILE_K < ${kEnd}) {
${deferred("      ", 1)}${staged("      ", "q", "tile k0 + TILE_K")}${load("    ", "k0 + 3u * TILE_K", "q")}
${compute(double ? "X_BUF + " : "", double ? "W_BUF + " : "", "k0 + TILE_K")}
${
      double
        ? `${store("    ", "0u")}
      workgroupBarrier(); // tile k0 + 2 TILE_K staged in buffer 0, buffer 1 consumed`
        : "      workgroupBarrier(); // tile k0 + TILE_K consumed"
    }
    }
  }`;
  };
  // Producer subgroups stage, the others multiply, on two buffers.
  const producerLoop = () =>
    `  if (producer) {
${load("    ", kBegin)}
${store("    ", "0u")}
${load("    ", `${kBegin} + TILE_K`)}
  }
  workgroupBarrier(); // the first k tile staged in buffer 0, the second in flight
  var buf = 0u;
  for (var k0 = ${kBegin}; k0 < ${kEnd}; k0 += TILE_K) {
    if (producer) {
      // The next k tile, read a step ago, into the other buffer (which the multiplying subgroups finished reading
      // before the previous barrier) while they multiply this one; then the reads of the tile after it (zeros past
      // K), in flight across the barrier.
      if (k0 + TILE_K < ${kEnd}) {
${store("        ", "(buf ^ 1u)")}
      }
${load("      ", "k0 + 2u * TILE_K")}
    } else {
      let xb = buf * X_BUF;
      let wb = buf * W_BUF;
${compute("xb + ", "wb + ", "k0").replace(/^/gm, "  ")}
    }
    workgroupBarrier(); // the next tile staged, this one consumed
    buf ^= 1u;
  }`;
  const kLoop = () => producers ? producerLoop() : ahead2 ? ahead2Loop() : double ? doubleLoop() : singleLoop();

  const name = kernelName(t, epilogue, sgSize);
  return {
    name,
    source: /* wgsl */ `
// ${name}: y[m, n] = ${swiglu ? "silu(gate[m, n]) * up[m, n]" : "sum_k x[m, k] * W[n, k]"} on subgroup matrices.
${
      productBindingsDoc(
        swiglu,
        "2 xh  [M, K / 8] vec4<u32>       input rows as f16(x * 2^-e[m]) (row_scale.ts), 8 to a vec4",
      )
    }
//   4 e   [M] i32                    row exponents (row_scale.ts)
// N must be a multiple of 16 and K of TILE_K; M is free.
${TILE_GRID_DOC}${split ? `\n${splitKGridDoc(swiglu)}` : ""}
override K: u32;
override N: u32;
override M: u32;
const TILE_K: u32 = ${t.stepK}u;${split ? `\nconst SPLIT_K: u32 = ${t.splitK}u;` : ""}
const SUBGROUP_SIZE: u32 = ${sgSize}u;
const SUBGROUPS_M: u32 = ${t.subgroupsM}u; // a workgroup is SUBGROUPS_M x ${t.subgroupsN} subgroups
const FRAGS_M: u32 = ${t.fragsM}u; // a subgroup owns FRAGS_M x FRAGS_N 16x16 result matrices
const FRAGS_N: u32 = ${t.fragsN}u;
const TILE_M: u32 = ${tileM}u;
const TILE_N: u32 = ${tileN}u;
${
      hw
        ? ""
        : `const W_ROWS: u32 = ${swiglu ? "2u * TILE_N" : "TILE_N"}; // staged weight rows: the tile's ${
          swiglu ? "gate rows, then its up rows" : "rows"
        }
`
    }// f16 per staged row: TILE_K + 8, a multiple of 8 (16-byte aligned rows, as cooperative matrix loads require) whose
// 8 consecutive rows start in 8 distinct groups of 4 banks (40 halves = 20 banks, 24 = 12, 72 = 36, 136 = 68): the 16-byte
// row segments a 16x16 load reads are conflict-free.
const XS: u32 = TILE_K + ${PAD}u;
const X_BUF: u32 = TILE_M * XS; // f16 of one staged x tile (buffer b starts at b * X_BUF)
${hw ? "" : "const W_BUF: u32 = W_ROWS * XS;\n"}@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> w: ${hw ? "array<f16>; // [NW, K] f16 (half_weights.ts)" : "array<vec4<u32>>;"}
@group(0) @binding(2) var<storage, read> x: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> e: array<i32>;${split ? `\n${SPLIT_K_PRIVATES}` : ""}
${
      hw
        ? `// Buffer b: xs[b * X_BUF + r * XS + c] = xh[m0 + r, k0 + c], zero past M. The weights are not staged. es: one
// 16x16 f32 matrix per subgroup (epilogue).`
        : `// Buffer b: xs[b * X_BUF + r * XS + c] = xh[m0 + r, k0 + c]; ws[b * W_BUF + r * XS + c] = f16(W[row, k0 + c]) of
// weight row n0 + r (r < TILE_N) or up row N + n0 + r - TILE_N; zero past M or N. es: one 16x16 f32 matrix per
// subgroup (epilogue).`
    }
${
      wide
        ? `// xs and ws are views of one buffer (${xHalves} f16 of x tiles, then the weight tiles): stored as vec4<u32>.${
          sharedEs
            ? "\n// After the k loop es, the epilogue's matrices, is a view of it too (at 0: the staged tiles are dead)."
            : ""
        }
const X_HALVES: u32 = ${xHalves}u;
var<workgroup> staged: buffer<${sharedEs ? bytes : bytes - resultBytes}>;`
        : `var<workgroup> xs: array<f16, ${xHalves}>;${
          hw ? "" : `
var<workgroup> ws: array<f16, ${wHalves}>;`
        }`
    }
${
      sharedEs ? "" : `var<workgroup> es: array<f32, ${FRAG * FRAG * subgroups}>;
`
    }alias Left = subgroup_matrix_left<f16, ${FRAG}, ${FRAG}>;
alias Right = subgroup_matrix_right<f16, ${FRAG}, ${FRAG}>;
alias Result = subgroup_matrix_result<f32, ${FRAG}, ${FRAG}>;

// One vec4 an invocation carries from global to workgroup memory every k tile (fixed for the whole k loop).
struct Slot {
  src: u32, // global vec4 index at k0 = 0
  dst: u32, // first staged f16 index
  ok: bool, // inside the matrix (else zeros are staged)
}

// Staged x item i: row r = i / (TILE_K / 8) of the tile, k0 + 8c .. k0 + 8c + 7 with c = i % (TILE_K / 8).
fn x_slot(i: u32, m0: u32) -> Slot {
  let r = i / (TILE_K / 8u);
  let c = i % (TILE_K / 8u);
  return Slot((m0 + r) * (K / 8u) + c, r * XS + 8u * c, m0 + r < M);
}

${
      hw
        ? ""
        : `// Staged weight item i: k0 + 8c .. k0 + 8c + 7 of staged row r, the weight row n0 + r, or for r >= TILE_N the up row.
fn w_slot(i: u32, n0: u32) -> Slot {
  let r = i / (TILE_K / 8u);
  let c = i % (TILE_K / 8u);
  let n = n0 + r % TILE_N;
  let row = select(n, n + N, r >= TILE_N);${
          t.packedWeights
            ? `
  // packed (pack_weights.ts): block (row / PACK_ROWS, k / PACK_K) of PACK_ROWS x PACK_K, row-major inside
  return Slot((row / ${PACK_ROWS}u) * (K / ${PACK_K}u) * ${PACK_ROWS * PACK_K / 8}u + (row % ${PACK_ROWS}u) * ${
              PACK_K / 8
            }u + c, r * XS + 8u * c, n < N);`
            : `
  return Slot(row * (K / 8u) + c, r * XS + 8u * c, n < N);`
        }
}

`
    }// K is a multiple of TILE_K: a k tile is inside K or entirely past it (the prefetch after the last one).
fn load_x(s: Slot, k0: u32) -> vec4<u32> {
  if (s.ok && k0 < ${kEnd}) { return x[s.src + k0 / 8u]; }
  return vec4<u32>();
}

${
      hw ? "" : `fn load_w(s: Slot, k0: u32) -> vec4<u32> {
  if (s.ok && k0 < ${kEnd}) { return w[s.src + ${
        t.packedWeights ? `(k0 / ${PACK_K}u) * ${PACK_ROWS * PACK_K / 8}u + (k0 % ${PACK_K}u) / 8u` : "k0 / 8u"
      }]; }
  return vec4<u32>();
}

`
    }${
      wide
        ? `// 8 f16 of a row (scaled and rounded by the pre-pass), copied in one store.
fn stage_x(i: u32, p: vec4<u32>) {
  let v = bufferView<array<vec4<u32>, ${xHalves / 8}>>(&staged, 0u);
  v[i / 8u] = p;
}

${
          hw
            ? ""
            : `// Two bf16 as two f16 in one u32 (exact for 2^-14 <= |w| <= 65504; below, f16 subnormals: error <= 2^-25).
fn half2(u: u32) -> u32 { return bitcast<u32>(vec2<f16>(f16(bf16_lo(u)), f16(bf16_hi(u)))); }

// 8 bf16 of a weight row as f16, in one store.
fn stage_w(i: u32, p: vec4<u32>) {
  let v = bufferView<array<vec4<u32>, ${wHalves / 8}>>(&staged, X_HALVES * 2u);
  v[i / 8u] = vec4<u32>(half2(p.x), half2(p.y), half2(p.z), half2(p.w));
}

`
        }`
        : `// 8 f16 of a row (scaled and rounded by the pre-pass), copied.
fn stage_x(i: u32, p: vec4<u32>) {
  let a = bitcast<vec2<f16>>(p.x);
  let b = bitcast<vec2<f16>>(p.y);
  let c = bitcast<vec2<f16>>(p.z);
  let d = bitcast<vec2<f16>>(p.w);
  xs[i] = a.x;
  xs[i + 1u] = a.y;
  xs[i + 2u] = b.x;
  xs[i + 3u] = b.y;
  xs[i + 4u] = c.x;
  xs[i + 5u] = c.y;
  xs[i + 6u] = d.x;
  xs[i + 7u] = d.y;
}

${
          hw
            ? ""
            : `// 8 bf16 of a weight row as f16 (exact for 2^-14 <= |w| <= 65504; below, f16 subnormals: error <= 2^-25).
fn stage_w(i: u32, p: vec4<u32>) {
  ws[i] = f16(bf16_lo(p.x));
  ws[i + 1u] = f16(bf16_hi(p.x));
  ws[i + 2u] = f16(bf16_lo(p.y));
  ws[i + 3u] = f16(bf16_hi(p.y));
  ws[i + 4u] = f16(bf16_lo(p.z));
  ws[i + 5u] = f16(bf16_hi(p.z));
  ws[i + 6u] = f16(bf16_lo(p.w));
  ws[i + 7u] = f16(bf16_hi(p.w));
}

`
        }`
    }${
      split
        ? `// Element q (row q / 16, column q % 16) of a result matrix at tile rows r0.., columns c0..: scaled back, stored to
// split \`split\`'s partial at column offset c (0, or N - N_BEGIN for the up matrix).
fn put(m0: u32, n0: u32, r0: u32, c0: u32, q: u32, c: u32, v: f32) {
  let m = m0 + r0 + q / ${FRAG}u;
  let n = n0 + c0 + q % ${FRAG}u;
  if (m < M && n < N) { y[${splitKPartialIndex(swiglu)}] = ldexp(v, e[m]); }
}`
        : swiglu
        ? `// silu(gate) * up, each scaled back by 2^x first.
fn swiglu_val(gate: f32, up: f32, x: i32) -> f32 {
  let g = ldexp(gate, x);
  return g / (1.0 + exp(-g)) * ldexp(up, x);
}

// Element q (row q / 16, column q % 16) of the gate and up matrices at tile rows r0.., columns c0..: scaled back,
// silu(gate) * up stored.
fn put_swiglu(m0: u32, n0: u32, r0: u32, c0: u32, q: u32, gate: f32, up: f32) {
  let m = m0 + r0 + q / ${FRAG}u;
  let n = n0 + c0 + q % ${FRAG}u;
  if (m < M && n < N) { y[m * N + n] = swiglu_val(gate, up, e[m]); }
}`
        : `// Element q (row q / 16, column q % 16) of the result matrix at tile rows r0.., columns c0..: scaled back, stored.
fn put(m0: u32, n0: u32, r0: u32, c0: u32, q: u32, v: f32) {
  let m = m0 + r0 + q / ${FRAG}u;
  let n = n0 + c0 + q % ${FRAG}u;
  if (m < M && n < N) { y[m * N + n] = ldexp(v, e[m]); }
}`
    }

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
${tileOrigin(split)}
  // Subgroup sg = invocations sg * SUBGROUP_SIZE.. (consecutive invocations, as NVIDIA forms them) owns tile rows
  // sm.. and columns sn.. (FRAGS_M x FRAGS_N matrices of 16x16).
  let sg = t / SUBGROUP_SIZE;
  let lane = t % SUBGROUP_SIZE;
  let sm = (sg % SUBGROUPS_M) * (FRAGS_M * ${FRAG}u);
  let sn = (sg / SUBGROUPS_M) * (FRAGS_N * ${FRAG}u);${
      wide
        ? `
  // The staged tiles as f16, for the matrix loads.
  let xs = bufferView<array<f16, X_HALVES>>(&staged, 0u);${
          hw ? "" : `
  let ws = bufferView<array<f16, ${wHalves}>>(&staged, X_HALVES * 2u);`
        }`
        : ""
    }${
      producers
        ? `
  // Subgroups ${subgroups}.. only stage k tiles (the producers; st: their staging index), the others only multiply.
  let producer = sg >= ${subgroups}u;
  let st = t - ${subgroups * sgSize}u;`
        : ""
    }
  // This invocation's share of each staged tile (item ${
      producers ? "st" : "t"
    } + s * ${stagers}), and the registers that carry it.
${xSlots.map((s) => `  let sx${s} = x_slot(${item(s)}, m0);`).join("\n")}
${wSlots.map((s) => `  let sw${s} = w_slot(${item(s)}, n0);`).join("\n")}
${xSlots.map((s) => `  var px${s}: vec4<u32>;`).join("\n")}
${wSlots.map((s) => `  var pw${s}: vec4<u32>;`).join("\n")}${
      hw
        ? "\n  // Right matrix j's first weight row (and up row), times K: clamped into N, whose 16-row blocks lie inside or\n" +
          "  // past it (columns past N are not stored).\n" +
          FJ.map((j) =>
            `  let wr${j} = min(n0 + sn + ${j * FRAG}u, N - ${FRAG}u) * K;` +
            (swiglu ? ` let ur${j} = (N + min(n0 + sn + ${j * FRAG}u, N - ${FRAG}u)) * K;` : "")
          ).join("\n")
        : ""
    }${
      ahead2
        ? "\n" + [
          ...xSlots.map((s) => `  var qx${s}: vec4<u32>;`),
          ...wSlots.map((s) => `  var qw${s}: vec4<u32>;`),
        ].join("\n")
        : ""
    }
  // acc<i>_<j>: rows sm + 16i.., columns sn + 16j.. of the tile${swiglu ? " (gate); up<i>_<j>: the up product" : ""}.
${
      FI.map((i) =>
        `  ${FJ.map((j) => `var acc${i}_${j} = Result();${swiglu ? ` var up${i}_${j} = Result();` : ""}`).join(" ")}`
      )
        .join("\n")
    }${
      t.deferLast
        ? `
  // The deferred slice's matrices (deferLast): zeros until the first k step loads them.
  ${
          [
            ...FI.map((i) => `var da${i} = Left();`),
            ...FJ.map((j) => `var db${j} = Right();`),
            ...(swiglu ? FJ.map((j) => `var dv${j} = Right();`) : []),
          ].join(" ")
        }`
        : ""
    }
${kLoop()}${t.deferLast ? `\n${deferred("  ", t.deferLast).trimEnd()}` : ""}${
      sharedEs
        ? `
  // The k loop ended on a barrier: every subgroup is done with the staged tiles, whose memory now holds es.
  let es = bufferView<array<f32, ${FRAG * FRAG * subgroups}>>(&staged, 0u);`
        : ""
    }
${FI.flatMap((i) => FJ.map((j) => epilogueOf(i, j))).join("\n")}
}
`,
  };
}

/**
 * Throws unless the kernel handles the shape: N a multiple of 16, K a multiple of the k step (stepK) and, split
 * splitK ways, K / splitK too, rows >= 1.
 */
export function checkTensorShape(a: { rows: number; k: number; n: number; stepK?: number; splitK?: number }): void {
  const stepK = a.stepK ?? GEMM_TENSOR_DEFAULT_TILES.stepK;
  if (!(Number.isInteger(a.rows) && a.rows >= 1)) throw new Error(`gemm_tensor: ${a.rows} rows (at least 1)`);
  if (!(a.n > 0 && a.n % FRAG === 0)) throw new Error(`gemm_tensor: N = ${a.n} is not a positive multiple of ${FRAG}`);
  if (!(a.k > 0 && a.k % stepK === 0)) {
    throw new Error(`gemm_tensor: K = ${a.k} is not a positive multiple of the k step ${stepK}`);
  }
  checkSplitK("gemm_tensor", a.splitK ?? 1, a.k, stepK);
}

/** Records a tensor-core GEMM dispatch (load time). Throws on shapes or tiles the kernel or the device cannot run. */
export function gemmTensor(gpu: Gpu, a: GemmTensorArgs, kernel?: Kernel): Dispatch {
  const t = resolveTensorTiles(a);
  const epilogue = a.epilogue ?? Epilogue.PLAIN;
  checkEpilogue(epilogue);
  checkTensorShape({ ...a, stepK: t.stepK, splitK: t.splitK });
  if (t.packedWeights && a.k % PACK_K !== 0) {
    throw new Error(`gemm_tensor: packedWeights needs K = ${a.k} to be a multiple of ${PACK_K}`);
  }
  const unsupported = tensorGemmUnsupported(gpu);
  if (unsupported) throw new Error(`gemm_tensor: cannot run here: ${unsupported}`);
  const sgSize = tensorSubgroupSize(gpu);
  const limits = gpu.device.limits;
  const threads = sgSize * (t.subgroupsM * t.subgroupsN + t.producers);
  if (threads > limits.maxComputeInvocationsPerWorkgroup || threads > limits.maxComputeWorkgroupSizeX) {
    throw new Error(`gemm_tensor: a workgroup of ${threads} invocations exceeds this device's limits`);
  }
  const bytes = gemmTensorWorkgroupBytes(t, epilogue);
  if (bytes > limits.maxComputeWorkgroupStorageSize) {
    throw new Error(
      `gemm_tensor: tiles ${JSON.stringify(t)} need ${bytes} bytes of workgroup memory, more than this device's ` +
        `${limits.maxComputeWorkgroupStorageSize}; use a smaller stepK or fewer subgroups or result matrices`,
    );
  }
  const name = kernelName(t, epilogue, sgSize);
  if (kernel && !kernel.name.startsWith(name)) {
    throw new Error(`gemm_tensor: kernel ${kernel.name} was not generated for these tiles and epilogue (${name})`);
  }
  const { tileM, tileN } = tensorTileShape(t);
  const grid = productGrid("gemm_tensor", a, tileM, tileN, t.splitK);
  return gpu.dispatch(
    kernel ?? gemmTensorKernelFor({ ...t, epilogue, subgroupSize: sgSize }),
    grid.constants,
    [a.ctl, a.weight, a.x, a.y, a.exponents],
    grid.workgroups,
  );
}

/**
 * Elementwise tolerance of the tensor-core GEMM against an f64 reference, from its rounding (ARCHITECTURE.md):
 * |y - y_ref| <= 2^-10 * sum_k |x_k w_k| + 2^-24 * sum_k |x_k|, given the two sums of an output's dot product. The
 * first term is twice the worst case of rounding x to f16 (unit roundoff 2^-11; the rows are scaled into f16's normal
 * range), leaving as much again for the f32 accumulation; the second is twice the worst case of weights in f16's
 * subnormal range (|w| < 2^-14, error <= 2^-25).
 */
export function tensorGemmTolerance(sumAbsProducts: number, sumAbsX: number): number {
  return 2 ** -10 * sumAbsProducts + 2 ** -24 * sumAbsX + 1e-30;
}
