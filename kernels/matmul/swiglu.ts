/**
 * SwiGLU activation as its own pass, for prefill: y[m, j] = silu(h[m, j]) * h[m, N + j], where h = x [W_gate; W_up]^T
 * came from a plain GEMM over the fused [2N, K] weight. At prefill sizes a plain GEMM over 2N rows plus this pass is
 * faster than the GEMM's SwiGLU epilogue, which keeps two accumulator blocks per thread (docs/PERF.md).
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";

/** The WGSL kernel. */
export const swigluKernel: Kernel = {
  name: "swiglu",
  source: /* wgsl */ `
// bindings: 0 ctl (gate only) · 1 h [M, 2N] f32 (row m: gate then up) · 2 y [M, N] f32, read_write
override N: u32;
override COUNT: u32; // M * N
override WG: u32 = 256u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let i = flat_workgroup(wid, nwg) * WG + t;
  if (i >= COUNT) { return; }
  let m = i / N;
  let j = i % N;
  let g = h[m * 2u * N + j];
  y[i] = g / (1.0 + exp(-g)) * h[m * 2u * N + N + j];
}
`,
};

/** Records the SwiGLU pass over `rows` rows of width `n` (load time). */
export function swiglu(
  gpu: Gpu,
  a: {
    ctl: GPUBuffer;
    h: GPUBuffer | BufferSlice;
    y: GPUBuffer | BufferSlice;
    rows: number;
    n: number;
    gated?: boolean;
  },
  kernel: Kernel = swigluKernel,
): Dispatch {
  const count = a.rows * a.n;
  return gpu.dispatch(
    kernel,
    { N: a.n, COUNT: count, GATED: a.gated ?? false },
    [a.ctl, a.h, a.y],
    Math.ceil(count / 256),
  );
}

/** CPU reference. */
export function swigluReference(h: Float32Array, rows: number, n: number): Float32Array {
  const y = new Float32Array(rows * n);
  for (let m = 0; m < rows; m++) {
    for (let j = 0; j < n; j++) {
      const g = h[m * 2 * n + j];
      y[m * n + j] = (g / (1 + Math.exp(-g))) * h[m * 2 * n + n + j];
    }
  }
  return y;
}
