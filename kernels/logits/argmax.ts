/**
 * Argmax (greedy) or temperature sampling (Gumbel-max) over each row of f32 logits, ids >= VOCAB masked:
 *   greedy (T = 0):      id[m] = argmax_{v < VOCAB} z[m, v]                          (ties: the lowest id)
 *   sampling (T > 0):    id[m] = argmax_{v < VOCAB} z[m, v] / T + g(SEED, pos_m, v)
 * where g is Gumbel noise from an integer hash of (SEED, the row's absolute position pos_m, v), so id[m] is a sample of
 * softmax(z[m, :] / T) that the CPU reference reproduces (`gumbelNoise`). pos_m = ctl[CTL_POS] + ROW_POS_OFFSET + m.
 * The temperature enters as the override INV_TEMPERATURE = 1 / T (0 = greedy): a division by an override that may be
 * zero would fail pipeline creation.
 *
 * Output: the ids go to an `ids` buffer [M], or into the sequence at seq[pos_m + 1] (the token predicted after
 * position pos_m); optionally the chosen id's logit goes to `values` [M] (the row maximum when greedy).
 *
 * Non-finite logits: when a row holds a NaN or an infinity at an id < VOCAB, or its best score is not finite (nothing
 * finite to choose), the kernel sets ctl[NONFINITE] = pos_m + 1 unless it is already set. Every pick of a generation
 * ends here (greedy, naive, jury, PoE drafts and acceptance), so the readback a generation already makes tells the
 * CPU whether its tokens are garbage (broken weights give all-NaN logits and ids [0, 0, ...] otherwise). The test
 * costs one bit test per logit the kernel reads anyway.
 *
 * Two passes over long rows: a decode step runs this on one 100352-wide row (401 KB, just written by the lm_head and
 * mostly in L2). One workgroup per row (the first design, still used for short rows and with `chunk: 0`) leaves that
 * row to one SM: 1024 threads, four loads each in flight, 25 rounds of L2 round trips; it measured ~60 us inside a
 * decode step on the H200 (7B and 1B; 3.4% of a 1B step; docs/PERF.md), sixteen loads in flight measured 89 us. So by
 * default a row is cut into chunks of ARGMAX_CHUNK ids, one workgroup each (98 at OLMo-2's vocabulary, one round of
 * loads for each of 256 threads), each writing its best (score, id) and whether it saw a non-finite logit; then
 * `argmax_combine` (one workgroup per row) picks among the chunks, ties still to the lowest id, and writes the id, the
 * value and the flag as the single pass does. The second dispatch costs a dependent dispatch boundary (a few us) in
 * place of ~50 us of one SM's serial loads: both passes measured 10.5 us in a 7B step on the H200 (60 us in one).
 * The Gumbel noise is added in the first pass, so sampling is the same draw either way.
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { lowbias32 } from "../prelude.ts";

/**
 * What both passes share: bindings 0-3, the overrides, the reduction of (score, id) pairs over a workgroup, and the
 * final write of a row's pick (`finish`).
 */
const ARGMAX_COMMON_WGSL = /* wgsl */ `
override VP: u32;
override VOCAB: u32;
override M: u32;
override INV_TEMPERATURE: f32 = 0.0; // 1 / T; 0 = greedy
override SEED: u32 = 0u;
override ROW_POS_OFFSET: u32 = 0u;
override SEQ_OUT: bool = false;
override WRITE_VALUES: bool = false;
override CHUNK: u32 = 0u;  // ids per workgroup of the first pass (0: one pass, one workgroup per row)
override WG: u32 = 1024u; // a power of two
const NONE: u32 = 0xffffffffu;
@group(0) @binding(0) var<storage, read_write> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<storage, read_write> values: array<f32>;
var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> gate_off: u32;
var<workgroup> row_bad: atomic<u32>; // nonzero once a thread saw a NaN or an infinity among the row's real ids

// NaN or +-Inf: the exponent bits all set (exact on the bits; a compiler may fold x != x away).
fn non_finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u; }

// (v, i) beats (bv, bi): larger value, ties to the lower id; NONE marks "nothing yet".
fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
  return i != NONE && (bi == NONE || v > bv || (v == bv && i < bi));
}

// Every thread's best (bv, bi) reduced over the workgroup into red_v[0], red_i[0] (a tree in workgroup memory).
fn reduce_best(t: u32, bv: f32, bi: u32) {
  red_v[t] = bv;
  red_i[t] = bi;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (t < stride && better(red_v[t + stride], red_i[t + stride], red_v[t], red_i[t])) {
      red_v[t] = red_v[t + stride];
      red_i[t] = red_i[t + stride];
    }
    workgroupBarrier();
  }
}

// Row m's pick: id (score best; bad: a non-finite logit among its real ids) to out and values, and the flag.
fn finish(m: u32, pos: u32, id: u32, best: f32, bad: bool) {
  if (SEQ_OUT) { out[pos + 1u] = id; } else { out[m] = id; }
  if (WRITE_VALUES) { values[m] = logits[m * VP + id]; }
  // Non-finite logits, or no finite score to pick: the CPU finds 1 + this row's position at its next readback.
  if ((bad || non_finite(best)) && ctl[CTL_NONFINITE] == 0u) {
    ctl[CTL_NONFINITE] = pos + 1u;
  }
}

// ctl is writable here (CTL_NONFINITE), and reads of a writable buffer are not uniform in WGSL: thread 0 reads the
// gate and workgroupUniformLoad hands it to every thread, so the barriers after it stay in uniform control flow. Thread
// 0 also clears row_bad before that barrier (not left to the runtime's zeroing of workgroup memory, which a toggle may
// turn off).
fn gate(t: u32) -> bool {
  if (t == 0u) {
    gate_off = select(0u, 1u, gated_off());
    atomicStore(&row_bad, 0u);
  }
  return workgroupUniformLoad(&gate_off) != 0u;
}
`;

/** The WGSL kernel: one pass over whole rows (CHUNK = 0), or the first pass over chunks of CHUNK ids. */
export const argmaxKernel: Kernel = {
  name: "argmax",
  source: /* wgsl */ `
// bindings (flat workgroup index = m * CHUNKS + chunk; CHUNKS = 1 when CHUNK = 0, else ceil(VOCAB / CHUNK)):
//   0 ctl    [CTL_SLOTS] u32, read_write  control block (gate; CTL_POS for positions); sets CTL_NONFINITE (below)
//   1 logits [M, VP] f32, read            row-major; ids >= VOCAB are padding and never chosen
//   2 out    u32, read_write              SEQ_OUT false: ids [M]; true: the sequence, seq[pos_m + 1] = id of row m
//   3 values [M] f32, read_write          WRITE_VALUES: logits[m, id[m]] (the row maximum when greedy)
//   4 best   [M, CHUNKS] vec4<u32>, rw    CHUNK > 0: each chunk's (best score's bits, its id, 1 if a real id of the
//                                         chunk holds a NaN or an infinity, 0) for argmax_combine (unread otherwise)
// pos_m = ctl[CTL_POS] + ROW_POS_OFFSET + m is the absolute position of row m (sampling key and seq index).
${ARGMAX_COMMON_WGSL}
const UNROLL: u32 = 4u;   // independent loads per thread per iteration
@group(0) @binding(4) var<storage, read_write> best: array<vec4<u32>>;

// Gumbel(0, 1) noise of token id under a row key: u uniform on the 2^23 bin centres of (0, 1) (exact in f32),
// E = -log(u) ~ Exp(1), g = -log(E). Near u = 1, E = -log1p(-r) with r = 1 - u is a short series, since log(u) there
// has an absolute (not relative) error of 2^-21 in WGSL and E is tiny exactly where g is large.
fn gumbel(key: u32, id: u32) -> f32 {
  let k = lowbias32(key ^ (id * 0x9e3779b9u)) >> 9u;
  let u = (f32(k) + 0.5) * (1.0 / 8388608.0);
  let r = (f32(8388607u - k) + 0.5) * (1.0 / 8388608.0);
  var e = -log(u);
  if (r < 0.0625) { e = r * (1.0 + r * (0.5 + r * (1.0 / 3.0 + r * (0.25 + r * 0.2)))); }
  return -log(e);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gate(t)) { return; }
  // (max: both arms of a select are evaluated, and CHUNK = 0 divides at pipeline creation)
  let chunks = select(1u, (VOCAB + CHUNK - 1u) / max(CHUNK, 1u), CHUNK > 0u);
  let flat = flat_workgroup(wid, nwg); // uniform: every thread of the workgroup agrees
  let m = flat / chunks;
  if (m >= M) { return; }
  let lo = (flat % chunks) * CHUNK; // this workgroup's ids lo .. hi - 1
  let hi = select(VOCAB, min(VOCAB, lo + CHUNK), CHUNK > 0u);
  let rb = m * VP;
  let pos = ctl[CTL_POS] + ROW_POS_OFFSET + m;
  let key = lowbias32(lowbias32(SEED) + pos);
  let sample = INV_TEMPERATURE > 0.0;
  var bv = 0.0;
  var bi = NONE;
  var bad = false;
  // Each thread visits its ids in increasing order, so a strict > keeps its lowest id among equal values.
  for (var i0 = lo + t; i0 < hi; i0 += UNROLL * WG) {
    var z: array<f32, UNROLL>;
    for (var u = 0u; u < UNROLL; u++) { z[u] = logits[rb + min(i0 + u * WG, hi - 1u)]; }
    for (var u = 0u; u < UNROLL; u++) {
      let i = i0 + u * WG;
      if (i < hi) {
        bad = bad || non_finite(z[u]);
        var s = z[u];
        if (sample) { s = s * INV_TEMPERATURE + gumbel(key, i); }
        if (bi == NONE || s > bv) {
          bv = s;
          bi = i;
        }
      }
    }
  }
  if (bad) { atomicOr(&row_bad, 1u); }
  reduce_best(t, bv, bi);
  if (t == 0u) {
    let row_is_bad = atomicLoad(&row_bad) != 0u;
    if (CHUNK > 0u) {
      best[flat] = vec4<u32>(bitcast<u32>(red_v[0]), red_i[0], select(0u, 1u, row_is_bad), 0u);
    } else {
      finish(m, pos, red_i[0], red_v[0], row_is_bad);
    }
  }
}
`,
};

/** The WGSL kernel of the second pass: each row's chunk results (argmaxKernel with CHUNK > 0) to its pick. */
export const argmaxCombineKernel: Kernel = {
  name: "argmax_combine",
  source: /* wgsl */ `
// bindings (one workgroup per row; flat workgroup index = m): 0-3 as argmax's; 4 best [M, CHUNKS] vec4<u32>, read:
// argmax's chunk results, CHUNKS = ceil(VOCAB / CHUNK).
${ARGMAX_COMMON_WGSL}
@group(0) @binding(4) var<storage, read> best: array<vec4<u32>>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gate(t)) { return; }
  let m = flat_workgroup(wid, nwg);
  if (m >= M) { return; }
  let chunks = (VOCAB + CHUNK - 1u) / CHUNK;
  var bv = 0.0;
  var bi = NONE;
  var bad = false;
  // Chunks in increasing order per thread (increasing ids), so ties still go to the lowest id.
  for (var c = t; c < chunks; c += WG) {
    let r = best[m * chunks + c];
    let v = bitcast<f32>(r.x);
    if (better(v, r.y, bv, bi)) {
      bv = v;
      bi = r.y;
    }
    bad = bad || r.z != 0u;
  }
  if (bad) { atomicOr(&row_bad, 1u); }
  reduce_best(t, bv, bi);
  if (t == 0u) {
    finish(m, ctl[CTL_POS] + ROW_POS_OFFSET + m, red_i[0], red_v[0], atomicLoad(&row_bad) != 0u);
  }
}
`,
};

/** Arguments of one argmax / sampling dispatch. Exactly one of `ids` and `seq` receives the ids. */
export interface ArgmaxArgs {
  ctl: GPUBuffer;
  /** f32 logits [rows, vp], row-major. */
  logits: GPUBuffer | BufferSlice;
  /** u32 [rows]: ids[m] = the id chosen in row m. */
  ids?: GPUBuffer;
  /** u32 token sequence: seq[ctl[POS] + rowPosOffset + m + 1] = the id chosen in row m. */
  seq?: GPUBuffer;
  /** f32 [rows]: the chosen id's logit (the row maximum when greedy). */
  values?: GPUBuffer;
  rows: number;
  /** Padded vocabulary: the row stride of `logits`. */
  vp: number;
  /** Real vocabulary: ids >= vocab are never chosen. */
  vocab: number;
  /** 0 (default) = greedy argmax; T > 0 samples from softmax(z / T). */
  temperature?: number;
  /** Sampling seed (u32). */
  seed?: number;
  /** Row m is at absolute position ctl[POS] + rowPosOffset + m. */
  rowPosOffset?: number;
  gated?: boolean;
  /**
   * Threads per workgroup (a power of two); default min(1024, the device's limit) in one pass, ARGMAX_CHUNK_THREADS
   * over chunks.
   */
  workgroupSize?: number;
  /**
   * Ids per workgroup of a first pass over chunks of each row, then `argmax_combine` (0: one pass, one workgroup per
   * row). Default: ARGMAX_CHUNK where the vocabulary holds at least ARGMAX_MIN_CHUNKS of them, else 0.
   */
  chunk?: number;
}

/**
 * Ids per workgroup of the first pass over chunks (module comment): one round of four loads for each of
 * ARGMAX_CHUNK_THREADS threads.
 */
export const ARGMAX_CHUNK = 1024;
/** Threads per workgroup of both passes over chunks. */
export const ARGMAX_CHUNK_THREADS = 256;
/** Fewest chunks a row must split into for the default to take two passes (a short row is one workgroup's work). */
export const ARGMAX_MIN_CHUNKS = 8;

/** The `values` binding of a pick that wants none, per device. */
const unusedValues = new WeakMap<Gpu, GPUBuffer>();

/** Scratch for the chunk results of the first pass, shared by every argmax of a device (grow-only). */
const chunkResults = new WeakMap<Gpu, GPUBuffer>();

/**
 * The shared chunk-result scratch, at least `bytes` (a single pass binds it unread: a separate buffer from the unused
 * `values`, as Dawn rejects two writable bindings of one buffer in a dispatch).
 */
function chunkResultsFor(gpu: Gpu, bytes: number): GPUBuffer {
  let results = chunkResults.get(gpu);
  if (!results || results.size < bytes) chunkResults.set(gpu, results = gpu.buffer("argmax chunk results", bytes));
  return results;
}

/**
 * Records an argmax / sampling (load time): one dispatch over whole rows, or a first pass over chunks and
 * `argmax_combine`. Throws on arguments the kernels cannot honour.
 */
export function argmax(
  gpu: Gpu,
  a: ArgmaxArgs,
  kernel: Kernel = argmaxKernel,
  combine: Kernel = argmaxCombineKernel,
): Dispatch[] {
  const t = a.temperature ?? 0;
  if (!(a.vocab >= 1 && a.vocab <= a.vp)) throw new Error(`argmax: vocab ${a.vocab} must be in 1..vp (${a.vp})`);
  if (!(a.rows >= 1)) throw new Error(`argmax: rows must be at least 1, got ${a.rows}`);
  if (!(t >= 0 && Number.isFinite(t))) throw new Error(`argmax: temperature must be finite and >= 0, got ${t}`);
  if ((a.ids === undefined) === (a.seq === undefined)) throw new Error("argmax: give exactly one of `ids` and `seq`");
  const seed = a.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new Error(`argmax: seed ${seed} is not a u32`);
  const chunk = a.chunk ?? (a.vocab >= ARGMAX_MIN_CHUNKS * ARGMAX_CHUNK ? ARGMAX_CHUNK : 0);
  if (!(Number.isInteger(chunk) && chunk >= 0)) throw new Error(`argmax: chunk ${chunk} is not an integer >= 0`);
  const limits = gpu.device.limits;
  const wg = a.workgroupSize ??
    Math.min(
      chunk > 0 ? ARGMAX_CHUNK_THREADS : 1024,
      limits.maxComputeInvocationsPerWorkgroup,
      limits.maxComputeWorkgroupSizeX,
    );
  if (wg < 1 || (wg & (wg - 1)) !== 0) throw new Error(`argmax: workgroupSize ${wg} is not a power of two`);
  let values = a.values ?? unusedValues.get(gpu);
  if (!values) unusedValues.set(gpu, values = gpu.buffer("argmax unused values", 16));
  const common = {
    VP: a.vp,
    VOCAB: a.vocab,
    M: a.rows,
    ROW_POS_OFFSET: a.rowPosOffset ?? 0,
    SEQ_OUT: a.seq !== undefined,
    WRITE_VALUES: a.values !== undefined,
    CHUNK: chunk,
    WG: wg,
    GATED: a.gated ?? false,
  };
  const sampling = { INV_TEMPERATURE: t > 0 ? 1 / t : 0, SEED: seed };
  // Two passes: rows x chunks workgroups, then one per row. The chunk results of every argmax of this device share one
  // scratch: the passes of one pick are consecutive in one queue, which WebGPU runs in order.
  const chunks = chunk > 0 ? Math.ceil(a.vocab / chunk) : 1;
  const results = chunkResultsFor(gpu, 16 * a.rows * chunks);
  const outputs = [a.ctl, a.logits, (a.ids ?? a.seq)!, values, results];
  if (chunk === 0) return [gpu.dispatch(kernel, { ...common, ...sampling }, outputs, a.rows)];
  return [
    gpu.dispatch(kernel, { ...common, ...sampling }, outputs, a.rows * chunks),
    gpu.dispatch(combine, common, outputs, a.rows),
  ];
}

/** The kernel's per-row sampling key for `seed` and the row's absolute position. */
export function samplingKey(seed: number, pos: number): number {
  return lowbias32((lowbias32(seed >>> 0) + pos) >>> 0);
}

/**
 * The Gumbel noise the kernel adds to token `id` under `key`, in f64. The hash and the uniform are bit-exact with the
 * kernel; only the two logarithms differ (WGSL's f32 log vs f64), by < 1e-5 absolute (see the kernel's comment).
 */
export function gumbelNoise(key: number, id: number): number {
  const k = lowbias32((key ^ Math.imul(id, 0x9e3779b9)) >>> 0) >>> 9;
  const r = (8388607 - k + 0.5) / 8388608;
  return -Math.log(-Math.log1p(-r));
}

/** The chosen ids and the chosen ids' logits of `argmaxReference`. */
export interface ArgmaxResult {
  ids: Uint32Array;
  values: Float32Array;
  /** Per row, the score of every id < vocab (z, or z / T + gumbel when sampling): for near-tie-tolerant checks. */
  scores: Float64Array[];
  /** Per row, whether the kernel flags it in ctl[NONFINITE]: a non-finite logit at an id < vocab (or best score). */
  nonFinite: boolean[];
}

/**
 * CPU reference of the kernel: greedy argmax over ids < vocab (ties: the lowest id), or with `temperature` > 0 the
 * Gumbel-max sample keyed like the kernel. `firstPos` is the absolute position of row 0 (ctl[POS] + rowPosOffset).
 * Sampling scores are computed in f64, so the kernel can differ from this reference only where two scores are within
 * about 1e-5 of each other.
 */
export function argmaxReference(
  logits: Float32Array,
  rows: number,
  vp: number,
  vocab: number,
  opts: { temperature?: number; seed?: number; firstPos?: number } = {},
): ArgmaxResult {
  const t = opts.temperature ?? 0;
  const ids = new Uint32Array(rows), values = new Float32Array(rows), scores: Float64Array[] = [];
  const nonFinite: boolean[] = [];
  for (let m = 0; m < rows; m++) {
    const key = samplingKey(opts.seed ?? 0, (opts.firstPos ?? 0) + m);
    const s = new Float64Array(vocab);
    let best = 0;
    for (let v = 0; v < vocab; v++) {
      s[v] = t > 0 ? logits[m * vp + v] / t + gumbelNoise(key, v) : logits[m * vp + v];
      if (s[v] > s[best]) best = v;
    }
    ids[m] = best;
    values[m] = logits[m * vp + best];
    scores.push(s);
    const row = logits.subarray(m * vp, m * vp + vocab);
    // The kernel scores in f32: a finite f64 score beyond f32's range is infinite there.
    nonFinite.push(!row.every(Number.isFinite) || !Number.isFinite(Math.fround(s[best])));
  }
  return { ids, values, scores, nonFinite };
}
