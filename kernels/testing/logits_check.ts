/**
 * Checks shared by the logits kernels' tests.
 * @module
 */

import { assertClose, type ErrorReport, type Tolerance } from "./harness.ts";

/** Value planted at padding ids (>= vocab): far above any real logit, so an unmasked padding id wins every max. */
export const PADDING = 1e4;

// Log-probs of logits (or of sums of up to 8 heads' logits) of magnitude <= ~60: the f32 kernel differs from the f64
// reference by a few ulp of |s| (<= 4e-6 each for the sum, the subtraction and the max) plus the normaliser's error,
// which WGSL bounds by exp's 3 + 2|x| ulp on terms that matter (|x| <= ~17) and f32 summation: < 1e-5 in all. atol
// 5e-5 leaves a 5x margin; a padding id let in, a chunk dropped from the normaliser or a wrong head stride moves
// outputs by > 1e-3.
export const LOGP_TOL: Tolerance = { atol: 5e-5 };

/** Asserts that `got` [rows, vp] holds `want` at ids < vocab (within `tol`) and exactly -inf at padding ids. */
export function assertMaskedRows(
  got: Float32Array,
  want: Float32Array,
  rows: number,
  vp: number,
  vocab: number,
  tol: Tolerance,
  what: string,
): ErrorReport {
  const real = (a: Float32Array) => {
    const r = new Float32Array(rows * vocab);
    for (let m = 0; m < rows; m++) r.set(a.subarray(m * vp, m * vp + vocab), m * vocab);
    return r;
  };
  for (let m = 0; m < rows; m++) {
    for (let v = vocab; v < vp; v++) {
      if (got[m * vp + v] !== -Infinity) {
        throw new Error(`${what}: padding [${m}, ${v}] is ${got[m * vp + v]}, not -inf`);
      }
    }
  }
  return assertClose(real(got), real(want), tol, `${what} (ids < vocab)`);
}
