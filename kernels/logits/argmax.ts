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
 * Why one workgroup per row: a decode step runs this on one 100352-wide row (401 KB, just written by the lm_head and so
 * mostly in L2). A two-stage reduction (many workgroups per row, then a combining pass) moves the same bytes but adds a
 * second dependent dispatch, and a dispatch boundary costs several microseconds of GPU time on Deno's WebGPU (the brief
 * measured ~8 us per tiny dispatch), more than the whole single-workgroup pass should take: 1024 threads each keep four
 * independent coalesced loads in flight (16 KB per SM), ~98 loads per thread per row in 25 rounds of four. Several rows
 * (drafted or verified positions) run on as many SMs at once. Not yet timed on an H100.
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { lowbias32 } from "../prelude.ts";

/** The WGSL kernel. */
export const argmaxKernel: Kernel = {
  name: "argmax",
  source: /* wgsl */ `
// bindings (one workgroup per row; M rows, flat workgroup index = m):
//   0 ctl    [CTL_SLOTS] u32, read_write  control block (gate; CTL_POS for positions); sets CTL_NONFINITE (below)
//   1 logits [M, VP] f32, read            row-major; ids >= VOCAB are padding and never chosen
//   2 out    u32, read_write              SEQ_OUT false: ids [M]; true: the sequence, seq[pos_m + 1] = id of row m
//   3 values [M] f32, read_write          WRITE_VALUES: logits[m, id[m]] (the row maximum when greedy)
// pos_m = ctl[CTL_POS] + ROW_POS_OFFSET + m is the absolute position of row m (sampling key and seq index).
override VP: u32;
override VOCAB: u32;
override M: u32;
override INV_TEMPERATURE: f32 = 0.0; // 1 / T; 0 = greedy
override SEED: u32 = 0u;
override ROW_POS_OFFSET: u32 = 0u;
override SEQ_OUT: bool = false;
override WRITE_VALUES: bool = false;
override WG: u32 = 1024u; // a power of two
const UNROLL: u32 = 4u;   // independent loads per thread per iteration
const NONE: u32 = 0xffffffffu;
@group(0) @binding(0) var<storage, read_write> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<storage, read_write> values: array<f32>;
var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> gate_off: u32;
var<workgroup> row_bad: atomic<u32>; // nonzero once a thread saw a NaN or an infinity among the row's real ids

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

// NaN or +-Inf: the exponent bits all set (exact on the bits; a compiler may fold x != x away).
fn non_finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u; }

// (v, i) beats (bv, bi): larger value, ties to the lower id; NONE marks "nothing yet".
fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
  return i != NONE && (bi == NONE || v > bv || (v == bv && i < bi));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  // ctl is writable here (CTL_NONFINITE), and reads of a writable buffer are not uniform in WGSL: thread 0 reads the
  // gate and workgroupUniformLoad hands it to every thread, so the barriers below stay in uniform control flow.
  if (t == 0u) { gate_off = select(0u, 1u, gated_off()); }
  if (workgroupUniformLoad(&gate_off) != 0u) { return; }
  let m = flat_workgroup(wid, nwg); // uniform: every thread of the workgroup agrees
  if (m >= M) { return; }
  let rb = m * VP;
  let pos = ctl[CTL_POS] + ROW_POS_OFFSET + m;
  let key = lowbias32(lowbias32(SEED) + pos);
  let sample = INV_TEMPERATURE > 0.0;
  var bv = 0.0;
  var bi = NONE;
  var bad = false;
  // Each thread visits its ids in increasing order, so a strict > keeps its lowest id among equal values.
  for (var i0 = t; i0 < VOCAB; i0 += UNROLL * WG) {
    var z: array<f32, UNROLL>;
    for (var u = 0u; u < UNROLL; u++) { z[u] = logits[rb + min(i0 + u * WG, VOCAB - 1u)]; }
    for (var u = 0u; u < UNROLL; u++) {
      let i = i0 + u * WG;
      if (i < VOCAB) {
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
  if (t == 0u) {
    let id = red_i[0];
    if (SEQ_OUT) { out[pos + 1u] = id; } else { out[m] = id; }
    if (WRITE_VALUES) { values[m] = logits[rb + id]; }
    // Non-finite logits, or no finite score to pick: the CPU finds 1 + this row's position at its next readback.
    if ((atomicLoad(&row_bad) != 0u || non_finite(red_v[0])) && ctl[CTL_NONFINITE] == 0u) {
      ctl[CTL_NONFINITE] = pos + 1u;
    }
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
  /** Threads per row (a power of two); default min(1024, the device's limit). */
  workgroupSize?: number;
}

const unusedValues = new WeakMap<Gpu, GPUBuffer>();

/** Records an argmax / sampling dispatch (load time). Throws on arguments the kernel cannot honour. */
export function argmax(gpu: Gpu, a: ArgmaxArgs, kernel: Kernel = argmaxKernel): Dispatch {
  const t = a.temperature ?? 0;
  if (!(a.vocab >= 1 && a.vocab <= a.vp)) throw new Error(`argmax: vocab ${a.vocab} must be in 1..vp (${a.vp})`);
  if (!(a.rows >= 1)) throw new Error(`argmax: rows must be at least 1, got ${a.rows}`);
  if (!(t >= 0 && Number.isFinite(t))) throw new Error(`argmax: temperature must be finite and >= 0, got ${t}`);
  if ((a.ids === undefined) === (a.seq === undefined)) throw new Error("argmax: give exactly one of `ids` and `seq`");
  const seed = a.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new Error(`argmax: seed ${seed} is not a u32`);
  const limits = gpu.device.limits;
  const wg = a.workgroupSize ??
    Math.min(1024, limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX);
  if (wg < 1 || (wg & (wg - 1)) !== 0) throw new Error(`argmax: workgroupSize ${wg} is not a power of two`);
  let values = a.values;
  if (!values) {
    values = unusedValues.get(gpu);
    if (!values) unusedValues.set(gpu, values = gpu.buffer("argmax unused values", 16));
  }
  return gpu.dispatch(
    kernel,
    {
      VP: a.vp,
      VOCAB: a.vocab,
      M: a.rows,
      INV_TEMPERATURE: t > 0 ? 1 / t : 0,
      SEED: seed,
      ROW_POS_OFFSET: a.rowPosOffset ?? 0,
      SEQ_OUT: a.seq !== undefined,
      WRITE_VALUES: a.values !== undefined,
      WG: wg,
      GATED: a.gated ?? false,
    },
    [a.ctl, a.logits, (a.ids ?? a.seq)!, values],
    a.rows,
  );
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
