/**
 * RMSNorm in f32, plain or fused with the residual add of OLMo-2's reordered-norm block:
 *   plain:     out[m, :]  = x[m, :] * rsqrt(mean(x[m, :]^2) + eps) * w
 *   residual:  out[m, :] += x[m, :] * rsqrt(mean(x[m, :]^2) + eps) * w      (h = h + RMSNorm(sublayer(h)))
 *   from:      out[m, :]  = res[m, :] + x[m, :] * rsqrt(mean(x[m, :]^2) + eps) * w     (the same, out of place)
 * One workgroup per row; the row's sum of squares is one workgroup reduction (kernels/reduce.ts).
 * @module
 */

import { reductionsWgsl, subgroupWidth } from "../reduce.ts";
import type { Dispatch, Gpu, Kernel } from "../runtime.ts";

/**
 * The WGSL kernel, its row sum by subgroup shuffles or by a tree in workgroup memory (kernels/reduce.ts), reading
 * `vec4` (4 values a load; D a multiple of 4) or scalars. A decode step normalises one row of d values: the work is a
 * few loads per thread, so the kernel's time is latency, and a wide workgroup (up to 1024 threads: one vec4 each at
 * d = 4096) with a barrier-free reduction is what makes it short. Measured on an H200 inside a 7B decode step: 16.7 us
 * alone with 256 threads, scalars and the tree; 11.3 us with 1024 threads, scalars and shuffles (docs/PERF.md).
 */
export function rmsnormKernelFor(subgroups: boolean, vec4 = false, from = false): Kernel {
  const T = vec4 ? "vec4<f32>" : "f32";
  return {
    name: `rmsnorm${from ? "_from" : ""}${subgroups ? "_sg" : ""}${vec4 ? "_v4" : ""}`,
    source: /* wgsl */ `
// bindings (M = number of workgroups = rows normalised; V = ${vec4 ? 4 : 1} values an element):
//   0 ctl  [CTL_SLOTS] u32, read            control block (gate only)
//   1 x    [X_ROW_OFFSET + M, D / V] ${T}   rows to normalise, row-major; rows X_ROW_OFFSET.. are read
//   2 w    [D / V] ${T}                     norm weight (not offset by 1)
//   3 out  [M, D / V] ${T}, read_write      ${
      from ? "res + the normed rows (RESIDUAL), or the normed rows" : "written (plain) or accumulated into (RESIDUAL)"
    }${
      from
        ? `
//   4 res  [M, D / V] ${T}                    the residual the normed rows are added to (RESIDUAL)`
        : ""
    }
override D: u32;
override EPS: f32 = 1e-6;
override RESIDUAL: bool = false;
override X_ROW_OFFSET: u32 = 0u;
override WG: u32 = 256u; // a power of two
const V: u32 = ${vec4 ? 4 : 1}u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<${T}>;
@group(0) @binding(2) var<storage, read> w: array<${T}>;
@group(0) @binding(3) var<storage, read_write> out: array<${T}>;${
      from
        ? `
@group(0) @binding(4) var<storage, read> res: array<${T}>;`
        : ""
    }
${reductionsWgsl(subgroups)}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let m = wid.x;
  let n = D / V;
  let xb = (m + X_ROW_OFFSET) * n;
  var s = 0.0;
  for (var i = t; i < n; i += WG) {
    let v = x[xb + i];
    s += ${vec4 ? "dot(v, v)" : "v * v"};
  }
  let total = workgroup_sum(s, t);
  let inv = inverseSqrt(total / f32(D) + EPS);
  let ob = m * n;
  for (var i = t; i < n; i += WG) {
    let v = x[xb + i] * inv * w[i];
    if (RESIDUAL) { out[ob + i] ${from ? "= res[ob + i] +" : "+="} v; } else { out[ob + i] = v; }
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
  out: GPUBuffer;
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
  residualFrom?: GPUBuffer;
  /** First row of `x` read (e.g. the last prompt position only). */
  xRowOffset?: number;
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
  return gpu.dispatch(
    kernel ?? rmsnormKernelFor(subgroups, vec4, from),
    {
      D: a.dim,
      EPS: a.eps,
      RESIDUAL: from || (a.residual ?? false),
      X_ROW_OFFSET: a.xRowOffset ?? 0,
      GATED: a.gated ?? false,
      WG: a.workgroupSize ?? rowWorkgroupSize(gpu, vec4 ? a.dim / 4 : a.dim, vec4 ? 1 : 4),
      SG_LANES: subgroups ? width : 32,
    },
    from ? [a.ctl, a.x, a.weight, a.out, a.residualFrom!] : [a.ctl, a.x, a.weight, a.out],
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
