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
 */

import type { Dispatch, Gpu, Kernel } from "../runtime.ts";

/** Most input rows one matvec dispatch handles; more rows go to the tiled GEMM. */
export const MATVEC_MAX_ROWS = 16;

/** What the kernel stores. */
export const Epilogue = { PLAIN: 0, SWIGLU: 1 } as const;

/** The WGSL kernel. */
export const matvecKernel: Kernel = {
  name: "matvec_bf16",
  source: /* wgsl */ `
// bindings:
//   0 ctl [CTL_SLOTS] u32, read      control block (gate only)
//   1 w   [NW, K / 8] vec4<u32>      bf16 weight, row-major [NW, K], two bf16 per u32 (lower k in the low half);
//                                    NW = N (PLAIN) or 2N (SWIGLU: rows 0..N-1 gate, N..2N-1 up)
//   2 x   [M, K / 4] vec4<f32>       input rows, row-major [M, K] f32
//   3 y   [M, N] f32, read_write     output rows
// K must be a multiple of 8; M <= 16.
override K: u32;
override N: u32;
override M: u32 = 1u;
override EPILOGUE: u32 = 0u;
override ROWS: u32 = 8u;   // output rows per workgroup (a power of two dividing WG)
override WG: u32 = 256u;   // threads per workgroup (a power of two)
const MAX_M: u32 = 16u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
var<workgroup> red: array<f32, WG>;

fn dot8(p: vec4<u32>, a: vec4<f32>, b: vec4<f32>) -> f32 {
  return dot(vec4<f32>(bf16_lo(p.x), bf16_hi(p.x), bf16_lo(p.y), bf16_hi(p.y)), a)
       + dot(vec4<f32>(bf16_lo(p.z), bf16_hi(p.z), bf16_lo(p.w), bf16_hi(p.w)), b);
}

// Sums v over the TPR threads of each row group; the row group's lane 0 gets the total.
fn row_sum(v: f32, t: u32, lane: u32) -> f32 {
  let tpr = WG / ROWS;
  red[t] = v;
  workgroupBarrier();
  for (var s = tpr / 2u; s > 0u; s /= 2u) {
    if (lane < s) { red[t] += red[t + s]; }
    workgroupBarrier();
  }
  let total = red[t];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let tpr = WG / ROWS;
  let lane = t % tpr;
  let n = flat_workgroup(wid, nwg) * ROWS + t / tpr;
  let k8 = K / 8u;
  let k4 = K / 4u;
  var acc: array<f32, MAX_M>;
  var acc_up: array<f32, MAX_M>;
  if (n < N) {
    let wrow = n * k8;
    let wrow_up = (n + N) * k8;
    for (var c = lane; c < k8; c += tpr) {
      let p = w[wrow + c];
      var p_up = vec4<u32>();
      if (EPILOGUE == 1u) { p_up = w[wrow_up + c]; }
      for (var m = 0u; m < M; m++) {
        let a = x[m * k4 + 2u * c];
        let b = x[m * k4 + 2u * c + 1u];
        acc[m] += dot8(p, a, b);
        if (EPILOGUE == 1u) { acc_up[m] += dot8(p_up, a, b); }
      }
    }
  }
  for (var m = 0u; m < M; m++) {
    let g = row_sum(acc[m], t, lane);
    var out = g;
    if (EPILOGUE == 1u) {
      let u = row_sum(acc_up[m], t, lane);
      out = g / (1.0 + exp(-g)) * u;
    }
    if (lane == 0u && n < N) { y[m * N + n] = out; }
  }
}
`,
};

/** Arguments of one matvec dispatch. */
export interface MatvecArgs {
  ctl: GPUBuffer;
  /** bf16 weight [N, K] (or [2N, K] for SWIGLU), packed. */
  weight: GPUBuffer;
  /** f32 input [rows, K]. */
  x: GPUBuffer;
  /** f32 output [rows, N]. */
  y: GPUBuffer;
  rows: number;
  k: number;
  n: number;
  epilogue?: number;
  gated?: boolean;
  /** Tuning knobs (defaults are the measured best on the reference GPU; see docs/PERF.md). */
  rowsPerWorkgroup?: number;
  workgroupSize?: number;
}

/** Records a matvec dispatch (load time). Throws on shapes the kernel does not handle. */
export function matvec(gpu: Gpu, a: MatvecArgs, kernel: Kernel = matvecKernel): Dispatch {
  if (a.k % 8 !== 0) throw new Error(`matvec: K = ${a.k} is not a multiple of 8`);
  if (a.rows < 1 || a.rows > MATVEC_MAX_ROWS) throw new Error(`matvec: ${a.rows} rows (1..${MATVEC_MAX_ROWS})`);
  const rowsPerWg = a.rowsPerWorkgroup ?? 8;
  return gpu.dispatch(
    kernel,
    {
      K: a.k,
      N: a.n,
      M: a.rows,
      EPILOGUE: a.epilogue ?? Epilogue.PLAIN,
      ROWS: rowsPerWg,
      WG: a.workgroupSize ?? 256,
      GATED: a.gated ?? false,
    },
    [a.ctl, a.weight, a.x, a.y],
    Math.ceil(a.n / rowsPerWg),
  );
}

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
