/**
 * A plain 16-byte-per-thread buffer copy: the bandwidth a WGSL kernel can reach on this device, the roofline that
 * every memory-bound kernel of the suite is compared with (bench/bandwidth.ts).
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";

/** The WGSL kernel. */
export const copyKernel: Kernel = {
  name: "copy_vec4",
  source: /* wgsl */ `
// bindings: 0 ctl (gate only) · 1 src [COUNT] vec4<u32> · 2 dst [COUNT] vec4<u32>, read_write
// Each thread copies PER_THREAD vec4s, strided by the grid so every load instruction is coalesced.
override COUNT: u32;
override PER_THREAD: u32 = 4u;
override WG: u32 = 256u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let base = flat_workgroup(wid, nwg) * WG * PER_THREAD + t;
  for (var j = 0u; j < PER_THREAD; j++) {
    let i = base + j * WG;
    if (i < COUNT) { dst[i] = src[i]; }
  }
}
`,
};

/** Records a copy of `vec4Count` 16-byte elements from `src` to `dst`. */
export function copyVec4(
  gpu: Gpu,
  a: {
    ctl: GPUBuffer;
    src: GPUBuffer | BufferSlice;
    dst: GPUBuffer | BufferSlice;
    vec4Count: number;
    perThread?: number;
    gated?: boolean;
  },
  kernel: Kernel = copyKernel,
): Dispatch {
  const perThread = a.perThread ?? 4;
  return gpu.dispatch(
    kernel,
    { COUNT: a.vec4Count, PER_THREAD: perThread, GATED: a.gated ?? false },
    [a.ctl, a.src, a.dst],
    Math.ceil(a.vec4Count / (256 * perThread)),
  );
}
