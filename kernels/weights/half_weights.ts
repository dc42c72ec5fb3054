/**
 * bf16 weights as f16: a copy of a weight matrix whose every bf16 value is converted to f16, in the same packing (two
 * to a u32 word, the lower index in the low half). The tensor-core GEMM's `halfWeights` variant (`gemm_tensor.ts`)
 * reads such a copy straight from global memory into its subgroup matrices, which take f16 and not bf16.
 *
 * The conversion is exact for 2^-14 <= |w| <= 65504 (bf16 has 8 significand bits, f16 11); below, in f16's subnormal
 * range, a value moves by at most 2^-25 (half its spacing 2^-24; WGSL may round to either neighbour, so 2^-24 is
 * what is tested); zero stays zero. bf16 values beyond f16's range have no f16 (WGSL leaves the result indeterminate):
 * OLMo-2's weights are below 100 in magnitude.
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { f16Bits } from "../matmul/row_scale.ts";
import { bf16BitsToF32 } from "../bf16.ts";

/** Invocations per workgroup. */
const WG = 256;
/** Words each invocation converts (strided by the workgroup, so every load is coalesced). */
const PER_THREAD = 4;

/** The WGSL kernel (`pack2x16float`: no shader-f16 needed). */
export const halfWeightsKernel: Kernel = {
  name: "half_weights",
  source: /* wgsl */ `
// dst[i] = src[i] with both bf16 halves converted to f16 (the low half the lower index).
// bindings: 0 ctl (gate only) · 1 src [WORDS] u32, bf16 pairs · 2 dst [WORDS] u32, f16 pairs, read_write
override WORDS: u32;
const WG: u32 = ${WG}u;
const PER_THREAD: u32 = ${PER_THREAD}u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let base = flat_workgroup(wid, nwg) * WG * PER_THREAD + t;
  for (var j = 0u; j < PER_THREAD; j++) {
    let i = base + j * WG;
    if (i < WORDS) {
      let w = src[i];
      dst[i] = pack2x16float(vec2<f32>(bf16_lo(w), bf16_hi(w)));
    }
  }
}
`,
};

/** Records the conversion of `words` u32 words (2 `words` weights) of bf16 pairs in `src` into f16 pairs in `dst`. */
export function halfWeights(
  gpu: Gpu,
  a: { ctl: GPUBuffer; src: GPUBuffer | BufferSlice; dst: GPUBuffer | BufferSlice; words: number; gated?: boolean },
  kernel: Kernel = halfWeightsKernel,
): Dispatch {
  if (!(Number.isInteger(a.words) && a.words >= 1)) throw new Error(`halfWeights: ${a.words} words`);
  return gpu.dispatch(
    kernel,
    { WORDS: a.words, GATED: a.gated ?? false },
    [a.ctl, a.src, a.dst],
    Math.ceil(a.words / (WG * PER_THREAD)),
  );
}

/** CPU reference: each bf16 half of `words` as the nearest f16 (ties to even), packed alike. */
export function halfWeightsReference(words: Uint32Array): Uint32Array {
  const half = (b: number) => f16Bits(bf16BitsToF32(b));
  return words.map((w) => (half(w & 0xffff) | (half(w >>> 16) << 16)) >>> 0);
}
