/**
 * Row-wise log_softmax over the real vocabulary, optionally of the sum of HEADS logit matrices:
 *   s[m, v]   = sum_{h < HEADS} z[h, m, v]                          (HEADS = 1: plain log_softmax)
 *   out[m, v] = s[m, v] - log(sum_{u < VOCAB} exp(s[m, u]))   for v < VOCAB,   -inf for VOCAB <= v < VP.
 * Padding ids never enter the sum and come out as -inf, so a consumer that forgets to mask them still ignores them.
 *
 * HEADS > 1 is the PoE jury (`combineJury` in combine.ts): log_softmax(sum_k log_softmax(z_k)) equals
 * log_softmax(sum_k z_k), because each head's log-normaliser is a per-row constant and log_softmax is invariant to
 * adding one. So the jury needs no per-head normalisation.
 *
 * Two dispatches, both spread over the whole GPU (CHUNKS workgroups per row, PER_THREAD ids per thread):
 *   phase 0: per chunk, s for its ids -> out, and the chunk's (max, sum exp(s - max)) (online softmax) -> partials;
 *   phase 1: every workgroup merges its row's CHUNKS partials into the log-normaliser and subtracts it from its chunk.
 * The verifier rows of a PoE round are gamma rows of 4 heads (up to ~8 MB of logits): one workgroup per row would
 * leave all but a handful of SMs idle and read them at single-SM bandwidth, which costs more than the second dispatch.
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";

/** The WGSL kernel (both phases; PHASE selects). */
/**
 * Most logit matrices one dispatch sums (the PoE jury) or averages (the naive Hydra's mean, combine.ts): the head
 * counts the kernels' tests cover, and so the most Hydra heads a run may have.
 */
export const LOGITS_MAX_HEADS = 8;

export const logSoftmaxKernel: Kernel = {
  name: "log_softmax",
  source: /* wgsl */ `
// bindings (grid: M * CHUNKS workgroups, flat index = m * CHUNKS + chunk; a chunk is WG * PER_THREAD ids):
//   0 ctl      [CTL_SLOTS] u32, read      control block (gate only)
//   1 z        [HEADS, M, VP] f32, read   head-major, each head a row-major [M, VP] matrix; ids >= VOCAB ignored
//   2 out      [M, VP] f32, read_write    phase 0 writes s (and -inf padding), phase 1 subtracts the log-normaliser
//   3 partials [M, CHUNKS] vec2<f32>, rw  per chunk (max, sum of exp(s - max)) over its ids < VOCAB
override VP: u32;
override VOCAB: u32;
override M: u32;
override HEADS: u32 = 1u;
override PHASE: u32 = 0u;
override WG: u32 = 256u; // a power of two
override CHUNKS: u32;    // ceil(VP / (WG * PER_THREAD))
const PER_THREAD: u32 = 4u;
const LOWEST: f32 = -3.0e38; // "no element yet": below any logit, and exp(LOWEST - x) == 0 without infinities
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<vec2<f32>>;
var<workgroup> red: array<vec2<f32>, WG>;

fn neg_inf() -> f32 {
  let bits = 0xff800000u; // a let, so it is not a const-expression (those may not be infinite)
  return bitcast<f32>(bits);
}

// Merges two (max, sum exp(x - max)) pairs.
fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let mx = max(a.x, b.x);
  return vec2<f32>(mx, a.y * exp(a.x - mx) + b.y * exp(b.x - mx));
}

// Tree-reduces every thread's pair; all threads get the workgroup's pair.
fn reduce(p: vec2<f32>, t: u32) -> vec2<f32> {
  red[t] = p;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (t < stride) { red[t] = merge(red[t], red[t + stride]); }
    workgroupBarrier();
  }
  return red[0];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let w = flat_workgroup(wid, nwg);
  let m = w / CHUNKS;
  if (m >= M) { return; }
  let chunk = w % CHUNKS;
  let v0 = chunk * WG * PER_THREAD + t;
  let ob = m * VP;
  if (PHASE == 0u) {
    var s: array<f32, PER_THREAD>;
    for (var u = 0u; u < PER_THREAD; u++) {
      let v = min(v0 + u * WG, VOCAB - 1u); // loads first (all independent), masking after
      for (var h = 0u; h < HEADS; h++) { s[u] += z[(h * M + m) * VP + v]; }
    }
    var p = vec2<f32>(LOWEST, 0.0);
    for (var u = 0u; u < PER_THREAD; u++) {
      let v = v0 + u * WG;
      if (v < VOCAB) {
        out[ob + v] = s[u];
        if (s[u] > p.x) { p = vec2<f32>(s[u], p.y * exp(p.x - s[u]) + 1.0); } else { p.y += exp(s[u] - p.x); }
      } else if (v < VP) {
        out[ob + v] = neg_inf();
      }
    }
    let total = reduce(p, t);
    if (t == 0u) { partials[m * CHUNKS + chunk] = total; }
  } else {
    var p = vec2<f32>(LOWEST, 0.0);
    for (var c = t; c < CHUNKS; c += WG) { p = merge(p, partials[m * CHUNKS + c]); }
    let total = reduce(p, t);
    let lse = total.x + log(total.y);
    for (var u = 0u; u < PER_THREAD; u++) {
      let v = v0 + u * WG;
      if (v < VOCAB) { out[ob + v] -= lse; }
    }
  }
}
`,
};

/** Ids one workgroup covers (WG * PER_THREAD of the kernel). */
function chunkSize(workgroupSize: number): number {
  return workgroupSize * 4;
}

/** Bytes of the `partials` scratch buffer for `rows` rows of `vp` ids. */
export function logSoftmaxScratchBytes(rows: number, vp: number, workgroupSize = 256): number {
  return rows * Math.ceil(vp / chunkSize(workgroupSize)) * 8;
}

/** Arguments of a (summed) log_softmax. */
export interface LogSoftmaxArgs {
  ctl: GPUBuffer;
  /** f32 logits [heads, rows, vp], head-major (one row-major [rows, vp] matrix per head). */
  logits: GPUBuffer | BufferSlice;
  /** f32 [rows, vp]: log-probs over ids < vocab, -inf at padding ids. Must not be `logits`. */
  out: GPUBuffer | BufferSlice;
  /** Scratch of `logSoftmaxScratchBytes(rows, vp, workgroupSize)` bytes; allocated here when absent. */
  partials?: GPUBuffer;
  rows: number;
  /** Padded vocabulary: the row stride. */
  vp: number;
  /** Real vocabulary: ids >= vocab are masked. */
  vocab: number;
  /** Logit matrices summed before normalising (1..LOGITS_MAX_HEADS); default 1. */
  heads?: number;
  gated?: boolean;
  /** Threads per workgroup (a power of two); default 256. */
  workgroupSize?: number;
}

/** Records the two dispatches of a (summed) log_softmax (load time). */
export function logSoftmax(gpu: Gpu, a: LogSoftmaxArgs, kernel: Kernel = logSoftmaxKernel): Dispatch[] {
  const heads = a.heads ?? 1, wg = a.workgroupSize ?? 256;
  if (!(a.vocab >= 1 && a.vocab <= a.vp)) throw new Error(`log_softmax: vocab ${a.vocab} must be in 1..vp (${a.vp})`);
  if (!(a.rows >= 1)) throw new Error(`log_softmax: rows must be at least 1, got ${a.rows}`);
  if (!(Number.isInteger(heads) && heads >= 1 && heads <= LOGITS_MAX_HEADS)) {
    throw new Error(`log_softmax: heads must be an integer in 1..${LOGITS_MAX_HEADS}, got ${heads}`);
  }
  if (wg < 1 || (wg & (wg - 1)) !== 0) throw new Error(`log_softmax: workgroupSize ${wg} is not a power of two`);
  const chunks = Math.ceil(a.vp / chunkSize(wg));
  const bytes = logSoftmaxScratchBytes(a.rows, a.vp, wg);
  const partials = a.partials ?? gpu.buffer("log_softmax partials", bytes);
  if (partials.size < bytes) {
    throw new Error(`log_softmax: the partials buffer has ${partials.size} bytes, it needs ${bytes}`);
  }
  const constants = {
    VP: a.vp,
    VOCAB: a.vocab,
    M: a.rows,
    HEADS: heads,
    WG: wg,
    CHUNKS: chunks,
    GATED: a.gated ?? false,
  };
  const buffers = [a.ctl, a.logits, a.out, partials];
  return [0, 1].map((phase) => gpu.dispatch(kernel, { ...constants, PHASE: phase }, buffers, a.rows * chunks));
}

/**
 * CPU reference (f64): log_softmax over ids < vocab of the sum of `heads` head-major [rows, vp] matrices, -inf at
 * padding ids.
 */
export function logSoftmaxReference(
  logits: Float32Array,
  rows: number,
  vp: number,
  vocab: number,
  heads = 1,
): Float32Array {
  const out = new Float32Array(rows * vp).fill(-Infinity);
  const s = new Float64Array(vocab);
  for (let m = 0; m < rows; m++) {
    let mx = -Infinity;
    for (let v = 0; v < vocab; v++) {
      s[v] = 0;
      for (let h = 0; h < heads; h++) s[v] += logits[(h * rows + m) * vp + v];
      mx = Math.max(mx, s[v]);
    }
    let sum = 0;
    for (let v = 0; v < vocab; v++) sum += Math.exp(s[v] - mx);
    const lse = mx + Math.log(sum);
    for (let v = 0; v < vocab; v++) out[m * vp + v] = s[v] - lse;
  }
  return out;
}
