/**
 * Matrix-vector product with bf16 weights for 1..MAX_ROWS input rows (one decode token, or the few drafted tokens of a
 * speculative verification): y[m, n] = sum_k x[m, k] * W[n, k], f32 in, f32 out, f32 accumulation.
 *
 * Every weight is read once whatever M is, so M rows cost about what one row costs while the GPU is bound by memory
 * bandwidth. A workgroup owns ROWS output rows; the WG / ROWS threads of a row stride over its K / 8 16-byte chunks
 * (8 bf16) and reduce their partial sums in workgroup memory.
 *
 * Epilogues: PLAIN stores the dot products; SWIGLU reads a [2N, K] weight (gate rows, then up rows) and stores
 * silu(gate) * up, so OLMo-2's gate and up projections and the SiLU-multiply are one pass.
 *
 * Prologue (`postNorm`): the input is x + RMSNorm(proj) * w, OLMo-2's post-norm of the previous sublayer, computed by
 * every workgroup (staged in workgroup memory, or recomputed at each use) and stored by workgroup 0 as the next
 * residual, in place of an RMSNorm dispatch (ARCHITECTURE.md, "Fewer, fuller dispatches").
 *
 * QK statistics (`qkStats`, the QKV product of OLMo-2): each row group also writes, per input row, the sum of squares
 * of the q outputs (rows 0 .. D - 1) and of the k outputs (D .. 2D - 1) it produced, so that the fused decode attention
 * gets the whole-width QK-norm statistics from a few hundred partial sums instead of re-reading D floats of q and of k
 * in every workgroup (`qkStatsLayout`).
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { rmsnormReference } from "../norm/rmsnorm.ts";
import { subgroupWidth } from "../reduce.ts";
import { numberChoiceFromEnv } from "../../common/env.ts";
import { range } from "../codegen.ts";

/** Most input rows one matvec dispatch handles; more rows go to the tiled GEMM. */
export const MATVEC_MAX_ROWS = 16;

/** What the kernel stores. */
export const Epilogue = { PLAIN: 0, SWIGLU: 1 } as const;

/**
 * What the kernel does to its input first: nothing; or OLMo-2's post-norm of the previous sublayer, x_eff = x +
 * RMSNorm(proj) * w (`MatvecArgs.postNorm`), recomputed by every workgroup and used from registers and caches
 * ("recompute") or staged once in workgroup memory ("staged").
 */
export type MatvecPrologue = "none" | "recompute" | "staged";

/** Name prefix of the generated kernels (`matvec_bf16_m<rows>`). */
export const MATVEC_KERNEL_NAME = "matvec_bf16";

/**
 * The WGSL kernel for `rows` input rows, each thread owning `rowsPerThread` (1, 2 or 4) consecutive output rows.
 * Generated per shape so the rows x outputs accumulators are named registers (an array indexed in a loop can land in
 * local memory, which measured 5x slower at M = 4 on an H100). A thread reads each 32-byte chunk of x once for all
 * its output rows, so x traffic per weight byte falls as rowsPerThread grows (2M / rowsPerThread vec4 per weight vec4).
 */
export function matvecKernelFor(
  rows: number,
  rowsPerThread = 1,
  prologue: MatvecPrologue = "none",
  qkStats = false,
  sgLanes = 0,
  interleave = 1,
): Kernel {
  if (sgLanes !== 0 && !(sgLanes >= 4 && sgLanes <= 128 && (sgLanes & (sgLanes - 1)) === 0)) {
    throw new Error(`matvec: sgLanes ${sgLanes} (0, or a power of two from 4 to 128)`);
  }
  if (!Number.isInteger(rows) || rows < 1 || rows > MATVEC_MAX_ROWS) {
    throw new Error(`matvec: ${rows} rows (1..${MATVEC_MAX_ROWS})`);
  }
  if (![1, 2, 4].includes(rowsPerThread)) throw new Error(`matvec: rowsPerThread ${rowsPerThread} (1, 2 or 4)`);
  if (![1, 2, 4, 8].includes(interleave) || (sgLanes > 0 && interleave > sgLanes)) {
    throw new Error(`matvec: interleave ${interleave} (1, 2, 4 or 8, at most the subgroup width)`);
  }
  const M = range(rows), RT = range(rowsPerThread);
  // The input vec4 at column expression `col` of row j: x itself, its copy in workgroup memory, or x + the post-norm.
  const input = (j: number, col: string) =>
    prologue === "none"
      ? `x[${j}u * k4 + ${col}]`
      : prologue === "staged"
      ? `xs[${j}u * k4 + ${col}]`
      : `(x[${j}u * k4 + ${col}] + proj[${j}u * k4 + ${col}] * inv${j} * nw[${col}])`;
  const unroll = range(4 / rowsPerThread); // chunks in flight per output row: 4 16-byte weight loads per thread
  // For chunk expression c (unrolled copy i): load the weights of every owned row, then x once for every input row.
  // The weights are unpacked to f32 once per chunk, then used for every input row (not once per row and weight).
  const step = (i: number, c: string) =>
    `    {
      let c${i} = ${c};
${
      RT.map((r) =>
        `      let p${r} = w[wrow${r} + c${i}]; let wl${r} = bf16x8_lo(p${r}); let wh${r} = bf16x8_hi(p${r});`
      ).join("\n")
    }
${RT.map((r) => `      var ul${r} = vec4<f32>(); var uh${r} = vec4<f32>();`).join("\n")}
      if (EPILOGUE == 1u) {
${
      RT.map((r) => `        let q${r} = w[wrow_up${r} + c${i}]; ul${r} = bf16x8_lo(q${r}); uh${r} = bf16x8_hi(q${r});`)
        .join("\n")
    }
      }
${
      M.map((j) =>
        `      { let xa = ${input(j, `2u * c${i}`)}; let xb = ${input(j, `2u * c${i} + 1u`)};
${
          RT.map((r) =>
            `        a${r}_${j} += dot(wl${r}, xa) + dot(wh${r}, xb); ` +
            `if (EPILOGUE == 1u) { u${r}_${j} += dot(ul${r}, xa) + dot(uh${r}, xb); }`
          ).join("\n")
        } }`
      ).join("\n")
    }
    }`;
  // Reduce the accumulators four at a time (one vec4 per thread per tree level); lane 0 stores.
  const names = (prefix: string) => RT.flatMap((r) => M.map((j) => `${prefix}${r}_${j}`));
  const reduce = (list: string[]) => {
    const out: string[] = [];
    for (let b = 0; b < list.length; b += 4) {
      const group = range(4).map((i) => list[b + i] ?? "0.0");
      out.push(`  {
    let s = row_sum4(vec4<f32>(${group.join(", ")}), t, lane);
${group.map((v, i) => v === "0.0" ? "" : `    ${v} = s[${i}];`).filter(Boolean).join("\n")}
  }`);
    }
    return out.join("\n");
  };
  // Post-norm prologue: every workgroup computes each input row's 1 / rms of proj (a sum over the workgroup, 4 rows
  // at a time), then x + proj * inv * nw (staged: into workgroup memory, once); workgroup 0 also stores it to x_out.
  const rowGroups = range(Math.ceil(rows / 4)).map((g) => M.slice(4 * g, 4 * g + 4));
  const prologueWgsl = prologue === "none" ? "" : `
  // Prologue: x_eff[j] = x[j] + RMSNorm(proj[j]) * nw (the previous sublayer's post-norm and residual add)
  ${M.map((j) => `var inv${j} = 0.0;`).join(" ")}
${
    rowGroups.map((g) =>
      `  {
    var part = vec4<f32>();
    for (var c = t; c < k4; c += WG) {
${g.map((j, i) => `      { let p = proj[${j}u * k4 + c]; part[${i}] += dot(p, p); }`).join("\n")}
    }
    let total = workgroup_sum4(part, t);
${g.map((j, i) => `    inv${j} = inverseSqrt(total[${i}] / f32(K) + EPS);`).join("\n")}
  }`
    ).join("\n")
  }
  let writer = flat_workgroup(wid, nwg) == 0u;
  for (var c = t; c < k4; c += WG) {
${
    M.map((j) =>
      `    { let v = x[${j}u * k4 + c] + proj[${j}u * k4 + c] * inv${j} * nw[c];${
        prologue === "staged" ? ` xs[${j}u * k4 + c] = v;` : ""
      } if (writer) { x_out[${j}u * k4 + c] = v; } }`
    ).join("\n")
  }
  }
  workgroupBarrier();
`;
  const suffix = (prologue === "none" ? "" : prologue === "staged" ? "_normst" : "_norm") + (qkStats ? "_qks" : "") +
    (interleave > 1 ? `_i${interleave}` : "") + (sgLanes > 0 ? "_sg" : "");
  // QK statistics: each lane-0 thread splits the squares of its outputs into q's and k's (v's and rows past N add
  // nothing), the workgroup adds its ROWS threads' sums in a fixed order, and the row group's sums go to its slot.
  const statsBinding = prologue === "none" ? 4 : 7;
  const statsWgsl = !qkStats ? "" : `
  // QK statistics of row group g (qkStatsLayout): sums of squares of its q and k outputs, row by row
  if (lane == 0u) {
${
    M.map((j) =>
      `    { var sq = 0.0; var sk = 0.0;
${
        RT.map((r) =>
          `      { let n = n0 + ${r}u; let v = a${r}_${j} * a${r}_${j}; ` +
          `if (n < QK_D) { sq += v; } else if (n < 2u * QK_D && n < N) { sk += v; } }`
        ).join("\n")
      }
      qk_red[${j}u * ROWS + rg] = vec2<f32>(sq, sk); }`
    ).join("\n")
  }
  }
  workgroupBarrier();
  {
    let first = g * ROWS * ${rowsPerThread}u; // the group's output rows: first .. first + ROWS * ${rowsPerThread} - 1
    let last = first + ROWS * ${rowsPerThread}u;
    for (var i = t; i < ${2 * rows}u; i += WG) {
      let j = i / 2u;
      let part = i % 2u;
      if (select(first < 2u * QK_D && last > QK_D, first < QK_D, part == 0u)) {
        var s = 0.0;
        for (var r = 0u; r < ROWS; r++) { s += qk_red[j * ROWS + r][part]; }
        qk_part[(j * 2u + part) * qk_groups + g] = s;
      }
    }
  }
  workgroupBarrier();
`;
  return {
    name: `${MATVEC_KERNEL_NAME}_m${rows}_r${rowsPerThread}${suffix}`,
    source: /* wgsl */ `
// y[m, n] = sum_k x[m, k] * W[n, k] for m < ${rows}, n < N; each thread owns ${rowsPerThread} consecutive n.
// bindings:
//   0 ctl [CTL_SLOTS] u32, read      control block (gate only)
//   1 w   [NW, K / 8] vec4<u32>      bf16 weight, row-major [NW, K], two bf16 per u32 (lower k in the low half);
//                                    NW = N (PLAIN) or 2N (SWIGLU: rows 0..N-1 gate, N..2N-1 up)
//   2 x   [${rows}, K / 4] vec4<f32>       input rows, row-major [${rows}, K] f32
//   3 y   [${rows}, N] f32, read_write     output rows${
      prologue === "none" ? "" : `
//   4 proj  [${rows}, K / 4] vec4<f32>     the previous sublayer's output: the product's input is
//                                        x_eff = x + proj * rsqrt(mean(proj^2) + EPS) * nw, row by row
//   5 nw    [K / 4] vec4<f32>            the post-norm's weight
//   6 x_out [${rows}, K / 4] vec4<f32>, rw  x_eff, stored by workgroup 0 (the next residual; never read here)`
    }${
      qkStats
        ? `
//   ${statsBinding} qk_part [${rows}, 2, QK_GROUPS] f32, rw   row m's sums of squares of q (part 0: outputs 0 .. QK_D - 1) and k
//                                        (part 1: QK_D .. 2 QK_D - 1) by row group; a group writes a part only if it
//                                        holds rows of it (QK_GROUPS = ceil(2 QK_D / (ROWS * ${rowsPerThread})), N >= 2 QK_D)`
        : ""
    }
// K must be a multiple of 8. A workgroup owns ROWS * ${rowsPerThread} output rows; the WG / ROWS threads of a row group
// stride over the K / 8 16-byte chunks of its rows. Threads are dealt to row groups IL at a time (interleave): thread t
// is lane (t / IL) % (WG / ROWS) of row group (t / (IL * WG / ROWS)) * IL + t % IL, so a subgroup holds IL row groups'
// lanes at the same K chunks and each of its x loads spans IL times fewer bytes (x is read once per row group).
override K: u32;
override N: u32;
override EPILOGUE: u32 = 0u;
override ROWS: u32 = 8u;   // row groups per workgroup (a power of two dividing WG)
override WG: u32 = 256u;   // threads per workgroup (a power of two)
const IL: u32 = ${interleave}u;      // row groups dealt together (generated; 1 = consecutive threads per row group)${
      prologue === "none" ? "" : "\noverride EPS: f32 = 1e-6;"
    }${qkStats ? "\noverride QK_D: u32;            // the q and k widths (OLMo-2: d_model)" : ""}
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;${
      prologue === "none" ? "" : `
@group(0) @binding(4) var<storage, read> proj: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> nw: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> x_out: array<vec4<f32>>;`
    }${
      qkStats
        ? `
@group(0) @binding(${statsBinding}) var<storage, read_write> qk_part: array<f32>;
var<workgroup> qk_red: array<vec2<f32>, ${rows}u * ROWS>; // [row, row group of the workgroup]: (q, k) sums of squares`
        : ""
    }
var<workgroup> red: array<vec4<f32>, WG>;${
      prologue === "staged" ? `\nvar<workgroup> xs: array<vec4<f32>, ${rows}u * (K / 4u)>; // x_eff, row-major` : ""
    }

// The 8 bf16 of a 16-byte weight chunk as f32: elements 0..3 and 4..7.
fn bf16x8_lo(p: vec4<u32>) -> vec4<f32> { return vec4<f32>(bf16_lo(p.x), bf16_hi(p.x), bf16_lo(p.y), bf16_hi(p.y)); }
fn bf16x8_hi(p: vec4<u32>) -> vec4<f32> { return vec4<f32>(bf16_lo(p.z), bf16_hi(p.z), bf16_lo(p.w), bf16_hi(p.w)); }
${
      sgLanes > 0
        ? `
// Sums v over the WG / ROWS threads of each row group; lane 0 gets the total. Subgroup shuffles within each subgroup
// of SG_LANES consecutive threads (no barrier; a row group's lanes there are IL apart), then, for row groups wider than
// a subgroup, the subgroups' partials through workgroup memory (one barrier).
const SG_LANES: u32 = ${sgLanes}u; // the narrowest subgroup the device runs (reduce.ts subgroupWidth)
fn row_sum4(v: vec4<f32>, t: u32, lane: u32) -> vec4<f32> {
  let span = IL * (WG / ROWS); // consecutive threads holding IL whole row groups
  var x = v;
  for (var st = IL; st < min(span, SG_LANES); st *= 2u) { x += subgroupShuffleXor(x, st); }
  if (span <= SG_LANES) { return x; }
  if (t % SG_LANES < IL) { red[(t / SG_LANES) * IL + t % IL] = x; }
  workgroupBarrier();
  var total = vec4<f32>();
  if (lane == 0u) {
    for (var i = 0u; i < span / SG_LANES; i++) { total += red[(t / SG_LANES + i) * IL + t % IL]; }
  }
  workgroupBarrier();
  return total;
}`
        : `
// Sums v over the WG / ROWS threads of each row group (a tree in workgroup memory); lane 0 gets the total.
fn row_sum4(v: vec4<f32>, t: u32, lane: u32) -> vec4<f32> {
  red[t] = v;
  workgroupBarrier();
  for (var s = (WG / ROWS) / 2u; s > 0u; s /= 2u) {
    if (lane < s) { red[t] += red[t + s * IL]; }
    workgroupBarrier();
  }
  let total = red[t]; // the row group's total for lane 0, which alone stores
  workgroupBarrier();
  return total;
}`
    }
${
      prologue === "none" ? "" : `
// Sums v over all WG threads (a tree in workgroup memory); every thread gets the total.
fn workgroup_sum4(v: vec4<f32>, t: u32) -> vec4<f32> {
  red[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (t < s) { red[t] += red[t + s]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}`
    }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let tpr = WG / ROWS;
  let lane = (t / IL) % tpr;
  let rg = (t / (IL * tpr)) * IL + t % IL;   // this thread's row group in the workgroup
  let k8 = K / 8u;
  let k4 = K / 4u;
${prologueWgsl}  // Row groups of ROWS * ${rowsPerThread} output rows; a grid smaller than GROUPS strides over them (x stays in L1).
  let groups = (N + ROWS * ${rowsPerThread}u - 1u) / (ROWS * ${rowsPerThread}u);${
      qkStats ? `\n  let qk_groups = (2u * QK_D + ROWS * ${rowsPerThread}u - 1u) / (ROWS * ${rowsPerThread}u);` : ""
    }
  for (var g = flat_workgroup(wid, nwg); g < groups; g += nwg.x * nwg.y) {
  let n0 = (g * ROWS + rg) * ${rowsPerThread}u;
  ${names("a").map((v) => `var ${v} = 0.0;`).join(" ")}
  ${names("u").map((v) => `var ${v} = 0.0;`).join(" ")}
  if (n0 < N) {
    // Rows past N (when N is not a multiple of ${rowsPerThread}) read row N - 1 and are not stored.
${RT.map((r) => `    let wrow${r} = min(n0 + ${r}u, N - 1u) * k8;`).join("\n")}
${RT.map((r) => `    let wrow_up${r} = (min(n0 + ${r}u, N - 1u) + N) * k8;`).join("\n")}
    var c = lane;
    for (; c + ${unroll.length - 1}u * tpr < k8; c += ${unroll.length}u * tpr) {
${unroll.map((i) => step(i, `c + ${i}u * tpr`)).join("\n")}
    }
    for (; c < k8; c += tpr) {
${step(0, "c")}
    }
  }
${reduce(names("a"))}
  if (EPILOGUE == 1u) {
${reduce(names("u"))}
${RT.flatMap((r) => M.map((j) => `    a${r}_${j} = a${r}_${j} / (1.0 + exp(-a${r}_${j})) * u${r}_${j};`)).join("\n")}
  }
  if (lane == 0u) {
${
      RT.map((r) =>
        `    if (n0 + ${r}u < N) {\n${M.map((j) => `      y[${j}u * N + n0 + ${r}u] = a${r}_${j};`).join("\n")}\n    }`
      ).join("\n")
    }
  }${statsWgsl}
  }
}
`,
  };
}

/** The product y = x W^T that the matvec and the GEMM both compute. */
export interface ProductArgs {
  ctl: GPUBuffer;
  /** bf16 weight [N, K] (or [2N, K] for SWIGLU), packed. */
  weight: GPUBuffer | BufferSlice;
  /** f32 input [rows, K]. */
  x: GPUBuffer | BufferSlice;
  /** f32 output [rows, N]. */
  y: GPUBuffer | BufferSlice;
  rows: number;
  k: number;
  n: number;
  epilogue?: number;
  gated?: boolean;
}

/**
 * A post-norm prologue: the product's input is x_eff = x + RMSNorm(proj) * weight (rows of K), which workgroup 0 stores
 * to `out` (the next residual, in place of a separate RMSNorm dispatch). `out` must be none of the buffers read.
 */
export interface PostNorm {
  /** f32 [rows, K]: the sublayer output to normalise. */
  proj: GPUBuffer | BufferSlice;
  /** f32 [K]: the norm weight. */
  weight: GPUBuffer | BufferSlice;
  /** f32 [rows, K]: x_eff. */
  out: GPUBuffer | BufferSlice;
  /** RMSNorm epsilon. */
  eps: number;
}

/**
 * The QK statistics a QKV product writes (`MatvecArgs.qkStats`): outputs 0 .. d - 1 of each row are q, d .. 2d - 1 k
 * (the rest, v, contribute nothing). Layout and size: `qkStatsLayout`.
 */
export interface QkStats {
  /** f32 [rows, 2, groups]: the partial sums of squares (written, never read, by the matvec). */
  partials: GPUBuffer | BufferSlice;
  /** Width of q and of k (OLMo-2: d_model); the product's N must be at least 2d. */
  d: number;
}

/**
 * Where a QKV matvec whose row groups hold `groupRows` outputs each (`matvecGroupRows`) puts its QK statistics: row m's
 * partial sums of squares of q are f32 [(2m) * groups + g] for the row groups g in `q` (the groups holding any of
 * outputs 0 .. d - 1), of k [(2m + 1) * groups + g] for g in `k` (those holding any of d .. 2d - 1); a row group that
 * straddles the q / k boundary writes both. The sums of a row's q partials is sum(q^2) up to rounding order.
 */
export function qkStatsLayout(
  d: number,
  groupRows: number,
): { groups: number; q: [number, number]; k: [number, number]; bytesPerRow: number } {
  const groups = Math.ceil((2 * d) / groupRows);
  return {
    groups,
    q: [0, Math.ceil(d / groupRows)],
    k: [Math.floor(d / groupRows), groups],
    bytesPerRow: 2 * groups * 4,
  };
}

/** Arguments of one matvec dispatch. */
export interface MatvecArgs extends ProductArgs {
  /** Also writes the QK statistics of a QKV product (PLAIN epilogue; see `QkStats`). */
  qkStats?: QkStats;
  /** Adds the previous sublayer's post-norm to x first (see `PostNorm`). */
  postNorm?: PostNorm;
  /**
   * With `postNorm`: stage x_eff in workgroup memory (rows * K * 4 bytes) instead of recomputing it from x, proj and
   * the weight at every use. Default: staged when it fits the device's workgroup memory.
   */
  staged?: boolean;
  /**
   * Row sums by subgroup shuffles (default: where the device has `subgroups`, `subgroupWidth`) instead of a tree in
   * workgroup memory.
   */
  subgroups?: boolean;
  /** Tuning knobs (defaults are the measured best on the reference GPU; see docs/PERF.md). Row groups per workgroup. */
  rowsPerWorkgroup?: number;
  /** Threads per workgroup. */
  workgroupSize?: number;
  /** Output rows per thread (1, 2 or 4). */
  rowsPerThread?: number;
  /** Row groups whose threads are dealt together (1, 2, 4 or 8, at most rowsPerWorkgroup; the kernel's IL). */
  interleave?: number;
  /** Most workgroups launched; each then strides over the row groups (default: one per row group). */
  maxWorkgroups?: number;
}

/**
 * Default knobs by input rows and epilogue, the fastest measured on an H100 (docs/PERF.md, tools/bench_kernels.ts
 * --matvec): 4 output rows per thread for plain products (x is read once per 4 weight rows), 1-2 for SwiGLU (which
 * already keeps two weight rows, gate and up, per thread), 128 threads in row groups of 64 or 32; the H200's changes
 * below.
 */
export function matvecDefaults(
  rows: number,
  epilogue: number,
  n = 0,
  k = 0,
): { rowsPerThread: number; rowsPerWorkgroup: number; workgroupSize: number; interleave?: number } {
  if (epilogue === Epilogue.SWIGLU) {
    return rows === 1
      ? { rowsPerThread: 1, rowsPerWorkgroup: 2, workgroupSize: 128 }
      : { rowsPerThread: 2, rowsPerWorkgroup: 4, workgroupSize: 128 };
  }
  if (n <= k) {
    // Few outputs over a long K (o, down): 256 threads of 2 rows in 4 groups. Measured on an H200 with each dispatch
    // waiting for the previous, as in a decode step (tools/bench_kernels.ts --chain): 7B down 31.1 -> 26.5 us, o 14.1
    // -> 12.7 us; 1B down 19.6 -> 14.5 us, o 7.6 -> 6.2 us. The same at 4 rows, in the 7B PoE verify pass (`deno task
    // profile --config poe_verify --gamma 4`, against 4 rows a thread, 128 threads): down 807 -> 530 us for 12
    // dispatches, o 260 -> 202 us, the pass 3.786 -> 3.447 ms. qkv, gate_up and lm_head (n > k) are faster as below
    // (at 4 rows, 2 rows a thread in 256 threads made lm_head 973 -> 1,235 us and qkv 474 -> 537 us).
    // From 2 rows, the 4 row groups' threads interleaved (a subgroup's x loads span a quarter of the bytes): in the
    // verify pass, in one device call, down 612 -> 455 us, o 221 -> 197 us; alone, down 47.7 -> 34.3 us. At one row,
    // and for the shapes below, interleaving measured slower (docs/PERF.md, 2026-11-30 "S").
    return { rowsPerThread: 2, rowsPerWorkgroup: 4, workgroupSize: 256, interleave: rows === 1 ? 1 : 4 };
  }
  return rows === 1
    ? { rowsPerThread: 4, rowsPerWorkgroup: 2, workgroupSize: 128 }
    : { rowsPerThread: 4, rowsPerWorkgroup: 4, workgroupSize: 128 };
}

/**
 * `HYDRA_MATVEC_INTERLEAVE=<IL>` deals every matvec's threads to row groups IL at a time (`MatvecArgs.interleave`,
 * capped at its row groups per workgroup), so that the GPU can A/B it inside a step (`deno task profile`).
 */
export const MATVEC_INTERLEAVE_ENV = "HYDRA_MATVEC_INTERLEAVE";

/** The knobs a matvec dispatch of `a` runs with: the given ones, else `matvecDefaults`. */
function matvecKnobs(
  a: MatvecArgs,
): { rowsPerThread: number; rowsPerWorkgroup: number; workgroupSize: number; interleave: number } {
  const defaults = matvecDefaults(a.rows, a.epilogue ?? Epilogue.PLAIN, a.n, a.k);
  const rowsPerWorkgroup = a.rowsPerWorkgroup ?? defaults.rowsPerWorkgroup;
  const forced = numberChoiceFromEnv(MATVEC_INTERLEAVE_ENV, [1, 2, 4, 8], "an interleave");
  // the default interleave (none unless given) goes with the default row groups
  const interleave = forced !== undefined
    ? Math.min(forced, rowsPerWorkgroup)
    : a.interleave ?? (a.rowsPerWorkgroup === undefined ? defaults.interleave ?? 1 : 1);
  if (!(rowsPerWorkgroup % interleave === 0)) {
    throw new Error(`matvec: interleave ${interleave} does not divide ${rowsPerWorkgroup} row groups`);
  }
  return {
    rowsPerThread: a.rowsPerThread ?? defaults.rowsPerThread,
    rowsPerWorkgroup,
    workgroupSize: a.workgroupSize ?? defaults.workgroupSize,
    interleave,
  };
}

/** Outputs per row group of a matvec dispatch of `a` (what `qkStatsLayout` needs). */
export function matvecGroupRows(
  a: Pick<MatvecArgs, "rows" | "k" | "n" | "epilogue" | "rowsPerThread" | "rowsPerWorkgroup" | "workgroupSize">,
): number {
  const knobs = matvecKnobs(a as MatvecArgs);
  return knobs.rowsPerThread * knobs.rowsPerWorkgroup;
}

/** Records a matvec dispatch (load time). Throws on shapes the kernel does not handle. */
export function matvec(gpu: Gpu, a: MatvecArgs, kernel?: Kernel): Dispatch {
  if (a.k % 8 !== 0) throw new Error(`matvec: K = ${a.k} is not a multiple of 8`);
  if (a.rows < 1 || a.rows > MATVEC_MAX_ROWS) throw new Error(`matvec: ${a.rows} rows (1..${MATVEC_MAX_ROWS})`);
  const { rowsPerWorkgroup: rowsPerWg, rowsPerThread, workgroupSize: wg, interleave } = matvecKnobs(a);
  const stats = a.qkStats;
  if (stats) {
    if ((a.epilogue ?? Epilogue.PLAIN) !== Epilogue.PLAIN) throw new Error("matvec: qkStats needs the PLAIN epilogue");
    if (!(Number.isInteger(stats.d) && stats.d >= 1 && 2 * stats.d <= a.n)) {
      throw new Error(`matvec: qkStats over q and k of ${stats.d} outputs each needs N >= ${2 * stats.d}, got ${a.n}`);
    }
    const need = a.rows * qkStatsLayout(stats.d, rowsPerWg * rowsPerThread).bytesPerRow;
    const q = stats.partials, have = "buffer" in q ? q.size ?? q.buffer.size - (q.offset ?? 0) : q.size;
    if (have < need) throw new Error(`matvec: the qkStats partials must hold ${need} bytes, got ${have}`);
  }
  const p = a.postNorm;
  let prologue: MatvecPrologue = "none";
  if (p) {
    const stagedBytes = 16 * wg + 4 * a.rows * a.k, limit = gpu.device.limits.maxComputeWorkgroupStorageSize;
    if (a.staged && stagedBytes > limit) {
      throw new Error(
        `matvec: staging ${a.rows} rows of ${a.k} takes ${stagedBytes} bytes of workgroup memory (${limit})`,
      );
    }
    prologue = a.staged ?? stagedBytes <= limit ? "staged" : "recompute";
  }
  // With the prologue, every workgroup pays a pass over proj (and the staging): cap the grid by default so few do
  // (MATVEC_POSTNORM_WORKGROUPS; tools/bench_kernels.ts --chain times the alternatives).
  const maxWorkgroups = a.maxWorkgroups ?? (p ? MATVEC_POSTNORM_WORKGROUPS : Infinity);
  return gpu.dispatch(
    kernel ??
      matvecKernelFor(a.rows, rowsPerThread, prologue, stats !== undefined, matvecSubgroupLanes(gpu, a), interleave),
    {
      K: a.k,
      N: a.n,
      EPILOGUE: a.epilogue ?? Epilogue.PLAIN,
      ROWS: rowsPerWg,
      WG: wg,
      GATED: a.gated ?? false,
      ...(p ? { EPS: p.eps } : {}),
      ...(stats ? { QK_D: stats.d } : {}),
    },
    [
      ...(p ? [a.ctl, a.weight, a.x, a.y, p.proj, p.weight, p.out] : [a.ctl, a.weight, a.x, a.y]),
      ...(stats ? [stats.partials] : []),
    ],
    Math.min(Math.ceil(a.n / (rowsPerWg * rowsPerThread)), maxWorkgroups),
  );
}

/** The shuffle width of `a`'s row sums on `gpu` (0: the tree): `subgroupWidth` unless `a.subgroups` is false. */
function matvecSubgroupLanes(gpu: Gpu, a: Pick<MatvecArgs, "subgroups">): number {
  const width = subgroupWidth(gpu);
  if (a.subgroups && width === 0) throw new Error("matvec: the device has no subgroups");
  return a.subgroups === false ? 0 : width;
}

/**
 * Default grid cap of a matvec with the post-norm prologue: 4 workgroups per SM of an H100 / H200 (132 SMs), each
 * striding over row groups, so the prologue's pass over the D inputs is paid 528 times instead of once per row group
 * (1,536 for the 7B qkv). Not yet measured on the H200: `tools/bench_kernels.ts --chain` times 264 .. uncapped.
 */
export const MATVEC_POSTNORM_WORKGROUPS = 528;

/**
 * CPU reference (f64 accumulation). `weight` holds the bf16 values as f32, [N, K] or [2N, K] for SWIGLU.
 */
export function matvecReference(
  weight: Float32Array,
  x: Float32Array,
  rows: number,
  k: number,
  n: number,
  epilogue: number = Epilogue.PLAIN,
): Float32Array {
  const y = new Float32Array(rows * n);
  const dot = (row: number, m: number) => {
    let s = 0;
    for (let i = 0; i < k; i++) s += weight[row * k + i] * x[m * k + i];
    return s;
  };
  for (let m = 0; m < rows; m++) {
    for (let j = 0; j < n; j++) {
      if (epilogue === Epilogue.SWIGLU) {
        const g = dot(j, m);
        y[m * n + j] = (g / (1 + Math.exp(-g))) * dot(j + n, m);
      } else {
        y[m * n + j] = dot(j, m);
      }
    }
  }
  return y;
}

/**
 * CPU reference of the matvec with the post-norm prologue, composed of the two it fuses: x_eff = `rmsnormReference`
 * of proj with `x` as the residual, then `matvecReference` of x_eff. Returns both (x_eff is what `out` receives).
 */
export function matvecPostNormReference(
  weight: Float32Array,
  x: Float32Array,
  proj: Float32Array,
  normWeight: Float32Array,
  eps: number,
  rows: number,
  k: number,
  n: number,
  epilogue: number = Epilogue.PLAIN,
): { y: Float32Array; xOut: Float32Array } {
  const xOut = rmsnormReference(proj, normWeight, rows, k, eps, x);
  return { y: matvecReference(weight, xOut, rows, k, n, epilogue), xOut };
}

/**
 * CPU reference of the QK statistics of product rows `y` ([rows, n], n >= 2d), laid out as `qkStatsLayout` says (f64
 * sums rounded to f32); the slots no row group writes hold NaN.
 */
export function qkStatsReference(y: Float32Array, rows: number, n: number, d: number, groupRows: number): Float32Array {
  const layout = qkStatsLayout(d, groupRows);
  const out = new Float32Array(rows * layout.bytesPerRow / 4).fill(NaN);
  for (let m = 0; m < rows; m++) {
    for (const [part, [g0, g1]] of [layout.q, layout.k].entries()) {
      for (let g = g0; g < g1; g++) {
        let s = 0;
        const lo = Math.max(g * groupRows, part * d), hi = Math.min((g + 1) * groupRows, (part + 1) * d);
        for (let i = lo; i < hi; i++) s += y[m * n + i] ** 2;
        out[(2 * m + part) * layout.groups + g] = s;
      }
    }
  }
  return out;
}
