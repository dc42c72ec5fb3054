/**
 * Test helpers for the f16 rows that the tensor prefill attention writes for the o GEMM (kernels/matmul/row_scale.ts
 * `HalfRows`, scaled by a bound): fresh buffers for a producer, and the values they hold, read back with the layout's
 * invariants checked.
 * @module
 */

import { f16Value, type HalfRows, rowScaleExponent } from "../matmul/row_scale.ts";
import type { Gpu } from "../runtime.ts";

/** `HalfRows` in buffers of their own, poisoned (f16 NaN pairs, exponents -12345). */
export interface HalfRowBuffers extends HalfRows {
  xHalf: GPUBuffer;
  exponents: GPUBuffer;
  destroy(): void;
}

/** Buffers a producer writes `rows` x `k` HalfRows into, poisoned. */
export function halfRowsBuffers(gpu: Gpu, rows: number, k: number): HalfRowBuffers {
  const xHalf = gpu.upload("hr x", new Uint32Array((rows * k) / 2).fill(0x7e007e00));
  const exponents = gpu.upload("hr e", new Int32Array(rows).fill(-12345));
  return {
    xHalf,
    exponents,
    destroy() {
      for (const b of [xHalf, exponents]) b.destroy();
    },
  };
}

/**
 * The values of `rows` x `k` HalfRows, f16(x[m] * 2^-e[m]) * 2^e[m], after checking that each row's exponent is
 * `rowScaleExponent` of `bounds[m]` (the magnitude the producer bounds the row by) and that every scaled value is a
 * finite f16 (the bound's exponent puts it below 2^15, up to the producer's own rounding). Throws naming `what` and the first row that breaks them.
 */
export async function readHalfRows(
  gpu: Gpu,
  hr: HalfRowBuffers,
  rows: number,
  k: number,
  bounds: ArrayLike<number>,
  what: string,
): Promise<Float32Array> {
  const bits = new Uint16Array((await gpu.readU32(hr.xHalf, (rows * k) / 2)).buffer);
  const e = new Int32Array((await gpu.readU32(hr.exponents, rows)).buffer);
  const values = new Float32Array(rows * k);
  for (let m = 0; m < rows; m++) {
    const want = rowScaleExponent([bounds[m]]);
    if (e[m] !== want) throw new Error(`${what}: row ${m}: exponent ${e[m]}, its bound ${bounds[m]} gives ${want}`);
    for (let i = 0; i < k; i++) {
      const v = f16Value(bits[m * k + i]);
      if (!(Math.abs(v) <= 65504)) throw new Error(`${what}: row ${m} column ${i}: ${v} scaled (exponent ${e[m]})`);
      values[m * k + i] = v * 2 ** e[m];
    }
  }
  return values;
}
