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

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";

/** Most input rows one matvec dispatch handles; more rows go to the tiled GEMM. */
export const MATVEC_MAX_ROWS = 16;

/** What the kernel stores. */
export const Epilogue = { PLAIN: 0, SWIGLU: 1 } as const;

/** Name prefix of the generated kernels (`matvec_bf16_m<rows>`). */
export const MATVEC_KERNEL_NAME = "matvec_bf16";

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * The WGSL kernel for `rows` input rows. Generated per row count so each row's accumulators are named registers (an
 * array indexed in a loop can land in local memory, which measured 5x slower at M = 4 on an H100).
 */
export function matvecKernelFor(rows: number): Kernel {
  if (!Number.isInteger(rows) || rows < 1 || rows > MATVEC_MAX_ROWS) {
    throw new Error(`matvec: ${rows} rows (1..${MATVEC_MAX_ROWS})`);
  }
  const R = range(rows);
  // Accumulate weight chunk p (and up-projection chunk q) times chunk c of every input row.
  const accumulate = (p: string, q: string, c: string) =>
    R.map((j) =>
      `    { let xa = x[${j}u * k4 + 2u * (${c})]; let xb = x[${j}u * k4 + 2u * (${c}) + 1u];
      a${j} += dot8(${p}, xa, xb); if (EPILOGUE == 1u) { u${j} += dot8(${q}, xa, xb); } }`
    ).join("\n");
  const unroll = range(4);
  // Reduce the accumulators four at a time (one vec4 per thread per tree level), then lane 0 stores.
  const sums = [...R.map((j) => `a${j}`), ...R.map((j) => `u${j}`)];
  const batches: string[] = [];
  for (let b = 0; b < sums.length; b += 4) {
    const names = range(4).map((i) => sums[b + i] ?? "0.0");
    batches.push(`  {
    let s = row_sum4(vec4<f32>(${names.join(", ")}), t, lane);
${names.map((v, i) => v === "0.0" ? "" : `    ${v} = s[${i}];`).filter(Boolean).join("\n")}
  }`);
  }
  const reduceUp = batches.slice(Math.ceil(rows / 4));
  return {
    name: `${MATVEC_KERNEL_NAME}_m${rows}`,
    source: /* wgsl */ `
// y[m, n] = sum_k x[m, k] * W[n, k] for m < ${rows} (rows are generated into named registers), n < N.
// bindings:
//   0 ctl [CTL_SLOTS] u32, read      control block (gate only)
//   1 w   [NW, K / 8] vec4<u32>      bf16 weight, row-major [NW, K], two bf16 per u32 (lower k in the low half);
//                                    NW = N (PLAIN) or 2N (SWIGLU: rows 0..N-1 gate, N..2N-1 up)
//   2 x   [${rows}, K / 4] vec4<f32>       input rows, row-major [${rows}, K] f32
//   3 y   [${rows}, N] f32, read_write     output rows
// K must be a multiple of 8. Each thread keeps 4 16-byte weight loads in flight per iteration.
override K: u32;
override N: u32;
override EPILOGUE: u32 = 0u;
override ROWS: u32 = 8u;   // output rows per workgroup (a power of two dividing WG)
override WG: u32 = 256u;   // threads per workgroup (a power of two)
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
var<workgroup> red: array<vec4<f32>, WG>;

fn dot8(p: vec4<u32>, a: vec4<f32>, b: vec4<f32>) -> f32 {
  return dot(vec4<f32>(bf16_lo(p.x), bf16_hi(p.x), bf16_lo(p.y), bf16_hi(p.y)), a)
       + dot(vec4<f32>(bf16_lo(p.z), bf16_hi(p.z), bf16_lo(p.w), bf16_hi(p.w)), b);
}

// Sums v over the WG / ROWS threads of each row group (a tree in workgroup memory); lane 0 gets the total.
fn row_sum4(v: vec4<f32>, t: u32, lane: u32) -> vec4<f32> {
  red[t] = v;
  workgroupBarrier();
  for (var s = (WG / ROWS) / 2u; s > 0u; s /= 2u) {
    if (lane < s) { red[t] += red[t + s]; }
    workgroupBarrier();
  }
  let total = red[t]; // the row group's total for lane 0, which alone stores
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
  ${R.map((j) => `var a${j} = 0.0; var u${j} = 0.0;`).join(" ")}
  if (n < N) {
    let wrow = n * k8;
    let wrow_up = (n + N) * k8;
    var c = lane;
    for (; c + 3u * tpr < k8; c += 4u * tpr) {
${unroll.map((i) => `      let p${i} = w[wrow + c + ${i}u * tpr];`).join("\n")}
${unroll.map((i) => `      var q${i} = vec4<u32>();`).join("\n")}
      if (EPILOGUE == 1u) {
${unroll.map((i) => `        q${i} = w[wrow_up + c + ${i}u * tpr];`).join("\n")}
      }
${unroll.map((i) => accumulate(`p${i}`, `q${i}`, `c + ${i}u * tpr`)).join("\n")}
    }
    for (; c < k8; c += tpr) {
      let p0 = w[wrow + c];
      var q0 = vec4<u32>();
      if (EPILOGUE == 1u) { q0 = w[wrow_up + c]; }
${accumulate("p0", "q0", "c")}
    }
  }
${batches.slice(0, Math.ceil(rows / 4)).join("\n")}
  if (EPILOGUE == 1u) {
${reduceUp.join("\n")}
${R.map((j) => `    a${j} = a${j} / (1.0 + exp(-a${j})) * u${j};`).join("\n")}
  }
  if (lane == 0u && n < N) {
${R.map((j) => `    y[${j}u * N + n] = a${j};`).join("\n")}
  }
}
`,
  };
}

/** Arguments of one matvec dispatch. */
export interface MatvecArgs {
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
  /** Tuning knobs (defaults are the measured best on the reference GPU; see docs/PERF.md). */
  rowsPerWorkgroup?: number;
  workgroupSize?: number;
}

/** Records a matvec dispatch (load time). Throws on shapes the kernel does not handle. */
export function matvec(gpu: Gpu, a: MatvecArgs, kernel?: Kernel): Dispatch {
  if (a.k % 8 !== 0) throw new Error(`matvec: K = ${a.k} is not a multiple of 8`);
  if (a.rows < 1 || a.rows > MATVEC_MAX_ROWS) throw new Error(`matvec: ${a.rows} rows (1..${MATVEC_MAX_ROWS})`);
  const rowsPerWg = a.rowsPerWorkgroup ?? 8;
  return gpu.dispatch(
    kernel ?? matvecKernelFor(a.rows),
    {
      K: a.k,
      N: a.n,
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
