/**
 * The largest L2 norm among a weight's rows, per part of its rows: for W [N, K] (bf16, two per u32, row-major),
 *   out[p] = max over rows n with floor(n / PART_ROWS) = p of sqrt(sum_k W[n, k]^2), as f32 bits (atomicMax: for
 *   non-negative f32 the order of the bits is the order of the values).
 * The SwiGLU GEMM's f16 output rows are scaled by a bound built on it (|silu(g) u| <= ||x||^2 max ||Wg_n|| max ||Wu_n||,
 * Cauchy-Schwarz; row_scale.ts `SWIGLU_ROWS_WGSL`, whose exponents rmsnorm's `swigluRows` writes for gemm_tensor.ts
 * `halfRowsOut`), the gate rows one part and the up rows the other. Run once per weight when a model is built, after
 * any merge; out must start zeroed.
 *
 * One workgroup per row, the sum of squares in f32 (one workgroup reduction, kernels/reduce.ts): its rounding is a
 * relative 2^-24 a term at most, K 2^-24 in all (2^-11 at K = 8,192), inside the factor 2 the GEMM's bound keeps.
 * @module
 */

import type { Dispatch, Gpu, Kernel } from "../runtime.ts";
import { reductionsWgsl, subgroupWidth } from "../reduce.ts";
import { rowWorkgroupSize } from "../norm/rmsnorm.ts";

/** The WGSL kernel, its sum by subgroup shuffles or by a tree in workgroup memory (kernels/reduce.ts). */
export function rowNormMaxKernelFor(subgroups: boolean): Kernel {
  return {
    name: `row_norm_max${subgroups ? "_sg" : ""}`,
    source: /* wgsl */ `
// bindings (one workgroup per row n of W, flat grid):
//   0 ctl [CTL_SLOTS] u32, read       control block (gate only)
//   1 w   [N, K / 2] u32, read         bf16 pairs, element 2i in the low half of word i of the row
//   2 out [ceil(N / PART_ROWS)] u32    out[n / PART_ROWS] = max(itself, f32 bits of ||W[n, :]||)
override K: u32;
override N: u32;
override PART_ROWS: u32;
override WG: u32 = 256u; // a power of two
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<atomic<u32>>;
${reductionsWgsl(subgroups)}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let n = flat_workgroup(wid, nwg);
  if (n >= N) { return; }
  var s = 0.0;
  for (var i = t; i < K / 2u; i += WG) {
    let p = w[n * (K / 2u) + i];
    let lo = bitcast<f32>(p << 16u);
    let hi = bitcast<f32>(p & 0xffff0000u);
    s += lo * lo + hi * hi;
  }
  let total = workgroup_sum(s, t);
  if (t == 0u) { atomicMax(&out[n / PART_ROWS], bitcast<u32>(sqrt(total))); }
}
`,
  };
}

/** Arguments of one row-norm dispatch. */
export interface RowNormMaxArgs {
  ctl: GPUBuffer;
  /** bf16 [rows, k], two per u32. */
  weight: GPUBuffer;
  rows: number;
  /** Row length: even. */
  k: number;
  /** Rows a part has (the last may have fewer): out[p] is part p's largest norm. */
  partRows: number;
  /** u32 [ceil(rows / partRows)], zeroed before. */
  out: GPUBuffer;
}

/** Records one row-norm dispatch (load time). Throws on shapes the kernel does not take. */
export function rowNormMax(gpu: Gpu, a: RowNormMaxArgs, kernel?: Kernel): Dispatch {
  if (!(a.k >= 2 && a.k % 2 === 0)) throw new Error(`rowNormMax: K = ${a.k} is not a positive even number`);
  if (!(Number.isInteger(a.rows) && a.rows >= 1)) throw new Error(`rowNormMax: ${a.rows} rows`);
  if (!(Number.isInteger(a.partRows) && a.partRows >= 1)) throw new Error(`rowNormMax: ${a.partRows} rows a part`);
  if (a.out.size < Math.ceil(a.rows / a.partRows) * 4) {
    throw new Error(`rowNormMax: ${a.out.size} bytes of output for ${Math.ceil(a.rows / a.partRows)} parts`);
  }
  const width = subgroupWidth(gpu);
  return gpu.dispatch(
    kernel ?? rowNormMaxKernelFor(width > 0),
    { K: a.k, N: a.rows, PART_ROWS: a.partRows, WG: rowWorkgroupSize(gpu, a.k / 2), SG_LANES: width || 32 },
    [a.ctl, a.weight, a.out],
    a.rows,
  );
}

/** CPU reference: each part's largest row norm (f64 sums of the f32 values of `w` [rows, k]). */
export function rowNormMaxReference(w: Float32Array, rows: number, k: number, partRows: number): Float64Array {
  const out = new Float64Array(Math.ceil(rows / partRows));
  for (let n = 0; n < rows; n++) {
    let s = 0;
    for (let i = 0; i < k; i++) s += w[n * k + i] ** 2;
    out[Math.floor(n / partRows)] = Math.max(out[Math.floor(n / partRows)], Math.sqrt(s));
  }
  return out;
}
