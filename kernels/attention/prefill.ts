/**
 * Causal attention for prefill: M query rows (prompt tokens, up to the context limit) at positions
 * ctl[POS] .. ctl[POS] + M - 1 against the position-major K/V cache, which already holds keys 0 .. ctl[POS] + M - 1
 * (so a prompt can be prefilled after an existing cache prefix).
 *
 * Flash attention without tensor cores. A workgroup owns BQ query rows of one head (the grid is heads x query tiles,
 * the tiles with the most keys first) and walks the keys in tiles of BK, stopping after the key of its last row: key
 * tiles above the diagonal are never visited, and only the tiles that cross it are masked. The Q tile is staged once
 * (pre-scaled); each K tile and then each V tile is staged once in one buffer and read by all BQ rows. Per key tile:
 *   1. scores: the threads form TR = WG / TC row groups of TC key lanes (t = group * TC + lane), and each thread keeps
 *      an R x C register block, rows group + i * TR and keys lane + c * TC, accumulated from 16-byte workgroup reads:
 *      R + C reads per 4 R C multiply-adds;
 *   2. online softmax in registers: each row's max and sum of exp over its TC lanes (subgroup shuffles where the
 *      device has them, else the tree in workgroup memory; kernels/reduce.ts), the running max, sum and rescale factor
 *      kept by every lane of the row, so no statistics go through workgroup memory; the probabilities P go to a small
 *      [BQ, BK] buffer;
 *   3. P V: the same thread keeps its R rows times VC = HEAD_DIM / 4 / TC vec4 of the output in registers, reading
 *      P four keys at a time (one vec4 per row) and the VC V vec4 of each key: R + 4 VC reads per 16 R VC
 *      multiply-adds.
 * The global reads of the V tile are issued before the scores are computed and those of the next K tile before P V,
 * so their latency hides behind the arithmetic; four barriers per tile. Staged rows are padded to an odd number of
 * vec4, so the 8 rows a warp reads at once start in 8 distinct bank groups. The WGSL is generated per tile shape (the
 * GEMM's lesson: register blocks must be named scalars and unrolled loops, never arrays indexed in a loop).
 *
 * Sizing (H200: 132 SMs; 16 KiB of workgroup memory, the portable limit). At HEAD_DIM 128 a staged row is 528 bytes,
 * so the Q tile and one K/V tile hold about 28 rows together: BQ 16 with BK 8, or BQ 8 with BK 16. TC is 8: a warp
 * is 4 row groups x 8 lanes, so its Q reads hit 4 rows (broadcast over the lanes) and its K, V reads 8 consecutive
 * vec4, each one 128-byte wavefront. A 7B layer at 128 tokens is small (135 MFLOP with the causal half skipped, 6 MB
 * of traffic) and bound by the serial key loop of the last query tile, so the default favours workgroups in flight:
 * BQ 8, i.e. 32 heads x 16 tiles = 512 workgroups of 64 threads (R 1, C 2, VC 4): 2 x 256 multiply-adds per thread
 * and key tile, ~800 instructions a warp, 8 key tiles for the last query rows; with ~2 warps per SM sub-partition
 * that is an estimated 5-10 us, against the target of 20. From 512 tokens on, 32 x 32 tiles of BQ 16 fill the GPU
 * and the work (17.2 G multiply-adds at 2,048 tokens) is bound by arithmetic and workgroup-memory reads: BQ 16 with
 * R 2 (C 1, VC 4) reads each staged K/V row for twice the rows, 132 16-byte reads per 512 multiply-adds per tile;
 * one warp of TC 4 (R 2, C 2, VC 8) would need 196 per 1,024 but has half the threads per tile. Splitting a query
 * tile's keys across workgroups (flash-decoding) is not needed: it would add a merge pass, and BQ 8 already gives 512
 * workgroups at 128 tokens. None of this is measured yet: `tools/bench_kernels.ts --attention` times the tile
 * variants at 128, 512 and 2,048 tokens, and the defaults should follow its figures (docs/PERF.md). Before this
 * kernel (one score per thread, scores and statistics in workgroup memory): 117 us per 7B layer at 128 tokens on the
 * H200.
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { reductionBytes, reductionsWgsl, subgroupWidth } from "../reduce.ts";
import { type KvDtype, kvReadWgsl } from "./kv_cache.ts";
import { checkHeadShape, nextPowerOfTwo, WORKGROUP_BYTES } from "./shared.ts";
import { range } from "../codegen.ts";
import type { HalfRows } from "../matmul/row_scale.ts";

/** Tile shape of the prefill kernel (tuning knobs); each must be a power of two. */
export interface PrefillTiles {
  /** Query rows per workgroup (BQ). */
  queryTile?: number;
  /** Keys per tile (BK), at least 4. */
  keyTile?: number;
  /** Threads per workgroup (WG), 32 .. 256. */
  workgroupSize?: number;
  /** Threads sharing a query row (TC): each holds BK / TC keys of its scores and HEAD_DIM / 4 / TC vec4 of output. */
  keyLanes?: number;
  /** Row reductions by subgroup shuffles (default: when the device's subgroups span the key lanes). */
  subgroups?: boolean;
}

/** A resolved, checked tile shape (`planAttentionPrefill`). */
export interface PrefillPlan {
  headDim: number;
  queryTile: number;
  keyTile: number;
  workgroupSize: number;
  keyLanes: number;
  subgroups: boolean;
}

/**
 * Workgroups the default query tile aims at: a few per SM of the GPUs this suite targets (132 on an H100 / H200),
 * so that short prompts still have several workgroups' loads in flight per SM. WebGPU does not tell the SM count.
 */
export const PREFILL_TARGET_WORKGROUPS = 512;

/** Most accumulator vec4 (R * VC) and scores (R * C) a thread keeps in registers. */
const MAX_BLOCK = 16;

const isPowerOfTwo = (n: number) => Number.isInteger(n) && n >= 1 && nextPowerOfTwo(n) === n;

/** vec4 per row of the P buffer: BK / 4, made odd (the rows a warp reads at once fall in distinct bank groups). */
const pStride = (keyTile: number) => (keyTile / 4) | 1;

/** Workgroup memory of a plan: the Q tile, one K/V tile, P and the reductions' share. */
function workgroupBytes(headDim: number, bq: number, bk: number, wg: number, subgroups: boolean): number {
  const stride = headDim / 4 + 1;
  return 16 * ((bq + bk) * stride + bq * pStride(bk)) + reductionBytes(subgroups, wg);
}

/** Why the tiles `t` cannot run at head_dim `headDim`, or undefined when they can. */
function tileProblem(headDim: number, t: Omit<PrefillPlan, "headDim">, width: number): string | undefined {
  const { queryTile: bq, keyTile: bk, workgroupSize: wg, keyLanes: tc } = t;
  const hv = headDim / 4;
  if (!isPowerOfTwo(wg) || wg < 32 || wg > 256) return `workgroup size ${wg} is not a power of two from 32 to 256`;
  if (!isPowerOfTwo(bq)) return `a query tile of ${bq} rows is not a power of two`;
  if (!isPowerOfTwo(bk) || bk < 4) return `a key tile of ${bk} keys is not a power of two from 4`;
  if (!isPowerOfTwo(tc) || tc > hv || tc > bk || tc > wg) {
    return `${tc} key lanes must be a power of two of at most the key tile (${bk}), ${hv} (head_dim / 4) and ` +
      `the workgroup size (${wg})`;
  }
  const groups = wg / tc, r = bq / groups;
  if (r < 1) {
    return `a query tile of ${bq} rows is smaller than the ${groups} row groups of ${wg} threads / ${tc} lanes`;
  }
  if (r * (hv / tc) > MAX_BLOCK || r * (bk / tc) > MAX_BLOCK) {
    return `tiles ${bq} x ${bk} give each thread ${r * (hv / tc)} output vec4 and ${r * (bk / tc)} scores ` +
      `(at most ${MAX_BLOCK} each); use more threads or key lanes`;
  }
  if (t.subgroups && tc > width) {
    return width === 0 ? "the device has no subgroups" : `${tc} key lanes do not fit subgroups of ${width}`;
  }
  const bytes = workgroupBytes(headDim, bq, bk, wg, t.subgroups);
  if (bytes > WORKGROUP_BYTES) {
    return `query tile ${bq} and key tile ${bk} at head_dim ${headDim} need ${bytes} bytes of workgroup memory ` +
      `(at most ${WORKGROUP_BYTES}); use smaller tiles`;
  }
  return undefined;
}

/** The shape a prefill dispatch is planned for. */
export interface PrefillShape extends PrefillTiles {
  /** Query rows (>= 1). */
  rows: number;
  nHeads: number;
  /** A power of two from 8 (OLMo-2: 128). */
  headDim: number;
}

/**
 * The tile shape `attentionPrefill` uses (knobs left out take defaults; see the module comment): TC = min(8,
 * HEAD_DIM / 4) key lanes, 64 threads (fewer when the query tile is small), the largest query tile (up to 32 rows)
 * that fits and still gives PREFILL_TARGET_WORKGROUPS workgroups, else the smallest, and the largest key tile (up to
 * 16 keys, at most 4 per lane) that fits next to it. Throws on shapes and tiles the kernel does not handle.
 */
export function planAttentionPrefill(gpu: Gpu, a: PrefillShape): PrefillPlan {
  const { rows, headDim } = a;
  const fail = (why: string): never => {
    throw new Error(`attentionPrefill: ${why}`);
  };
  if (!Number.isInteger(rows) || rows < 1) fail(`${rows} query rows is not a positive integer`);
  checkHeadShape("attentionPrefill", a.nHeads, headDim, 256); // heads and head_dim; the tiles are checked below
  const width = subgroupWidth(gpu);
  const hv = headDim / 4;
  const tc = a.keyLanes ?? Math.min(8, hv, a.keyTile ?? 8);
  const subgroups = a.subgroups ?? (width > 0 && tc <= width);
  const wgFor = (bq: number) => a.workgroupSize ?? Math.max(32, Math.min(64, bq * tc));
  const tilesFor = (bq: number, bk: number) => ({
    queryTile: bq,
    keyTile: bk,
    workgroupSize: wgFor(bq),
    keyLanes: tc,
    subgroups,
  });
  // Default tiles are chosen as if for the tree reductions (the most workgroup memory), so they do not depend on the
  // device; the plan is then checked for the path it runs.
  const fits = (bq: number, bk: number) =>
    tileProblem(headDim, { ...tilesFor(bq, bk), subgroups: false }, 0) === undefined;
  const keyTileFor = (bq: number) => a.keyTile ?? [16, 8, 4].find((bk) => fits(bq, bk)) ?? Math.max(4, tc);
  let bq = a.queryTile;
  if (bq === undefined) {
    const fitting = [32, 16, 8, 4, 2, 1].filter((q) => fits(q, keyTileFor(q)));
    const useful = fitting.filter((q) => q <= Math.max(nextPowerOfTwo(rows), fitting.at(-1) ?? 1));
    bq = useful.find((q) => a.nHeads * Math.ceil(rows / q) >= PREFILL_TARGET_WORKGROUPS) ?? useful.at(-1) ?? 8;
  }
  const plan: PrefillPlan = { headDim, ...tilesFor(bq, keyTileFor(bq)) };
  const problem = tileProblem(headDim, plan, width);
  if (problem) fail(problem);
  return plan;
}

/** The name of the kernel generated for `p` (every generated parameter is in it: it keys the module cache). */
function kernelName(p: PrefillPlan, kv: KvDtype): string {
  return `attention_prefill_d${p.headDim}_q${p.queryTile}_k${p.keyTile}_t${p.workgroupSize}_l${p.keyLanes}` +
    `${p.subgroups ? "_sg" : ""}${kv === "bf16" ? "_kvbf16" : ""}`;
}

/**
 * WGSL that opens the prefill attention kernels' `main` (this module's and prefill_tensor.ts's): the workgroup's query
 * tile (BQ rows from q0, the last tiles first: grid row y = ceil(M / BQ) - 1 - tile), its positions, and its head.
 */
export const PREFILL_TILE_ORIGIN_WGSL = /* wgsl */ `  let q0 = (nwg.y - 1u - wid.y) * BQ;
  let first_pos = ctl[CTL_POS] + q0;          // position of row 0 of the tile
  let rows_valid = min(BQ, M - q0);           // rows >= rows_valid are padding (zero queries, never stored)
  let last_key = first_pos + rows_valid - 1u; // no key after it is valid for any row
  let col0 = wid.x * HV;                      // first vec4 of head wid.x in a row`;

/**
 * WGSL `load_kv`, shared by the prefill attention kernels (this module's and prefill_tensor.ts's; they need NH, HV and
 * the cache's `load_k` / `load_v` from kv_cache.ts).
 */
export const PREFILL_LOAD_KV_WGSL =
  /* wgsl */ `// Vec4 e - key * NH * HV (head columns) of key \`key\` from the K (or V) cache; zeros past last_key, which is never
// read.
fn load_kv(key: u32, last_key: u32, e: u32, values: bool) -> vec4<f32> {
  var v = vec4<f32>();
  if (key <= last_key) {
    let i = key * NH * HV + e;
    if (values) { v = load_v(i); } else { v = load_k(i); }
  }
  return v;
}
`;

/** The WGSL kernel for a plan (`planAttentionPrefill`) and caches of `kv` elements (kv_cache.ts). */
export function attentionPrefillKernelFor(p: PrefillPlan, kv: KvDtype = "f32"): Kernel {
  const hv = p.headDim / 4;
  const { queryTile: bq, keyTile: bk, workgroupSize: wg, keyLanes: tc } = p;
  const tr = wg / tc, rb = bq / tr, cb = bk / tc, vc = hv / tc;
  const I = range(rb), C = range(cb), V = range(vc);
  const slots = range(Math.max(1, (bk * hv) / wg)); // K/V tile vec4 staged per thread
  const partial = bk * hv < wg; // fewer items than threads: some threads stage none
  const lines = (pad: string, ls: string[]) => ls.map((l) => pad + l).join("\n");
  const xyzw = "xyzw";
  // The row reductions over the TC lanes of a row (none with one lane): max per row, sums four rows per call.
  const rowMax = (i: number) => {
    const mx = C.map((c) => `s${i}_${c}`).reduce((x, y) => `max(${x}, ${y})`);
    return tc > 1 ? `lanes_max(${mx}, t, TC)` : mx;
  };
  const sums = range(Math.ceil(rb / 4)).map((g) => {
    const rowsOf = range(4).map((k) => 4 * g + k);
    const parts = rowsOf.map((i) => i < rb ? C.map((c) => `p${i}_${c}`).join(" + ") : "0.0");
    const v = `vec4<f32>(${parts.join(", ")})`;
    return `let sum${g} = ${tc > 1 ? `lanes_sum4(${v}, t, TC)` : v};`;
  });
  // Stores the K or V tile held in registers `reg<s>` into the staging buffer.
  const stage = (reg: string) =>
    lines(
      "    ",
      slots.map((s) => {
        const store = `kvs[sj${s} * STRIDE + si${s}] = ${reg}${s};`;
        return partial ? `if (t < BK * HV) { ${store} }` : store;
      }),
    );
  const load = (pad: string, decl: string, reg: string, k0: string, values: boolean) =>
    lines(pad, slots.map((s) => `${decl}${reg}${s} = load_kv(${k0} + sj${s}, last_key, col0 + si${s}, ${values});`));

  return {
    name: kernelName(p, kv),
    source: /* wgsl */ `
// ${kernelName(p, kv)}: tiles generated in (kernels/attention/prefill.ts).
// bindings (D = NH * HEAD_DIM; the grid is [NH, ceil(M / BQ), 1]: workgroup (h, y) = head h, query rows
// q0 = BQ * (ceil(M / BQ) - 1 - y) ..):
//   0 ctl [CTL_SLOTS] u32, read       control block: ctl[CTL_POS] = position of query row 0
//   1 q   [M, D / 4] vec4<f32>        queries, row-major [M, D] f32, QK-normed and roped; head h in columns
//                                     h*HEAD_DIM .. (h+1)*HEAD_DIM-1
//   2 kc  [>= POS + M, D] ${kv}        K cache, position-major [maxPos, D]: row p = key of position p
//   3 vc  [>= POS + M, D] ${kv}        V cache, same layout
//   4 out [M, D / 4] vec4<f32>, rw    the attention output, row-major [M, D] f32
// Keys 0 .. ctl[CTL_POS] + M - 1 must be in the caches; later rows are never read.
override NH: u32;
override M: u32;                           // query rows
override SCALE: f32;                       // 1 / sqrt(HEAD_DIM)
const HV: u32 = ${hv}u; // vec4 per head row (HEAD_DIM ${p.headDim})
const BQ: u32 = ${bq}u; // query rows per workgroup
const BK: u32 = ${bk}u; // keys per tile
const WG: u32 = ${wg}u; // threads: TR row groups of TC key lanes, t = group * TC + lane
const TC: u32 = ${tc}u;
const TR: u32 = ${tr}u;
// Thread (group, lane) owns rows group + i * TR (i < ${rb}), the scores of keys lane + c * TC (c < ${cb}) of each tile
// and the output vec4 lane + v * TC (v < ${vc}) of its rows.
const STRIDE: u32 = HV + 1u; // vec4 per staged Q / K / V row (odd: see the module comment)
const PS: u32 = ${pStride(bk)}u; // vec4 per row of P (odd)
const NEG_BIG: f32 = -3.0e38; // "masked": finite, so exp(NEG_BIG - NEG_BIG) is 1, never NaN
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
${kvReadWgsl(kv, 2, 3)}
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
var<workgroup> qs: array<vec4<f32>, BQ * STRIDE>;  // [BQ, HEAD_DIM] queries times SCALE (zeros past M)
var<workgroup> kvs: array<vec4<f32>, BK * STRIDE>; // [BK, HEAD_DIM] the K tile, then the V tile (zeros past the last key)
var<workgroup> ps: array<vec4<f32>, BQ * PS>;      // [BQ, BK] probabilities of the tile
${reductionsWgsl(p.subgroups)}

// acc + dot(a, b) as a chain of fused multiply-adds.
fn fma4(a: vec4<f32>, b: vec4<f32>, acc: f32) -> f32 {
  return fma(a.w, b.w, fma(a.z, b.z, fma(a.y, b.y, fma(a.x, b.x, acc))));
}

${PREFILL_LOAD_KV_WGSL}
// Score s of key \`key\` for the row at position \`pos\`: NEG_BIG when the key comes after it (causal).
fn causal(s: f32, key: u32, pos: u32) -> f32 {
  return select(NEG_BIG, s, key <= pos);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
${PREFILL_TILE_ORIGIN_WGSL}
  let group = t / TC;
  let lane = t % TC;
  // This thread's share of each K/V tile: vec4 si<s> of key sj<s> (item t + s * WG).
${lines("  ", slots.map((s) => `let sj${s} = (t + ${s * wg}u) / HV;\n  let si${s} = (t + ${s * wg}u) % HV;`))}
  // The first K tile's reads are in flight while the Q tile is staged.
${load("  ", "var ", "pk", "0u", false)}
  for (var e = t; e < BQ * HV; e += WG) {
    let r = e / HV;
    var v = vec4<f32>();
    if (r < rows_valid) { v = q[(q0 + r) * NH * HV + col0 + e % HV] * SCALE; }
    qs[r * STRIDE + e % HV] = v;
  }
  // Per row i of the thread: position, running max and sum of exp; per row and vec4: the output accumulator.
${lines("  ", I.map((i) => `let pos${i} = first_pos + group + ${i * tr}u;`))}
${lines("  ", I.map((i) => `var m${i} = NEG_BIG;\n  var l${i} = 0.0;`))}
${lines("  ", I.map((i) => V.map((v) => `var o${i}_${v} = vec4<f32>();`).join(" ")))}
  for (var k0 = 0u; k0 <= last_key; k0 += BK) {
    workgroupBarrier(); // the previous V tile is consumed (first tile: the Q tile is staged)
${stage("pk")}
    workgroupBarrier(); // the K tile is staged
    // The V tile's reads are in flight while the scores are computed.
${load("    ", "let ", "pv", "k0", true)}
    // 1. scores s<i>_<c> = q . k (q pre-scaled), from 16-byte reads of the staged rows
${lines("    ", I.map((i) => C.map((c) => `var s${i}_${c} = 0.0;`).join(" ")))}
    for (var d = 0u; d < HV; d++) {
${lines("      ", I.map((i) => `let qv${i} = qs[(group + ${i * tr}u) * STRIDE + d];`))}
${lines("      ", C.map((c) => `let kv${c} = kvs[(lane + ${c * tc}u) * STRIDE + d];`))}
${lines("      ", I.flatMap((i) => C.map((c) => `s${i}_${c} = fma4(qv${i}, kv${c}, s${i}_${c});`)))}
    }
    if (k0 + BK - 1u > first_pos) { // a tile across the diagonal: mask each row's later keys
${lines("      ", I.flatMap((i) => C.map((c) => `s${i}_${c} = causal(s${i}_${c}, k0 + lane + ${c * tc}u, pos${i});`)))}
    }
    // 2. online softmax: the rows' max over the tile and its TC lanes, the rescale factor a<i> of what came before,
    // p = exp(s - max) (0 where masked), the rows' sums; P to workgroup memory, the accumulators rescaled
${
      lines(
        "    ",
        I.flatMap((
          i,
        ) => [`let mn${i} = max(m${i}, ${rowMax(i)});`, `let a${i} = exp(m${i} - mn${i});`, `m${i} = mn${i};`]),
      )
    }
${
      lines(
        "    ",
        I.flatMap((i) => C.map((c) => `let p${i}_${c} = select(0.0, exp(s${i}_${c} - m${i}), s${i}_${c} > NEG_BIG);`)),
      )
    }
${lines("    ", sums)}
${lines("    ", I.map((i) => `l${i} = l${i} * a${i} + sum${Math.floor(i / 4)}.${xyzw[i % 4]};`))}
${
      lines(
        "    ",
        I.flatMap((i) =>
          C.map((c) =>
            `ps[(group + ${i * tr}u) * PS + (lane + ${c * tc}u) / 4u][(lane + ${c * tc}u) % 4u] = p${i}_${c};`
          )
        ),
      )
    }
${lines("    ", I.map((i) => V.map((v) => `o${i}_${v} *= a${i};`).join(" ")))}
    workgroupBarrier(); // the K tile is consumed, P is written
${stage("pv")}
    // The next K tile's reads (zeros past the last key) are in flight during P V.
${load("    ", "", "pk", "k0 + BK", false)}
    workgroupBarrier(); // the V tile is staged
    // 3. o += P V, four keys a step: one P vec4 per row, VC V vec4 per key
    for (var g = 0u; g < BK / 4u; g++) {
${lines("      ", I.map((i) => `let pr${i} = ps[(group + ${i * tr}u) * PS + g];`))}
${
      lines(
        "      ",
        range(4).flatMap((u) => [
          "{",
          ...V.map((v) => `  let w${v} = kvs[(4u * g + ${u}u) * STRIDE + lane + ${v * tc}u];`),
          ...I.flatMap((i) => V.map((v) => `  o${i}_${v} = fma(vec4<f32>(pr${i}.${xyzw[u]}), w${v}, o${i}_${v});`)),
          "}",
        ]),
      )
    }
    }
  }
${
      lines(
        "  ",
        I.flatMap((i) => [
          `if (group + ${i * tr}u < rows_valid) {`,
          `  let row = (q0 + group + ${i * tr}u) * NH * HV + col0 + lane;`,
          ...V.map((v) => `  out[row + ${v * tc}u] = o${i}_${v} / l${i};`),
          "}",
        ]),
      )
    }
}
`,
  };
}

/** Arguments of one prefill attention dispatch. */
export interface AttentionPrefillArgs extends PrefillShape {
  ctl: GPUBuffer;
  /** f32 queries [rows, nHeads * headDim]. */
  q: GPUBuffer | BufferSlice;
  /** K cache [maxPos, nHeads * headDim] of `kvDtype`, position-major, holding keys 0 .. ctl[POS] + rows - 1. */
  kCache: GPUBuffer | BufferSlice;
  /** V cache, same layout. */
  vCache: GPUBuffer | BufferSlice;
  /** Element type of the caches (default f32; kv_cache.ts). */
  kvDtype?: KvDtype;
  /** f32 output [rows, nHeads * headDim]. */
  out: GPUBuffer | BufferSlice;
  /**
   * The output as the o product's f16 rows instead (row_scale.ts `HalfRows`, what its row-scale pre-pass would write;
   * `out` is not written), each row scaled by a bound from `vmax` (u32 [rows], qk_norm_rope.ts's): the tensor-core
   * kernel only (prefill_tensor.ts).
   */
  halfRows?: HalfRows & { vmax: GPUBuffer | BufferSlice };
  gated?: boolean;
}

/**
 * Records a prefill attention dispatch (load time). Throws on shapes the kernel does not handle, and on a `kernel`
 * (tests: a deliberately broken one) not generated for the tiles this dispatch uses.
 */
export function attentionPrefill(gpu: Gpu, a: AttentionPrefillArgs, kernel?: Kernel): Dispatch {
  if (a.halfRows) throw new Error("attentionPrefill: halfRows is the tensor-core kernel's (prefill_tensor.ts)");
  const plan = planAttentionPrefill(gpu, a);
  const kv = a.kvDtype ?? "f32";
  return prefillDispatch(gpu, a, {
    who: "attentionPrefill",
    name: kernelName(plan, kv),
    make: () => attentionPrefillKernelFor(plan, kv),
    rowsPerWorkgroup: plan.queryTile,
    kernel,
  });
}

/**
 * The dispatch of a prefill attention kernel over `a`: the bindings, override constants and grid that this module's
 * kernels and the tensor-core ones (prefill_tensor.ts) share, `k.rowsPerWorkgroup` query rows a workgroup. `k.kernel`
 * (tests: a deliberately broken one) must have been generated as `k.name`, else `k.make()` builds it.
 */
export function prefillDispatch(
  gpu: Gpu,
  a: AttentionPrefillArgs,
  k: { who: string; name: string; make: () => Kernel; rowsPerWorkgroup: number; kernel?: Kernel },
): Dispatch {
  if (k.kernel && k.kernel.name !== k.name && !k.kernel.name.startsWith(`${k.name}[`)) {
    throw new Error(`${k.who}: kernel ${k.kernel.name} was not generated for these tiles (${k.name})`);
  }
  const hr = a.halfRows;
  const out = hr ? [hr.xHalf, hr.exponents, hr.vmax] : [a.out];
  return gpu.dispatch(
    k.kernel ?? k.make(),
    { NH: a.nHeads, M: a.rows, SCALE: Math.fround(1 / Math.sqrt(a.headDim)), GATED: a.gated ?? false },
    [a.ctl, a.q, a.kCache, a.vCache, ...out],
    [a.nHeads, Math.ceil(a.rows / k.rowsPerWorkgroup), 1],
  );
}
