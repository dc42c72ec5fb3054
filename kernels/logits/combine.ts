/**
 * Combining the logits of H heads, laid out head-major [H, M, VP] (each head a contiguous row-major [M, VP] matrix):
 *   mean (naive Hydra):  out[m, v] = (1 / H) sum_h z[h, m, v]                     for v < VOCAB, -inf at padding ids
 *   jury (PoE verifier): log p_jury[m, :] = log_softmax(sum_k log_softmax(z_k[m, :]))  over ids < VOCAB, -inf padding
 * The jury is computed as log_softmax(sum_k z_k) by the log_softmax kernel with HEADS = H: each head's log-normaliser
 * is a per-row constant, which the outer log_softmax removes (see log_softmax.ts). `combineJuryReference` evaluates
 * the literal definition, so the tests check that identity too.
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import {
  LOGITS_MAX_HEADS,
  logSoftmax,
  type LogSoftmaxArgs,
  logSoftmaxKernel,
  logSoftmaxReference,
} from "./log_softmax.ts";

/** The WGSL kernel of the mean over heads (one thread per output element). */
export const combineMeanKernel: Kernel = {
  name: "combine_mean",
  source: /* wgsl */ `
// bindings (grid: ceil(M * VP / WG) workgroups, one thread per element of out):
//   0 ctl [CTL_SLOTS] u32, read        control block (gate only)
//   1 z   [HEADS, M, VP] f32, read     head-major, each head a row-major [M, VP] matrix
//   2 out [M, VP] f32, read_write      mean over heads at ids < VOCAB, -inf at padding ids
override VP: u32;
override VOCAB: u32;
override M: u32;
override HEADS: u32;
override WG: u32 = 256u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let e = flat_workgroup(wid, nwg) * WG + t;
  if (e >= M * VP) { return; }
  if (e % VP >= VOCAB) {
    let bits = 0xff800000u; // -inf; a let, so it is not a const-expression (those may not be infinite)
    out[e] = bitcast<f32>(bits);
    return;
  }
  var s = 0.0;
  for (var h = 0u; h < HEADS; h++) { s += z[h * M * VP + e]; }
  out[e] = s / f32(HEADS);
}
`,
};

/** Arguments of the mean over heads. */
export interface CombineMeanArgs {
  ctl: GPUBuffer;
  /** f32 logits [heads, rows, vp], head-major. */
  logits: GPUBuffer | BufferSlice;
  /** f32 [rows, vp]: the mean at ids < vocab, -inf at padding ids. */
  out: GPUBuffer | BufferSlice;
  heads: number;
  rows: number;
  /** Padded vocabulary: the row stride. */
  vp: number;
  /** Real vocabulary. */
  vocab: number;
  gated?: boolean;
}

function checkShape(what: string, heads: number, rows: number, vp: number, vocab: number): void {
  if (!(Number.isInteger(heads) && heads >= 1 && heads <= LOGITS_MAX_HEADS)) {
    throw new Error(`${what}: heads must be an integer in 1..${LOGITS_MAX_HEADS}, got ${heads}`);
  }
  if (!(rows >= 1)) throw new Error(`${what}: rows must be at least 1, got ${rows}`);
  if (!(vocab >= 1 && vocab <= vp)) throw new Error(`${what}: vocab ${vocab} must be in 1..vp (${vp})`);
}

/** Records the mean-over-heads dispatch (load time). */
export function combineMean(gpu: Gpu, a: CombineMeanArgs, kernel: Kernel = combineMeanKernel): Dispatch {
  checkShape("combineMean", a.heads, a.rows, a.vp, a.vocab);
  const wg = 256;
  return gpu.dispatch(
    kernel,
    { VP: a.vp, VOCAB: a.vocab, M: a.rows, HEADS: a.heads, WG: wg, GATED: a.gated ?? false },
    [a.ctl, a.logits, a.out],
    Math.ceil((a.rows * a.vp) / wg),
  );
}

/** CPU reference of the mean over heads (f64 sum): [rows, vp], -inf at padding ids. */
export function combineMeanReference(
  logits: Float32Array,
  heads: number,
  rows: number,
  vp: number,
  vocab: number,
): Float32Array {
  const out = new Float32Array(rows * vp).fill(-Infinity);
  for (let m = 0; m < rows; m++) {
    for (let v = 0; v < vocab; v++) {
      let s = 0;
      for (let h = 0; h < heads; h++) s += logits[(h * rows + m) * vp + v];
      out[m * vp + v] = s / heads;
    }
  }
  return out;
}

/** Arguments of the jury distribution: those of log_softmax with `heads` required. */
export type CombineJuryArgs = LogSoftmaxArgs & { heads: number };

/**
 * Records the jury log-probs (two dispatches, load time): out[m, :] = log_softmax(sum_k log_softmax(z_k[m, :])) over
 * the `heads` verifier heads' logits [heads, rows, vp].
 */
export function combineJury(gpu: Gpu, a: CombineJuryArgs, kernel: Kernel = logSoftmaxKernel): Dispatch[] {
  checkShape("combineJury", a.heads, a.rows, a.vp, a.vocab);
  return logSoftmax(gpu, a, kernel);
}

/** CPU reference of the jury, by its definition: per-head log_softmax, summed, log_softmax again (f64 inside). */
export function combineJuryReference(
  logits: Float32Array,
  heads: number,
  rows: number,
  vp: number,
  vocab: number,
): Float32Array {
  const sum = new Float64Array(rows * vp);
  for (let h = 0; h < heads; h++) {
    const lp = logSoftmaxReference(logits.subarray(h * rows * vp, (h + 1) * rows * vp), rows, vp, vocab);
    for (let i = 0; i < rows * vp; i++) sum[i] += lp[i];
  }
  // The sums are f64 here, so normalise them without rounding to f32 first.
  const out = new Float32Array(rows * vp).fill(-Infinity);
  for (let m = 0; m < rows; m++) {
    let mx = -Infinity, total = 0;
    for (let v = 0; v < vocab; v++) mx = Math.max(mx, sum[m * vp + v]);
    for (let v = 0; v < vocab; v++) total += Math.exp(sum[m * vp + v] - mx);
    const lse = mx + Math.log(total);
    for (let v = 0; v < vocab; v++) out[m * vp + v] = sum[m * vp + v] - lse;
  }
  return out;
}
