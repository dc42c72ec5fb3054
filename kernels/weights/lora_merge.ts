/**
 * Merges a LoRA delta into a bf16 weight in place, on the GPU at load time:
 *   W[n, k] <- bf16(W[n, k] + SCALE * sum_r B[n, r] * A[r, k])
 * with A [R, K] and B [N, R] f32 as PEFT stores lora_A / lora_B, SCALE = lora_alpha / r (or lora_alpha / sqrt(r) with
 * rsLoRA; the caller decides), and one round-to-nearest-even to bf16 at the end. The rank-R sum is accumulated in f32;
 * PEFT on a GPU merges in the weight's own dtype, so this is at least as accurate as the reference implementation.
 *
 * Each thread owns one u32 of W (two adjacent weights of a row), reads B[n, :] and two columns of A, and rewrites the
 * word: no two threads touch the same word. A 2-D grid covers matrices of more than 65535 * WG words.
 * @module
 */

import { roundBf16 } from "../bf16.ts";
import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { BF16_ROUND_WGSL } from "./bf16_round.ts";

/** The WGSL kernel. */
export const loraMergeKernel: Kernel = {
  name: "lora_merge_bf16",
  source: /* wgsl */ `
// bindings:
//   0 ctl [CTL_SLOTS] u32, read        control block (gate only)
//   1 a   [R, K / 2] vec2<f32>, read   lora_A, row-major [R, K] f32
//   2 b   [N, R] f32, read             lora_B, row-major
//   3 w   [N, K / 2] u32, read_write   bf16 weight [N, K] row-major, two per u32 (lower k in the low half); updated
// K must be even.
override N: u32;
override K: u32;
override R: u32;
override SCALE: f32;
override WG: u32 = 256u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> w: array<u32>;
${BF16_ROUND_WGSL}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let half = K / 2u;
  let g = flat_workgroup(wid, nwg) * WG + t;
  if (g >= N * half) { return; }
  let n = g / half;
  let j = g % half;
  var acc = vec2<f32>(0.0);
  for (var r = 0u; r < R; r++) { acc += b[n * R + r] * a[r * half + j]; }
  w[g] = pack_bf16x2(bf16x2(w[g]) + SCALE * acc);
}
`,
};

/** Arguments of one LoRA merge dispatch. */
export interface LoraMergeArgs {
  ctl: GPUBuffer;
  /** lora_A, f32 [rank, k]. */
  a: GPUBuffer | BufferSlice;
  /** lora_B, f32 [n, rank]. */
  b: GPUBuffer | BufferSlice;
  /** The bf16 weight [n, k], packed; updated in place. */
  weight: GPUBuffer | BufferSlice;
  /** Output features (rows of W). */
  n: number;
  /** Input features (columns of W), even. */
  k: number;
  rank: number;
  /** alpha / rank (or alpha / sqrt(rank) for rsLoRA); used as the nearest f32. */
  scale: number;
  workgroupSize?: number;
}

/** Records a LoRA merge (load time). Throws on shapes the kernel does not handle. */
export function loraMerge(gpu: Gpu, a: LoraMergeArgs, kernel: Kernel = loraMergeKernel): Dispatch {
  if (a.k % 2 !== 0) throw new Error(`loraMerge: K = ${a.k} is odd, but bf16 rows are packed two per u32`);
  if (a.n < 1 || a.rank < 1) throw new Error(`loraMerge: ${a.n} rows and rank ${a.rank} (both must be >= 1)`);
  if (a.n * a.k / 2 > 0xffffffff) throw new Error(`loraMerge: a ${a.n} x ${a.k} weight has more than 2^32 words`);
  if (!Number.isFinite(a.scale)) throw new Error(`loraMerge: scale ${a.scale} is not finite`);
  const wg = a.workgroupSize ?? 256;
  return gpu.dispatch(
    kernel,
    { N: a.n, K: a.k, R: a.rank, SCALE: a.scale, WG: wg },
    [a.ctl, a.a, a.b, a.weight],
    Math.ceil(a.n * a.k / 2 / wg),
  );
}

/**
 * CPU reference: the merged weight's bf16 values (as f32). `weight` holds the bf16 values as f32 [n, k]; the rank sum
 * is taken in f64, then rounded as the kernel rounds: f32(scale) * sum to f32, + W to f32, then bf16 (nearest even).
 */
export function loraMergeReference(
  weight: Float32Array,
  a: Float32Array,
  b: Float32Array,
  n: number,
  k: number,
  rank: number,
  scale: number,
): Float32Array {
  const s = Math.fround(scale);
  const out = new Float32Array(n * k);
  for (let row = 0; row < n; row++) {
    for (let col = 0; col < k; col++) {
      let acc = 0;
      for (let r = 0; r < rank; r++) acc += b[row * rank + r] * a[r * k + col];
      out[row * k + col] = roundBf16(Math.fround(weight[row * k + col] + Math.fround(s * acc)));
    }
  }
  return out;
}
