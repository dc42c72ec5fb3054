/**
 * The step between the fused QKV projection and attention, in one dispatch, for the M rows at positions
 * p = ctl[POS] + m:
 *   1. QK-norm (OLMo-2, when APPLY_NORM): q = RMSNorm(q) * w_q and k = RMSNorm(k) * w_k over the WHOLE width
 *      D = NH * HEAD_DIM (all heads together), eps EPS.
 *   2. RoPE, NeoX half-split layout per head: dim i pairs with i + h (h = HEAD_DIM / 2),
 *      rot(t) = t * cos + rotate_half(t) * sin, rotate_half(t) = concat(-t[h:], t[:h]).
 *      cos and sin come from a table made on the CPU (`ropeTable`) in f32 as OLMo-core computes them, not from WGSL's
 *      sin/cos, whose error grows with the angle (angles reach thousands of radians).
 *   3. Stores: roped q to q_out[m], roped k to k_cache[p], v unchanged to v_cache[p] (caches position-major); with
 *      `vmax`, also the largest |v| of each row (the bound of the tensor prefill attention's f16 output rows).
 *
 * One workgroup per (row, part): part 0 normalises and ropes q; part 1 does k and copies v. The sum of squares is one
 * workgroup reduction (kernels/reduce.ts). A row whose position is >= MAX_POS writes nothing at all (no cache row exists
 * for it and the table has no angle for it), so a caller that runs past the cache sees stale q_out, never memory
 * outside the caches overwritten.
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { rmsnormReference, rowWorkgroupSize } from "../norm/rmsnorm.ts";
import { atomicMaxWgsl, reductionsWgsl, subgroupWidth } from "../reduce.ts";
import { type KvDtype, kvWriteWgsl } from "./kv_cache.ts";
import { splitKSumWgsl } from "../matmul/split_k_reduce.ts";

/**
 * The WGSL kernel, its sums by subgroup shuffles or by a tree in workgroup memory (kernels/reduce.ts). With `splitK`,
 * qkv holds the SPLIT_K partial sums [SPLIT_K, M, 3 * D] of a split-K QKV product, each value summed in split order as
 * `split_k_reduce.ts` sums it (the same f32 additions, so the same bits), instead of that reduction's dispatch.
 */
export function qkNormRopeKernelFor(
  subgroups: boolean,
  kv: KvDtype = "f32",
  o: { splitK?: boolean; vmax?: boolean } = {},
): Kernel {
  const { splitK = false, vmax = false } = o;
  // qkv at index i of the M x 3D rows, or the sum of its partials
  const Q = (i: string) => splitK ? `qkv_sum(${i}, slice)` : `qkv[${i}]`;
  return {
    name: `qk_norm_rope${splitK ? "_sk" : ""}${subgroups ? "_sg" : ""}${kv === "bf16" ? "_kvbf16" : ""}${
      vmax ? "_vmax" : ""
    }`,
    source: /* wgsl */ `
// bindings (p = ctl[CTL_POS] - POS_BACK + m is the position of row m; h = HEAD_DIM / 2):
//   0 ctl     [CTL_SLOTS] u32, read       control block: ctl[CTL_POS] - POS_BACK is the position of row 0
//   1 qkv     [M, 3 * D] f32, read        fused projection rows, row-major: q (D) | k (D) | v (D)${
      splitK ? "\n//             here [SPLIT_K, M, 3 * D]: the partial sums of a split-K product, qkv = their sum" : ""
    }
//   2 norm_w  [2, D] f32, read            QK-norm weights: q's row, then k's row (read only when APPLY_NORM)
//   3 rope    [MAX_POS, HEAD_DIM] f32     row p: cos(p * inv_freq[i]) for i < h, then sin(p * inv_freq[i]) for i < h
//   4 q_out   [M, D] f32, write           roped q, row-major, heads contiguous
//   5 k_cache [MAX_POS, D] ${kv}, write    row p <- roped k of position p (only rows POS .. POS + M - 1 are written)
//   6 v_cache [MAX_POS, D] ${kv}, write    row p <- v of position p (kv_cache.ts: bf16 rounds to nearest even)${
      vmax
        ? "\n//   7 vmax    [M] u32, write              [m]: the f32 bits of max |v[m, :]| (NaN and inf above all finite)"
        : ""
    }
// D must be a multiple of HEAD_DIM, HEAD_DIM even. Rows with p >= MAX_POS write nothing.
override D: u32;
override HEAD_DIM: u32;
override M: u32;
override MAX_POS: u32;
override EPS: f32 = 1e-6;
override APPLY_NORM: bool = true;
override WG: u32 = 256u; // a power of two
override POS_BACK: u32 = 0u; // rows before ctl[CTL_POS] (a PoE verification beside the last draft step)${
      splitK ? "\noverride SPLIT_K: u32 = 1u;" : ""
    }
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> norm_w: array<f32>;
@group(0) @binding(3) var<storage, read> rope: array<f32>;
@group(0) @binding(4) var<storage, read_write> q_out: array<f32>;
${kvWriteWgsl(kv, 5, 6)}${
      vmax
        ? `\n@group(0) @binding(7) var<storage, read_write> vmax: array<u32>;
var<workgroup> v_top: atomic<u32>; // the largest |v| of the row, as bits`
        : ""
    }
${reductionsWgsl(subgroups)}
${splitK ? splitKSumWgsl("qkv_sum", "qkv", "f32") : ""}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32${
      vmax && subgroups ? ", @builtin(subgroup_invocation_id) lane: u32" : ""
    }) {
  if (gated_off()) { return; }
  let g = flat_workgroup(wid, nwg);
  let m = g / 2u;
  let part = g % 2u; // 0: q, 1: k and v
  if (m >= M) { return; }${vmax ? "\n  if (t == 0u) { atomicStore(&v_top, 0u); }" : ""}
  let p = ctl[CTL_POS] - POS_BACK + m;
  if (p >= MAX_POS) { return; }
  let src = m * 3u * D + part * D;${splitK ? "\n  let slice = M * 3u * D; // one partial's M x 3D values" : ""}

  // QK-norm: 1 / rms over the whole width D.
  var inv = 1.0;
  if (APPLY_NORM) {
    var s = 0.0;
    for (var i = t; i < D; i += WG) {
      let v = ${Q("src + i")};
      s += v * v;
    }
    let total = workgroup_sum(s, t);
    inv = inverseSqrt(total / f32(D) + EPS);
  }

  // RoPE on the pairs (e, e + h) of every head, two adjacent pairs (e, e + 1) a thread, so that a bf16 cache gets
  // whole u32 words; double pair j covers dims i, i + 1 (i = 2 (j % (h / 2))) of head j / (h / 2).
  let h = HEAD_DIM / 2u;
  let hh = h / 2u;
  let rrow = p * HEAD_DIM;
  let wrow = part * D;
  let dst = select(m * D, p * D, part == 1u);
  for (var j = t; j < D / 4u; j += WG) {
    let i = 2u * (j % hh);
    let e = (j / hh) * HEAD_DIM + i;
    var a0 = ${Q("src + e")};
    var a1 = ${Q("src + e + 1u")};
    var b0 = ${Q("src + e + h")};
    var b1 = ${Q("src + e + h + 1u")};
    if (APPLY_NORM) {
      a0 = a0 * inv * norm_w[wrow + e];
      a1 = a1 * inv * norm_w[wrow + e + 1u];
      b0 = b0 * inv * norm_w[wrow + e + h];
      b1 = b1 * inv * norm_w[wrow + e + h + 1u];
    }
    let c0 = rope[rrow + i];
    let c1 = rope[rrow + i + 1u];
    let s0 = rope[rrow + h + i];
    let s1 = rope[rrow + h + i + 1u];
    let lo0 = a0 * c0 - b0 * s0;
    let lo1 = a1 * c1 - b1 * s1;
    let hi0 = b0 * c0 + a0 * s0;
    let hi1 = b1 * c1 + a1 * s1;
    if (part == 0u) {
      q_out[dst + e] = lo0;
      q_out[dst + e + 1u] = lo1;
      q_out[dst + e + h] = hi0;
      q_out[dst + e + h + 1u] = hi1;
    } else {
      store_k2(dst + e, lo0, lo1);
      store_k2(dst + e + h, hi0, hi1);
    }
  }
  if (part == 1u) {${vmax ? "\n    workgroupBarrier(); // v_top is zero\n    var top = 0u;" : ""}
    for (var i = t; i < D / 2u; i += WG) {${
      vmax
        ? `
      let v0 = ${Q("src + D + 2u * i")};
      let v1 = ${Q("src + D + 2u * i + 1u")};
      store_v2(dst + 2u * i, v0, v1);
      top = max(top, max(bitcast<u32>(v0) & 0x7fffffffu, bitcast<u32>(v1) & 0x7fffffffu));`
        : `
      store_v2(dst + 2u * i, ${Q("src + D + 2u * i")}, ${Q("src + D + 2u * i + 1u")});`
    }
    }${
      vmax
        ? `
    // |v| as bits: for non-negative f32 their order is the values' (row_scale.ts)
    ${atomicMaxWgsl("&v_top", "top", subgroups, "    ")}
    workgroupBarrier();
    if (t == 0u) { vmax[m] = atomicLoad(&v_top); }`
        : ""
    }
  }
}
`,
  };
}

/** Arguments of one QK-norm + RoPE dispatch. */
export interface QkNormRopeArgs {
  ctl: GPUBuffer;
  /**
   * f32 [rows, 3 * dim]: q | k | v per row; with `splitK` S > 1, the S partial sums [S, rows, 3 * dim] of a split-K QKV
   * product (`linear`'s `leavePartials`), summed here in place of `split_k_reduce.ts`.
   */
  qkv: GPUBuffer | BufferSlice;
  /** Partial sums in `qkv` (default 1: qkv is the rows). */
  splitK?: number;
  /** f32 [2, dim]: the q-norm weight, then the k-norm weight. Bound (but unread) when `applyNorm` is false. */
  normWeights: GPUBuffer | BufferSlice;
  /** f32 [maxPos, headDim] from `ropeTable`. */
  ropeTable: GPUBuffer | BufferSlice;
  /** f32 [rows, dim] output. */
  qOut: GPUBuffer | BufferSlice;
  /** [maxPos, dim] K cache of this layer, of `kvDtype`; rows POS .. POS + rows - 1 are written. */
  kCache: GPUBuffer | BufferSlice;
  /** [maxPos, dim] V cache of this layer. */
  vCache: GPUBuffer | BufferSlice;
  /** Element type of the caches (default f32; kv_cache.ts). */
  kvDtype?: KvDtype;
  /** Rows (positions) processed. */
  rows: number;
  /** Width of q, k and v: heads * headDim. */
  dim: number;
  headDim: number;
  /** Rows of the caches and of the RoPE table. */
  maxPos: number;
  /** RMSNorm epsilon (OLMo-2: 1e-6). */
  eps?: number;
  /** QK-norm before RoPE (OLMo-2: true). */
  applyNorm?: boolean;
  gated?: boolean;
  /** Threads per workgroup (default `rowWorkgroupSize`) and the reduction path (default: subgroups when present). */
  workgroupSize?: number;
  subgroups?: boolean;
  /** Row 0 sits at ctl[POS] - posBack (default 0): a PoE verification recorded beside the round's last draft step. */
  posBack?: number;
  /**
   * u32 [rows]: [m] <- the f32 bits of max |v[m, :]| (the V row as computed, before any bf16 rounding of the cache):
   * the bound the tensor prefill attention scales its f16 output rows by (prefill_tensor.ts `halfRows`). Rows past the
   * cache leave theirs unwritten, as they write nothing else.
   */
  vmax?: GPUBuffer | BufferSlice;
}

/** Records a QK-norm + RoPE + cache-store dispatch (load time). Throws on shapes the kernel does not handle. */
export function qkNormRope(gpu: Gpu, a: QkNormRopeArgs, kernel?: Kernel): Dispatch {
  if (a.headDim % 2 !== 0) throw new Error(`qkNormRope: head_dim ${a.headDim} is odd, but RoPE rotates pairs`);
  if (a.headDim % 4 !== 0) throw new Error(`qkNormRope: head_dim ${a.headDim} is not a multiple of 4`);
  if (a.dim % a.headDim !== 0) throw new Error(`qkNormRope: width ${a.dim} is not a multiple of head_dim ${a.headDim}`);
  if (a.rows < 1 || a.maxPos < 1) throw new Error(`qkNormRope: ${a.rows} rows with ${a.maxPos} cache rows`);
  const splitK = a.splitK ?? 1;
  if (!(Number.isInteger(splitK) && splitK >= 1)) throw new Error(`qkNormRope: splitK ${splitK}`);
  const width = subgroupWidth(gpu);
  const subgroups = a.subgroups ?? width > 0;
  return gpu.dispatch(
    kernel ??
      qkNormRopeKernelFor(subgroups, a.kvDtype, { splitK: splitK > 1, vmax: a.vmax !== undefined }),
    {
      D: a.dim,
      HEAD_DIM: a.headDim,
      M: a.rows,
      MAX_POS: a.maxPos,
      EPS: a.eps ?? 1e-6,
      APPLY_NORM: a.applyNorm ?? true,
      WG: a.workgroupSize ?? rowWorkgroupSize(gpu, a.dim),
      SG_LANES: subgroups ? width : 32,
      GATED: a.gated ?? false,
      ...(a.posBack ? { POS_BACK: a.posBack } : {}),
      ...(splitK > 1 ? { SPLIT_K: splitK } : {}),
    },
    [
      a.ctl,
      a.qkv,
      a.normWeights,
      a.ropeTable,
      a.qOut,
      a.kCache,
      a.vCache,
      ...(a.vmax ? [a.vmax] : []),
    ],
    2 * a.rows,
  );
}

/**
 * The RoPE table [maxPos, headDim]: row p holds cos(p * inv_freq[i]) for i < headDim / 2, then sin(p * inv_freq[i]).
 * Computed in f32 as PyTorch / OLMo-core do: inv_freq[i] = 1 / theta^(2i / headDim) and angle = p * inv_freq[i], each
 * operation rounded to f32; cos and sin of that f32 angle are then taken in f64 and rounded to f32 (correctly rounded,
 * where PyTorch's f32 cos/sin are within an ulp of it).
 */
export function ropeTable(maxPos: number, headDim: number, theta: number): Float32Array {
  if (headDim % 2 !== 0) throw new Error(`ropeTable: head_dim ${headDim} is odd, but RoPE rotates pairs`);
  const f = Math.fround;
  const h = headDim / 2;
  const invFreq = Array.from({ length: h }, (_, i) => f(1 / f(f(theta) ** f((2 * i) / headDim))));
  const table = new Float32Array(maxPos * headDim);
  for (let p = 0; p < maxPos; p++) {
    for (let i = 0; i < h; i++) {
      const angle = f(p * invFreq[i]);
      table[p * headDim + i] = Math.cos(angle);
      table[p * headDim + h + i] = Math.sin(angle);
    }
  }
  return table;
}

/**
 * CPU reference of QK-norm (f64 accumulation): q and k of each `qkv` row ([rows, 3 * dim]) normalised over the whole
 * width with `normWeights` ([2, dim]: q's, then k's).
 */
export function qkNormReference(
  qkv: Float32Array,
  normWeights: Float32Array,
  rows: number,
  dim: number,
  eps: number,
): { q: Float32Array; k: Float32Array } {
  const [q, k] = splitQkv(qkv, rows, dim);
  return {
    q: rmsnormReference(q, normWeights.subarray(0, dim), rows, dim, eps),
    k: rmsnormReference(k, normWeights.subarray(dim, 2 * dim), rows, dim, eps),
  };
}

/**
 * CPU reference of RoPE (f64 arithmetic on the f32 table): every head of row m of `x` ([positions.length, dim])
 * rotated by the angles of position positions[m], NeoX half-split layout.
 */
export function ropeReference(
  x: Float32Array,
  positions: ArrayLike<number>,
  headDim: number,
  table: Float32Array,
): Float32Array {
  const dim = x.length / positions.length;
  const h = headDim / 2;
  const out = new Float32Array(x.length);
  for (let m = 0; m < positions.length; m++) {
    const r = positions[m] * headDim;
    for (let head = 0; head < dim / headDim; head++) {
      for (let i = 0; i < h; i++) {
        const e = m * dim + head * headDim + i;
        const a = x[e], b = x[e + h], c = table[r + i], s = table[r + h + i];
        out[e] = a * c - b * s;
        out[e + h] = b * c + a * s;
      }
    }
  }
  return out;
}

/** Shape and options of the composed reference (the kernel's overrides). */
export interface QkNormRopeShape {
  rows: number;
  dim: number;
  headDim: number;
  maxPos: number;
  /** ctl[POS]: the position of row 0. */
  pos: number;
  eps: number;
  applyNorm: boolean;
}

/**
 * CPU reference of the whole dispatch: returns q_out and copies of the caches with rows POS .. POS + rows - 1 written.
 * Rows at positions >= maxPos are skipped: their q_out row keeps the value of `qOut` (NaN when not given).
 */
export function qkNormRopeReference(
  qkv: Float32Array,
  normWeights: Float32Array,
  table: Float32Array,
  s: QkNormRopeShape,
  kCache: Float32Array,
  vCache: Float32Array,
  qOut: Float32Array = new Float32Array(s.rows * s.dim).fill(NaN),
): { q: Float32Array; kCache: Float32Array; vCache: Float32Array } {
  const [q0, k0, v] = splitQkv(qkv, s.rows, s.dim);
  const { q, k } = s.applyNorm ? qkNormReference(qkv, normWeights, s.rows, s.dim, s.eps) : { q: q0, k: k0 };
  const valid = Math.max(0, Math.min(s.rows, s.maxPos - s.pos));
  const positions = Array.from({ length: valid }, (_, m) => s.pos + m);
  const n = valid * s.dim;
  const qr = ropeReference(q.subarray(0, n), positions, s.headDim, table);
  const kr = ropeReference(k.subarray(0, n), positions, s.headDim, table);
  const out = { q: Float32Array.from(qOut), kCache: Float32Array.from(kCache), vCache: Float32Array.from(vCache) };
  if (valid > 0) {
    out.q.set(qr);
    out.kCache.set(kr, s.pos * s.dim);
    out.vCache.set(v.subarray(0, n), s.pos * s.dim);
  }
  return out;
}

/** Splits [rows, 3 * dim] rows into q, k and v, each [rows, dim]. */
function splitQkv(qkv: Float32Array, rows: number, dim: number): [Float32Array, Float32Array, Float32Array] {
  const parts = [0, 1, 2].map(() => new Float32Array(rows * dim));
  for (let m = 0; m < rows; m++) {
    for (let part = 0; part < 3; part++) {
      parts[part].set(qkv.subarray((3 * m + part) * dim, (3 * m + part + 1) * dim), m * dim);
    }
  }
  return [parts[0], parts[1], parts[2]];
}
