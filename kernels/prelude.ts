/**
 * WGSL prepended to every kernel: the control block's slot indices, the gate every kernel checks first, bf16 unpacking
 * and the flat workgroup index of a 2-D grid.
 *
 * Every kernel declares `ctl` (the control block, a `array<u32>` of CTL_SLOTS words) at binding 0, read-only except in
 * control kernels, and starts with `if (gated_off()) { return; }`. With the override `GATED` true, a kernel does
 * nothing while `ctl[CTL_ACTIVE] == 0`: that is how PoE rounds after the end of a call become no-ops on the GPU.
 * @module
 */

import { CTL } from "./control/ctl.ts";

const slots = Object.entries(CTL).map(([name, index]) => `const CTL_${name}: u32 = ${index}u;`).join("\n");

/**
 * The enable directives a runtime's WGSL compiler needs before the prelude. Deno's naga (Deno 2.9.6) accepts the
 * subgroup builtins without a directive but requires `enable f16;` for any f16 type, so Deno gets that one where the
 * device was granted `shader-f16` and the kernel names f16 (the f16-multiply prefill GEMM, `gemm.ts` with
 * `math: "f16"`): every other kernel's WGSL stays byte for byte what the H200 ran and verified. Dawn's Tint requires one per extension used, and enforces WGSL's uniformity analysis,
 * which rejects barriers after the gate's early return (a storage read is never uniform to Tint). With
 * `allow_unsafe_apis` Tint offers `chromium_disable_uniformity_analysis`: every kernel here returns from the gate for
 * the whole dispatch at once (ctl is the same word for every invocation), so the analysis has nothing to find.
 */
export function enableDirectives(runtime: "deno" | "dawn", features: readonly string[], source = ""): string {
  const has = (f: string) => features.includes(f);
  if (runtime === "deno") return has("shader-f16") && /\bf16\b/.test(source) ? "enable f16;\n" : "";
  return [
    has("shader-f16") ? "enable f16;" : "",
    has("subgroups") ? "enable subgroups;" : "",
    has("chromium-experimental-subgroup-matrix") ? "enable chromium_experimental_subgroup_matrix;" : "",
    "enable chromium_disable_uniformity_analysis;",
    // a kernel that views one workgroup buffer as two types (gemm_tensor.ts's wide stores)
    /\bbufferView</.test(source) ? "requires buffer_view;" : "",
  ].filter(Boolean).join("\n") + "\n";
}

/** The prelude of kernel `source` for `runtime` on a device granted `features`: its enable directives, then PRELUDE. */
export function preludeFor(runtime: "deno" | "dawn", features: readonly string[], source = ""): string {
  return enableDirectives(runtime, features, source) + PRELUDE;
}

/** The WGSL prelude (see the module comment). */
export const PRELUDE = `// ---- prelude (kernels/prelude.ts) ----
${slots}
override GATED: bool = false;
fn gated_off() -> bool { return GATED && ctl[CTL_ACTIVE] == 0u; }
// bf16 -> f32 is exact: a bf16 is the high half of an f32. Two bf16 per u32, the lower index in the low half.
fn bf16_lo(w: u32) -> f32 { return bitcast<f32>(w << 16u); }
fn bf16_hi(w: u32) -> f32 { return bitcast<f32>(w & 0xffff0000u); }
fn bf16x2(w: u32) -> vec2<f32> { return vec2<f32>(bf16_lo(w), bf16_hi(w)); }
// Chris Wellons' lowbias32: a bijective 32-bit integer hash with low bias (random weights, draft sampling).
fn lowbias32(v: u32) -> u32 {
  var x = v;
  x ^= x >> 16u;
  x *= 0x7feb352du;
  x ^= x >> 15u;
  x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}
// The flat index of a workgroup in a grid made by Gpu.grid().
fn flat_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 { return wid.x + wid.y * nwg.x; }
// ---- kernel ----
`;

/** The prelude's `lowbias32` on the CPU, bit-exact (u32 values held in numbers). */
export function lowbias32(v: number): number {
  let x = v >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}
