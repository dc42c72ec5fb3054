/**
 * Tiled matrix product with bf16 weights for prefill (more than MATVEC_MAX_ROWS input rows):
 * y[m, n] = sum_k x[m, k] * W[n, k], f32 in, f32 out, f32 accumulation. Same weight layout, epilogues and reference as
 * the matvec (`matvec.ts`); `linear.ts` picks between the two.
 *
 * Past a few rows the product is bound by arithmetic, not by reading the weights, so every staged value is reused
 * from workgroup memory: a workgroup owns a TILE_M x TILE_N tile of y; per step of TILE_K it stages the tile's x rows
 * and weight rows (unpacked to f32) in workgroup memory, then each thread accumulates a BLOCK_M x BLOCK_N register
 * block of outputs from 16-byte reads of the staged rows. With the SWIGLU epilogue a workgroup also stages the up rows
 * of its columns and each thread keeps a second block, so gate, up and the SiLU-multiply are one pass.
 *
 * The WGSL is generated per tile shape and epilogue (`gemmKernelFor`), like the matvec's per row count: accumulators,
 * staged operands and the registers that carry a k tile from global to workgroup memory are named scalars and vectors,
 * and the loops over the register block are unrolled here, in TypeScript. A function-scope array indexed in a loop
 * (`var acc: array<f32, 64>`) can land in local memory: the previous version of this kernel, which kept its
 * accumulators in such arrays, measured ~2 TFLOP/s on an H100. The matrix sizes M, N and K stay override constants.
 *
 * The k loop comes in three pipelines (`GemmPipeline`): "serial" reads a k tile, stages it, computes on it; "prefetch"
 * issues the global reads of the next k tile into registers before computing on the current one, so their latency
 * hides behind the arithmetic; "double" adds a second staging buffer so one barrier per k tile suffices.
 *
 * `math: "f16"` generates the f16-multiply variant (`prefill_math: f16`, for devices with `shader-f16` and no tensor
 * cores from WGSL, i.e. Deno's wgpu): the same tiles and pipelines, with x staged as f16(x * 2^-(e[m] + X_SHIFT)) (e[m]
 * from the `row_scale.ts` pre-pass, as the tensor-core GEMM) and the weights as f16, both as vec4<f16> (half the
 * workgroup bytes of f32); each output's products are accumulated in a vec4<f16> partial (packed f16 FMA) over
 * `flushK` k, then added into its f32 accumulator, and the epilogue scales the rows back by 2^(e[m] + X_SHIFT) (exact)
 * before the SwiGLU. Error analysis: ARCHITECTURE.md, "f16-multiply prefill GEMM (Deno)"; tolerance `f16GemmTolerance`.
 *
 * `splitK: S > 1` (`SPLIT_KS`) generates the split-K variant: S times the workgroups, workgroup (tile, split s) reducing
 * its share of the T = K / tileK k steps, floor(T / S) and one more for the first T mod S splits, and
 * storing its raw partial tile (scaled back, before any SwiGLU) to binding 3, then a `partials [S, M, NW]` f32 scratch
 * (NW = N, or 2N for SWIGLU: gate columns, then up columns), which `split_k_reduce.ts` sums (and SwiGLUs). At M = 128
 * the GEMM is latency-bound per k step (ARCHITECTURE.md, "Split-K"); S = 1 is the kernel above, byte for byte.
 *
 * `columns: [begin, end)` (`productGrid`) computes only those output columns, in whole tiles: unsplit, [0, end)
 * by a smaller grid (the kernel is the same); split, [begin, N) by the override N_BEGIN, the partials then [S, M, NW]
 * with NW = N - begin (2 (N - begin) for SWIGLU). A product's last, partial wave of tiles is so split apart from its
 * full waves (linear.ts, `tailSplitFor`).
 * @module
 */

import type { BufferSlice, Constants, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { Epilogue, matvecReference, type ProductArgs } from "./matvec.ts";
import { range } from "../codegen.ts";

/** Largest register block (outputs per thread along M, and along N) the generator accepts. */
export const GEMM_MAX_BLOCK = 8;

/** Name prefix of the generated kernels (`gemm_bf16_<epilogue>_k<tileK>_t<M>x<N>_b<M>x<N>_<pipeline>`). */
export const GEMM_KERNEL_NAME = "gemm_bf16";

/**
 * How the k loop overlaps reading global memory with arithmetic:
 * - "serial": read a k tile into registers, stage it, barrier, compute, barrier;
 * - "prefetch": stage the k tile read in the previous step, barrier, issue the reads of the next k tile, compute on
 *   the staged one while they are in flight, barrier (same workgroup memory as serial);
 * - "double": as prefetch, but with two staging buffers, the next tile staged while the current one is consumed: one
 *   barrier per k tile, twice the workgroup memory.
 */
export type GemmPipeline = "serial" | "prefetch" | "double";

/** Every pipeline, in the order of the list above. */
export const GEMM_PIPELINES: readonly GemmPipeline[] = ["serial", "prefetch", "double"];

/** The GEMM's arithmetic: "f32" FMA (the default), or "f16" products accumulated into f32 every `flushK` k. */
export const GEMM_MATHS = ["f32", "f16"] as const;
/** One of GEMM_MATHS. */
export type GemmMath = typeof GEMM_MATHS[number];

/** The split-K factors the generators accept (1: no split). */
export const SPLIT_KS: readonly number[] = [1, 2, 3, 4, 8];

/** Throws unless `splitK` is one of SPLIT_KS (`who`: the kernel's name). */
export function checkSplitKFactor(who: string, splitK: number): void {
  if (!SPLIT_KS.includes(splitK)) throw new Error(`${who}: splitK = ${splitK} (one of ${SPLIT_KS.join(", ")})`);
}

/**
 * Throws unless `splitK` is one of SPLIT_KS and K has at least one k step a split (`who`: the kernel's name); the k
 * steps are shared out as evenly as whole steps allow (SPLIT_K_TILE).
 */
export function checkSplitK(who: string, splitK: number, k: number, stepK: number): void {
  checkSplitKFactor(who, splitK);
  if (splitK > 1 && !(k % stepK === 0 && k / stepK >= splitK)) {
    throw new Error(`${who}: K = ${k} has fewer than ${splitK} whole k steps of ${stepK} to split ${splitK} ways`);
  }
}

/**
 * The override constants and workgroups of one dispatch of a tiled product (this GEMM, gemm_tensor.ts) of `tileM` x
 * `tileN` tiles split `splitK` ways, over `a.columns` [begin, end) of its N outputs (default all): unsplit, begin 0 and
 * end a multiple of `tileN` or N (the grid stops there); split, end N and begin a multiple of `tileN` (the override
 * N_BEGIN). Throws on any other range (`who`: the kernel's name).
 */
export function productGrid(
  who: string,
  a: ProductArgs & { columns?: readonly [number, number] },
  tileM: number,
  tileN: number,
  splitK: number,
): { constants: Constants; workgroups: number } {
  const [begin, end] = a.columns ?? [0, a.n];
  const whole = (c: number) => Number.isInteger(c) && c % tileN === 0;
  const ok = whole(begin) && (whole(end) || end === a.n) && 0 <= begin && begin < end && end <= a.n &&
    (splitK > 1 ? end === a.n : begin === 0);
  if (!ok) {
    throw new Error(
      `${who}: columns [${begin}, ${end}) of N = ${a.n}: ${
        splitK > 1 ? `split, [a multiple of ${tileN}, N)` : `unsplit, [0, a multiple of ${tileN} or N)`
      }`,
    );
  }
  return {
    constants: { K: a.k, N: a.n, M: a.rows, GATED: a.gated ?? false, ...(splitK > 1 ? { N_BEGIN: begin } : {}) },
    workgroups: Math.ceil(a.rows / tileM) * Math.ceil((end - begin) / tileN) * splitK,
  };
}

/** The f16 variant's partial flush lengths (k per f16 partial): powers of two, so X_SHIFT below is an integer. */
export const GEMM_FLUSH_KS: readonly number[] = [4, 8, 16, 32];

/**
 * The f16 variant's extra scale-down, on top of the row exponent (which puts a row's max |x| in [2^14, 2^15)): the
 * staged x of a row stay below 2^(15 - X_SHIFT), so that the f16 partial of flushK / 4 products in one vec4 lane, and
 * the pairwise f16 sum of two lanes at the flush, stay below 2^10 * max |w|: finite for every weight |w| < 64 (f16's
 * largest finite is 65504 < 2^16). X_SHIFT = 6 + log2(flushK / 4).
 */
export function gemmXShift(flushK: number): number {
  return 6 + Math.log2(flushK / 4);
}

/** Tile shape of the GEMM (tuning knobs). A workgroup computes a (threadsM * blockM) x (threadsN * blockN) tile. */
export interface GemmTiles {
  /** k staged in workgroup memory per step, a multiple of 8 (default 16). */
  tileK?: number;
  /** Threads of a workgroup along M (default 16). */
  threadsM?: number;
  /** Threads of a workgroup along N (default 16). */
  threadsN?: number;
  /** Output rows per thread, 1..GEMM_MAX_BLOCK (default 4). */
  blockM?: number;
  /** Output columns per thread, 1..GEMM_MAX_BLOCK (default 4). */
  blockN?: number;
  /** How the k loop overlaps global reads with arithmetic (default "prefetch"). */
  pipeline?: GemmPipeline;
  /** Arithmetic: "f32" (default) or "f16" (needs `shader-f16` and the row exponents; see the module comment). */
  math?: GemmMath;
  /** f16 only: k per f16 partial before it is added into f32, one of GEMM_FLUSH_KS dividing tileK (default 8). */
  flushK?: number;
  /**
   * Split-K factor S, one of SPLIT_KS (default 1): with S > 1, K must hold at least S k steps and `y` is the
   * `partials [S, M, NW]` f32 scratch that `splitKReduce` sums (see the module comment).
   */
  splitK?: number;
}

/**
 * The default tiles: 64 x 64 outputs per workgroup of 256 threads, 4 x 4 per thread, K staged 16 at a time with the
 * next k tile prefetched into registers. 15 KiB of workgroup memory with SWIGLU: within the WebGPU default of 16 KiB.
 */
export const GEMM_DEFAULT_TILES: Readonly<Required<GemmTiles>> = {
  tileK: 16,
  threadsM: 16,
  threadsN: 16,
  blockM: 4,
  blockN: 4,
  pipeline: "prefetch",
  math: "f32",
  flushK: 8,
  splitK: 1,
};

/** What `gemmKernelFor` generates a kernel for: the tiles and the epilogue. */
export interface GemmKernelSpec extends GemmTiles {
  /** `Epilogue.PLAIN` (default) or `Epilogue.SWIGLU`. */
  epilogue?: number;
}

/** Arguments of one GEMM dispatch: the product, with tile knobs in place of the matvec's. */
export interface GemmArgs extends ProductArgs, GemmTiles {
  /** math "f16" only: i32 [rows], the exponents `rowScale` computed for x. */
  exponents?: GPUBuffer | BufferSlice;
  /** The output columns [begin, end) to compute (default all; `productGrid` says which ranges). */
  columns?: readonly [number, number];
}

const PIPELINE_COMMENT: Record<GemmPipeline, string> = {
  serial: "read a k tile into registers, stage it, compute on it.",
  prefetch: "stage the k tile read in the previous step, then read the next one while computing.",
  double: "two staging buffers; read the next k tile while computing, stage it in the other buffer.",
};

/** The tiles of `a` with defaults filled in (an explicit `undefined` keeps the default), checked. */
function resolveTiles(a: GemmTiles): Required<GemmTiles> {
  const t = { ...GEMM_DEFAULT_TILES };
  for (const key of Object.keys(GEMM_DEFAULT_TILES) as (keyof GemmTiles)[]) {
    if (a[key] !== undefined) (t as Record<string, unknown>)[key] = a[key];
  }
  if (!(Number.isInteger(t.tileK) && t.tileK > 0 && t.tileK % 8 === 0)) {
    throw new Error(`gemm: tileK = ${t.tileK} is not a positive multiple of 8`);
  }
  for (const [name, v] of [["blockM", t.blockM], ["blockN", t.blockN]] as const) {
    if (!(Number.isInteger(v) && v >= 1 && v <= GEMM_MAX_BLOCK)) {
      throw new Error(`gemm: ${name} = ${v} (1..${GEMM_MAX_BLOCK})`);
    }
  }
  for (const [name, v] of [["threadsM", t.threadsM], ["threadsN", t.threadsN]] as const) {
    if (!(Number.isInteger(v) && v >= 1)) throw new Error(`gemm: ${name} = ${v} (at least 1)`);
  }
  if (!GEMM_PIPELINES.includes(t.pipeline)) {
    throw new Error(`gemm: pipeline "${t.pipeline}" (one of ${GEMM_PIPELINES.join(", ")})`);
  }
  if (!(GEMM_MATHS as readonly string[]).includes(t.math)) {
    throw new Error(`gemm: math "${t.math}" (one of ${GEMM_MATHS.join(", ")})`);
  }
  checkSplitKFactor("gemm", t.splitK);
  if (t.math === "f16" && !(GEMM_FLUSH_KS.includes(t.flushK) && t.tileK % t.flushK === 0)) {
    throw new Error(`gemm: flushK = ${t.flushK} (one of ${GEMM_FLUSH_KS.join(", ")} that divides tileK = ${t.tileK})`);
  }
  return t;
}

/** Output rows and columns of a workgroup's tile, and its k step (defaults: GEMM_DEFAULT_TILES). */
export function gemmTileShape(tiles: GemmTiles = {}): { tileM: number; tileN: number; stepK: number } {
  const t = resolveTiles(tiles);
  return { tileM: t.threadsM * t.blockM, tileN: t.threadsN * t.blockN, stepK: t.tileK };
}

function checkEpilogue(epilogue: number): void {
  if (epilogue !== Epilogue.PLAIN && epilogue !== Epilogue.SWIGLU) {
    throw new Error(`gemm: unknown epilogue ${epilogue}`);
  }
}

/**
 * The generators' shared pieces for staging tiles with `threads` invocations (this GEMM and gemm_tensor.ts): `item(s)`
 * is the WGSL index of an invocation's s-th staged item, `indent` joins non-empty lines under a pad, and `guard` wraps
 * a slot's statement in a bound check where the last slot may run past the `items` of the tile.
 */
export function stagingHelpers(threads: number, index = "t") {
  const item = (s: number) => (s === 0 ? index : `${index} + ${s * threads}u`);
  const indent = (pad: string, lines: string[]) => lines.filter((l) => l !== "").map((l) => pad + l).join("\n");
  const guard = (s: number, items: number, body: string) =>
    (s + 1) * threads > items ? `if (${item(s)} < ${items}u) { ${body} }` : body;
  return { item, indent, guard };
}

/** The WGSL comment on bindings 0-3 that every tiled product (this GEMM, gemm_tensor.ts) shares; `x` its binding 2. */
export function productBindingsDoc(
  swiglu: boolean,
  x = "2 x   [M, K / 4] vec4<f32>       input rows, row-major [M, K] f32",
): string {
  return `// bindings:
//   0 ctl [CTL_SLOTS] u32, read      control block (gate only)
//   1 w   [NW, K / 8] vec4<u32>      bf16 weight, row-major [NW, K], two bf16 per u32 (lower k in the low half);
//                                    NW = ${swiglu ? "2N (rows 0..N-1 gate, N..2N-1 up)" : "N"}
//   ${x}
//   3 y   [M, N] f32, read_write     output rows, row-major`;
}

/** The WGSL comment on the grid of every tiled product: which tile a workgroup owns. */
export const TILE_GRID_DOC =
  `// Grid: ceil(M / TILE_M) * ceil(N / TILE_N) workgroups, flat (Gpu.grid); workgroup f owns rows
// m0 = (f % tiles_m) * TILE_M and columns n0 = (f / tiles_m) * TILE_N, so consecutive workgroups share a weight tile.`;

/** The WGSL comment on the split-K grid and scratch (gemm.ts and gemm_tensor.ts with splitK > 1). */
export function splitKGridDoc(swiglu: boolean): string {
  return `// Split-K, over the columns N_BEGIN.. (a multiple of TILE_N): SPLIT_K times their workgroups; flat workgroup f is
// their tile f % tiles of split s = f / tiles, reducing its share of the K / TILE_K k steps (SPLIT_K_TILE). Binding 3
// is then partials [SPLIT_K, M, NW] f32, NW = ${
    swiglu ? "2 (N - N_BEGIN) (gate columns, then up\n// columns; no SwiGLU here)" : "N - N_BEGIN"
  }: split s's sums, which split_k_reduce.ts adds.`;
}

/** The module-scope declarations of a split-K kernel: its column range, and privates set once before the k loop. */
export const SPLIT_K_PRIVATES = `override N_BEGIN: u32 = 0u; // the first column computed (the partials' column 0)
var<private> split: u32; // this workgroup's split (split-K)
var<private> k_end: u32; // the end of its k range`;

/** The split-K kernels' choice of tile and k range (after tiles_m is known), in WGSL. */
export const SPLIT_K_TILE = `  let first_tile = (N_BEGIN / TILE_N) * tiles_m; // the tiles of the columns before N_BEGIN
  let tiles = tiles_m * ((N + TILE_N - 1u) / TILE_N) - first_tile;
  let flat = flat_workgroup(wid, nwg);
  if (flat >= tiles * SPLIT_K) { return; }
  let tile = first_tile + flat % tiles;
  split = flat / tiles;
  // K / TILE_K steps, q = steps / SPLIT_K a split and one more for the first r = steps % SPLIT_K splits (where r is
  // 0 the range's length folds to the constant q TILE_K: a loop of known trip count)
  let q = (K / TILE_K) / SPLIT_K;
  let r = (K / TILE_K) % SPLIT_K;
  let k_begin = (split * q + min(split, r)) * TILE_K;
  k_end = k_begin + (q + select(0u, 1u, split < r)) * TILE_K;`;

/**
 * WGSL: where a split-K kernel stores output (m, n) of its split's partial, c = 0 (or the up partial's column offset
 * N - N_BEGIN), in the partials [SPLIT_K, M, NW] (SPLIT_K_PRIVATES).
 */
export function splitKPartialIndex(swiglu: boolean): string {
  return `(split * M + m) * ${swiglu ? "2u * (N - N_BEGIN)" : "(N - N_BEGIN)"} + c + n - N_BEGIN`;
}

/**
 * The WGSL that places a workgroup of a tiled product (this GEMM, gemm_tensor.ts): its tile's first row m0 and column
 * n0, and with split-K (SPLIT_K_TILE) its share of K; a workgroup past the grid returns.
 */
export function tileOrigin(split: boolean): string {
  return `  let tiles_m = (M + TILE_M - 1u) / TILE_M;
${
    split ? SPLIT_K_TILE : `  let tile = flat_workgroup(wid, nwg);
  if (tile >= tiles_m * ((N + TILE_N - 1u) / TILE_N)) { return; }`
  }
  let m0 = (tile % tiles_m) * TILE_M;
  let n0 = (tile / tiles_m) * TILE_N;`;
}

/** The name of the kernel generated for `t` and `epilogue` (every generated parameter is in it: it keys the cache). */
function kernelName(t: Required<GemmTiles>, epilogue: number): string {
  const epi = epilogue === Epilogue.SWIGLU ? "swiglu" : "plain";
  const math = t.math === "f16" ? `_f16_flush${t.flushK}` : "";
  const split = t.splitK > 1 ? `_split${t.splitK}` : "";
  return `${GEMM_KERNEL_NAME}_${epi}_k${t.tileK}_t${t.threadsM}x${t.threadsN}_b${t.blockM}x${t.blockN}_${t.pipeline}` +
    math + split;
}

/** Workgroup memory (bytes) the kernel uses with `tiles` and `epilogue`: the staged x and weight rows. */
export function gemmWorkgroupBytes(tiles: GemmTiles = {}, epilogue: number = Epilogue.PLAIN): number {
  const t = resolveTiles(tiles);
  const stride = t.tileK / 4 + 1; // vec4 per staged row
  const weightRows = t.threadsN * t.blockN * (epilogue === Epilogue.SWIGLU ? 2 : 1);
  const buffers = t.pipeline === "double" ? 2 : 1;
  const vec4Bytes = t.math === "f16" ? 8 : 16;
  return vec4Bytes * stride * (t.threadsM * t.blockM + weightRows) * buffers;
}

/**
 * The WGSL kernel for the tiles and epilogue of `spec` (defaults: GEMM_DEFAULT_TILES, PLAIN). Throws on tiles the
 * generator does not handle; device limits (threads, workgroup memory) are checked by `gemm`.
 */
export function gemmKernelFor(spec: GemmKernelSpec = {}): Kernel {
  const t = resolveTiles(spec);
  const epilogue = spec.epilogue ?? Epilogue.PLAIN;
  checkEpilogue(epilogue);
  const swiglu = epilogue === Epilogue.SWIGLU;
  const threads = t.threadsM * t.threadsN;
  const tileM = t.threadsM * t.blockM;
  const tileN = t.threadsN * t.blockN;
  const stride = t.tileK / 4 + 1;
  const xItems = tileM * (t.tileK / 4); // vec4<f32> of x staged per k tile
  const wItems = tileN * (swiglu ? 2 : 1) * (t.tileK / 8); // vec4<u32> (8 bf16) of weight staged per k tile
  const xSlots = range(Math.ceil(xItems / threads));
  const wSlots = range(Math.ceil(wItems / threads));
  const I = range(t.blockM), J = range(t.blockN);
  const double = t.pipeline === "double";
  const f16 = t.math === "f16";
  const vec4 = f16 ? "vec4<f16>" : "vec4<f32>"; // the staged type
  const split = t.splitK > 1;
  const kBegin = split ? "k_begin" : "0u", kEnd = split ? "k_end" : "K"; // this workgroup's k range

  const { item, indent, guard } = stagingHelpers(threads);
  // The global reads of k tile `k0` into this thread's registers (zeros outside the matrices).
  const load = (pad: string, k0: string) =>
    indent(pad, [
      ...xSlots.map((s) =>
        f16 ? `px${s} = vec4<f16>(load_x(sx${s}, ${k0}) * fx${s});` : `px${s} = load_x(sx${s}, ${k0});`
      ),
      ...wSlots.map((s) => `pw${s} = load_w(sw${s}, ${k0});`),
    ]);
  // The registers into the staging buffers (`xb`, `wb`: index prefixes selecting a buffer).
  const store = (pad: string, xb: string, wb: string) =>
    indent(pad, [
      ...xSlots.map((s) => guard(s, xItems, `xs[${xb}sx${s}.dst] = px${s};`)),
      ...wSlots.map((s) => guard(s, wItems, `stage_w(${wb}sw${s}.dst, pw${s});`)),
    ]);
  // The products of the staged k tile (`xb`, `wb`: index prefixes selecting a buffer), 4 k per iteration: every
  // staged weight vec4 of the thread's columns (w<j>, up rows v<j>), then one x vec4 per row of the block against them.
  const compute = (xb: string, wb: string) => f16 ? computeF16(xb, wb) : computeF32(xb, wb);
  const computeF32 = (xb: string, wb: string) =>
    indent("    ", [
      "for (var kk = 0u; kk < TILE_K / 4u; kk++) {",
      `  let xk = ${xb}ty * STRIDE + kk;`,
      `  let wk = ${wb}tx * STRIDE + kk;`,
      ...J.map((j) => `  let w${j} = ws[wk + ${j * t.threadsN * stride}u];`),
      ...(swiglu ? J.map((j) => `  let v${j} = ws[wk + ${(tileN + j * t.threadsN) * stride}u];`) : []),
      ...I.flatMap((i) => [
        "  {",
        `    let xv = xs[xk + ${i * t.threadsM * stride}u];`,
        ...J.map((j) => `    a${i}_${j} = fma4(xv, w${j}, a${i}_${j});`),
        ...(swiglu ? J.map((j) => `    u${i}_${j} = fma4(xv, v${j}, u${i}_${j});`) : []),
        "  }",
      ]),
      "}",
    ]);
  // f16: the same reads, flushK k per iteration (flushK / 4 staged vec4 per row); each output's f16 partial takes the
  // product of the first vec4 (pa<i>_<j> = xv * w<j>: the previous partial was flushed) and the fma of the others,
  // then is added into the f32 accumulator.
  const computeF16 = (xb: string, wb: string) =>
    indent("    ", [
      "for (var kk = 0u; kk < TILE_K / 4u; kk += FLUSH_K / 4u) {",
      `  let xk = ${xb}ty * STRIDE + kk;`,
      `  let wk = ${wb}tx * STRIDE + kk;`,
      ...range(t.flushK / 4).flatMap((q) => [
        "  {",
        ...J.map((j) => `    let w${j} = ws[wk + ${q + j * t.threadsN * stride}u];`),
        ...(swiglu ? J.map((j) => `    let v${j} = ws[wk + ${q + (tileN + j * t.threadsN) * stride}u];`) : []),
        ...I.flatMap((i) => [
          "    {",
          `      let xv = xs[xk + ${q + i * t.threadsM * stride}u];`,
          ...J.map((j) => `      pa${i}_${j} = ${q === 0 ? `xv * w${j}` : `fma(xv, w${j}, pa${i}_${j})`};`),
          ...(swiglu
            ? J.map((j) => `      pu${i}_${j} = ${q === 0 ? `xv * v${j}` : `fma(xv, v${j}, pu${i}_${j})`};`)
            : []),
          "    }",
        ]),
        "  }",
      ]),
      ...I.flatMap((i) => [
        ...J.map((j) => `  a${i}_${j} += flush(pa${i}_${j});`),
        ...(swiglu ? J.map((j) => `  u${i}_${j} += flush(pu${i}_${j});`) : []),
      ]),
      "}",
    ]);

  const loops: Record<GemmPipeline, string> = {
    serial: `  for (var k0 = ${kBegin}; k0 < ${kEnd}; k0 += TILE_K) {
${load("    ", "k0")}
${store("    ", "", "")}
    workgroupBarrier(); // tiles staged
${compute("", "")}
    workgroupBarrier(); // tiles consumed
  }`,
    prefetch: `${load("  ", kBegin)}
  for (var k0 = ${kBegin}; k0 < ${kEnd}; k0 += TILE_K) {
${store("    ", "", "")}
    workgroupBarrier(); // tiles staged
    // The next k tile's reads (zeros past K) are in flight while this one is multiplied.
${load("    ", "k0 + TILE_K")}
${compute("", "")}
    workgroupBarrier(); // tiles consumed
  }`,
    double: `${load("  ", kBegin)}
${store("  ", "", "")}
  workgroupBarrier(); // first tiles staged
  var cur = 0u; // the staging buffer holding k tile k0
  for (var k0 = ${kBegin}; k0 < ${kEnd}; k0 += TILE_K) {
    let next = 1u - cur;
    // The next k tile's reads (zeros past K) are in flight while this one is multiplied.
${load("    ", "k0 + TILE_K")}
${compute("cur * XS_LEN + ", "cur * WS_LEN + ")}
    // The other buffer was consumed before the previous barrier.
${store("    ", "next * XS_LEN + ", "next * WS_LEN + ")}
    workgroupBarrier(); // tiles staged (next) and consumed (cur)
    cur = next;
  }`,
  };

  const name = kernelName(t, epilogue);
  return {
    name,
    source: /* wgsl */ `
// ${name}: y[m, n] = ${swiglu ? "silu(gate[m, n]) * up[m, n]" : "sum_k x[m, k] * W[n, k]"}, tiles generated in.
${productBindingsDoc(swiglu)}${
      f16
        ? "\n//   4 e   [M] i32                    row exponents (row_scale.ts): x is staged as f16(x * 2^-(e[m] + X_SHIFT))"
        : ""
    }
// K must be a multiple of 8; M, N and K need not be multiples of the tile.
${TILE_GRID_DOC}${split ? `\n${splitKGridDoc(swiglu)}` : ""}
// k loop (${t.pipeline}): ${PIPELINE_COMMENT[t.pipeline]}
override K: u32;
override N: u32;
override M: u32;
const TILE_K: u32 = ${t.tileK}u;    // k staged per step
const THREADS_M: u32 = ${t.threadsM}u; // workgroup = THREADS_N x THREADS_M threads
const THREADS_N: u32 = ${t.threadsN}u;
const BLOCK_M: u32 = ${t.blockM}u;     // outputs per thread: BLOCK_M rows x BLOCK_N columns
const BLOCK_N: u32 = ${t.blockN}u;
const TILE_M: u32 = THREADS_M * BLOCK_M;
const TILE_N: u32 = THREADS_N * BLOCK_N;
const W_ROWS: u32 = TILE_N * ${swiglu ? 2 : 1}u;   // staged weight rows: the tile's ${
      swiglu ? "gate rows, then its up rows" : "rows"
    }
const STRIDE: u32 = TILE_K / 4u + 1u; // vec4 per staged row (one of padding, see below)${
      f16
        ? `
const FLUSH_K: u32 = ${t.flushK}u; // k per f16 partial, then added into f32
const X_SHIFT: i32 = ${gemmXShift(t.flushK)}i; // staged x = x * 2^-(e[m] + X_SHIFT): max below 2^${
          15 - gemmXShift(t.flushK)
        }`
        : ""
    }
const XS_LEN: u32 = TILE_M * STRIDE;${split ? `\nconst SPLIT_K: u32 = ${t.splitK}u;` : ""}
const WS_LEN: u32 = W_ROWS * STRIDE;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;${
      f16 ? "\n@group(0) @binding(4) var<storage, read> e: array<i32>;" : ""
    }${split ? `\n${SPLIT_K_PRIVATES}` : ""}
// Staged tiles${double ? " (two buffers, XS_LEN and WS_LEN apart)" : ""}, k-contiguous like the global rows:
// xs[r * STRIDE + c] = x[m0 + r, k0 + 4c .. k0 + 4c + 3]; ws[r * STRIDE + c] = the same k of weight row n0 + r
// (r < TILE_N) or up row N + n0 + r - TILE_N (r >= TILE_N); zero past M, N or K. STRIDE is odd, so 8 consecutive rows
// start in 8 distinct groups of 4 banks: a warp's 16-byte reads of consecutive rows are conflict-free, and so are the
// 16-byte stores of the x tile.${
      f16
        ? `
// f16: xs holds f16(x * 2^-(e[m] + X_SHIFT)), ws f16(W) (exact for 2^-14 <= |w| <= 65504; below, f16 subnormals), as
// vec4<f16> (8 bytes, 2 banks: an odd STRIDE keeps 16 consecutive rows in distinct bank pairs).`
        : ""
    }
var<workgroup> xs: array<${vec4}, ${double ? "2u * " : ""}XS_LEN>;
var<workgroup> ws: array<${vec4}, ${double ? "2u * " : ""}WS_LEN>;

fn bf16x4(a: u32, b: u32) -> vec4<f32> {
  return vec4<f32>(bf16_lo(a), bf16_hi(a), bf16_lo(b), bf16_hi(b));
}

// acc + dot(a, b) as a chain of fused multiply-adds.
fn fma4(a: vec4<f32>, b: vec4<f32>, acc: f32) -> f32 {
  return fma(a.w, b.w, fma(a.z, b.z, fma(a.y, b.y, fma(a.x, b.x, acc))));
}

// One vec4 a thread carries from global to workgroup memory every k tile (fixed for the whole k loop).
struct Slot {
  src: u32, // global vec4 index at k0 = 0
  dst: u32, // staged vec4 index
  k: u32,   // first k it covers, relative to k0
  ok: bool, // inside the tile and the matrix (else zeros are staged, or for an item past the tile nothing)
}

// Staged x item i: row r = i / (TILE_K / 4) of the tile, k0 + 4c .. k0 + 4c + 3 with c = i % (TILE_K / 4).
fn x_slot(i: u32, m0: u32) -> Slot {
  let r = i / (TILE_K / 4u);
  let c = i % (TILE_K / 4u);
  return Slot((m0 + r) * (K / 4u) + c, r * STRIDE + c, 4u * c, r < TILE_M && m0 + r < M);
}

// Staged weight item i: k0 + 8c .. k0 + 8c + 7 of staged row r, the weight row n0 + r, or for r >= TILE_N the up row.
fn w_slot(i: u32, n0: u32) -> Slot {
  let r = i / (TILE_K / 8u);
  let c = i % (TILE_K / 8u);
  let n = n0 + r % TILE_N;
  let row = select(n, n + N, r >= TILE_N);
  return Slot(row * (K / 8u) + c, r * STRIDE + 2u * c, 8u * c, r < W_ROWS && n < N);
}

fn load_x(s: Slot, k0: u32) -> vec4<f32> {
  if (s.ok && k0 + s.k < ${kEnd}) { return x[s.src + k0 / 4u]; }
  return vec4<f32>();
}

fn load_w(s: Slot, k0: u32) -> vec4<u32> {
  if (s.ok && k0 + s.k < ${kEnd}) { return w[s.src + k0 / 8u]; }
  return vec4<u32>();
}

// 8 bf16 of a weight row, unpacked into staged vec4 i and i + 1.
fn stage_w(i: u32, p: vec4<u32>) {${
      f16
        ? `
  ws[i] = vec4<f16>(bf16x4(p.x, p.y));
  ws[i + 1u] = vec4<f16>(bf16x4(p.z, p.w));`
        : `
  ws[i] = bf16x4(p.x, p.y);
  ws[i + 1u] = bf16x4(p.z, p.w);`
    }
}
${
      f16
        ? `
// The factor 2^-(e[m] + X_SHIFT) of staged x item i's row (a power of two: exact; 0 past M).
fn x_factor(i: u32, m0: u32) -> f32 {
  let m = m0 + i / (TILE_K / 4u);
  if (m < M) { return ldexp(1.0, -(e[m] + X_SHIFT)); }
  return 0.0;
}

// The exponent that scales row m's outputs back: e[m] + X_SHIFT (0 past M).
fn row_shift(m: u32) -> i32 {
  if (m < M) { return e[m] + X_SHIFT; }
  return 0i;
}

// An f16 partial into f32: its lanes summed pairwise in f16 (below 2^10 max |w| each, see X_SHIFT), then in f32.
fn flush(p: vec4<f16>) -> f32 {
  let h = p.xy + p.zw;
  return f32(h.x) + f32(h.y);
}
`
        : ""
    }
${
      split
        ? `// Output (m, n) of split \`split\`'s partial (c = 0) or of its up partial (c = N - N_BEGIN), into the scratch.
fn put(m: u32, n: u32, c: u32, v: f32) {
  if (m < M && n < N) { y[${splitKPartialIndex(swiglu)}] = v; }
}`
        : `fn put(m: u32, n: u32, v: f32) {
  if (m < M && n < N) { y[m * N + n] = v; }
}`
    }

// Thread (tx, ty) owns rows m0 + i * THREADS_M + ty and columns n0 + j * THREADS_N + tx (i < BLOCK_M, j < BLOCK_N):
// strided, so a warp reads consecutive staged weight rows and stores consecutive columns of y.
@compute @workgroup_size(THREADS_N, THREADS_M)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
${tileOrigin(split)}
  let tx = lid.x;
  let ty = lid.y;
  // This thread's share of each staged tile (item t + s * ${threads}), and the registers that carry it.
${xSlots.map((s) => `  let sx${s} = x_slot(${item(s)}, m0);`).join("\n")}
${wSlots.map((s) => `  let sw${s} = w_slot(${item(s)}, n0);`).join("\n")}
${f16 ? xSlots.map((s) => `  let fx${s} = x_factor(${item(s)}, m0);`).join("\n") + "\n" : ""}${
      xSlots.map((s) => `  var px${s}: ${vec4};`).join("\n")
    }
${wSlots.map((s) => `  var pw${s}: vec4<u32>;`).join("\n")}
  // a<i>_<j>: the dot product of row m0 + i * THREADS_M + ty and column n0 + j * THREADS_N + tx${
      swiglu ? "\n  // (the gate's), u<i>_<j>: the up product" : ""
    }.
${
      I.map((i) => `  ${J.map((j) => `var a${i}_${j} = 0.0;${swiglu ? ` var u${i}_${j} = 0.0;` : ""}`).join(" ")}`)
        .join("\n")
    }${
      f16
        ? `
  // pa<i>_<j>${swiglu ? ", pu<i>_<j>" : ""}: the f16 partials of the current flushK k.
${
          I.map((i) =>
            `  ${J.map((j) => `var pa${i}_${j}: vec4<f16>;${swiglu ? ` var pu${i}_${j}: vec4<f16>;` : ""}`).join(" ")}`
          ).join("\n")
        }`
        : ""
    }
${loops[t.pipeline]}
  let m = m0 + ty;
  let n = n0 + tx;${
      f16
        ? `
  // Rows scaled back by 2^(e[m] + X_SHIFT) (exact)${swiglu ? ", gate and up before the SwiGLU" : ""}.
${
          I.map((i) =>
            [
              `  let s${i} = row_shift(m + ${i * t.threadsM}u);`,
              ...J.map((j) =>
                `  a${i}_${j} = ldexp(a${i}_${j}, s${i});${swiglu ? ` u${i}_${j} = ldexp(u${i}_${j}, s${i});` : ""}`
              ),
            ].join("\n")
          ).join("\n")
        }`
        : ""
    }
${
      I.map((i) =>
        J.map((j) => {
          const at = `m + ${i * t.threadsM}u, n + ${j * t.threadsN}u`;
          if (split) return `  put(${at}, 0u, a${i}_${j});${swiglu ? ` put(${at}, N - N_BEGIN, u${i}_${j});` : ""}`;
          const v = swiglu ? `a${i}_${j} / (1.0 + exp(-a${i}_${j})) * u${i}_${j}` : `a${i}_${j}`;
          return `  put(${at}, ${v});`;
        }).join("\n")
      ).join("\n")
    }
}
`,
  };
}

/** Records a GEMM dispatch (load time). Throws on shapes or tiles the kernel or the device cannot handle. */
export function gemm(gpu: Gpu, a: GemmArgs, kernel?: Kernel): Dispatch {
  const t = resolveTiles(a);
  const epilogue = a.epilogue ?? Epilogue.PLAIN;
  const limits = gpu.device.limits;
  if (!(a.k > 0 && a.k % 8 === 0)) throw new Error(`gemm: K = ${a.k} is not a positive multiple of 8`);
  checkSplitK("gemm", t.splitK, a.k, t.tileK);
  if (!(Number.isInteger(a.rows) && a.rows >= 1)) throw new Error(`gemm: ${a.rows} rows (at least 1)`);
  if (!(Number.isInteger(a.n) && a.n >= 1)) throw new Error(`gemm: N = ${a.n} (at least 1)`);
  checkEpilogue(epilogue);
  const f16 = t.math === "f16";
  if (f16 && !gpu.has("shader-f16")) {
    throw new Error("gemm: math f16 needs the shader-f16 feature, which this device lacks");
  }
  if (f16 !== (a.exponents !== undefined)) {
    throw new Error(`gemm: math ${t.math} ${f16 ? "needs" : "takes no"} row exponents (rowScale)`);
  }
  if (t.threadsM > limits.maxComputeWorkgroupSizeY || t.threadsN > limits.maxComputeWorkgroupSizeX) {
    throw new Error(
      `gemm: a workgroup of ${t.threadsN} x ${t.threadsM} threads exceeds this device's ` +
        `${limits.maxComputeWorkgroupSizeX} x ${limits.maxComputeWorkgroupSizeY}`,
    );
  }
  if (t.threadsM * t.threadsN > limits.maxComputeInvocationsPerWorkgroup) {
    throw new Error(
      `gemm: a workgroup of ${t.threadsN} x ${t.threadsM} threads exceeds this device's ` +
        `${limits.maxComputeInvocationsPerWorkgroup} threads per workgroup`,
    );
  }
  const bytes = gemmWorkgroupBytes(t, epilogue);
  if (bytes > limits.maxComputeWorkgroupStorageSize) {
    throw new Error(
      `gemm: tiles ${JSON.stringify(t)} need ${bytes} bytes of workgroup memory, more than this device's ` +
        `${limits.maxComputeWorkgroupStorageSize}; use a smaller tileK, block or thread count, or another pipeline`,
    );
  }
  const name = kernelName(t, epilogue);
  if (kernel && !kernel.name.startsWith(name)) {
    throw new Error(`gemm: kernel ${kernel.name} was not generated for these tiles and epilogue (${name})`);
  }
  const grid = productGrid("gemm", a, t.threadsM * t.blockM, t.threadsN * t.blockN, t.splitK);
  return gpu.dispatch(
    kernel ?? gemmKernelFor({ ...t, epilogue }),
    grid.constants,
    f16 ? [a.ctl, a.weight, a.x, a.y, a.exponents!] : [a.ctl, a.weight, a.x, a.y],
    grid.workgroups,
  );
}

/** CPU reference (f64 accumulation): the GEMM computes the same function as the matvec. */
export const gemmReference: typeof matvecReference = matvecReference;

/** What the f16 variant's error bound depends on, per output y = sum_k x_k w_k (see `f16GemmTolerance`). */
export interface F16DotSums {
  /** sum_k |x_k w_k|. */
  sumAbsProducts: number;
  /** sum_k |x_k|. */
  sumAbsX: number;
  /** sum_k |w_k|. */
  sumAbsW: number;
  /** The row's scale 2^(e[m] + X_SHIFT) (`rowScaleExponent` + `gemmXShift`). */
  scale: number;
  /** K. */
  k: number;
}

/**
 * Elementwise tolerance of the f16-multiply GEMM (math "f16") against an f64 reference: twice its worst-case rounding
 * error (ARCHITECTURE.md, "f16-multiply prefill GEMM (Deno)"), with u = 2^-11 (f16's unit roundoff) and F = flushK:
 * (F / 4 + 2 + 2K / (F 2^13)) u sum |x w| (x rounded to f16: u; the F / 4 fma roundings of a vec4 lane's partial and
 * the pairwise lane sum at the flush: (F / 4 + 1) u; the f32 additions of the 2K / F flushed halves: 2^-24 each)
 * + 2^-25 (scale (sum |w| + 2K) + sum |x|) (f16 subnormals, absolute 2^-25 in staged units: staged x of small
 * elements, the K fma and 2K / F pairwise roundings of partials below 2^-14, and weights below 2^-14).
 */
export function f16GemmTolerance(s: F16DotSums, flushK: number): number {
  const u = 2 ** -11;
  const relative = (flushK / 4 + 2 + (2 * s.k) / (flushK * 2 ** 13)) * u * s.sumAbsProducts;
  const subnormal = 2 ** -25 * (s.scale * (s.sumAbsW + 2 * s.k) + s.sumAbsX);
  return 2 * (relative + subnormal) + 1e-30;
}
