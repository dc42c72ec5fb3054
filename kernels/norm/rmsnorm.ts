/**
 * RMSNorm in f32, plain or fused with the residual add of OLMo-2's reordered-norm block:
 *   plain:     out[m, :]  = x[m, :] * rsqrt(mean(x[m, :]^2) + eps) * w
 *   residual:  out[m, :] += x[m, :] * rsqrt(mean(x[m, :]^2) + eps) * w      (h = h + RMSNorm(sublayer(h)))
 *   from:      out[m, :]  = res[m, :] + x[m, :] * rsqrt(mean(x[m, :]^2) + eps) * w     (the same, out of place)
 * One workgroup per row; the row's sum of squares is one workgroup reduction (kernels/reduce.ts).
 *
 * Two fusions for the prefill GEMMs' neighbours (`model/hydra.ts`), each replacing a dispatch of its own:
 *   splitK S:  x holds the S partial sums [S, M, D] of a split-K product, summed in split order as
 *              `split_k_reduce.ts` sums them (the same f32 additions, so the same bits), instead of that reduction;
 *   half:      the rows written to `out` are also scaled to f16 as the tensor-core GEMM's pre-pass does
 *              (`row_scale.ts`: the exponents e[m] and xh[m, :], the same rule and bits), instead of that pre-pass,
 *              for the product that reads `out` next.
 * @module
 */

import { atomicMaxWgsl, reductionsWgsl, subgroupWidth } from "../reduce.ts";
import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { type HalfRows, ROW_SCALE_WGSL } from "../matmul/row_scale.ts";
import { splitKSumWgsl } from "../matmul/split_k_reduce.ts";

/** The fusions of `rmsnormKernelFor` (module comment). */
export interface RmsnormFusion {
  /** x holds split-K partial sums [SPLIT_K, M, D], summed in split order (the override SPLIT_K gives S). */
  splitK?: boolean;
  /** Also write the row-scale pre-pass's exponents and f16 rows of `out` (vec4 rows only). */
  half?: boolean;
}

/**
 * The WGSL kernel, its row sum by subgroup shuffles or by a tree in workgroup memory (kernels/reduce.ts), reading
 * `vec4` (4 values a load; D a multiple of 4) or scalars. A decode step normalises one row of d values: the work is a
 * few loads per thread, so the kernel's time is latency, and a wide workgroup (up to 1024 threads: one vec4 each at
 * d = 4096) with a barrier-free reduction is what makes it short. Measured on an H200 inside a 7B decode step: 16.7 us
 * alone with 256 threads, scalars and the tree; 11.3 us with 1024 threads, scalars and shuffles (docs/PERF.md).
 * `fusion` adds the split-K sum and the f16 rows (module comment); without it the kernels are as before, byte for byte.
 */
export function rmsnormKernelFor(subgroups: boolean, vec4 = false, from = false, fusion: RmsnormFusion = {}): Kernel {
  const T = vec4 ? "vec4<f32>" : "f32";
  const split = fusion.splitK ?? false, half = fusion.half ?? false;
  if (half && !vec4) throw new Error("rmsnorm: the f16 rows need vec4 rows (D a multiple of 4)");
  // x[i], or the sum of its S partials in split order (split_k_reduce.ts's additions)
  const X = (i: string) => split ? `x_sum(${i}, slice)` : `x[${i}]`;
  const halfBindings = from ? [5, 6] : [4, 5];
  return {
    name: `rmsnorm${from ? "_from" : ""}${split ? "_sk" : ""}${half ? "_half" : ""}${subgroups ? "_sg" : ""}${
      vec4 ? "_v4" : ""
    }`,
    source: /* wgsl */ `
// bindings (M = number of workgroups = rows normalised; V = ${vec4 ? 4 : 1} values an element):
//   0 ctl  [CTL_SLOTS] u32, read            control block (gate only)
//   1 x    [X_ROW_OFFSET + M, D / V] ${T}   rows to normalise, row-major; rows X_ROW_OFFSET.. are read${
      split ? "\n//          here [SPLIT_K, M, D / V]: the partial sums of a split-K product, x = their sum" : ""
    }
//   2 w    [D / V] ${T}                     norm weight (not offset by 1)
//   3 out  [M, D / V] ${T}, read_write      ${
      from ? "res + the normed rows (RESIDUAL), or the normed rows" : "written (plain) or accumulated into (RESIDUAL)"
    }${
      from
        ? `
//   4 res  [M, D / V] ${T}                    the residual the normed rows are added to (RESIDUAL)`
        : ""
    }${
      half
        ? `
//   ${halfBindings[0]} e    [M] i32, read_write               the row-scale exponents of the out rows (row_scale.ts)
//   ${halfBindings[1]} xh   [M, D / 4] vec2<u32>, read_write   the out rows * 2^-e as f16 (row_scale.ts's half pass)`
        : ""
    }
override D: u32;
override EPS: f32 = 1e-6;
override RESIDUAL: bool = false;
override X_ROW_OFFSET: u32 = 0u;
override WG: u32 = 256u; // a power of two${split ? "\noverride SPLIT_K: u32 = 1u;" : ""}
const V: u32 = ${vec4 ? 4 : 1}u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<${T}>;
@group(0) @binding(2) var<storage, read> w: array<${T}>;
@group(0) @binding(3) var<storage, read_write> out: array<${T}>;${
      from
        ? `
@group(0) @binding(4) var<storage, read> res: array<${T}>;`
        : ""
    }${
      half
        ? `
@group(0) @binding(${halfBindings[0]}) var<storage, read_write> e: array<i32>;
@group(0) @binding(${halfBindings[1]}) var<storage, read_write> xh: array<vec2<u32>>;
var<workgroup> row_max: atomic<u32>;
${ROW_SCALE_WGSL}`
        : ""
    }
${reductionsWgsl(subgroups)}
${split ? splitKSumWgsl("x_sum", "x", T) : ""}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32${
      split ? ",\n        @builtin(num_workgroups) nwg: vec3<u32>" : ""
    }${half && subgroups ? ", @builtin(subgroup_invocation_id) lane: u32" : ""}) {
  if (gated_off()) { return; }
  let m = wid.x;
  let n = D / V;
  let xb = (m + X_ROW_OFFSET) * n;${split ? "\n  let slice = nwg.x * n; // one partial's M x D values" : ""}${
      half ? "\n  if (t == 0u) { atomicStore(&row_max, 0u); }" : ""
    }
  var s = 0.0;
  for (var i = t; i < n; i += WG) {
    let v = ${X("xb + i")};
    s += ${vec4 ? "dot(v, v)" : "v * v"};
  }
  let total = workgroup_sum(s, t);
  let inv = inverseSqrt(total / f32(D) + EPS);
  let ob = m * n;${
      half ? "\n  var best = 0u; // the largest magnitude's bits this thread stored (row_scale.ts's order)" : ""
    }
  for (var i = t; i < n; i += WG) {
    let v = ${X("xb + i")} * inv * w[i];${
      half
        ? `
    var o = v;
    if (RESIDUAL) { o = ${from ? "res[ob + i] + v" : "out[ob + i] + v"}; }
    out[ob + i] = o;
    best = max(best, max_abs_bits(o));`
        : `
    if (RESIDUAL) { out[ob + i] ${from ? "= res[ob + i] +" : "+="} v; } else { out[ob + i] = v; }`
    }
  }${
      half
        ? `
  // row_scale.ts's exponent of the row just stored, then its f16 rows (each thread re-reads what it stored)
  ${atomicMaxWgsl("&row_max", "best", subgroups)}
  workgroupBarrier();
  let exponent = row_scale_exponent(atomicLoad(&row_max));
  if (t == 0u) { e[m] = exponent; }
  let f = ldexp(1.0, -exponent);
  for (var i = t; i < n; i += WG) { xh[ob + i] = row_scale_pack(out[ob + i], f); }`
        : ""
    }
}
`,
  };
}

/**
 * Threads for reductions over rows of `dim` elements: about `perThread` elements a thread, from 32 up to the device's
 * limit (at most 1024), a power of two.
 */
export function rowWorkgroupSize(gpu: Gpu, dim: number, perThread = 4): number {
  const limit = Math.min(1024, gpu.device.limits.maxComputeInvocationsPerWorkgroup);
  let wg = 32;
  while (wg * perThread < dim && wg * 2 <= limit) wg *= 2;
  return wg;
}

/** Arguments of one RMSNorm dispatch. */
export interface RmsnormArgs {
  ctl: GPUBuffer;
  x: GPUBuffer;
  weight: GPUBuffer;
  out: GPUBuffer | BufferSlice;
  /** Rows normalised. */
  rows: number;
  /** Row length. */
  dim: number;
  eps: number;
  /** Accumulate into `out` instead of overwriting it. */
  residual?: boolean;
  /**
   * Store `residualFrom` + the normed rows to `out` (a buffer other than `residualFrom` and `x`) instead of adding in
   * place: every buffer a pass writes is then written once, which lets independent dispatches overlap
   * (`model/hydra.ts`, heads in lock-step).
   */
  residualFrom?: GPUBuffer | BufferSlice;
  /** First row of `x` read (e.g. the last prompt position only). */
  xRowOffset?: number;
  /**
   * x holds the `splitK` partial sums [splitK, rows, dim] of a split-K product (`linear`'s `leavePartials`), summed
   * here in place of `split_k_reduce.ts` (default 1: x is the rows).
   */
  splitK?: number;
  /**
   * Also write the rows stored to `out` as the tensor-core GEMM's pre-pass would (`row_scale.ts`): their exponents and
   * f16 rows, for the product that reads `out` next (`linear`'s `halfRows`). dim a multiple of 4.
   */
  half?: HalfRows;
  gated?: boolean;
  /** Threads per row (default `rowWorkgroupSize`) and the reduction path (default: subgroups when the device has them). */
  workgroupSize?: number;
  subgroups?: boolean;
}

/** Records an RMSNorm dispatch (load time). */
export function rmsnorm(gpu: Gpu, a: RmsnormArgs, kernel?: Kernel): Dispatch {
  const width = subgroupWidth(gpu);
  const subgroups = a.subgroups ?? width > 0;
  const vec4 = a.dim % 4 === 0;
  const from = a.residualFrom !== undefined;
  const splitK = a.splitK ?? 1;
  if (!(Number.isInteger(splitK) && splitK >= 1)) throw new Error(`rmsnorm: splitK ${splitK}`);
  if (splitK > 1 && (a.xRowOffset ?? 0) !== 0) throw new Error("rmsnorm: split-K partials read from row 0 only");
  const fusion = { splitK: splitK > 1, half: a.half !== undefined };
  return gpu.dispatch(
    kernel ?? rmsnormKernelFor(subgroups, vec4, from, fusion),
    {
      D: a.dim,
      EPS: a.eps,
      RESIDUAL: from || (a.residual ?? false),
      X_ROW_OFFSET: a.xRowOffset ?? 0,
      GATED: a.gated ?? false,
      WG: a.workgroupSize ?? rowWorkgroupSize(gpu, vec4 ? a.dim / 4 : a.dim, vec4 ? 1 : 4),
      SG_LANES: subgroups ? width : 32,
      ...(splitK > 1 ? { SPLIT_K: splitK } : {}),
    },
    [
      a.ctl,
      a.x,
      a.weight,
      a.out,
      ...(from ? [a.residualFrom!] : []),
      ...(a.half ? [a.half.exponents, a.half.xHalf] : []),
    ],
    [a.rows, 1, 1],
  );
}

/** CPU reference (f64 accumulation): returns the normalised rows, or `residual` + them when given. */
export function rmsnormReference(
  x: Float32Array,
  weight: Float32Array,
  rows: number,
  dim: number,
  eps: number,
  residual?: Float32Array,
  xRowOffset = 0,
): Float32Array {
  const out = residual ? Float32Array.from(residual) : new Float32Array(rows * dim);
  for (let m = 0; m < rows; m++) {
    const xb = (m + xRowOffset) * dim;
    let s = 0;
    for (let i = 0; i < dim; i++) s += x[xb + i] * x[xb + i];
    const inv = 1 / Math.sqrt(s / dim + eps);
    for (let i = 0; i < dim; i++) out[m * dim + i] += x[xb + i] * inv * weight[i];
  }
  return out;
}
