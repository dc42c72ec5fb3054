/**
 * One entry point for a bf16 linear layer y = x W^T (optionally with the SwiGLU epilogue): the matvec for up to
 * MATVEC_MAX_ROWS input rows (decode, speculative verification); above, the prefill GEMM: the tensor-core one
 * (`gemm_tensor.ts`, after its row-scale pre-pass) on a device that can run it (Dawn with subgroup matrices), else the
 * tiled GEMM (`gemm.ts`) in f32, or with `prefillMath: "f16"` (the bench's `prefill_math` knob) its f16-multiply
 * variant after the same pre-pass. Model code calls `linear` and never chooses; every kernel reads the same weight
 * layout and computes the same function (`matvecReference`), the tensor-core and f16 ones with f16 inputs
 * (ARCHITECTURE.md, "Tensor-core prefill GEMM (Dawn)" and "f16-multiply prefill GEMM (Deno)").
 *
 * Precedence: `HYDRA_PREFILL_GEMM=fma|fma16|tensor` (or the `prefillGemm` argument) forces one for A/B measurements;
 * else the tensor-core GEMM wherever it can run, whatever `prefillMath` says (it multiplies f16 already, at tensor-core
 * speed); else `prefillMath` picks fma (f32, the default) or fma16. Forcing `tensor`, or asking for f16 on a device
 * without `shader-f16`, is a UserError that says why.
 *
 * GEMM tiles, measured on an H100 at the 7B prefill shapes (M = 128, docs/PERF.md): the default 64x64 tile, or 64x32
 * (twice the workgroups) for N <= 4096, 7% faster there (o, down). Up to SMALL_M_ROWS rows (a chat prompt just past
 * the matvec), tiles of 24 or 32 rows instead of 64 (`fmaTilesFor`, measured on the H200). A plain GEMM over the 2N
 * gate/up rows followed by a separate SwiGLU pass was measured too and was 8% slower than the GEMM's SwiGLU epilogue,
 * so there is none.
 *
 * Split-K (`splitKFor`): the GEMM split S ways along K into a scratch of partial sums shared by every layer, then
 * `split_k_reduce.ts`. Automatic for the FMA GEMMs where a product has too few output tiles to fill the GPU: S = 4 or
 * 2, the largest that keeps the grid within SPLIT_K_WORKGROUPS (1,536 workgroups of 64 x 64 tiles) and K / S in whole
 * k steps. Measured on the H200 (docs/PERF.md, 2026-11-30 evening), Deno, 7B shapes at M = 128: 64 x 64 tiles split
 * 4 ways against the unsplit default tiles, down 607 -> 452 us, o 226 -> 175, gate_up 909 -> 810, qkv 519 -> 506 (a
 * layer 2.26 -> 1.94 ms); end to end, 7B TTFT at 128 tokens 74.7 -> 64.8 ms (2,048 tokens: every product has enough
 * tiles, unsplit, 1,108 ms either way). For the tensor-core GEMM only products of at most 64 tiles split (a grid of
 * at most 128 workgroups): with its 128 x 128 tiles at M = 128 the 7B down and o have 32 tiles; split 4 ways, down
 * took 258 -> 95 us (H200, Dawn, session V); qkv's 96 tiles were fastest unsplit (117 us against 129 split 4 and 139
 * split 2). `splitK` or `HYDRA_SPLIT_K=<S>` forces a factor (1: never) for A/B runs.
 *
 * Past TENSOR_SMALL_M_ROWS rows an unsplit tensor-core product whose last wave of tiles is partial may have that wave
 * split apart (`tailSplitFor`: the full waves' columns unsplit, the rest split S ways and reduced): the 7B's down and
 * gate_up at 2,048 rows, 0.5-1.0 ms a pass on the H200 (session AK). `tailSplit` or `HYDRA_TAIL_SPLIT=0` overrides it.
 * @module
 */

import { UserError } from "../../common/errors.ts";
import { numberChoiceFromEnv } from "../../common/env.ts";
import { type Dispatch, type Gpu, hasWgslFeature } from "../runtime.ts";
import { gemm, type GemmTiles, gemmTileShape, SPLIT_KS } from "./gemm.ts";
import {
  checkTensorShape,
  GEMM_TENSOR_DEFAULT_TILES,
  gemmTensor,
  gemmTensorWorkgroupBytes,
  resolveTensorTiles,
  tensorGemmUnsupported,
  type TensorTiles,
  tensorTileShape,
} from "./gemm_tensor.ts";
import { Epilogue, matvec, MATVEC_MAX_ROWS, type MatvecArgs } from "./matvec.ts";
import { type HalfRows, rowScale } from "./row_scale.ts";
import { splitKReduce } from "./split_k_reduce.ts";

/**
 * The prefill GEMMs: `fma` (gemm.ts, f32 arithmetic), `fma16` (gemm.ts with math "f16": f16 products, f32 partial
 * sums) and `tensor` (gemm_tensor.ts, f16 subgroup matrices).
 */
export const PREFILL_GEMMS = ["fma", "fma16", "tensor"] as const;
/** One of PREFILL_GEMMS. */
export type PrefillGemm = typeof PREFILL_GEMMS[number];

/** The environment variable that forces the prefill GEMM (A/B measurements); unset: automatic. */
export const PREFILL_GEMM_ENV = "HYDRA_PREFILL_GEMM";

/** The environment variable that splits the prefill GEMMs' K S ways (A/B measurements); unset: `splitK`, else 1. */
export const SPLIT_K_ENV = "HYDRA_SPLIT_K";

/** The prefill GEMM's arithmetic where no tensor cores run it (`prefill_math`): f32 FMA, or f16 products. */
export const PREFILL_MATHS = ["f32", "f16"] as const;
/** One of PREFILL_MATHS. */
export type PrefillMath = typeof PREFILL_MATHS[number];

/**
 * The tensor GEMM's knobs `linear` does not take from its caller: `halfWeights` and `packedWeights` read a copy of
 * the weights (`linear` has the row-major bf16 ones); `wideStores` and `sharedEpilogue` belong to a tile (linear's own
 * set them where they measured faster, TENSOR_TILES_192 and its siblings, and only where the runtime has buffer views).
 */
const TENSOR_KNOBS_NOT_TAKEN = ["halfWeights", "packedWeights", "wideStores", "sharedEpilogue"] as const;

/** The tensor GEMM's tile knobs that `linear` takes (all but TENSOR_KNOBS_NOT_TAKEN). */
type LinearTensorTiles = Omit<TensorTiles, typeof TENSOR_KNOBS_NOT_TAKEN[number]>;

/** Arguments of `linear`: the matvec's, plus each GEMM's tile knobs (each kernel reads only its own knobs). */
export type LinearArgs = MatvecArgs & Omit<GemmTiles, "math"> & LinearTensorTiles & {
  /** Forces the prefill GEMM (default: HYDRA_PREFILL_GEMM, else automatic). */
  prefillGemm?: PrefillGemm;
  /** The automatic choice where the tensor-core GEMM cannot run: fma (f32, default) or fma16 (f16). */
  prefillMath?: PrefillMath;
  /** Split-K factor of the prefill GEMM, one of SPLIT_KS (default: HYDRA_SPLIT_K, else automatic: `splitKFor`). */
  splitK?: number;
  /**
   * x's exponents and f16 rows are already written, to these buffers, which must be `linearPlan`'s `halfRows` (the
   * post-norm before wrote them, rmsnorm's `half`): the tensor-core GEMM reads them and records no pre-pass. Only where
   * `linearPlan` gives `halfRows`.
   */
  halfRowsWritten?: HalfRows;
  /**
   * With split-K, leave the partial sums in `linearPlan`'s `partials` for the dispatch after (a post-norm that sums
   * them, rmsnorm's `splitK`) and record no reduction; `y` is then not written. PLAIN epilogue only.
   */
  leavePartials?: boolean;
  /**
   * The tensor-core GEMM's last wave split apart (`TailSplit`): given, that split (null: none); else none with
   * HYDRA_TAIL_SPLIT=0, else automatic (`tailSplitFor`).
   */
  tailSplit?: TailSplit | null;
};

/** What `linear`'s choices read of its arguments: everything but the buffers. */
export type LinearShape = Omit<LinearArgs, "ctl" | "weight" | "x" | "y" | "halfRowsWritten">;

/**
 * What `linear` records for `a`, for the dispatches beside it to take over its pre-pass and reduction: the kernel, the
 * split-K factor, the partial-sum scratch it writes with split-K (`partials`, f32 [splitK, rows, NW]), and, for the
 * tensor-core GEMM, the exponents (i32 [rows]) and f16 rows ([rows, k]) its pre-pass writes and it reads (`halfRows`).
 * The buffers are shared by every layer of the Gpu (`sharedScratch`).
 */
export interface LinearPlan {
  kernel: PrefillGemm | "matvec";
  splitK: number;
  partials?: GPUBuffer;
  halfRows?: HalfRows;
  /** The tensor-core GEMM's last wave, split apart (`tailSplitFor`); the product itself is then unsplit. */
  tailSplit?: TailSplit;
}

/**
 * A product's last, partial wave of tensor-core tiles split apart from its full waves: the GEMM computes the columns
 * before `columns` (whole column tiles, a whole number of waves) unsplit, then the columns from `columns` on split
 * `splitK` ways into the partial scratch, which `split_k_reduce.ts` sums into y (and SwiGLUs).
 */
export interface TailSplit {
  columns: number;
  splitK: number;
}

/** The environment variable that turns the tail split off (0) or leaves it automatic (1, or unset) for A/B runs. */
export const TAIL_SPLIT_ENV = "HYDRA_TAIL_SPLIT";

/** The split factors `tailSplitFor` weighs. */
const TAIL_SPLIT_KS = [2, 3, 4];

/**
 * What `tailSplitFor` charges the split for beyond its tiles: the two more dispatches (~5 us each on Dawn inside a pass,
 * session AG) and the partial sums' bytes, written and read once at ~3,000 GB/s (the H200 copies ~4,200).
 */
const TAIL_DISPATCH_US = 5;
const TAIL_BYTES_PER_US = 3e6;

/**
 * The least time a tail split must save, as a share of one workgroup's (a tile's) time, for `tailSplitFor` to take it.
 * Measured on the H200 (session AL, pass A/B at 2,048 tokens): at 0 the 7B's o splits too and its pass took 0.3-0.7 ms
 * longer.
 */
const TAIL_MIN_SAVING = 0.1;

/**
 * The tail split of a product of `rows` x `n` outputs (K = `k`) on `tiles` that run at `rate` TFLOP/s over full waves
 * of `sms` SMs (the wave model, `byWaves`), or null where none saves TAIL_MIN_SAVING of a tile's time. A grid of G
 * workgroups, one an SM, takes ceil(G / sms) waves of one tile's time T each, so its last wave costs a whole T however
 * few of its tiles there are (the 7B's down at 2,048 rows: 352 tiles of 192 x 128, 2.67 waves, 3 T). Split S ways,
 * those tiles take ceil(S tail / sms) waves of T / S (whole k steps: ceil(steps / S) / steps), plus the reduction.
 */
export function tailSplitFor(
  rows: number,
  n: number,
  k: number,
  epilogue: number,
  tiles: TensorTiles,
  rate: number,
  sms: number = TENSOR_WAVE_SMS,
): TailSplit | null {
  const { tileM, tileN, stepK } = tensorTileShape(tiles);
  const weightRows = epilogue === Epilogue.SWIGLU ? 2 : 1; // per output column
  const tileUs = 2 * tileM * tileN * weightRows * k * sms / (rate * 1e6);
  const tilesM = Math.ceil(rows / tileM), tilesN = Math.ceil(n / tileN);
  const grid = tilesM * tilesN;
  const fullCols = Math.floor(Math.floor(grid / sms) * sms / tilesM); // column tiles inside the full waves
  if (fullCols === 0 || fullCols >= tilesN) return null;
  const columns = fullCols * tileN, steps = k / stepK;
  const unsplit = Math.ceil(grid / sms) * tileUs;
  const cost = (s: number) =>
    Math.ceil(fullCols * tilesM / sms) * tileUs +
    Math.ceil((tilesN - fullCols) * tilesM * s / sms) * tileUs * Math.ceil(steps / s) / steps +
    2 * TAIL_DISPATCH_US + 2 * s * rows * (n - columns) * weightRows * 4 / TAIL_BYTES_PER_US;
  const best = TAIL_SPLIT_KS.filter((s) => steps >= s).map((s) => ({ s, us: cost(s) }))
    .sort((a, b) => a.us - b.us)[0];
  return best && best.us <= unsplit - TAIL_MIN_SAVING * tileUs ? { columns, splitK: best.s } : null;
}

/** The H200 rate (TFLOP/s, full waves) the wave model has for `tiles` (one of WAVE_CANDIDATES), else undefined. */
function waveRate(tiles: TensorTiles, epilogue: number): number | undefined {
  const key = (t: TensorTiles) => JSON.stringify(resolveTensorTiles(t));
  return WAVE_CANDIDATES[epilogue === Epilogue.SWIGLU ? "swiglu" : "plain"].find((c) => key(c.tiles) === key(tiles))
    ?.rate;
}

/**
 * The tail split `linear` records for `a` on `tiles` (the tensor-core GEMM, unsplit): `a.tailSplit` where given, none
 * with HYDRA_TAIL_SPLIT=0, else `tailSplitFor` above TENSOR_SMALL_M_ROWS rows on the wave model's tiles.
 */
function tailSplitOf(a: LinearShape, tiles: TensorTiles): TailSplit | undefined {
  if (a.tailSplit !== undefined) return a.tailSplit ?? undefined;
  if (numberChoiceFromEnv(TAIL_SPLIT_ENV, [0, 1], "a tail split switch") === 0) return undefined;
  const epilogue = a.epilogue ?? Epilogue.PLAIN;
  const rate = waveRate(tiles, epilogue);
  if (a.rows <= TENSOR_SMALL_M_ROWS || rate === undefined) return undefined;
  return tailSplitFor(a.rows, a.n, a.k, epilogue, tiles, rate) ?? undefined;
}

/**
 * Most workgroups the automatic split-K grows a prefill GEMM's grid to (module comment: measured on the H200 at the 7B
 * shapes, M = 128).
 */
export const SPLIT_K_WORKGROUPS: Readonly<Record<PrefillGemm, number>> = { fma: 1536, fma16: 1536, tensor: 128 };

/**
 * The factors the automatic split-K picks from, largest first: 8 was never measured faster at M = 128, but with the
 * small-M tiles it was (`SMALL_M_ROWS`).
 */
const AUTO_SPLIT_KS = [4, 2];
const AUTO_SPLIT_KS_SMALL_M = [8, 4, 2];

/**
 * Most rows the FMA GEMMs' small-M tiles serve (`fmaTilesFor`): a chat-length prompt just past the matvec's
 * MATVEC_MAX_ROWS, such as PoE's default prompt (23 tokens), which every PoE call prefills through trunk and heads.
 */
export const SMALL_M_ROWS = 32;

/**
 * Least K a split keeps with the automatic split-K (the measured ones kept 1,024 and more; the 1B's 2,048 / 4); with
 * the small-M tiles 256 (the 1B's 2,048 / 8: its layer at M = 32 271 -> 242 us against 4 ways, at M = 23 202 -> 198).
 */
const SPLIT_K_MIN_SHARE = 512;
const SPLIT_K_MIN_SHARE_SMALL_M = 256;

/**
 * The split-K factor of `a` on the prefill GEMM `which`: HYDRA_SPLIT_K, else `a.splitK`, else automatic (the env var
 * wins, for A/B runs). Automatic: the largest of AUTO_SPLIT_KS (AUTO_SPLIT_KS_SMALL_M for the FMA GEMMs up to
 * SMALL_M_ROWS rows) whose grid (`tiles` output tiles times S) stays within SPLIT_K_WORKGROUPS[which], whose K / S is
 * whole k steps of `stepK` and at least SPLIT_K_MIN_SHARE (SPLIT_K_MIN_SHARE_SMALL_M), and whose partial scratch fits
 * one storage binding; else 1.
 */
export function splitKFor(
  gpu: Gpu,
  a: LinearShape,
  which: PrefillGemm,
  tiles: { tileM: number; tileN: number; stepK: number },
): number {
  const forced = numberChoiceFromEnv(SPLIT_K_ENV, SPLIT_KS, "a split-K factor");
  if (forced !== undefined) return forced;
  if (a.splitK !== undefined) return a.splitK;
  const grid = Math.ceil(a.rows / tiles.tileM) * Math.ceil(a.n / tiles.tileN);
  const smallM = which !== "tensor" && a.rows <= SMALL_M_ROWS;
  const [factors, minShare] = smallM
    ? [AUTO_SPLIT_KS_SMALL_M, SPLIT_K_MIN_SHARE_SMALL_M]
    : [AUTO_SPLIT_KS, SPLIT_K_MIN_SHARE];
  return factors.find((s) =>
    grid * s <= SPLIT_K_WORKGROUPS[which] && a.k % (tiles.stepK * s) === 0 && a.k / s >= minShare &&
    splitKPartials(a, s).bytes <= gpu.device.limits.maxStorageBufferBindingSize
  ) ?? 1;
}

/** The split-K partial-sum scratch of `a` split `splitK` ways: f32 [S, rows, NW], NW = 2N for SwiGLU (gate, up). */
function splitKPartials(a: LinearShape, splitK: number): { nw: number; bytes: number } {
  const nw = (a.epilogue ?? Epilogue.PLAIN) === Epilogue.SWIGLU ? 2 * a.n : a.n;
  return { nw, bytes: splitK * a.rows * nw * 4 };
}

/**
 * The FMA GEMMs' tiles for `a`, `split` or not, when the caller gave none (given ones win):
 * - up to SMALL_M_ROWS rows, 8 x ceil(rows / 8) rows by 64 columns in 128 threads (24 rows for 17..24, 32 for 25..32),
 *   split or not. Measured on the H200 (docs/PERF.md, 2026-11-30 night, `tools/bench_kernels.ts --gemm --rows 23`),
 *   Deno, one 7B layer at M = 23: 793 us with the 64 x 64 tiles split 4 ways (the former choice: 64 rows, 41 of them
 *   padding, all computed) -> 523 us with 24 x 64 split 8 ways (qkv 192 -> 131 us, gate_up 348 -> 224, down 181 ->
 *   120, o 72 -> 49); the matvec in two chunks of 12 rows would take about 584 us (34% of copy at 12 rows). At M = 32
 *   the 7B layer 798 -> 627 us (32 x 64 split 8); the 1B layer at M = 23 300 -> 198 us, at M = 32 303 -> 242 us;
 * - else split: the default 64 x 64 tiles (the automatic split was measured with them);
 * - else 64 x 32 for N <= 4096, the default otherwise (module comment).
 */
function fmaTilesFor(a: LinearShape, split: boolean): GemmTiles {
  const given = a.tileK ?? a.threadsM ?? a.threadsN ?? a.blockM ?? a.blockN ?? a.pipeline ?? a.flushK;
  if (given !== undefined) return {};
  if (a.rows <= SMALL_M_ROWS) return { threadsM: 8, blockM: Math.ceil(a.rows / 8) };
  return !split && a.n <= 4096 ? { threadsN: 8 } : {};
}

/**
 * The tensor-core GEMM's tiles by epilogue where they fit (`tensorTilesFor`), the fastest of the H200 sweep
 * (2026-11-30 session V, Dawn, `tools/bench_kernels.ts --gemm --quick --rounds 2 --tensor-tiles ...`, each variant its
 * least median over two rounds; docs/PERF.md), 7B shapes, us:
 *
 * | product, M            | 64 x 64, k32 (was) | 128 x 64, k64 | 128 x 128, k64 | 128 x 128, k32, 2 buffers |
 * | --------------------- | ------------------ | ------------- | -------------- | ------------------------- |
 * | qkv, 128              | 169                | 163           | **117**        | -                         |
 * | gate_up+SwiGLU, 128   | 361                | **217**       | (no room)      | (no room)                 |
 * | qkv, 2,048            | 1,825              | 1,643         | **1,198**      | 1,295                     |
 * | gate_up+SwiGLU, 2,048 | 3,731              | **1,986**     | (no room)      | (no room)                 |
 * | down, 2,048           | 1,646              | 6,008 (?)     | **1,013**      | 1,144                     |
 *
 * Two buffers (one barrier a k step) and two k tiles in flight (`ahead`) measured no faster at these tiles. The
 * (?) is one of the H200's slow spells: an idle GPU drops to 345 MHz and a measurement can start there (docs/PERF.md).
 * Each k tile read and stored before the products (`ahead: 0`) was 2-4% faster (session Y, us, ahead 1 -> 0): qkv at
 * 128 115.7 -> 110.6, at 2,048 1,181 -> 1,131; down at 2,048 1,005 -> 973; gate_up+SwiGLU at 2,048 1,964 -> 1,932.
 */
export const TENSOR_TILES: Readonly<Record<"plain" | "swiglu", Readonly<TensorTiles>>> = {
  // 128 x 128 of 8 subgroups, each 64 x 32; one k tile of 64 staged: 45,056 bytes of workgroup memory
  plain: { subgroupsM: 2, subgroupsN: 4, fragsM: 4, fragsN: 2, stepK: 64, buffers: 1, ahead: 0 },
  // 128 x 64 (gate and up rows: 128 weight rows) of 8 subgroups, each 32 x 32; one k tile of 64: 45,056 bytes. Each
  // k step's last slice multiplied after the barrier that ends it (`deferLast: 1`): the 1B's gate_up at 128 rows 65.0
  // -> 58.2 us (session AD; 2: 61.8)
  swiglu: { subgroupsM: 4, subgroupsN: 2, fragsM: 2, fragsN: 2, stepK: 64, buffers: 1, ahead: 0, deferLast: 1 },
};

/**
 * 256 x 128 of 16 subgroups, each 64 x 32 (4 x 2 matrices); one k tile of 32 staged, through one workgroup buffer in
 * which the epilogue's matrices then take the staged tiles' place (`wideStores`, `sharedEpilogue`): 30,720 bytes of
 * workgroup memory. A 512-invocation workgroup is held to 128 registers: it spills (tools/vk_stats, session AA), and
 * its k steps of 32 cost more than 64. It still wins where its grid fills the waves best (the 1B's down at 2,048 rows:
 * 364.2 us against 453.8 with TENSOR_TILES_192, session AB), which `byWaves` decides. With `deferLast: 1` (session AD,
 * us): the 1B's down at 2,048 rows 364.7 -> 343.8, the 7B's qkv at 1,024 529.1 -> 500.2, down 479.0 -> 449.9, o 186.5
 * -> 178.5 (never with a SwiGLU epilogue: there it spills, 2,191 -> 3,315 us).
 */
export const TENSOR_TILES_LARGE_M: Readonly<TensorTiles> = {
  subgroupsM: 4,
  subgroupsN: 4,
  fragsM: 4,
  fragsN: 2,
  stepK: 32,
  buffers: 1,
  wideStores: true,
  sharedEpilogue: true,
  deferLast: 1,
};

/**
 * 192 x 128 of 12 subgroups, each 64 x 32 (4 x 2 matrices), k steps of 64 through one workgroup buffer (the
 * epilogue's matrices in it): 46,080 bytes, 384 invocations at 163 registers, under the 170 such a workgroup may hold,
 * so nothing spills (tools/vk_stats). One workgroup an SM with 12 warps, k64: the fastest plain tile measured on the
 * H200 (session AB, `--gemm --quick --rounds 2 --rows 2048`, us, against TENSOR_TILES_LARGE_M): 7B qkv 1,048.6 ->
 * 904.8 (228 TFLOP/s), down 940.6 -> 896.8, o 365.8 -> 350.6; 1B qkv 276.9 -> 256.0. Session AA measured the same
 * (903.5 / 895.7 / 351.5). Each k step's last slice multiplied after the barrier that ends it (`deferLast: 1`, 168
 * registers) made it 8-10% faster (session AD, 7B at 2,048 rows, us): qkv 910.3 -> 831.7 (248 TFLOP/s), down 896.5 ->
 * 810.4, o 349.2 -> 322.2; after the next barrier (2) it spills and loses.
 */
export const TENSOR_TILES_192: Readonly<TensorTiles> = {
  subgroupsM: 3,
  subgroupsN: 4,
  fragsM: 4,
  fragsN: 2,
  stepK: 64,
  buffers: 1,
  wideStores: true,
  sharedEpilogue: true,
  deferLast: 1,
};

/**
 * The SwiGLU sibling of TENSOR_TILES_192: 192 x 64 (gate and up rows: 128 weight rows) of 8 subgroups, each 48 x 32 of
 * gate and of up (3 x 2 matrices each: 12 result matrices, 7 matrix loads a 16-k slice for 12 products), k steps of
 * 64, one buffer: 46,080 bytes. Measured on the H200 (session AB, us, against TENSOR_TILES.swiglu, with 12 subgroups of
 * 64 x 16: 4 x 1 matrices, 6 loads for 8 products): 7B gate_up at 2,048 rows 1,939.3 -> 1,654.1, at 1,024 1,023.0 ->
 * 887.6; 1B at 2,048 774.3 -> 665.6. With `deferLast: 1` (session AD) the 7B's gate_up at 2,048 rows 1,651.5 ->
 * 1,514.2 (244 TFLOP/s). 8 subgroups of 3 x 2 matrices instead of 12 of 4 x 1 (session AJ, `--gemm --rounds 2 --rows
 * 2048`): 1,512.3 -> 1,438.5 us (257 TFLOP/s); 6 of 4 x 2 took 2,132.4, 12 of 4 x 1 in k32 steps through two buffers
 * (192 x 48) 2,332.1.
 */
export const TENSOR_TILES_SWIGLU_192: Readonly<TensorTiles> = {
  subgroupsM: 4,
  subgroupsN: 2,
  fragsM: 3,
  fragsN: 2,
  stepK: 64,
  buffers: 1,
  wideStores: true,
  sharedEpilogue: true,
  deferLast: 1,
};

/**
 * Rows up to which products take the small-M tiles (TENSOR_TILES_SMALL_M, TENSOR_TILES_SMALL_M_SWIGLU): the 128-token
 * TTFT's products, where every grid is one wave or less.
 */
export const TENSOR_SMALL_M_ROWS = 128;

/**
 * The plain tile at TENSOR_SMALL_M_ROWS rows or fewer: 128 x 128 of 16 subgroups of 2 x 2 matrices, k64, one buffer
 * (36,864 bytes; 16 warps where TENSOR_TILES.plain has 8), each k step's last slice multiplied after the barrier that
 * stages the next tile (`deferLast: 2`). Measured on the H200 at 128 rows (session AB, us, against TENSOR_TILES.plain):
 * 7B qkv 109.8 -> 108.7 unsplit, down 91.5 -> 86.1 split 4 ways; 1B qkv split 4 52.2 -> 46.3. Two tiles in flight
 * (`ahead: 2`, session AC, us, ahead 1 -> 2): 7B down split 4 86.2 -> 83.7, o split 4 41.3 -> 40.1. The deferred
 * slice does not fit beside two tiles in flight (128 registers, the cap of a 512-invocation workgroup: it spills, down
 * 84.3 -> 91.4), and with one in flight it is faster still (session AD, us, `ahead: 2` -> `deferLast: 2`): 7B down split
 * 4 83.8 -> 80.9, o 39.9 -> 39.7; 1B qkv split 2 38.2 -> 37.6.
 */
export const TENSOR_TILES_SMALL_M: Readonly<TensorTiles> = {
  subgroupsM: 4,
  subgroupsN: 4,
  fragsM: 2,
  fragsN: 2,
  stepK: 64,
  buffers: 1,
  wideStores: true,
  sharedEpilogue: true,
  deferLast: 2,
};

/**
 * The least K of a SwiGLU product that takes TENSOR_TILES_SMALL_M_SWIGLU. The 1B's gate_up (K = 2,048) was slower
 * with it at 128 rows: 64.9 us with TENSOR_TILES.swiglu, 77.8 with it (session AB); session AA's 4-subgroup tile likewise
 * (the 1B's Dawn TTFT at 128 tokens 5.15 -> 6.11 ms, results/2026-12-01_run06 against run08).
 */
export const TENSOR_SMALL_M_SWIGLU_MIN_K = 4096;

/**
 * 128 x 96 (gate and up rows: 192 weight rows) of 12 subgroups, each 32 x 32 of gate and of up, k64, one buffer:
 * 46,080 bytes; at 128 rows the 7B's gate_up is 115 workgroups, one wave. Measured on the H200 (session AB, us): the
 * 7B's gate_up at 128 rows 194.6 (session AA's 4-subgroup 128 x 64 tile) and 210.0 (TENSOR_TILES.swiglu) -> 142.0.
 * Each k step's last slice multiplied after the barrier that stages the next tile (`deferLast: 2`; 132 registers of
 * the 170 a 384-invocation workgroup may hold) made it faster still (session AD, 7B at 128 rows, us): gate_up 142.4 ->
 * 117.7, and as TENSOR_TILES_SMALL_M_96 qkv 100.9 -> 93.5 (`deferLast: 1`: 131.5 and 95.7).
 */
export const TENSOR_TILES_SMALL_M_SWIGLU: Readonly<TensorTiles> = {
  subgroupsM: 4,
  subgroupsN: 3,
  fragsM: 2,
  fragsN: 2,
  stepK: 64,
  buffers: 1,
  wideStores: true,
  sharedEpilogue: true,
  deferLast: 2,
};

/**
 * The plain tile at TENSOR_SMALL_M_ROWS rows or fewer where its grid is one wave of at least TENSOR_WAVE_FILL of the
 * SMs (the 7B's qkv, N = 12,288: 128 workgroups, where TENSOR_TILES_SMALL_M has 96 and no split-K room): the tiles of
 * TENSOR_TILES_SMALL_M_SWIGLU, which for a plain product are 128 x 96 of 12 subgroups of 2 x 2 matrices (32,256 bytes).
 * Measured on the H200 (session AC, 7B qkv at 128 rows, two calls, us): 108.7 / 109.0 with TENSOR_TILES_SMALL_M
 * unsplit -> 100.8 / 101.3 (session AB: 100.2). A 128 x 192 tile (subgroups of 2 x 4 matrices) split 2 ways, also one
 * wave, was faster alone (sessions AF and AG, with its split_k_reduce: 93.0 / 93.2 -> 89.6 / 88.8 us) but not inside
 * the pass (session AG, `deno task profile --config prefill --whole`, the 7B's 128-token pass, three processes each,
 * interleaved, ms): 12.41 with this tile, 12.48 with it and qk_norm_rope summing the two partials, 12.60 with a
 * split_k_reduce instead; its in-step time 3,067 -> 3,023 us for 32 layers. Tiles of 6 subgroups (4 x 2 and 4 x 4
 * matrices a subgroup, fewer loads a product) were 35-45% slower alone (session AG).
 */
export const TENSOR_TILES_SMALL_M_96: Readonly<TensorTiles> = TENSOR_TILES_SMALL_M_SWIGLU;

/** The least share of the SMs a grid of TENSOR_TILES_SMALL_M_96 must fill (in one wave) for linear to take it. */
export const TENSOR_WAVE_FILL = 0.9;

/**
 * Streaming multiprocessors the wave model counts (`byWaves`): the H200's 132. WebGPU does not say how many a device
 * has; on a GPU with another count the model still picks a measured tile, only by a less exact estimate.
 */
export const TENSOR_WAVE_SMS = 132;

/**
 * The tiles `byWaves` weighs for products of more than TENSOR_SMALL_M_ROWS rows, each with the rate (TFLOP/s) it
 * measured on the H200 over full waves at 2,048 rows, 7B qkv and gate_up (sessions Y and AB; with `deferLast`, 7B and 1B, session AD): a workgroup's time is
 * its tile's outputs over that rate.
 */
const WAVE_CANDIDATES: Readonly<Record<"plain" | "swiglu", readonly { tiles: Readonly<TensorTiles>; rate: number }[]>> =
  {
    plain: [
      { tiles: TENSOR_TILES_192, rate: 248 },
      { tiles: TENSOR_TILES_LARGE_M, rate: 209 },
      { tiles: TENSOR_TILES.plain, rate: 182 },
    ],
    swiglu: [
      { tiles: TENSOR_TILES_SWIGLU_192, rate: 257 },
      { tiles: TENSOR_TILES.swiglu, rate: 190 },
    ],
  };

/**
 * The candidates for a product of `rows` x `n` outputs, fastest first by the wave model: one workgroup of these tiles
 * fills an SM (registers and workgroup memory, session AA), so a grid of G workgroups takes ceil(G / SMs) waves, each
 * as long as one workgroup's outputs over its rate. It predicted every choice the H200 sweeps measured (session AB):
 * at 2,048 rows the 192-row tiles (7B qkv 8 waves of 1,056 workgroups against the 256-row tile's 6 of 768, each 35%
 * shorter), but the 256-row tile for the 1B's down (one wave of 128 against two of 176); at 1,024 rows the 256-row tile
 * for the 7B's qkv and down; at 512 rows the 128-row tile (session X). Ties keep the listed order.
 */
export function byWaves(
  rows: number,
  n: number,
  epilogue: number,
  sms: number = TENSOR_WAVE_SMS,
): Readonly<TensorTiles>[] {
  const list = WAVE_CANDIDATES[epilogue === Epilogue.SWIGLU ? "swiglu" : "plain"];
  const cost = ({ tiles, rate }: { tiles: TensorTiles; rate: number }) => {
    const { tileM, tileN } = tensorTileShape(tiles);
    const grid = Math.ceil(rows / tileM) * Math.ceil(n / tileN);
    return Math.ceil(grid / sms) * tileM * tileN / rate;
  };
  return list.map((c) => ({ tiles: c.tiles, cost: cost(c) })).sort((a, b) => a.cost - b.cost).map((c) => c.tiles);
}

/** Whether a grid of `tiles` over rows x n outputs is one wave of at least TENSOR_WAVE_FILL of TENSOR_WAVE_SMS SMs. */
function fillsOneWave(rows: number, n: number, tiles: TensorTiles): boolean {
  const { tileM, tileN } = tensorTileShape(tiles);
  const grid = Math.ceil(rows / tileM) * Math.ceil(n / tileN);
  return grid <= TENSOR_WAVE_SMS && grid >= TENSOR_WAVE_FILL * TENSOR_WAVE_SMS;
}

/**
 * Tensor-core tiles when the caller gave none (given knobs win). Up to TENSOR_SMALL_M_ROWS rows TENSOR_TILES_SMALL_M_96
 * for plain products whose grid of it fills one wave (`fillsOneWave`), else TENSOR_TILES_SMALL_M;
 * TENSOR_TILES_SMALL_M_SWIGLU for SwiGLU products of K >= TENSOR_SMALL_M_SWIGLU_MIN_K, else TENSOR_TILES.swiglu; above, the wave model's order (`byWaves`). Then, where those exceed the device's workgroup
 * memory or K is not a multiple of their k step: TENSOR_TILES for the epilogue, the same with one buffer, then k steps
 * of 16, then the 64 x 64 default tile. Where the runtime's WGSL lacks the `buffer_view` language feature, tiles staged
 * through one workgroup buffer (`wideStores`) are taken without it. Null when no tiles fit the shape (then the
 * automatic choice is the f32 GEMM).
 */
export function tensorTilesFor(gpu: Gpu, a: LinearShape): TensorTiles | null {
  // the tensor knobs `a` sets: any of the generator's (GEMM_TENSOR_DEFAULT_TILES) that LinearArgs has
  const keys = Object.keys(GEMM_TENSOR_DEFAULT_TILES).filter((k) =>
    !(TENSOR_KNOBS_NOT_TAKEN as readonly string[]).includes(k)
  );
  const given: TensorTiles = {};
  for (const key of keys as (keyof LinearTensorTiles)[]) {
    if (a[key] !== undefined) given[key] = a[key];
  }
  const epilogue = a.epilogue ?? Epilogue.PLAIN;
  const swiglu = epilogue === Epilogue.SWIGLU;
  const preferred = TENSOR_TILES[swiglu ? "swiglu" : "plain"];
  const first: readonly Readonly<TensorTiles>[] = a.rows > TENSOR_SMALL_M_ROWS
    ? byWaves(a.rows, a.n, epilogue)
    : !swiglu
    ? [fillsOneWave(a.rows, a.n, TENSOR_TILES_SMALL_M_96) ? TENSOR_TILES_SMALL_M_96 : TENSOR_TILES_SMALL_M]
    : a.k >= TENSOR_SMALL_M_SWIGLU_MIN_K
    ? [TENSOR_TILES_SMALL_M_SWIGLU]
    : [];
  const fallbacks: TensorTiles[] = [
    ...first,
    preferred,
    { ...preferred, buffers: 1 },
    { ...preferred, stepK: 16, buffers: 1 },
    GEMM_TENSOR_DEFAULT_TILES,
    { ...GEMM_TENSOR_DEFAULT_TILES, stepK: 16, buffers: 1 },
  ];
  const bufferViews = hasWgslFeature(gpu, "buffer_view");
  const viewless = (t: TensorTiles) =>
    bufferViews || !t.wideStores ? t : { ...t, wideStores: false, sharedEpilogue: false };
  return fallbacks.map((t) => ({ ...viewless(t), ...given })).find((t) => {
    try {
      checkTensorShape({ ...a, stepK: t.stepK });
      return gemmTensorWorkgroupBytes(t, epilogue) <= gpu.device.limits.maxComputeWorkgroupStorageSize;
    } catch {
      return false;
    }
  }) ?? null;
}

/**
 * The prefill GEMM `linear` uses on `gpu` for `a`: forced by the argument or HYDRA_PREFILL_GEMM, else the tensor-core
 * one where it runs, else the one `a.prefillMath` asks for (module comment: precedence).
 */
export function prefillGemmFor(gpu: Gpu, a: LinearShape): PrefillGemm {
  const forced = a.prefillGemm ?? (Deno.env.get(PREFILL_GEMM_ENV) || undefined);
  if (forced !== undefined && !(PREFILL_GEMMS as readonly string[]).includes(forced)) {
    throw new UserError(
      `${PREFILL_GEMM_ENV}=${forced} is not a prefill GEMM: set it to ${PREFILL_GEMMS.join(", ")}, or unset it.`,
    );
  }
  const f16Missing = (what: string) =>
    new UserError(
      `${what} needs the f16-multiply GEMM, which cannot run here (the device lacks shader-f16); ` +
        `use prefill_math f32 (--prefill-math f32) and unset ${PREFILL_GEMM_ENV}.`,
    );
  if (forced === "fma") return "fma";
  if (forced === "fma16") {
    if (!gpu.has("shader-f16")) throw f16Missing(`${PREFILL_GEMM_ENV}=fma16`);
    return "fma16";
  }
  const unsupported = tensorGemmUnsupported(gpu);
  if (forced === "tensor" && unsupported) {
    throw new UserError(
      `${PREFILL_GEMM_ENV}=tensor needs the tensor-core GEMM, which cannot run here (${unsupported}); run on Dawn ` +
        `(HYDRA_WEBGPU=dawn) on a GPU with subgroup matrices, or unset ${PREFILL_GEMM_ENV}.`,
    );
  }
  if (forced === "tensor") return "tensor";
  if (unsupported === null && tensorTilesFor(gpu, a) !== null) return "tensor";
  if ((a.prefillMath ?? "f32") === "f32") return "fma";
  if (!gpu.has("shader-f16")) throw f16Missing("prefill_math f16");
  return "fma16";
}

/** The scratch buffers `linear` shares between every layer of a Gpu, by label. */
const scratches = new WeakMap<Gpu, Map<string, GPUBuffer>>();

/**
 * A buffer of at least `bytes`, shared by every linear layer of `gpu` under `label`: the row exponents of the f16
 * GEMMs' pre-pass and the tensor-core GEMM's f16 rows, the split-K partial sums. One buffer serves every layer because
 * a layer's dispatches (pre-pass, GEMM, reduction) are consecutive in one queue and WebGPU runs them in order, so the
 * next layer cannot overwrite what this one still reads. A larger request replaces the shared buffer; dispatches
 * recorded earlier keep the one they were bound to.
 */
function sharedScratch(gpu: Gpu, label: string, bytes: number): GPUBuffer {
  let byLabel = scratches.get(gpu);
  if (!byLabel) scratches.set(gpu, byLabel = new Map());
  const have = byLabel.get(label);
  if (have && have.size >= bytes) return have;
  const buffer = gpu.buffer(label, bytes);
  byLabel.set(label, buffer);
  return buffer;
}

/**
 * The split-K partial-sum scratch [S, rows, NW] of `bytes`, refused past the device's largest storage binding (a
 * UserError naming `knob`, what sized it: HYDRA_SPLIT_K, or HYDRA_TAIL_SPLIT for a last wave's split).
 */
function partialsFor(gpu: Gpu, bytes: number, what: string, knob = `lower ${SPLIT_K_ENV} (or splitK)`): GPUBuffer {
  const max = gpu.device.limits.maxStorageBufferBindingSize;
  if (bytes > max) {
    throw new UserError(
      `split-K ${what} needs a ${bytes}-byte partial-sum scratch, more than this device's largest storage binding ` +
        `(${max} bytes): ${knob} or prefill fewer tokens at once.`,
    );
  }
  return sharedScratch(gpu, "split-K partials", bytes);
}

/** `linear`'s choices for `given` (rows above the matvec's); see `LinearPlan`. */
function prefillPlan<A extends LinearShape>(gpu: Gpu, given: A) {
  const which = prefillGemmFor(gpu, given);
  // The tiles, and the split-K factor they leave room for (`fmaTilesFor`: a split product may take other tiles).
  const tensorTiles = which === "tensor" ? tensorTilesFor(gpu, given) ?? {} : {}; // none fit: gemmTensor says why
  const tileShape = which === "tensor"
    ? tensorTileShape(tensorTiles)
    : gemmTileShape({ ...fmaTilesFor(given, true), ...given });
  const splitK = splitKFor(gpu, given, which, tileShape);
  const a = { ...given, splitK };
  if (splitK > 1 && !(a.k % tileShape.stepK === 0 && a.k / tileShape.stepK >= splitK)) {
    throw new UserError(
      `split-K ${splitK} ways cannot split K = ${a.k} into whole k steps of ${tileShape.stepK}: lower ${SPLIT_K_ENV} ` +
        `(or splitK), or unset it.`,
    );
  }
  const { nw, bytes } = splitKPartials(a, splitK);
  const partials = splitK > 1 ? partialsFor(gpu, bytes, `${splitK} ways at ${a.rows} rows x ${nw} columns`) : undefined;
  const exponents = which === "fma" ? undefined : sharedScratch(gpu, "row exponents", a.rows * 4);
  const halfRows = which === "tensor" && exponents
    ? { exponents, xHalf: sharedScratch(gpu, "f16 rows", a.rows * a.k * 2) }
    : undefined;
  const tailSplit = which === "tensor" && splitK === 1 && !tensorTiles.producers
    ? tailSplitOf(a, tensorTiles)
    : undefined;
  const tailPartials = tailSplit &&
    partialsFor(
      gpu,
      splitKPartials({ ...a, n: a.n - tailSplit.columns }, tailSplit.splitK).bytes,
      `of the last wave, ${tailSplit.splitK} ways at ${a.rows} rows x ${a.n - tailSplit.columns} columns`,
      `set ${TAIL_SPLIT_ENV}=0`,
    );
  return { which, tensorTiles, a, partials, exponents, halfRows, tailSplit, tailPartials };
}

/** What `linear` records for `a` (`LinearPlan`), without recording it. */
export function linearPlan(gpu: Gpu, a: LinearShape): LinearPlan {
  if (a.rows <= MATVEC_MAX_ROWS) return { kernel: "matvec", splitK: 1 };
  const p = prefillPlan(gpu, a);
  return { kernel: p.which, splitK: p.a.splitK, partials: p.partials, halfRows: p.halfRows, tailSplit: p.tailSplit };
}

/**
 * Records the dispatches of a linear layer (load time): the matvec for rows <= MATVEC_MAX_ROWS; above, the
 * tensor-core GEMM or the f16-multiply GEMM after their row-scale pre-pass, or the f32 GEMM (`prefillGemmFor`); with
 * split-K (`splitKFor` > 1) the GEMM writes the shared partial scratch and `splitKReduce` then writes y. The pre-pass
 * and the reduction are left out where the caller's neighbours do them (`halfRowsWritten`, `leavePartials`).
 */
export function linear(gpu: Gpu, given: LinearArgs): Dispatch[] {
  if (given.rows <= MATVEC_MAX_ROWS) {
    if (given.halfRowsWritten || given.leavePartials) throw new Error("linear: the matvec has no pre-pass or partials");
    return [matvec(gpu, given)];
  }
  if (given.postNorm) throw new Error("linear: the GEMMs have no post-norm prologue");
  if (given.qkStats) throw new Error("linear: the GEMMs write no QK statistics");
  const { which, tensorTiles, a, partials, exponents, halfRows, tailSplit, tailPartials } = prefillPlan(gpu, given);
  const splitK = a.splitK;
  const epilogue = a.epilogue ?? Epilogue.PLAIN;
  const written = a.halfRowsWritten;
  if (written && (written.exponents !== halfRows?.exponents || written.xHalf !== halfRows?.xHalf)) {
    throw new Error(`linear: the f16 rows were written elsewhere than the ${which} GEMM reads them (linearPlan)`);
  }
  if (a.leavePartials && epilogue !== Epilogue.PLAIN) throw new Error("linear: leavePartials with the SwiGLU epilogue");
  // The GEMM's output (the scratch with split-K), and the reduction after it (into y's columns nBegin..).
  const g = { ...a, y: partials ?? a.y };
  const reduceInto = (p: GPUBuffer, s: number, nBegin?: number) =>
    splitKReduce(gpu, {
      ctl: a.ctl,
      partials: p,
      y: a.y,
      rows: a.rows,
      n: a.n,
      splitK: s,
      epilogue,
      gated: a.gated,
      nBegin,
    });
  const reduce = partials && !a.leavePartials ? [reduceInto(partials, splitK)] : [];
  const fmaTiles = fmaTilesFor(a, splitK > 1);
  if (which === "fma") return [gemm(gpu, { ...fmaTiles, ...g, math: "f32" }), ...reduce];
  const pre = { ctl: a.ctl, x: a.x, exponents: exponents!, rows: a.rows, k: a.k, gated: a.gated };
  if (which === "fma16") {
    return [rowScale(gpu, pre), gemm(gpu, { ...fmaTiles, ...g, math: "f16", exponents: exponents! }), ...reduce];
  }
  // The tensor-core GEMM reads the pre-pass's f16 rows instead of x.
  const { xHalf } = halfRows!;
  const tensor = { ...g, x: xHalf, ...tensorTiles, exponents: exponents! };
  const tail = tailSplit && tailPartials
    ? [
      gemmTensor(gpu, { ...tensor, y: tailPartials, splitK: tailSplit.splitK, columns: [tailSplit.columns, a.n] }),
      reduceInto(tailPartials, tailSplit.splitK, tailSplit.columns),
    ]
    : [];
  return [
    ...(a.halfRowsWritten ? [] : [rowScale(gpu, { ...pre, xHalf })]),
    gemmTensor(gpu, { ...tensor, splitK, columns: tailSplit && [0, tailSplit.columns] }),
    ...tail,
    ...reduce,
  ];
}
