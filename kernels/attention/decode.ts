/**
 * Causal attention for decode and speculative verification: M = 1..16 query rows (positions p_m = ctl[POS] + m)
 * against a position-major K/V cache whose valid length L = p_{M-1} + 1 is GPU data, up to MAX_POS keys.
 *
 * Flash-decoding with a split sized at run time. The grid is heads x SPLITS workgroups, fixed when the dispatch is
 * recorded (SPLITS is chosen so that the grid fills the GPU: about `targetWorkgroups` workgroups); each workgroup reads
 * L from the control block and takes keys [s * per, (s + 1) * per) with per = max(MIN_KEYS, ceil(L / SPLITS)). Short
 * contexts use a few splits of MIN_KEYS keys (fewer partial results to merge), long ones spread over all SPLITS, so
 * every context keeps the GPU busy with the same recorded grid. A workgroup owns one (head, split) and all M rows, so
 * every K and V row is read once for the M queries:
 *   1. scores: KEY_LANES threads per key, each holding KEY_VEC vec4 of it (a warp reads whole contiguous key rows);
 *      the lanes' partial dot products are summed by subgroup shuffles where the adapter's subgroups are at least
 *      KEY_LANES wide, else by a tree in workgroup memory. The split's scores stay in workgroup memory
 *      (at most CAP keys a split, which bounds SPLITS from below).
 *   2. softmax over the split: each row's max and sum of exp over ROW_LANES threads (subgroup shuffles again, or the
 *      tree), scores turned into p = exp(s - max) in place.
 *   3. p * V: HEAD_DIM / 4 threads per V row, one vec4 each, SLOTS = WG / (HEAD_DIM / 4) keys in flight, all M rows
 *      accumulated in registers; the SLOTS partial sums are added in workgroup memory.
 * Each (row, head, split) writes its unnormalised output and (max, sum of exp) to a scratch buffer, and the merge
 * kernel combines the splits into out. With SPLITS = 1 the builder records a single dispatch (DIRECT) that normalises
 * and writes out itself.
 *
 * Fused (`qkNormRope`): the queries, keys and values of the M rows come from the QKV projection, QK-normed and
 * roped in the split pass, and each new K/V row is appended by the one workgroup whose split holds it (the work of
 * qk_norm_rope.ts without its dispatch; the race-freedom argument is in the kernel's comment). OLMo-2's QK-norm spans
 * the whole width D, so by default every workgroup re-reads D floats of q (and of k) for the statistics; with
 * `qkNormRope.stats` it adds the partial sums of squares the QKV matvec wrote instead (`qkStats` in matvec.ts, a few
 * hundred floats a row at 7B).
 *
 * Every per-thread value is a named register generated per row, vec4 and unrolled pass (no array indexed in a loop:
 * those lived in local memory on the H200). Measured there (docs/PERF.md): the first design (fixed chunks of 64 keys,
 * tree reductions only, an online softmax over tiles) took 44 us per 7B layer inside a decode step at 256 keys; this
 * one with arrays 16 us, with named registers 10 us (and 28 us at 4,000 keys, 55% of copy, against 53 us).
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { reductionBytes, reductionsWgsl, subgroupWidth } from "../reduce.ts";
import { type KvDtype, kvReadWgsl } from "./kv_cache.ts";
import { checkHeadShape, nextPowerOfTwo, WORKGROUP_BYTES } from "./shared.ts";
import { qkNormRopeReference, type QkNormRopeShape } from "./qk_norm_rope.ts";
import { attentionReference } from "./reference.ts";
import { roundBf16Array } from "../bf16.ts";
import { UserError } from "../../common/errors.ts";
import { range } from "../codegen.ts";

/** Most query rows one decode dispatch handles (speculative verification of up to 16 drafted tokens). */
export const DECODE_MAX_ROWS = 16;

/**
 * Where the plain kernel gets its inputs: query4(m, col, first_pos), key4(key, col, first_pos) and value4(key, col,
 * first_pos) are the vec4 at column col (a vec4 index into a row of width D) of query row m, and of the key and value of
 * position `key`, all from the buffers.
 */
const PLAIN_INPUTS_WGSL = /* wgsl */ `
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
fn query4(m: u32, col: u32, first_pos: u32) -> vec4<f32> { return q[m * NH * HV + col]; }
fn key4(key: u32, col: u32, first_pos: u32) -> vec4<f32> { return load_k(key * NH * HV + col); }
fn value4(key: u32, col: u32, first_pos: u32) -> vec4<f32> { return load_v(key * NH * HV + col); }
`;

/**
 * The same functions for the fused kernel: queries, and the keys and values of this dispatch's rows (positions from
 * first_pos), come from qkv, QK-normed and roped here (as the cache will hold them: as_kv4); older keys and values from
 * the caches. row_max[m] / row_sum[m] hold row m's inverse RMS of q / k (FUSED_PROLOGUE_WGSL).
 */
const FUSED_INPUTS_WGSL = /* wgsl */ `
@group(0) @binding(1) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> norm_w: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> rope: array<vec4<f32>>;
// Row m's q (part 0) or k (part 1) at column col: times inv and the QK-norm weight, then roped at position p (NeoX
// half-split: column c of a head pairs with c + HV / 2), as qk_norm_rope.ts computes it.
fn qk_rope4(m: u32, part: u32, col: u32, p: u32, inv: f32) -> vec4<f32> {
  let row4 = NH * HV;
  let hq = HV / 2u;
  let c = col % HV;
  let mate = select(col + hq, col - hq, c >= hq);
  let src = (3u * m + part) * row4;
  var x = qkv[src + col];
  var y = qkv[src + mate];
  if (APPLY_NORM) {
    x = x * inv * norm_w[part * row4 + col];
    y = y * inv * norm_w[part * row4 + mate];
  }
  let r = min(p, MAX_POS - 1u) * HV + c % hq; // rows past the cache: any angle (their output is unspecified)
  let cs = rope[r];
  let sn = rope[r + hq];
  return select(x * cs + y * sn, x * cs - y * sn, c < hq);
}
fn query4(m: u32, col: u32, first_pos: u32) -> vec4<f32> { return qk_rope4(m, 0u, col, first_pos + m, row_max[m]); }
fn key4(key: u32, col: u32, first_pos: u32) -> vec4<f32> {
  if (key >= first_pos) { return as_kv4(qk_rope4(key - first_pos, 1u, col, key, row_sum[key - first_pos])); }
  return load_k(key * NH * HV + col);
}
fn value4(key: u32, col: u32, first_pos: u32) -> vec4<f32> {
  if (key >= first_pos) { return as_kv4(qkv[(3u * (key - first_pos) + 2u) * NH * HV + col]); }
  return load_v(key * NH * HV + col);
}
`;

/** row_sumsq(m, part, t): this thread's share of row m's sum of squares of q (part 0) or k (part 1), from qkv. */
const SUMSQ_DIRECT_WGSL = /* wgsl */ `
fn row_sumsq(m: u32, part: u32, t: u32) -> f32 {
  let row4 = NH * HV;
  var s = 0.0;
  for (var i = t; i < row4; i += WG) {
    let a = qkv[(3u * m + part) * row4 + i];
    s += dot(a, a);
  }
  return s;
}
`;

/**
 * The same from the QKV matvec's partial sums (matvec.ts `qkStatsLayout`, row groups of QK_GROUP_ROWS outputs): q's
 * are the groups holding any of outputs 0 .. D - 1, k's those holding any of D .. 2D - 1.
 */
const SUMSQ_PARTIALS_WGSL = /* wgsl */ `
@group(0) @binding(7) var<storage, read> qk_part: array<f32>;
fn row_sumsq(m: u32, part: u32, t: u32) -> f32 {
  let d = NH * HEAD_DIM;
  let groups = (2u * d + QK_GROUP_ROWS - 1u) / QK_GROUP_ROWS;
  let g0 = select(d / QK_GROUP_ROWS, 0u, part == 0u);
  let g1 = select(groups, (d + QK_GROUP_ROWS - 1u) / QK_GROUP_ROWS, part == 0u);
  var s = 0.0;
  for (var g = g0 + t; g < g1; g += WG) { s += qk_part[(2u * m + part) * groups + g]; }
  return s;
}
`;

/**
 * The fused kernel's step 0, once its split (keys k0 .. k0 + n - 1) is known: the QK-norm statistics (q's of every
 * row; k's of the rows whose key is in this split), then this split's new keys and values of head h appended to the
 * caches.
 */
const FUSED_PROLOGUE_WGSL = /* wgsl */ `
  // 0. new rows fresh0 .. fresh1 - 1 (positions first_pos + r) have their key in this split
  let fresh0 = max(k0, first_pos) - first_pos;
  let fresh1 = max(k0 + n, first_pos) - first_pos;
  let width = f32(NH * HEAD_DIM);
  for (var m = 0u; m < M; m++) {
    var inv_q = 1.0;
    var inv_k = 1.0;
    if (APPLY_NORM) {
      inv_q = inverseSqrt(workgroup_sum(row_sumsq(m, 0u, t), t) / width + EPS);
      if (m >= fresh0 && m < fresh1) { inv_k = inverseSqrt(workgroup_sum(row_sumsq(m, 1u, t), t) / width + EPS); }
    }
    if (t == 0u) {
      row_max[m] = inv_q;
      row_sum[m] = inv_k;
    }
  }
  workgroupBarrier();
  for (var i = t; i < (fresh1 - fresh0) * HV; i += WG) {
    let key = first_pos + fresh0 + i / HV;
    let col = h * HV + i % HV;
    store_k4(key * row4 + col, key4(key, col, first_pos));
    store_v4(key * row4 + col, value4(key, col, first_pos));
  }
`;

/**
 * The WGSL kernel: attention of one split of the keys (or, DIRECT, of all keys, with the final output), its
 * reductions by subgroup shuffles or by a tree in workgroup memory (kernels/reduce.ts).
 */
export function attentionDecodeKernelFor(spec: AttentionDecodeKernelSpec): Kernel {
  const { subgroups, rows, keyVec, fused = false, qkStats = false, scoreUnroll = 1, pvUnroll = 4 } = spec;
  const rg = spec.rowsPerRound ?? 1;
  if (!(Number.isInteger(rg) && rg >= 1 && rg <= rows)) {
    throw new Error(`attentionDecodeKernelFor: rowsPerRound ${rg} is outside 1..${rows}`);
  }
  const kv = spec.kvDtype ?? "f32";
  if (![1, 2, 4].includes(scoreUnroll) || ![1, 2, 4, 8].includes(pvUnroll)) {
    throw new Error(
      `attentionDecodeKernelFor: scoreUnroll ${scoreUnroll} (1, 2 or 4), pvUnroll ${pvUnroll} (1, 2, 4, 8)`,
    );
  }
  if (qkStats && !fused) throw new Error("attentionDecodeKernelFor: qkStats is an input of the fused kernel");
  if (!(Number.isInteger(rows) && rows >= 1 && rows <= DECODE_MAX_ROWS)) {
    throw new Error(`attentionDecodeKernelFor: ${rows} rows is outside 1..${DECODE_MAX_ROWS}`);
  }
  if (![1, 2, 4, 8].includes(keyVec) || rows * keyVec > 16) {
    throw new Error(`attentionDecodeKernelFor: keyVec ${keyVec} (1, 2, 4 or 8, and rows * keyVec <= 16)`);
  }
  return {
    name: `attention_decode${fused ? "_qk" : ""}${qkStats ? "s" : ""}_m${rows}v${keyVec}u${scoreUnroll}p${pvUnroll}${
      rg > 1 ? `r${rg}` : ""
    }${subgroups ? "_sg" : ""}${kv === "bf16" ? "_kvbf16" : ""}`,
    source: /* wgsl */ `
// bindings (D = NH * HEAD_DIM; the grid is [NH, SPLITS, 1]: workgroup (h, s) = head h, split s):
//   0 ctl [CTL_SLOTS] u32, read          control block: ctl[CTL_POS] - POS_BACK = position of query row 0
${
      fused
        ? `//   1 qkv [M, 3 * D / 4] vec4<f32>       the fused projection rows q | k | v (kernels/attention/qk_norm_rope.ts does
//                                        the same QK-norm + RoPE as a dispatch of its own)
//   2 kc  [MAX_POS, D] ${kv}, read_write   K cache, position-major: row p = key of position p (kv_cache.ts)
//   3 vc  [MAX_POS, D] ${kv}, read_write   V cache, same layout
//   4 dst (below)
//   5 norm_w [2, D / 4] vec4<f32>        QK-norm weights, q's row then k's (read when APPLY_NORM)
//   6 rope [MAX_POS, HEAD_DIM / 4] vec4   the RoPE table (qk_norm_rope.ts ropeTable)${
          qkStats
            ? `
//   7 qk_part [M, 2, groups] f32         the QKV matvec's partial sums of squares of q and k by row groups of
//                                        QK_GROUP_ROWS outputs (matvec.ts qkStatsLayout; read when APPLY_NORM)`
            : ""
        }
// Keys 0 .. ctl[CTL_POS] - 1 must be in the caches; keys ctl[CTL_POS] + m (m < M, below MAX_POS) are this dispatch's
// rows: q, k, v of row m are QK-normed (over the whole width D) and roped at position ctl[CTL_POS] + m here, and
// workgroup (h, s) appends head h of every new key in its split to the caches. No other workgroup reads those cache
// rows (a key belongs to one split), and the owner itself takes new keys from qkv, never from the cache it writes, so
// there is no ordering to rely on between workgroups. Rows at positions >= MAX_POS write nothing.`
        : `//   1 q   [M, D / 4] vec4<f32>           queries, row-major [M, D] f32, QK-normed and roped; head h in columns
//                                        h*HEAD_DIM .. (h+1)*HEAD_DIM-1
//   2 kc  [MAX_POS, D] ${kv}               K cache, position-major: row p = key of position p (kv_cache.ts)
//   3 vc  [MAX_POS, D] ${kv}               V cache, same layout
// Keys 0 .. min(ctl[CTL_POS] + M, MAX_POS) - 1 must be in the caches; later rows are never read.`
    }
//   4 dst vec4<f32>, read_write          DIRECT: out [M, D / 4] (the attention output, row-major [M, D] f32);
//                                        else the scratch: [M, NH, SPLITS, HEAD_DIM / 4] unnormalised outputs,
//                                        then [M, NH, SPLITS] vec4 (max, sum of exp, -, -)
override NH: u32;
override HEAD_DIM: u32;                       // a power of two, 8 .. 4 * WG
const M: u32 = ${rows}u;                         // query rows, 1 .. 16 (generated: the arrays below are sized by it)
override MAX_POS: u32;                        // cache rows
override SPLITS: u32 = 1u;                    // workgroups per head; SPLITS * CAP >= MAX_POS
override MIN_KEYS: u32 = 32u;                 // fewest keys a split takes
override CAP: u32;                            // most keys a split takes (its scores live in workgroup memory)
override WG: u32 = 128u;                      // threads, a power of two
override SCALE: f32;                          // 1 / sqrt(HEAD_DIM)
override DIRECT: bool = false;                // SPLITS = 1: normalise and write out directly
override POS_BACK: u32 = 0u;                  // row 0 sits at ctl[CTL_POS] - POS_BACK (a PoE verification beside a draft)
const KEY_VEC: u32 = ${keyVec}u;                   // scores: vec4 of a key per thread, M * KEY_VEC <= 16 (generated);
                                              // subgroup path: KEY_LANES <= SG_LANES
override ROW_LANES: u32 = 8u;                 // softmax: threads per row, a power of two, ROW_LANES * M <= WG
override HV: u32 = HEAD_DIM / 4u;             // vec4 per head row
override KEY_LANES: u32 = HV / KEY_VEC;       // scores: threads per key (t = key_slot * KEY_LANES + key_lane)
override KEY_SLOTS: u32 = WG / KEY_LANES;     // scores: keys per pass
override SLOTS: u32 = WG / HV;                // p * V: keys in flight (t = slot * HV + lane)
const RG: u32 = ${rg}u;                           // p * V: rows summed over the slots per round (generated)
${fused ? "override EPS: f32 = 1e-6;                     // QK-norm\noverride APPLY_NORM: bool = true;" : ""}${
      qkStats ? "\noverride QK_GROUP_ROWS: u32;                 // outputs per row group of the QKV matvec" : ""
    }
const NEG_BIG: f32 = -3.0e38;                 // "no key": finite, so exp(NEG_BIG - NEG_BIG) = 1, never NaN
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
${kvReadWgsl(kv, 2, 3, fused)}
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;
${reductionsWgsl(subgroups)}
// (the reductions first: naga 29 panics on an override declared after an override-sized array and used in live code)
var<workgroup> scores: array<f32, M * CAP>;   // [M, CAP]: the split's scores, then probabilities
var<workgroup> acc_sum: array<vec4<f32>, RG * WG>;
var<workgroup> row_max: array<f32, M>;    ${fused ? "// before step 2: the rows' inverse RMS of q" : ""}
var<workgroup> row_sum: array<f32, M>;    ${fused ? "// before step 2: the new rows' inverse RMS of k" : ""}
${fused ? FUSED_INPUTS_WGSL + (qkStats ? SUMSQ_PARTIALS_WGSL : SUMSQ_DIRECT_WGSL) : PLAIN_INPUTS_WGSL}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let h = wid.x;
  let s = wid.y;
  let first_pos = ctl[CTL_POS] - POS_BACK;
  let len = min(first_pos + M, MAX_POS);       // keys 0 .. len - 1 exist
  let per = max(MIN_KEYS, (len + SPLITS - 1u) / SPLITS);
  let k0 = s * per;
  if (k0 >= len) { return; }                    // past the last key: the merge never reads this split
  let n = min(per, len - k0);                   // keys of this split (uniform across the workgroup)
  let row4 = NH * HV;                           // vec4 per cache / query row
${
      fused
        ? FUSED_PROLOGUE_WGSL
        : ""
    }  // 1. scores[m, j] = SCALE * (q_m . k_{k0 + j}), NEG_BIG where key k0 + j is after row m's position
  let key_slot = t / KEY_LANES;
  let key_lane = t % KEY_LANES;
  let key_col = h * HV + key_lane;              // this thread's first vec4 of the head, then every KEY_LANES
  // Every per-thread value is a named register, generated per row (q<m>_<v>), vec4 of a key (k<u>_<v>) and unrolled
  // pass (u): an array indexed in a loop lands in local memory on the H200, which the probe of 2026-11-30 measured as
  // most of this kernel's time (docs/PERF.md).
${
      range(rows).map((m) =>
        range(keyVec).map((v) => `  let q${m}_${v} = query4(${m}u, key_col + ${v}u * KEY_LANES, first_pos) * SCALE;`)
          .join("\n")
      ).join("\n")
    }
  for (var j0 = 0u; j0 < n; j0 += ${scoreUnroll}u * KEY_SLOTS) {
    // the keys of ${scoreUnroll} pass(es) loaded before any is reduced; lanes past the split reread its last key
${
      range(scoreUnroll).map((u) =>
        `    let key${u} = k0 + min(j0 + ${u}u * KEY_SLOTS + key_slot, n - 1u);\n` +
        range(keyVec).map((v) => `    let k${u}_${v} = key4(key${u}, key_col + ${v}u * KEY_LANES, first_pos);`).join(
          "\n",
        )
      ).join("\n")
    }
${
      range(scoreUnroll).map((u) =>
        `    {
      let j = j0 + ${u}u * KEY_SLOTS + key_slot;
${
          range(Math.ceil(rows / 4)).map((mq) => {
            const dot = (m: number) => range(keyVec).map((v) => `dot(k${u}_${v}, q${m}_${v})`).join(" + ");
            // a group of one row (one row in all, or the last of 5, 9, 13) reduces a scalar: a quarter of the shuffles
            return rows - 4 * mq === 1
              ? `      let dots${mq} = vec4<f32>(lanes_sum(${dot(4 * mq)}, t, KEY_LANES), 0.0, 0.0, 0.0);`
              : `      let dots${mq} = lanes_sum4(vec4<f32>(${
                range(4).map((i) => 4 * mq + i < rows ? dot(4 * mq + i) : "0.0").join(", ")
              }), t, KEY_LANES);`;
          }).join("\n")
        }
      if (key_lane == 0u && j < n) {
${
          range(rows).map((m) =>
            `        scores[${m}u * CAP + j] = select(NEG_BIG, dots${m >> 2}[${m & 3}], k0 + j <= first_pos + ${m}u);`
          ).join("\n")
        }
      }
    }`
      ).join("\n")
    }
  }
  workgroupBarrier();
  // 2. each row's max and sum of exp over the split; scores -> p = exp(s - max)
  let r = t / ROW_LANES;
  let row_lane = t % ROW_LANES;
  let row = min(r, M - 1u);                     // threads past the rows repeat the last one (never store)
  var mx = NEG_BIG;
  for (var j = row_lane; j < n; j += ROW_LANES) { mx = max(mx, scores[row * CAP + j]); }
  mx = lanes_max(mx, t, ROW_LANES);
  workgroupBarrier();
  var sum = 0.0;
  if (r < M) {
    for (var j = row_lane; j < n; j += ROW_LANES) {
      let i = row * CAP + j;
      let p = select(0.0, exp(scores[i] - mx), scores[i] > NEG_BIG);
      scores[i] = p;
      sum += p;
    }
  }
  sum = lanes_sum(sum, t, ROW_LANES);
  if (r < M && row_lane == 0u) {
    row_max[r] = mx;
    row_sum[r] = sum;
  }
  workgroupBarrier();
  // 3. acc_m = sum_j p[m, j] V[k0 + j]
  let slot = t / HV;
  let lane = t % HV;
  let col = h * HV + lane;
${range(rows).map((m) => `  var acc${m} = vec4<f32>();`).join("\n")}
  var j = slot;
  // ${pvUnroll} V rows in flight per thread: each iteration's loads do not wait on the previous one's FMAs.
  for (; j + ${pvUnroll - 1}u * SLOTS < n; j += ${pvUnroll}u * SLOTS) {
${range(pvUnroll).map((u) => `    let v${u} = value4(k0 + j + ${u}u * SLOTS, col, first_pos);`).join("\n")}
${
      range(rows).map((m) =>
        `    acc${m} += ${range(pvUnroll).map((u) => `scores[${m}u * CAP + j + ${u}u * SLOTS] * v${u}`).join(" + ")};`
      ).join("\n")
    }
  }
  for (; j < n; j += SLOTS) {
    let vv = value4(k0 + j, col, first_pos);
${range(rows).map((m) => `    acc${m} += scores[${m}u * CAP + j] * vv;`).join("\n")}
  }
  // 4. sum the SLOTS partial accumulators, RG rows per round, and store
${
      range(Math.ceil(rows / rg)).map((round) => {
        const r0 = round * rg;
        return `  {
${range(rg).map((g) => `    acc_sum[${g}u * WG + t] = acc${Math.min(r0 + g, rows - 1)};`).join("\n")}
    workgroupBarrier();
    for (var u = t; u < RG * HV; u += WG) {
      let m = ${r0}u + u / HV;
      let l = u % HV;
      if (m < M) {
        var o = vec4<f32>();
        for (var sl = 0u; sl < SLOTS; sl++) { o += acc_sum[(u / HV) * WG + sl * HV + l]; }
        if (DIRECT) {
          dst[m * row4 + h * HV + l] = o / row_sum[m];
        } else {
          dst[((m * NH + h) * SPLITS + s) * HV + l] = o;
        }
      }
    }
    workgroupBarrier();
  }`;
      }).join("\n")
    }
  if (!DIRECT) {
    for (var m = t; m < M; m += WG) {
      dst[M * NH * SPLITS * HV + (m * NH + h) * SPLITS + s] = vec4<f32>(row_max[m], row_sum[m], 0.0, 0.0);
    }
  }
}
`,
  };
}

/**
 * The WGSL kernel that merges the per-split partial results of attention_decode into the output. A workgroup (head,
 * row) stages the splits' (max, sum of exp) in workgroup memory, and its WG / HV groups of HV threads (one vec4 column
 * each) add every (WG / HV)-th split's output, so a thread's loads are independent and few. The first design (one
 * thread per column looping over every split) took ~9 us a layer in a 7B step at 4,095 keys (16 splits) on the H200,
 * 5 us at 256 keys (docs/PERF.md).
 */
export const attentionMergeKernel: Kernel = {
  name: "attention_decode_merge",
  source: /* wgsl */ `
// bindings (D = NH * HEAD_DIM; the grid is [NH, M, 1]: workgroup (h, m) = head h of row m):
//   0 ctl  [CTL_SLOTS] u32, read       control block: ctl[CTL_POS] - POS_BACK = position of query row 0
//   1 part vec4<f32>, read             the scratch written by attention_decode (layout there)
//   2 out  [M, D / 4] vec4<f32>, rw    the attention output, row-major [M, D] f32
override NH: u32;
override HEAD_DIM: u32;
override M: u32 = 1u;
override MAX_POS: u32;
override SPLITS: u32;
override MIN_KEYS: u32 = 32u;
override WG: u32 = 128u;                      // a multiple of HV: WG / HV groups of splits
override HV: u32 = HEAD_DIM / 4u;
override POS_BACK: u32 = 0u;
const NEG_BIG: f32 = -3.0e38;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> part: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
var<workgroup> split_stats: array<vec2<f32>, SPLITS>; // (max, sum of exp) of each split
var<workgroup> group_out: array<vec4<f32>, WG>;      // each thread's share of its column
var<workgroup> group_sum: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let h = wid.x;
  let m = wid.y;
  let len = min(ctl[CTL_POS] - POS_BACK + M, MAX_POS);
  let per = max(MIN_KEYS, (len + SPLITS - 1u) / SPLITS);
  let splits = (len + per - 1u) / per;          // the splits that hold keys (as attention_decode computed them)
  let base = (m * NH + h) * SPLITS;
  let stats = M * NH * SPLITS * HV + base;
  for (var s = t; s < splits; s += WG) { split_stats[s] = part[stats + s].xy; }
  workgroupBarrier();
  var gmax = NEG_BIG;
  for (var s = 0u; s < splits; s++) { gmax = max(gmax, split_stats[s].x); }
  let groups = WG / HV;
  let l = t % HV;                               // this thread's vec4 column
  var o = vec4<f32>();
  var sum = 0.0;
  for (var s = t / HV; s < splits; s += groups) {
    let w = exp(split_stats[s].x - gmax);
    sum += w * split_stats[s].y;
    o += w * part[(base + s) * HV + l];
  }
  group_out[t] = o;
  group_sum[t] = sum;
  workgroupBarrier();
  if (t < HV) {
    var total = vec4<f32>();
    var total_sum = 0.0;
    for (var g = 0u; g < groups; g++) {
      total += group_out[g * HV + l];
      total_sum += group_sum[g * HV + l];
    }
    out[(m * NH + h) * HV + l] = total / total_sum;
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
  /**
   * Workgroups per head (default: enough for about `DECODE_TARGET_WORKGROUPS` workgroups in all, and at least
   * maxPos / CAP); 1 gives the single-dispatch path.
   */
  splits?: number;
}

/** Arguments of the decode attention dispatches. */
export interface AttentionDecodeArgs extends AttentionDecodeShape {
  ctl: GPUBuffer;
  /** f32 queries [rows, nHeads * headDim], QK-normed and roped (unless `qkNormRope` is given). */
  q?: GPUBuffer | BufferSlice;
  /**
   * Fuses QK-norm + RoPE + the K/V append (what `qkNormRope` records as a dispatch of its own) into the split pass:
   * queries, keys and values of the rows come from `qkv`, and the caches get rows ctl[POS] .. + rows - 1 (those below
   * maxPos). The caches are then bound read_write.
   */
  qkNormRope?: FusedQkNormRope;
  /** K cache [maxPos, nHeads * headDim] of `kvDtype`, position-major. */
  kCache: GPUBuffer | BufferSlice;
  /** V cache, same layout. */
  vCache: GPUBuffer | BufferSlice;
  /** Element type of the caches (default f32; kv_cache.ts). */
  kvDtype?: KvDtype;
  /** f32 output [rows, nHeads * headDim]. */
  out: GPUBuffer | BufferSlice;
  /** Partial results (createAttentionDecodeScratch); unused with one split. */
  scratch?: GPUBuffer;
  gated?: boolean;
  /**
   * Tuning knobs: fewest keys per split (default 64), threads per workgroup (256 up to 4 rows, else 128) and of the
   * merge (128, at least HEAD_DIM / 4), threads per
   * key in the score pass (default: the fewest, down to 1 vec4 per thread, that keep M * KEY_VEC <= 8 and KEY_VEC
   * <= 4; planDecode has the measurements), and whether to reduce with subgroup shuffles (default: when the device has
   * `subgroups` at least as wide as the lanes reduced).
   */
  minKeys?: number;
  workgroupSize?: number;
  mergeWorkgroupSize?: number;
  keyLanes?: number;
  subgroups?: boolean;
  /** `AttentionDecodeKernelSpec.scoreUnroll` and `pvUnroll`. */
  scoreUnroll?: number;
  pvUnroll?: number;
  /**
   * Row 0 sits at ctl[POS] - posBack (default 0): a PoE verification recorded beside the round's last draft step; a
   * negative posBack puts it that many rows ahead of ctl[POS] (the last row of a prefill whose other rows' queries are
   * not needed, model/hydra.ts's last-row tail). The kernels take it as a u32 modulo 2^32 (WGSL's u32 arithmetic
   * wraps, so ctl[POS] - (2^32 - n) is ctl[POS] + n).
   */
  posBack?: number;
}

/** The inputs of the fused QK-norm + RoPE (qk_norm_rope.ts's arguments of the same names). */
export interface FusedQkNormRope {
  /** f32 [rows, 3 * nHeads * headDim]: q | k | v per row. */
  qkv: GPUBuffer | BufferSlice;
  /** f32 [2, nHeads * headDim]: q's norm weight, then k's (bound but unread without `applyNorm`). */
  normWeights: GPUBuffer | BufferSlice;
  /** f32 [maxPos, headDim] from `ropeTable`. */
  ropeTable: GPUBuffer | BufferSlice;
  /** RMSNorm epsilon (default 1e-6). */
  eps?: number;
  /** QK-norm before RoPE (default true). */
  applyNorm?: boolean;
  /**
   * The QK-norm statistics as partial sums written by the QKV matvec (`MatvecArgs.qkStats` over this qkv, with the
   * same rows): the kernel adds those instead of re-reading the whole width of q and k in every workgroup.
   */
  stats?: FusedQkStats;
}

/**
 * Threads of the merge: `mergeWorkgroupSize` (default 128: four groups of splits at HEAD_DIM 128), at least the vec4
 * of a head row (a multiple of them: both are powers of two).
 */
function mergeWorkgroupSize(a: AttentionDecodeArgs): number {
  const wg = a.mergeWorkgroupSize ?? 128;
  if (!(Number.isInteger(wg) && wg >= 1 && (wg & (wg - 1)) === 0)) {
    throw new Error(`attentionDecode: mergeWorkgroupSize ${wg} is not a power of two`);
  }
  return Math.max(wg, a.headDim / 4);
}

/** The QKV matvec's partial sums of squares (matvec.ts `QkStats`, `qkStatsLayout`). */
export interface FusedQkStats {
  /** f32 [rows, 2, groups]. */
  partials: GPUBuffer | BufferSlice;
  /** Outputs per row group of the matvec that wrote them (matvec.ts `matvecGroupRows`). */
  groupRows: number;
}

/** What `attentionDecodeKernelFor` generates a split-pass kernel for. */
export interface AttentionDecodeKernelSpec {
  /** Reductions by subgroup shuffles (else a tree in workgroup memory). */
  subgroups: boolean;
  /** Query rows, 1..DECODE_MAX_ROWS: a generated constant, as it sizes the per-thread arrays. */
  rows: number;
  /** vec4 of a key per thread in the score pass (1, 2, 4 or 8; rows * keyVec <= 16). */
  keyVec: number;
  kvDtype?: KvDtype;
  /** The fused QK-norm + RoPE + K/V append (`qkNormRope`). */
  fused?: boolean;
  /** The fused kernel's QK-norm statistics from the QKV matvec's partial sums (`qkNormRope.stats`). */
  qkStats?: boolean;
  /** Score passes whose keys a thread loads before reducing any (1, 2 or 4; default 1). */
  scoreUnroll?: number;
  /** V rows a thread has in flight in the p * V pass (1, 2, 4 or 8; default 4). */
  pvUnroll?: number;
  /** Rows whose slot sums share a round of workgroup memory at the end (1..rows; default 1). */
  rowsPerRound?: number;
}

/** The kernels the decode builder records (replaceable, for tests of broken kernels). */
export interface AttentionDecodeKernels {
  /** The split pass, generated for the spec the builder asks for. */
  partial?: (spec: AttentionDecodeKernelSpec) => Kernel;
  merge?: Kernel;
}

/**
 * Workgroups the default split aims at: a few per SM of the GPUs this suite targets (132 SMs on an H100 / H200), so
 * that every SM has several workgroups' loads in flight. WebGPU does not tell the SM count.
 */
export const DECODE_TARGET_WORKGROUPS = 512;

/** Threads per workgroup: 256 (8 V rows in flight per head-row of lanes) up to 4 rows, 128 above (registers). */
const defaultWorkgroupSize = (rows: number) => rows <= 4 ? 256 : 128;

interface DecodePlan {
  splits: number;
  cap: number;
  wg: number;
  keyVec: number;
  rowLanes: number;
  minKeys: number;
  rg: number;
}

/** Workgroup bytes the slot sums of the p * V pass may take (RG rows of WG vec4 per round). */
const SLOT_SUM_BYTES = 4096;

function planDecode(
  a: AttentionDecodeShape & Pick<AttentionDecodeArgs, "workgroupSize" | "keyLanes" | "minKeys">,
  laneLimit = 32,
  tree = true,
) {
  const { rows, headDim, maxPos } = a;
  const wg = a.workgroupSize ?? defaultWorkgroupSize(rows);
  const fail = (why: string) => {
    throw new Error(`attentionDecode: ${why}`);
  };
  if (!Number.isInteger(rows) || rows < 1 || rows > DECODE_MAX_ROWS) {
    fail(`${rows} query rows is outside 1..${DECODE_MAX_ROWS}`);
  }
  if (!Number.isInteger(maxPos) || maxPos < 1) fail(`maxPos ${maxPos} is not a positive integer`);
  checkHeadShape("attentionDecode", a.nHeads, headDim, wg);
  const hv = headDim / 4;
  // By default at most 4 vec4 of a key a thread, and rows * KEY_VEC <= 8: the registers of the queries and of the key a
  // thread holds decide how many workgroups share an SM. Measured on the H200 (tools/bench_kernels.ts --attention, 7B
  // heads, bf16 cache, docs/PERF.md): one row at 8 vec4 (4 threads per key, the former default) took 64.5 us at 4,096
  // keys alone, at 4 52.9-54.1 us, and in a 7B step attention fell from 753 to 519 us at 256 keys; four rows at 4 vec4
  // took 157.6 us at 4,096 keys and 54.9 at 256, at 2 vec4 116.1 and 46.3.
  let keyVec = Math.min(4, hv, Math.max(1, 2 ** Math.floor(Math.log2(8 / rows))));
  while (hv / keyVec > laneLimit) keyVec *= 2;
  if (rows * keyVec > 16 || keyVec > 8) fail(`${rows} rows do not fit ${laneLimit}-lane reductions`);
  if (a.keyLanes !== undefined) {
    keyVec = hv / a.keyLanes;
    if (
      !Number.isInteger(keyVec) || keyVec !== nextPowerOfTwo(keyVec) || rows * keyVec > 16 || a.keyLanes > laneLimit
    ) {
      fail(
        `${a.keyLanes} threads per key must be a power of two dividing ${hv} (the vec4 of a head) and leave at ` +
          `most ${Math.floor(16 / rows)} vec4 of a key per thread at ${rows} rows (and at most ${laneLimit} lanes)`,
      );
    }
  }
  // 64: at 256 keys four splits of 64 keys per head (7B: 128 workgroups) took 17.5 us on an H200, sixteen of 16 keys
  // 23.9 us (tools/bench_kernels.ts --attention, bf16 cache); long contexts still spread over every split.
  const minKeys = a.minKeys ?? 64;
  if (!Number.isInteger(minKeys) || minKeys < 1) fail(`minKeys ${minKeys} is not a positive integer`);
  // The split's scores get what workgroup memory the reductions leave.
  const rg = Math.max(1, Math.min(rows, 4, Math.floor(SLOT_SUM_BYTES / (16 * wg))));
  const capWith = (treeBytes: number) =>
    Math.floor((WORKGROUP_BYTES - treeBytes - 16 * rg * wg - 2 * 16 * 4) / (4 * rows));
  // The split count assumes the tree's need (so the scratch size does not depend on the reductions used).
  const cap = capWith(reductionBytes(!tree, wg)), capTree = capWith(reductionBytes(false, wg));
  if (capTree < minKeys) fail(`${rows} rows leave room for ${capTree} keys a split, fewer than minKeys ${minKeys}`);
  const fewest = Math.ceil(maxPos / capTree);
  const splits = a.splits ??
    Math.max(fewest, Math.min(Math.ceil(DECODE_TARGET_WORKGROUPS / a.nHeads), Math.ceil(maxPos / minKeys)));
  if (!Number.isInteger(splits) || splits < fewest) {
    fail(`${splits} splits of at most ${capTree} keys (workgroup memory) cannot cover ${maxPos} cache rows`);
  }
  // A split never takes more than max(minKeys, ceil(maxPos / splits)) keys: reserve only that much (wgpu zero-fills
  // workgroup memory at every workgroup's start, so an oversized score array costs time too).
  const need = Math.max(minKeys, Math.ceil(maxPos / splits));
  const keys = Math.min(cap, Math.ceil(need / 4) * 4);
  const rowLanes = Math.max(1, Math.min(laneLimit, Math.floor(wg / nextPowerOfTwo(rows))));
  return { splits, cap: keys, wg, keyVec, rowLanes, minKeys, rg } satisfies DecodePlan;
}

/**
 * Bytes of the scratch buffer of a decode shape: it serves every dispatch with at most `rows` rows and the same
 * heads, head_dim, maxPos and splits (all layers can share one, the dispatches run one after another).
 */
export function attentionDecodeScratchBytes(shape: AttentionDecodeShape): number {
  const { splits } = planDecode(shape);
  if (splits === 1) return 0;
  return shape.rows * shape.nHeads * splits * (shape.headDim + 4) * 4;
}

/** Allocates the scratch buffer of a decode shape (load time), or returns undefined when it needs none. */
export function createAttentionDecodeScratch(gpu: Gpu, shape: AttentionDecodeShape): GPUBuffer | undefined {
  const bytes = attentionDecodeScratchBytes(shape);
  return bytes === 0 ? undefined : gpu.buffer("attention decode scratch", bytes);
}

/**
 * `HYDRA_ATTENTION_TUNING=<JSON>` (e.g. `{"pvUnroll":4,"keyLanes":16}`) overrides the given tuning knobs of every
 * decode attention a model records (`scoreUnroll`, `pvUnroll`, `keyLanes`, `workgroupSize`, `minKeys`, `splits`: at
 * most the planned splits, whose scratch the model allocated; 1 records the single dispatch), so that the GPU can A/B
 * them inside a step (`deno task profile`).
 */
export const ATTENTION_TUNING_ENV = "HYDRA_ATTENTION_TUNING";

const TUNING_KNOBS = ["scoreUnroll", "pvUnroll", "keyLanes", "workgroupSize", "minKeys", "splits"] as const;
type Tuning = Partial<Pick<AttentionDecodeArgs, typeof TUNING_KNOBS[number]>>;

/** The knobs `ATTENTION_TUNING_ENV` sets (none when it is unset). */
function tuningFromEnv(): Tuning {
  const env = Deno.env.get(ATTENTION_TUNING_ENV);
  if (!env) return {};
  let v: unknown;
  try {
    v = JSON.parse(env);
  } catch {
    v = undefined;
  }
  const knobs = TUNING_KNOBS as readonly string[];
  if (
    v === null || typeof v !== "object" || Array.isArray(v) ||
    Object.entries(v).some(([k, x]) => !knobs.includes(k) || !Number.isInteger(x))
  ) {
    throw new UserError(
      `${ATTENTION_TUNING_ENV}=${env} is not a JSON object of whole numbers keyed by ${knobs.join(", ")}: ` +
        "fix it or unset it.",
    );
  }
  return v as Tuning;
}

/**
 * The split pass's unrolling by default: 8 V rows in flight up to 4 rows (more keep 4: their accumulators already take
 * M vec4 a thread), the score pass not unrolled. Measured on the H200 (docs/PERF.md, 2026-11-30 "S"): alone, at 7B
 * heads, pvUnroll 8 took 4,096 keys from 63.4 to 51.5 us at one row and 117.6 to 108.8 at four; in a 7B step
 * (`deno task profile`, with `HYDRA_ATTENTION_TUNING`'s predecessor) 1,709 us at 4,000 keys against 1,740.
 * Unrolling the score pass was slower everywhere, by registers or not: a step's attention at 4,000 keys 1,955 us (2
 * passes) and 2,630 (4).
 */
export function attentionUnrollDefault(rows: number): { scoreUnroll: number; pvUnroll: number } {
  return { scoreUnroll: 1, pvUnroll: rows <= 4 ? 8 : 4 };
}

function attentionUnroll(a: Pick<AttentionDecodeArgs, "scoreUnroll" | "pvUnroll" | "rows">) {
  const d = attentionUnrollDefault(a.rows);
  return { scoreUnroll: a.scoreUnroll ?? d.scoreUnroll, pvUnroll: a.pvUnroll ?? d.pvUnroll };
}

/**
 * Records the decode attention dispatches (load time): the split pass then the merge, or one dispatch with a single
 * split. Throws on shapes the kernels do not handle.
 */
export function attentionDecode(
  gpu: Gpu,
  args: AttentionDecodeArgs,
  kernels: AttentionDecodeKernels = {},
): Dispatch[] {
  const tuning = tuningFromEnv();
  if (Object.keys(tuning).length === 0) return recordAttentionDecode(gpu, args, kernels);
  try {
    return recordAttentionDecode(gpu, { ...args, ...tuning }, kernels);
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`${ATTENTION_TUNING_ENV}: ${(e as Error).message}; fix it or unset it.`);
  }
}

function recordAttentionDecode(gpu: Gpu, a: AttentionDecodeArgs, kernels: AttentionDecodeKernels): Dispatch[] {
  const width = subgroupWidth(gpu);
  // Shuffles span at most `width` lanes: a key's lanes must fit, which leaves each thread HEAD_DIM / 4 / width vec4.
  const fits = width > 0 && a.rows * Math.max(1, a.headDim / 4 / width) <= 16 && a.headDim / 4 / width <= 8;
  const subgroups = a.subgroups ?? fits;
  if (subgroups && width === 0) throw new Error("attentionDecode: the device has no subgroups");
  const plan = planDecode(a, subgroups ? width : 32, !subgroups);
  // (the split pass has the rows as a generated constant; the merge takes them as the override M)
  const back = a.posBack ?? 0;
  if (!(Number.isInteger(back) && Math.abs(back) < a.maxPos)) {
    throw new Error(`attentionDecode: posBack ${back} is not a row count within maxPos ${a.maxPos}`);
  }
  const common = {
    NH: a.nHeads,
    HEAD_DIM: a.headDim,
    MAX_POS: a.maxPos,
    SPLITS: plan.splits,
    MIN_KEYS: plan.minKeys,
    // (absent at 0: the constants the H200 measured, unchanged; negative: rows ahead, as a u32 that wraps)
    ...(back !== 0 ? { POS_BACK: back >>> 0 } : {}),
  };
  const direct = plan.splits === 1;
  const fused = a.qkNormRope;
  if (!fused && !a.q) throw new Error("attentionDecode: give q, or qkNormRope for the fused QK-norm + RoPE");
  const stats = fused?.stats;
  if (stats && !(Number.isInteger(stats.groupRows) && stats.groupRows >= 1)) {
    throw new Error(`attentionDecode: stats.groupRows ${stats.groupRows} is not a positive integer`);
  }
  const spec: AttentionDecodeKernelSpec = {
    subgroups,
    rows: a.rows,
    keyVec: plan.keyVec,
    kvDtype: a.kvDtype,
    fused: fused !== undefined,
    qkStats: stats !== undefined,
    ...attentionUnroll(a),
    rowsPerRound: plan.rg,
  };
  const partialKernel = (kernels.partial ?? attentionDecodeKernelFor)(spec);
  const mergeKernel = kernels.merge ?? attentionMergeKernel;
  const partial = {
    ...common,
    CAP: plan.cap,
    WG: plan.wg,
    ROW_LANES: plan.rowLanes,
    SG_LANES: subgroups ? width : 32,
    SCALE: Math.fround(1 / Math.sqrt(a.headDim)),
    DIRECT: direct,
    GATED: a.gated ?? false,
    ...(fused ? { EPS: fused.eps ?? 1e-6, APPLY_NORM: fused.applyNorm ?? true } : {}),
    ...(stats ? { QK_GROUP_ROWS: stats.groupRows } : {}),
  };
  const grid: [number, number, number] = [a.nHeads, plan.splits, 1];
  const bind = (dst: GPUBuffer | BufferSlice) =>
    fused
      ? [
        a.ctl,
        fused.qkv,
        a.kCache,
        a.vCache,
        dst,
        fused.normWeights,
        fused.ropeTable,
        ...(stats ? [stats.partials] : []),
      ]
      : [a.ctl, a.q!, a.kCache, a.vCache, dst];
  if (direct) return [gpu.dispatch(partialKernel, partial, bind(a.out), grid)];
  const need = attentionDecodeScratchBytes(a);
  if (!a.scratch || a.scratch.size < need) {
    throw new Error(`attentionDecode: the scratch buffer must hold ${need} bytes (createAttentionDecodeScratch)`);
  }
  return [
    gpu.dispatch(partialKernel, partial, bind(a.scratch), grid),
    gpu.dispatch(
      mergeKernel,
      { ...common, M: a.rows, WG: mergeWorkgroupSize(a), GATED: a.gated ?? false },
      [a.ctl, a.scratch, a.out],
      [a.nHeads, a.rows, 1],
    ),
  ];
}

/**
 * CPU reference of the fused dispatch, composed of the two it replaces: `qkNormRopeReference` (q, and the caches with
 * rows POS .. POS + rows - 1 appended; bf16 caches hold them rounded), then `attentionReference` over those caches.
 * Returns the attention output (rows at positions >= maxPos: unspecified, NaN here) and the caches. `attendTo`
 * replaces the caches attention reads (a kernel's own bf16 caches, whose rounding of a new key may differ from the
 * reference's by an ulp: the appended rows are checked against `kCache` / `vCache`, attention against what was stored).
 */
export function attentionDecodeFusedReference(
  qkv: Float32Array,
  normWeights: Float32Array,
  table: Float32Array,
  s: QkNormRopeShape & { nHeads: number; kvDtype?: KvDtype },
  kCache: Float32Array,
  vCache: Float32Array,
  attendTo?: { kCache: Float32Array; vCache: Float32Array },
): { out: Float32Array; kCache: Float32Array; vCache: Float32Array } {
  const r = qkNormRopeReference(qkv, normWeights, table, s, kCache, vCache);
  if (s.kvDtype === "bf16") {
    const rows = [s.pos * s.dim, Math.min(s.pos + s.rows, s.maxPos) * s.dim];
    for (const c of [r.kCache, r.vCache]) c.set(roundBf16Array(c.subarray(rows[0], Math.max(...rows))), rows[0]);
  }
  const valid = Math.max(0, Math.min(s.rows, s.maxPos - s.pos));
  const out = new Float32Array(s.rows * s.dim).fill(NaN);
  const caches = attendTo ?? r;
  if (valid > 0) {
    out.set(attentionReference(r.q, caches.kCache, caches.vCache, valid, s.pos, s.nHeads, s.headDim));
  }
  return { out, kCache: r.kCache, vCache: r.vCache };
}
