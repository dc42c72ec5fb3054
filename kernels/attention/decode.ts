/**
 * Causal attention for decode and speculative verification: M = 1..16 query rows (positions p_m = ctl[POS] + m)
 * against a position-major K/V cache whose valid length (p_{M-1} + 1) is GPU data, up to MAX_POS keys.
 *
 * Flash-decoding. The keys are cut into chunks of CHUNK; the grid is heads x ceil(MAX_POS / CHUNK) chunks, so the
 * CPU never needs the length: a chunk starting after the last key returns at once, and the merge never reads it.
 * A workgroup owns one (head, chunk) and all M rows, so every K and V row is read once for the M queries:
 *   1. scores: KEY_LANES threads per key, each holding KEY_VEC vec4 of it, strided so that the KEY_LANES threads
 *      read KEY_LANES contiguous vec4 at a time (whole 32-byte sectors, several keys per warp access); the
 *      per-thread partial dot products of all M rows (4 rows per vec4) are summed by a tree in workgroup memory.
 *      KEY_VEC trades registers (M * KEY_VEC vec4 of q) against tree depth and passes (a barrier each): by
 *      default 8 at M <= 2 (4 threads per 128-float key, 32 keys per pass), 1 at M >= 9;
 *   2. online softmax over the tile of TILE keys (see shared.ts);
 *   3. p * V: HEAD_DIM / 4 threads per V row, one vec4 each (a warp reads whole contiguous rows), SLOTS =
 *      WG / (HEAD_DIM / 4) keys at a time, accumulating all M rows in registers; after the chunk the SLOTS partial
 *      sums are added in workgroup memory.
 * Each (row, head, chunk) writes its unnormalised output and (running max, sum of exp) to a scratch buffer; the
 * merge kernel combines the chunks row m can see (c <= p_m / CHUNK) into out. When one chunk covers MAX_POS the
 * builder returns a single dispatch (DIRECT) that normalises and writes out itself.
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { checkHeadShape, nextPowerOfTwo, onlineSoftmaxWgsl, rowLanes, WORKGROUP_BYTES } from "./shared.ts";

/** Most query rows one decode dispatch handles (speculative verification of up to 16 drafted tokens). */
export const DECODE_MAX_ROWS = 16;

/** The WGSL kernel: partial attention over one chunk of keys (or, DIRECT, all keys and the final output). */
export const attentionDecodeKernel: Kernel = {
  name: "attention_decode",
  source: /* wgsl */ `
// bindings (D = NH * HEAD_DIM; the grid is [NH, NCHUNK, 1]: workgroup (h, c) = head h, keys c*CHUNK ..):
//   0 ctl [CTL_SLOTS] u32, read          control block: ctl[CTL_POS] = position of query row 0
//   1 q   [M, D / 4] vec4<f32>           queries, row-major [M, D] f32, QK-normed and roped; head h in columns
//                                        h*HEAD_DIM .. (h+1)*HEAD_DIM-1
//   2 kc  [MAX_POS, D / 4] vec4<f32>     K cache, position-major [MAX_POS, D] f32: row p = key of position p
//   3 vc  [MAX_POS, D / 4] vec4<f32>     V cache, same layout
//   4 dst vec4<f32>, read_write          DIRECT: out [M, D / 4] (the attention output, row-major [M, D] f32);
//                                        else the scratch: [M, NH, NCHUNK, HEAD_DIM / 4] unnormalised outputs,
//                                        then [M, NH, NCHUNK] vec4 (running max, sum of exp, -, -)
// Keys 0 .. min(ctl[CTL_POS] + M - 1, MAX_POS - 1) must be in the caches; later rows are never read.
override NH: u32;
override HEAD_DIM: u32;                       // a power of two, 8 .. 4 * WG
override M: u32 = 1u;                         // query rows, 1 .. 16
override MAX_POS: u32;                        // cache rows
override CHUNK: u32 = 64u;                    // keys per workgroup, a multiple of TILE
override TILE: u32 = 64u;                     // keys per online-softmax step, a multiple of KEY_SLOTS
override WG: u32 = 128u;                      // threads, a power of two
override ROW_LANES: u32 = 8u;                 // see shared.ts
override SCALE: f32;                          // 1 / sqrt(HEAD_DIM)
override DIRECT: bool = false;                // one chunk: normalise and write out directly
override KEY_VEC: u32 = 1u;                   // scores: vec4 of a key per thread, M * KEY_VEC <= 16
override HV: u32 = HEAD_DIM / 4u;             // vec4 per head row
override KEY_LANES: u32 = HV / KEY_VEC;       // scores: threads per key (t = key_slot * KEY_LANES + key_lane)
override KEY_SLOTS: u32 = WG / KEY_LANES;     // scores: keys per pass
override SLOTS: u32 = WG / HV;                // p * V: keys in flight (t = slot * HV + lane)
override MQ: u32 = (M + 3u) / 4u;             // vec4 of 4 rows' partial dot products
override NCHUNK: u32 = (MAX_POS + CHUNK - 1u) / CHUNK;
const MAX_M: u32 = 16u;
const MAX_KEY_VEC: u32 = 8u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;
var<workgroup> red: array<vec4<f32>, MQ * WG>;
${onlineSoftmaxWgsl("M", "TILE")}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let h = wid.x;
  let c = wid.y;
  first_pos = ctl[CTL_POS];
  rows_valid = M;
  last_key = min(first_pos + M - 1u, MAX_POS - 1u);
  let chunk_first = c * CHUNK;
  if (chunk_first > last_key) { return; } // past the last key: nothing to do, and the merge ignores this chunk
  let chunk_end = min(chunk_first + CHUNK, last_key + 1u);
  let slot = t / HV;
  let lane = t % HV;
  let key_slot = t / KEY_LANES;
  let key_lane = t % KEY_LANES;
  let row4 = NH * HV;               // vec4 per cache / query row
  let col = h * HV + lane;          // p * V: this thread's vec4 of the head
  let key_col = h * HV + key_lane;  // scores: this thread's first vec4 of the head, then every KEY_LANES
  var qv: array<vec4<f32>, MAX_M>;  // qv[m * KEY_VEC + v] = SCALE * q[m, vec4 key_col + v * KEY_LANES]
  var acc: array<vec4<f32>, MAX_M>;
  for (var m = 0u; m < M; m++) {
    for (var v = 0u; v < KEY_VEC; v++) { qv[m * KEY_VEC + v] = q[m * row4 + key_col + v * KEY_LANES] * SCALE; }
  }
  softmax_init(t);
  for (var tile = chunk_first; tile < chunk_end; tile += TILE) {
    tile_first = tile;
    // 1. scores[m, j] = (q_m . k_j) * SCALE, KEY_SLOTS keys per pass
    for (var k0 = 0u; k0 < TILE; k0 += KEY_SLOTS) {
      let key = tile + k0 + key_slot;
      var kv: array<vec4<f32>, MAX_KEY_VEC>;
      if (key <= last_key) {
        for (var v = 0u; v < KEY_VEC; v++) { kv[v] = kc[key * row4 + key_col + v * KEY_LANES]; }
      }
      for (var mq = 0u; mq < MQ; mq++) {
        var part = vec4<f32>();
        for (var i = 0u; i < 4u; i++) {
          let m = 4u * mq + i;
          if (m < M) {
            var s = 0.0;
            for (var v = 0u; v < KEY_VEC; v++) { s += dot(kv[v], qv[m * KEY_VEC + v]); }
            part[i] = s;
          }
        }
        red[mq * WG + t] = part;
      }
      workgroupBarrier();
      for (var st = KEY_LANES / 2u; st > 0u; st /= 2u) {
        if (key_lane < st) {
          for (var mq = 0u; mq < MQ; mq++) { red[mq * WG + t] += red[mq * WG + t + st]; }
        }
        workgroupBarrier();
      }
      if (key_lane == 0u) {
        for (var m = 0u; m < M; m++) { scores[m * TILE + k0 + key_slot] = red[(m / 4u) * WG + t][m % 4u]; }
      }
    }
    workgroupBarrier();
    // 2. scores -> probabilities, running max and sum, rescale factor alpha
    softmax_tile(t);
    // 3. acc = acc * alpha + p V
    for (var m = 0u; m < M; m++) { acc[m] *= alpha[m]; }
    for (var j = slot; j < TILE; j += SLOTS) {
      let key = tile + j;
      if (key <= last_key) {
        let vv = vc[key * row4 + col];
        for (var m = 0u; m < M; m++) { acc[m] += scores[m * TILE + j] * vv; }
      }
    }
    workgroupBarrier();
  }
  // 4. sum the SLOTS partial accumulators, MQ rows per round, and store
  for (var r0 = 0u; r0 < M; r0 += MQ) {
    for (var mq = 0u; mq < MQ; mq++) { red[mq * WG + t] = acc[min(r0 + mq, MAX_M - 1u)]; }
    workgroupBarrier();
    for (var u = t; u < MQ * HV; u += WG) {
      let m = r0 + u / HV;
      let l = u % HV;
      if (m < M) {
        var o = vec4<f32>();
        for (var s = 0u; s < SLOTS; s++) { o += red[(u / HV) * WG + s * HV + l]; }
        if (DIRECT) {
          dst[m * row4 + h * HV + l] = o / l_run[m];
        } else {
          dst[((m * NH + h) * NCHUNK + c) * HV + l] = o;
        }
      }
    }
    workgroupBarrier();
  }
  if (!DIRECT) {
    for (var m = t; m < M; m += WG) {
      dst[M * NH * NCHUNK * HV + (m * NH + h) * NCHUNK + c] = vec4<f32>(m_run[m], l_run[m], 0.0, 0.0);
    }
  }
}
`,
};

/** The WGSL kernel that merges the per-chunk partial results of attentionDecodeKernel into the output. */
export const attentionMergeKernel: Kernel = {
  name: "attention_decode_merge",
  source: /* wgsl */ `
// bindings (D = NH * HEAD_DIM; the grid is [NH, M, 1]: workgroup (h, m) = head h of row m):
//   0 ctl  [CTL_SLOTS] u32, read       control block: ctl[CTL_POS] = position of query row 0
//   1 part vec4<f32>, read             the scratch written by attention_decode (layout there)
//   2 out  [M, D / 4] vec4<f32>, rw    the attention output, row-major [M, D] f32
override NH: u32;
override HEAD_DIM: u32;
override M: u32 = 1u;
override MAX_POS: u32;
override CHUNK: u32 = 64u;
override WG: u32 = 32u;
override HV: u32 = HEAD_DIM / 4u;
override NCHUNK: u32 = (MAX_POS + CHUNK - 1u) / CHUNK;
const NEG_BIG: f32 = -3.0e38;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> part: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let h = wid.x;
  let m = wid.y;
  let p = min(ctl[CTL_POS] + m, MAX_POS - 1u);
  let chunks = p / CHUNK + 1u;   // the chunks holding keys 0 .. p
  let base = (m * NH + h) * NCHUNK;
  let stats = M * NH * NCHUNK * HV + base;
  var gmax = NEG_BIG;
  for (var c = 0u; c < chunks; c++) { gmax = max(gmax, part[stats + c].x); }
  for (var l = t; l < HV; l += WG) {
    var o = vec4<f32>();
    var sum = 0.0;
    for (var c = 0u; c < chunks; c++) {
      let st = part[stats + c];
      let w = exp(st.x - gmax);
      sum += w * st.y;
      o += w * part[(base + c) * HV + l];
    }
    out[(m * NH + h) * HV + l] = o / sum;
  }
}
`,
};

/** The shape of a decode attention dispatch. */
export interface AttentionDecodeShape {
  /** Query rows (1..16). */
  rows: number;
  nHeads: number;
  /** A power of two from 8 to 4 * workgroupSize (OLMo-2: 128). */
  headDim: number;
  /** Rows of each cache (the context limit). */
  maxPos: number;
  /** Keys per workgroup (default 64; >= maxPos gives the single-dispatch path). */
  chunk?: number;
}

/** Arguments of the decode attention dispatches. */
export interface AttentionDecodeArgs extends AttentionDecodeShape {
  ctl: GPUBuffer;
  /** f32 queries [rows, nHeads * headDim]. */
  q: GPUBuffer | BufferSlice;
  /** f32 K cache [maxPos, nHeads * headDim], position-major. */
  kCache: GPUBuffer | BufferSlice;
  /** f32 V cache, same layout. */
  vCache: GPUBuffer | BufferSlice;
  /** f32 output [rows, nHeads * headDim]. */
  out: GPUBuffer | BufferSlice;
  /** Partial results (createAttentionDecodeScratch); unused when one chunk covers maxPos. */
  scratch?: GPUBuffer;
  gated?: boolean;
  /**
   * Tuning knobs: keys per online-softmax step (default 64), threads per workgroup (128) and of the merge (32),
   * threads per key in the score pass (default: the fewest, down to 1 vec4 per thread, that keep M * KEY_VEC <= 16,
   * KEY_VEC <= 8 and a tile a multiple of the keys per pass).
   */
  tile?: number;
  workgroupSize?: number;
  mergeWorkgroupSize?: number;
  keyLanes?: number;
}

/** The kernels the decode builder records (replaceable, for tests of broken kernels). */
export interface AttentionDecodeKernels {
  partial: Kernel;
  merge: Kernel;
}

const DEFAULT_CHUNK = 64;

interface DecodePlan {
  chunk: number;
  chunks: number;
  tile: number;
  wg: number;
  keyVec: number;
  direct: boolean;
}

function planDecode(
  a: AttentionDecodeShape & { tile?: number; workgroupSize?: number; keyLanes?: number },
): DecodePlan {
  const { rows, headDim, maxPos } = a;
  const wg = a.workgroupSize ?? 128;
  const tile = a.tile ?? 64;
  const fail = (why: string) => {
    throw new Error(`attentionDecode: ${why}`);
  };
  if (!Number.isInteger(rows) || rows < 1 || rows > DECODE_MAX_ROWS) {
    fail(`${rows} query rows is outside 1..${DECODE_MAX_ROWS}`);
  }
  if (!Number.isInteger(maxPos) || maxPos < 1) fail(`maxPos ${maxPos} is not a positive integer`);
  checkHeadShape("attentionDecode", a.nHeads, headDim, wg);
  const hv = headDim / 4;
  let keyVec = Math.min(8, hv, 2 ** Math.floor(Math.log2(16 / rows)));
  const keysPerPass = (v: number) => wg / (hv / v);
  while (a.keyLanes === undefined && keyVec > 1 && tile % keysPerPass(keyVec) !== 0) keyVec /= 2;
  if (a.keyLanes !== undefined) {
    keyVec = hv / a.keyLanes;
    if (!Number.isInteger(keyVec) || keyVec !== nextPowerOfTwo(keyVec) || rows * keyVec > 16) {
      fail(
        `${a.keyLanes} threads per key must be a power of two dividing ${hv} (the vec4 of a head) and leave at ` +
          `most ${Math.floor(16 / rows)} vec4 of a key per thread at ${rows} rows`,
      );
    }
  }
  if (tile < 1 || tile % keysPerPass(keyVec) !== 0) {
    fail(`a tile of ${tile} keys is not a multiple of the ${keysPerPass(keyVec)} keys per score pass`);
  }
  const direct = (a.chunk ?? DEFAULT_CHUNK) >= maxPos;
  const chunk = direct ? Math.ceil(maxPos / tile) * tile : a.chunk ?? DEFAULT_CHUNK;
  if (chunk % tile !== 0) fail(`a chunk of ${chunk} keys is not a multiple of the tile (${tile} keys)`);
  const mq = Math.ceil(rows / 4);
  const bytes = 4 * (4 * mq * wg + rows * tile + wg + 3 * rows);
  if (bytes > WORKGROUP_BYTES) {
    fail(
      `${rows} rows with tile ${tile} and ${wg} threads need ${bytes} bytes of workgroup memory ` +
        `(at most ${WORKGROUP_BYTES}); use a smaller tile`,
    );
  }
  return { chunk, chunks: Math.ceil(maxPos / chunk), tile, wg, keyVec, direct };
}

/**
 * Bytes of the scratch buffer of a decode shape: it serves every dispatch with at most `rows` rows and the same
 * heads, head_dim, maxPos and chunk (all layers can share one, the dispatches run one after another).
 */
export function attentionDecodeScratchBytes(shape: AttentionDecodeShape): number {
  const chunk = shape.chunk ?? DEFAULT_CHUNK;
  if (chunk >= shape.maxPos) return 0;
  return shape.rows * shape.nHeads * Math.ceil(shape.maxPos / chunk) * (shape.headDim + 4) * 4;
}

/** Allocates the scratch buffer of a decode shape (load time), or returns undefined when it needs none. */
export function createAttentionDecodeScratch(gpu: Gpu, shape: AttentionDecodeShape): GPUBuffer | undefined {
  const bytes = attentionDecodeScratchBytes(shape);
  return bytes === 0 ? undefined : gpu.buffer("attention decode scratch", bytes);
}

/**
 * Records the decode attention dispatches (load time): the chunked partial pass then the merge, or one dispatch when
 * a single chunk covers maxPos. Throws on shapes the kernels do not handle.
 */
export function attentionDecode(
  gpu: Gpu,
  a: AttentionDecodeArgs,
  kernels: AttentionDecodeKernels = { partial: attentionDecodeKernel, merge: attentionMergeKernel },
): Dispatch[] {
  const plan = planDecode(a);
  const common = { NH: a.nHeads, HEAD_DIM: a.headDim, M: a.rows, MAX_POS: a.maxPos, CHUNK: plan.chunk };
  const partial = {
    ...common,
    TILE: plan.tile,
    WG: plan.wg,
    KEY_VEC: plan.keyVec,
    ROW_LANES: rowLanes(plan.wg, a.rows, plan.tile),
    SCALE: Math.fround(1 / Math.sqrt(a.headDim)),
    DIRECT: plan.direct,
    GATED: a.gated ?? false,
  };
  const grid: [number, number, number] = [a.nHeads, plan.chunks, 1];
  if (plan.direct) return [gpu.dispatch(kernels.partial, partial, [a.ctl, a.q, a.kCache, a.vCache, a.out], grid)];
  const need = attentionDecodeScratchBytes(a);
  if (!a.scratch || a.scratch.size < need) {
    throw new Error(`attentionDecode: the scratch buffer must hold ${need} bytes (createAttentionDecodeScratch)`);
  }
  return [
    gpu.dispatch(kernels.partial, partial, [a.ctl, a.q, a.kCache, a.vCache, a.scratch], grid),
    gpu.dispatch(
      kernels.merge,
      { ...common, WG: a.mergeWorkgroupSize ?? 32, GATED: a.gated ?? false },
      [a.ctl, a.scratch, a.out],
      [a.nHeads, a.rows, 1],
    ),
  ];
}
