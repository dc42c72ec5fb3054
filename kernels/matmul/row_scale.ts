/**
 * The tensor-core GEMM's pre-pass (`gemm_tensor.ts`): for each input row m of x [M, K] (f32), the power-of-two
 * exponent e[m] that brings the row's largest |x| into [2^14, 2^15), so that x[m, k] * 2^-e[m] fits f16 (largest
 * finite 65504 < 2^16) with the full 11-bit significand for every element within 2^-28 of the row's maximum. The GEMM
 * multiplies by 2^-e[m] while staging x as f16 and by 2^e[m] in its epilogue; both are exact (powers of two, ldexp).
 *
 * e[m] = floor(log2(max_k |x[m, k]|)) - 14, clamped to [-100, 113] (2^100 stays finite for the GEMM's scale factor):
 * 0 for an all-zero row; for a row holding an infinity or a NaN, 0 too, so the non-finite value reaches the output
 * unchanged (and the logits' finiteness check reports it) instead of being scaled to zero.
 *
 * OLMo-2 is post-norm: the inputs of its attention and MLP products are the raw residual stream, whose magnitude has no
 * bound that f16 could be relied on to hold (ARCHITECTURE.md, "Tensor-core prefill GEMM (Dawn)").
 *
 * With `half` (the tensor-core GEMM's pre-pass, ROW_SCALE_HALF_KERNEL) the pass also writes the scaled rows as f16,
 * xh[m, k] = f16(x[m, k] * 2^-e[m]) (pack2x16float: no f16 extension needed), so that the GEMM stages 2 bytes an
 * element instead of 4 and converts nothing: every N tile of the GEMM re-reads x, which was two thirds of the bytes a
 * workgroup staged. The second read of the row comes from the cache (a row is at most 44 KB).
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { atomicMaxWgsl } from "../reduce.ts";

/** Threads per workgroup (one workgroup per row). */
const WG = 256;

/** The exponent the kernel computes for one row (CPU reference, same rule). */
export function rowScaleExponent(row: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < row.length; i++) {
    const a = Math.abs(row[i]);
    if (!Number.isFinite(a)) return 0;
    if (a > max) max = a;
  }
  if (max === 0) return 0;
  // The f32 value's unbiased exponent, as the kernel reads it from the bits (subnormals count as -127).
  const f = new Float32Array([max]);
  const biased = (new Uint32Array(f.buffer)[0] >>> 23) & 0xff;
  return Math.min(113, Math.max(-100, biased - 127 - 14));
}

/** CPU reference: e[m] for every row of x [rows, k]. */
export function rowScaleReference(x: Float32Array, rows: number, k: number): Int32Array {
  const e = new Int32Array(rows);
  for (let m = 0; m < rows; m++) e[m] = rowScaleExponent(x.subarray(m * k, (m + 1) * k));
  return e;
}

/** CPU reference of the half pass's f16 rows: x[m, k] * 2^-e[m] rounded to f16 (nearest even), as f16 bit patterns. */
export function rowScaleHalfReference(x: Float32Array, rows: number, k: number): Uint16Array {
  const e = rowScaleReference(x, rows, k);
  const h = new Uint16Array(rows * k);
  for (let m = 0; m < rows; m++) {
    for (let i = 0; i < k; i++) h[m * k + i] = f16Bits(x[m * k + i] * 2 ** -e[m]);
  }
  return h;
}

/** The f16 bit pattern nearest `v` (ties to even; overflow to infinity, NaN kept). */
export function f16Bits(v: number): number {
  const view = new DataView(new ArrayBuffer(2));
  view.setFloat16(0, v);
  return view.getUint16(0);
}

/** The value of the f16 bit pattern `bits` (`f16Bits`'s inverse on every f16). */
export function f16Value(bits: number): number {
  const view = new DataView(new ArrayBuffer(2));
  view.setUint16(0, bits);
  return view.getFloat16(0);
}

/**
 * WGSL of the pass's rule, for every kernel that writes its outputs (this pass, and the post-norm that writes them for
 * the next product, kernels/norm/rmsnorm.ts `half`): `row_scale_exponent(top)`, e of a row whose largest magnitude has
 * the f32 bits `top` (`rowScaleExponent`), `max_abs_bits(v)`, the bits of the largest of four magnitudes (what `top`
 * is the maximum of), and `row_scale_pack(v, f)`, four values times 2^-e (f = ldexp(1, -e): exact) rounded to f16, lower
 * k in the low half.
 */
export const ROW_SCALE_WGSL = /* wgsl */ `
// The largest |v| as f32 bits: for non-negative f32 the order of the bits is the order of the values, and every NaN and
// infinity (exponent bits 255) is above every finite value.
fn max_abs_bits(v: vec4<f32>) -> u32 {
  let b = bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu);
  return max(max(b.x, b.y), max(b.z, b.w));
}
fn row_scale_exponent(top: u32) -> i32 {
  let biased = top >> 23u;
  if (top == 0u || biased == 255u) { return 0i; }
  return clamp(i32(biased) - 127i - 14i, -100i, 113i);
}
fn row_scale_pack(v: vec4<f32>, f: f32) -> vec2<u32> {
  let s = v * f;
  return vec2<u32>(pack2x16float(s.xy), pack2x16float(s.zw));
}`;

/**
 * The kernel: the exponents, and with `half` the f16 rows too. The row's largest magnitude is reduced by a tree in
 * workgroup memory (8 barriers), or with `subgroups` by each subgroup's maximum (`subgroupMax`) and one workgroup
 * atomic per subgroup (2 barriers).
 */
export function rowScaleKernelFor(half: boolean, subgroups = false): Kernel {
  return {
    name: `row_scale${half ? "_half" : ""}${subgroups ? "_sg" : ""}`,
    source: /* wgsl */ `
// e[m] = clamp(floor(log2(max_k |x[m, k]|)) - 14, -100, 113); 0 for a zero row or one holding inf or NaN.${
      half ? "\n// xh[m, k] = f16(x[m, k] * 2^-e[m]), 4 per vec2<u32> (lower k in the low half)." : ""
    }
// bindings:
//   0 ctl [CTL_SLOTS] u32, read      control block (gate only)
//   1 x   [M, K / 4] vec4<f32>       input rows
//   2 e   [M] i32, read_write        exponents${
      half ? "\n//   3 xh  [M, K / 4] vec2<u32>       the scaled rows as f16, read_write" : ""
    }
// K must be a multiple of 4. One workgroup per row (flat grid, Gpu.grid).
override K: u32;
override M: u32;
const WG: u32 = ${WG}u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> e: array<i32>;${
      half ? "\n@group(0) @binding(3) var<storage, read_write> xh: array<vec2<u32>>;" : ""
    }
${subgroups ? "var<workgroup> row_max: atomic<u32>;" : "var<workgroup> red: array<u32, WG>;"}
${ROW_SCALE_WGSL}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32${subgroups ? ", @builtin(subgroup_invocation_id) lane: u32" : ""}) {
  if (gated_off()) { return; }
  let m = flat_workgroup(wid, nwg);
  if (m >= M) { return; }
  // The maximum of the magnitudes' bit patterns (max_abs_bits).${
      subgroups ? "\n  if (t == 0u) { atomicStore(&row_max, 0u); }" : ""
    }
  var best = 0u;
  for (var c = t; c < K / 4u; c += WG) {
    best = max(best, max_abs_bits(x[m * (K / 4u) + c]));
  }${
      subgroups
        ? `
  workgroupBarrier(); // row_max is zero
  ${atomicMaxWgsl("&row_max", "best", true)}
  workgroupBarrier();
  let exponent = row_scale_exponent(atomicLoad(&row_max));`
        : `
  red[t] = best;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (t < s) { red[t] = max(red[t], red[t + s]); }
    workgroupBarrier();
  }
  let exponent = row_scale_exponent(red[0]);`
    }
  if (t == 0u) { e[m] = exponent; }${
      half
        ? `
  // The row again (from the cache), scaled (exact: a power of two) and rounded to f16.
  let f = ldexp(1.0, -exponent);
  for (var c = t; c < K / 4u; c += WG) {
    xh[m * (K / 4u) + c] = row_scale_pack(x[m * (K / 4u) + c], f);
  }`
        : ""
    }
}
`,
  };
}

/** The exponents-only pass (the f16-multiply GEMM's pre-pass), the tree reduction. */
export const ROW_SCALE_KERNEL: Kernel = rowScaleKernelFor(false);

/** The pass that also writes the scaled rows as f16 (the tensor-core GEMM's pre-pass), the tree reduction. */
export const ROW_SCALE_HALF_KERNEL: Kernel = rowScaleKernelFor(true);

/**
 * The half pass's outputs, wherever a kernel writes them for the tensor-core GEMM to read (this pass, or the post-norm
 * before the product, kernels/norm/rmsnorm.ts `half`): i32 [rows] exponents and f16 [rows, K] rows.
 */
export interface HalfRows {
  exponents: GPUBuffer | BufferSlice;
  xHalf: GPUBuffer | BufferSlice;
}

/** Arguments of one row-scale dispatch. */
export interface RowScaleArgs {
  ctl: GPUBuffer;
  /** f32 input [rows, K]. */
  x: GPUBuffer | BufferSlice;
  /** i32 output [rows]. */
  exponents: GPUBuffer | BufferSlice;
  /** With it, the half pass: f16 output [rows, K] (2 bytes an element) that receives x scaled by 2^-e. */
  xHalf?: GPUBuffer | BufferSlice;
  rows: number;
  k: number;
  gated?: boolean;
}

/**
 * Records a row-scale dispatch (load time): the half pass when `a.xHalf` is given, its maximum by subgroups where the
 * device has them.
 */
export function rowScale(gpu: Gpu, a: RowScaleArgs, kernel?: Kernel): Dispatch {
  if (!(a.k > 0 && a.k % 4 === 0)) throw new Error(`row_scale: K = ${a.k} is not a positive multiple of 4`);
  if (!(Number.isInteger(a.rows) && a.rows >= 1)) throw new Error(`row_scale: ${a.rows} rows (at least 1)`);
  const bindings = [a.ctl, a.x, a.exponents, ...(a.xHalf ? [a.xHalf] : [])];
  return gpu.dispatch(
    kernel ?? rowScaleKernelFor(a.xHalf !== undefined, gpu.has("subgroups")),
    { K: a.k, M: a.rows, GATED: a.gated ?? false },
    bindings,
    a.rows,
  );
}
