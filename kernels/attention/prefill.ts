/**
 * Causal attention for prefill: M query rows (prompt tokens, up to the context limit) at positions
 * ctl[POS] .. ctl[POS] + M - 1 against the position-major K/V cache, which already holds keys 0 .. ctl[POS] + M - 1
 * (so a prompt can be prefilled after an existing cache prefix).
 *
 * Flash attention without tensor cores: a workgroup owns BQ query rows of one head (the grid is heads x query
 * tiles, the tiles with the most keys first) and walks the keys in tiles of BK, stopping after the key of its last
 * row (causal: key tiles past it are never visited). Per key tile:
 *   1. the K tile is staged in workgroup memory (rows padded by one vec4 against bank conflicts), and each thread
 *      computes scores of the Q tile (staged once, pre-scaled) against it;
 *   2. online softmax (see shared.ts);
 *   3. the V tile replaces the K tile, and each thread accumulates out rows (one vec4 column of ROWS_PER_THREAD rows)
 *      in registers.
 * Workgroup memory: Q tile + one K/V tile + scores, within the portable 16 KiB.
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { type KvDtype, kvReadWgsl } from "./kv_cache.ts";
import { checkHeadShape, nextPowerOfTwo, onlineSoftmaxWgsl, rowLanes, WORKGROUP_BYTES } from "./shared.ts";

/** The WGSL kernel for caches of `kv` elements (kv_cache.ts). */
export function attentionPrefillKernelFor(kv: KvDtype = "f32"): Kernel {
  return {
    name: `attention_prefill${kv === "bf16" ? "_kvbf16" : ""}`,
    source: /* wgsl */ `
// bindings (D = NH * HEAD_DIM; the grid is [NH, ceil(M / BQ), 1]: workgroup (h, y) = head h, query rows
// BQ * (ceil(M / BQ) - 1 - y) ..):
//   0 ctl [CTL_SLOTS] u32, read       control block: ctl[CTL_POS] = position of query row 0
//   1 q   [M, D / 4] vec4<f32>        queries, row-major [M, D] f32, QK-normed and roped; head h in columns
//                                     h*HEAD_DIM .. (h+1)*HEAD_DIM-1
//   2 kc  [>= POS + M, D] ${kv}        K cache, position-major [maxPos, D]: row p = key of position p
//   3 vc  [>= POS + M, D] ${kv}        V cache, same layout
//   4 out [M, D / 4] vec4<f32>, rw    the attention output, row-major [M, D] f32
// Keys 0 .. ctl[CTL_POS] + M - 1 must be in the caches; later rows are never read.
override NH: u32;
override HEAD_DIM: u32;                           // a power of two, 8 .. 4 * WG
override M: u32;                                  // query rows
override BQ: u32 = 16u;                           // query rows per workgroup
override BK: u32 = 8u;                            // keys per tile
override WG: u32 = 128u;                          // threads, a power of two
override ROW_LANES: u32 = 1u;                     // see shared.ts
override SCALE: f32;                              // 1 / sqrt(HEAD_DIM)
override HV: u32 = HEAD_DIM / 4u;                 // vec4 per head row
override KV_STRIDE: u32 = HV + 1u;                // padded K/V tile row
override ROW_GROUPS: u32 = WG / HV;               // p * V: threads t = row_group * HV + lane
override ROWS_PER_THREAD: u32 = (BQ + ROW_GROUPS - 1u) / ROW_GROUPS;
const MAX_ROWS_PER_THREAD: u32 = 8u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
${kvReadWgsl(kv, 2, 3)}
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
var<workgroup> qs: array<vec4<f32>, BQ * HV>;           // [BQ, HEAD_DIM] queries times SCALE
var<workgroup> kvs: array<vec4<f32>, BK * KV_STRIDE>;   // [BK, HEAD_DIM + 4] the K tile, then the V tile
${onlineSoftmaxWgsl("BQ", "BK")}
// Stages the K (or V) rows of keys tile_first .. tile_first + BK - 1 of head columns col0 .., zeros past last_key.
fn load_tile(t: u32, col0: u32, row4: u32, values: bool) {
  for (var e = t; e < BK * HV; e += WG) {
    let j = e / HV;
    let i = e % HV;
    let key = tile_first + j;
    var v = vec4<f32>();
    if (key <= last_key) {
      if (values) { v = load_v(key * row4 + col0 + i); } else { v = load_k(key * row4 + col0 + i); }
    }
    kvs[j * KV_STRIDE + i] = v;
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let h = wid.x;
  let q0 = (nwg.y - 1u - wid.y) * BQ;
  first_pos = ctl[CTL_POS] + q0;
  rows_valid = min(BQ, M - q0);
  last_key = first_pos + rows_valid - 1u;
  let row4 = NH * HV;   // vec4 per query / cache / output row
  let col0 = h * HV;    // first vec4 of head h
  for (var e = t; e < BQ * HV; e += WG) {
    let r = e / HV;
    var v = vec4<f32>();
    if (r < rows_valid) { v = q[(q0 + r) * row4 + col0 + e % HV] * SCALE; }
    qs[e] = v;
  }
  softmax_init(t);
  let lane = t % HV;
  let row_group = t / HV;
  var acc: array<vec4<f32>, MAX_ROWS_PER_THREAD>;
  for (var k0 = 0u; k0 <= last_key; k0 += BK) {
    tile_first = k0;
    workgroupBarrier(); // the previous V tile is consumed (first tile: the Q tile is stored)
    load_tile(t, col0, row4, false);
    workgroupBarrier();
    // 1. scores[r, j] = q_r . k_j (q pre-scaled)
    for (var e = t; e < BQ * BK; e += WG) {
      let qb = (e / BK) * HV;
      let kb = (e % BK) * KV_STRIDE;
      var s = 0.0;
      for (var i = 0u; i < HV; i++) { s += dot(qs[qb + i], kvs[kb + i]); }
      scores[e] = s;
    }
    workgroupBarrier();
    // 2. scores -> probabilities, running max and sum, rescale factor alpha (ends with a barrier)
    softmax_tile(t);
    // 3. acc = acc * alpha + p V
    load_tile(t, col0, row4, true);
    workgroupBarrier();
    for (var i = 0u; i < ROWS_PER_THREAD; i++) {
      let r = row_group + i * ROW_GROUPS;
      if (r < BQ) { acc[i] *= alpha[r]; }
    }
    for (var j = 0u; j < BK; j++) {
      let vv = kvs[j * KV_STRIDE + lane];
      for (var i = 0u; i < ROWS_PER_THREAD; i++) {
        let r = row_group + i * ROW_GROUPS;
        if (r < BQ) { acc[i] += scores[r * BK + j] * vv; }
      }
    }
  }
  for (var i = 0u; i < ROWS_PER_THREAD; i++) {
    let r = row_group + i * ROW_GROUPS;
    if (r < rows_valid) { out[(q0 + r) * row4 + col0 + lane] = acc[i] / l_run[r]; }
  }
}
`,
  };
}

/** Arguments of one prefill attention dispatch. */
export interface AttentionPrefillArgs {
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
  /** Query rows (>= 1). */
  rows: number;
  nHeads: number;
  /** A power of two from 8 to 4 * workgroupSize (OLMo-2: 128). */
  headDim: number;
  gated?: boolean;
  /**
   * Tuning knobs: query rows per workgroup (default min(32, 2048 / headDim), at most the rows rounded up to a power
   * of two), keys per tile (default half of that) and threads per workgroup (128).
   */
  queryTile?: number;
  keyTile?: number;
  workgroupSize?: number;
}

/** Records a prefill attention dispatch (load time). Throws on shapes the kernel does not handle. */
export function attentionPrefill(gpu: Gpu, a: AttentionPrefillArgs, kernel?: Kernel): Dispatch {
  const { rows, headDim } = a;
  const wg = a.workgroupSize ?? 128;
  const fail = (why: string) => {
    throw new Error(`attentionPrefill: ${why}`);
  };
  if (!Number.isInteger(rows) || rows < 1) fail(`${rows} query rows is not a positive integer`);
  checkHeadShape("attentionPrefill", a.nHeads, headDim, wg);
  const defaultBq = Math.min(32, 2048 / headDim);
  const bq = a.queryTile ?? Math.min(defaultBq, nextPowerOfTwo(rows));
  const bk = a.keyTile ?? Math.max(1, defaultBq / 2);
  if (!Number.isInteger(bq) || bq < 1 || bq > wg) fail(`a query tile of ${bq} rows is outside 1..${wg}`);
  if (!Number.isInteger(bk) || bk < 1) fail(`a key tile of ${bk} keys is not a positive integer`);
  const rowGroups = wg / (headDim / 4);
  if (Math.ceil(bq / rowGroups) > 8) {
    fail(`a query tile of ${bq} rows needs more than 8 rows per thread; use a smaller one`);
  }
  const bytes = 4 * (bq * headDim + bk * (headDim + 4) + bq * bk + wg + 3 * bq);
  if (bytes > WORKGROUP_BYTES) {
    fail(
      `query tile ${bq} and key tile ${bk} at head_dim ${headDim} need ${bytes} bytes of workgroup memory ` +
        `(at most ${WORKGROUP_BYTES}); use smaller tiles`,
    );
  }
  const queryTiles = Math.ceil(rows / bq);
  return gpu.dispatch(
    kernel ?? attentionPrefillKernelFor(a.kvDtype),
    {
      NH: a.nHeads,
      HEAD_DIM: headDim,
      M: rows,
      BQ: bq,
      BK: bk,
      WG: wg,
      ROW_LANES: rowLanes(wg, bq, bk),
      SCALE: Math.fround(1 / Math.sqrt(headDim)),
      GATED: a.gated ?? false,
    },
    [a.ctl, a.q, a.kCache, a.vCache, a.out],
    [a.nHeads, queryTiles, 1],
  );
}
