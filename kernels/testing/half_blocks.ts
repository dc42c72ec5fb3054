/**
 * Test helpers for the f16 layouts that kernels write for the next tensor-core GEMM (kernels/matmul/row_scale.ts):
 * `HalfBlocks` (the tensor prefill attention and the SwiGLU GEMM) and `HalfRows` (the tensor prefill attention's,
 * scaled by a bound): fresh buffers for a producer, and the values they hold, read back with the layout's invariants
 * checked.
 * @module
 */

import {
  f16Value,
  HALF_BLOCK,
  HALF_BLOCK_BIAS,
  HALF_BLOCK_ROW_STRIDE,
  type HalfBlocks,
  type HalfRows,
  rowScaleExponent,
} from "../matmul/row_scale.ts";
import type { Gpu } from "../runtime.ts";

/** `HalfBlocks` in buffers of their own. */
export interface HalfBlockBuffers extends HalfBlocks {
  xHalf: GPUBuffer;
  blocks: GPUBuffer;
  rowMax: GPUBuffer;
  destroy(): void;
}

/** Buffers a producer writes `rows` x `k` HalfBlocks into: the f16 rows and block exponents poisoned, rowMax zero. */
export function halfBlocksBuffers(gpu: Gpu, rows: number, k: number): HalfBlockBuffers {
  const xHalf = gpu.upload("hb x", new Uint32Array((rows * k) / 2).fill(0x7e007e00)); // f16 NaN pairs
  const blocks = gpu.upload("hb blocks", new Int32Array((rows * k) / HALF_BLOCK).fill(-12345));
  const rowMax = gpu.upload("hb row max", new Uint32Array(rows * HALF_BLOCK_ROW_STRIDE)); // zero, as left for it
  return {
    xHalf,
    blocks,
    rowMax,
    destroy() {
      for (const b of [xHalf, blocks, rowMax]) b.destroy();
    },
  };
}

/**
 * The values of `rows` x `k` HalfBlocks, f16(x * 2^-e) * 2^e, after checking what the consumer relies on: each
 * block's exponent brings its largest magnitude into [2^14, 2^15] (`rowScaleExponent`'s rule; where not clamped), and rowMax[m] is the largest over the row's nonzero blocks, biased by HALF_BLOCK_BIAS (0: none).
 * Throws naming `what` and the first row or block that breaks them.
 */
export async function readHalfBlocks(
  gpu: Gpu,
  hb: HalfBlockBuffers,
  rows: number,
  k: number,
  what: string,
): Promise<Float32Array> {
  const nb = k / HALF_BLOCK;
  const bits = new Uint16Array((await gpu.readU32(hb.xHalf, (rows * k) / 2)).buffer);
  const blocks = new Int32Array((await gpu.readU32(hb.blocks, rows * nb)).buffer);
  const lines = await gpu.readU32(hb.rowMax, rows * HALF_BLOCK_ROW_STRIDE);
  const rowMax = lines.filter((_, i) => i % HALF_BLOCK_ROW_STRIDE === 0);
  const stray = lines.findIndex((v, i) => i % HALF_BLOCK_ROW_STRIDE !== 0 && v !== 0);
  if (stray >= 0) throw new Error(`${what}: rowMax written at ${stray}, between rows`);
  const values = new Float32Array(rows * k);
  for (let m = 0; m < rows; m++) {
    let most = 0;
    for (let b = 0; b < nb; b++) {
      const e = blocks[m * nb + b];
      const scaled = Array.from(bits.subarray(m * k + b * HALF_BLOCK, m * k + (b + 1) * HALF_BLOCK), f16Value);
      const top = Math.max(...scaled.map(Math.abs));
      // the exponent brings the block's largest magnitude into [2^14, 2^15) (rounding may reach 2^15), unless clamped;
      // 0 for a zero block or one holding inf or NaN
      const fits = top === 0 || !Number.isFinite(top)
        ? e === 0
        : e <= -100 || e >= 113 || (top >= 2 ** 14 && top <= 2 ** 15);
      if (!fits) {
        throw new Error(`${what}: row ${m} block ${b}: exponent ${e} does not fit its values (largest ${top} scaled)`);
      }
      if (top !== 0) most = Math.max(most, e + HALF_BLOCK_BIAS);
      scaled.forEach((v, i) => values[m * k + b * HALF_BLOCK + i] = v * 2 ** e);
    }
    if (rowMax[m] !== most) throw new Error(`${what}: row ${m}: rowMax ${rowMax[m]}, its blocks give ${most}`);
  }
  return values;
}

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
