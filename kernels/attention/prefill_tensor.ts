/**
 * Causal prefill attention on tensor cores (Dawn, WGSL subgroup matrices): the function of `prefill.ts` (same
 * bindings, grid order and cache layout), with Q, K, V and the probabilities P as f16 and every product accumulated in
 * f32 on 16x16x16 subgroup matrices.
 *
 * A workgroup owns BQ = 16 * SUBGROUPS query rows of one head; subgroup g owns rows 16g .. 16g + 15 and keeps them as
 * HEAD_DIM / 16 left matrices (Q times SCALE * log2(e), staged once through the K buffer) and the output as HEAD_DIM /
 * 16 result matrices. Per key tile of BK = 32 keys (stopping after the key of the tile's last row): S = Q K^T
 * (HEAD_DIM / 16 x BK / 16 products per subgroup) through workgroup memory, then each row's softmax by the
 * SUBGROUP_SIZE / 16 invocations of the row (subgroup shuffles), P as f16 through workgroup memory, O += P V. Each
 * invocation carries a fixed share of every K and V tile in registers (`KvRaw`, as the cache holds it: two u32 per
 * four bf16), whose reads are issued a tile or more ahead, so that their latency passes while earlier tiles are
 * multiplied. Two passes store tile k + 1 after the barrier that ends tile k; one pass (three barriers a tile, where
 * two passes take four) stores the next K tile as soon as S is in workgroup memory (the K buffer consumed) and the next
 * V tile once P V is done, each visible after the next barrier, and issues that buffer's reads of the tile after.
 *
 * WGSL cannot scale a result matrix row by row, which the online softmax of `prefill.ts` does at every key tile.
 * - `passes: 1` (default): P = exp2(S - m) against a reference maximum m per row that is raised only when a tile's row
 *   maximum exceeds it by more than RESCALE_SLACK (so P <= 2^8); only then (a workgroup-uniform flag) does every
 *   subgroup take its output matrices through workgroup memory and scale each row by exp2(m_old - m_new). The
 *   epilogue divides by the row's sum l.
 * - `passes: 2`: each row's max m and sum l over all its keys first (S computed twice: 1.5x the products, K staged
 *   twice), then P = exp2(S - m) / l and O += P V: no rescaling at all.
 * The epilogue stores the output matrices, BK / 16 a round (one barrier pair each), through workgroup memory into the
 * rows inside M.
 *
 * Error: Q (scaled), K, V and P rounded to f16 (unit roundoff 2^-11; OLMo-2's q and k are RMS-normed), products and
 * sums in f32: a few 1e-3 of the output for scores of a few units (TENSOR_PREFILL_TOL, tested). |v| above 65504 would
 * overflow f16: the logits' finiteness check reports it.
 *
 * Measured on the H200 (Dawn, 7B heads, bf16 cache, docs/PERF.md): two passes of 4 subgroups (session W) took 1.11 ms
 * at 2,048 tokens against the FMA kernel's ~2.48 (31 against 14 TFLOP/s; 7B TTFT at 2,048 tokens 229 -> 191 ms), 92.6
 * us against 165 at 512, but 81.6 us against 27.5 at 128 (64 workgroups of two passes: latency-bound). With 8
 * subgroups (session Z) two passes take 602 us at 2,048 tokens and one pass 525; with each tile's reads a tile ahead
 * (session AF) one pass 343, and 21.4 us at 128 rows with 4 subgroups against the FMA kernel's 27.5. So `auto`, the
 * default of `HYDRA_PREFILL_ATTENTION` (`prefillAttentionFor`), takes it from TENSOR_PREFILL_MIN_ROWS rows where it
 * runs and its grid is large enough (TENSOR_PREFILL_MIN_WORKGROUPS), and `fma` or `tensor` force one.
 * @module
 */

import type { Dispatch, Gpu, Kernel } from "../runtime.ts";
import { UserError } from "../../common/errors.ts";
import { tensorGemmUnsupported, tensorSubgroupSize } from "../matmul/gemm_tensor.ts";
import { type KvDtype, kvReadWgsl } from "./kv_cache.ts";
import { attentionPrefill, type AttentionPrefillArgs, PREFILL_TILE_ORIGIN_WGSL, prefillDispatch } from "./prefill.ts";
import { range } from "../codegen.ts";
import { atomicMaxWgsl } from "../reduce.ts";
import { ROW_SCALE_WGSL } from "../matmul/row_scale.ts";

/** Name prefix of the generated kernels. */
export const PREFILL_TENSOR_KERNEL_NAME = "attention_prefill_tensor";

/** Keys per tile (two 16-key blocks). */
const BK = 32;
/** f16 per staged K / V row beyond HEAD_DIM: rows stay 16-byte aligned and start in distinct bank groups. */
const PAD = 8;

/** The environment variable that picks the prefill attention: `fma` (default) or `tensor`. */
export const PREFILL_ATTENTION_ENV = "HYDRA_PREFILL_ATTENTION";

/**
 * Output tolerance of the tensor-core prefill attention against the f64 reference: the f16 roundings of Q, K (a score
 * of a few units moves by ~2^-10 of sum |q k|), P and V (2^-11 each) put a few 1e-3 on outputs of order 1.
 */
export const TENSOR_PREFILL_TOL = { atol: 1e-2, rtol: 1e-2 };

/** What the generator makes a kernel for. */
export interface PrefillTensorSpec {
  headDim: number;
  /**
   * Subgroups per workgroup, each 16 query rows: 1, 2, 4 or 8 (default PREFILL_TENSOR_SUBGROUPS: 128 rows, each K and V
   * tile staged once for twice the rows of 4).
   */
  subgroups?: number;
  /** Invocations per subgroup: 16, 32 (default, NVIDIA's) or 64. */
  subgroupSize?: number;
  /**
   * Passes over the key tiles: 1 (default; the output rescaled only when a row's reference maximum rises by more than
   * RESCALE_SLACK) or 2 (the row maxima and sums first, then the output).
   */
  passes?: number;
  /**
   * The output as the o product's f16 rows and their exponents (row_scale.ts `HalfRows`) instead of f32: each row
   * scaled by a power of two from a bound on |o| (the largest |v| over the keys the tile attends, from qk_norm_rope's
   * `vmax` and, past position 0, the cache), so that the o GEMM needs no row-scale pre-pass.
   */
  halfRows?: boolean;
  /**
   * One pass: stage the next K tile as soon as S is in workgroup memory and the next V tile once P V is done (three
   * barriers a key tile) instead of both at the top of the tile (four). Default off; `attentionPrefillTensor` takes it
   * above PREFILL_TENSOR_SMALL_ROWS rows, where it measured faster (session AK: the 7B's 2,048-token pass 0.3-0.8 ms
   * faster, its 128-token pass 0.05 ms slower with it).
   */
  stageEarly?: boolean;
}

/**
 * Subgroups a workgroup has by default: 8 (128 query rows; 46,096 bytes of workgroup memory at head_dim 128 in one
 * pass). Measured on the H200 (Dawn, 7B heads, bf16 cache, 2,048 tokens, session Z, docs/PERF.md), two passes: 597 us
 * against 1,108 with 4 subgroups; each K and V tile is staged (and converted to f16) once for 128 rows instead of 64.
 */
export const PREFILL_TENSOR_SUBGROUPS = 8;

/** Subgroup counts a workgroup may have. */
const SUBGROUP_COUNTS = [1, 2, 4, 8];

/**
 * Query rows up to which a workgroup gets PREFILL_TENSOR_SMALL_SUBGROUPS by default: at 128 rows of 7B heads, twice the
 * workgroups of half the rows each are faster. Measured on the H200 (Dawn, 7B heads, bf16 cache, session AF, one pass,
 * us): 128 rows 23.8 with 8 subgroups, 21.4 with 4, 36.9 with 2; at 512 rows 50.8 with 8, 53.0 with 4; at 2,048 rows
 * 342.7 with 8, 495.1 with 4.
 */
export const PREFILL_TENSOR_SMALL_ROWS = 128;

/** Subgroups a workgroup has by default up to PREFILL_TENSOR_SMALL_ROWS query rows (64 rows). */
export const PREFILL_TENSOR_SMALL_SUBGROUPS = 4;

/**
 * The subgroups a workgroup of `spec` gets when the caller names none: PREFILL_TENSOR_SUBGROUPS, or
 * PREFILL_TENSOR_SMALL_SUBGROUPS for prefills of at most PREFILL_TENSOR_SMALL_ROWS `rows`; where its workgroup memory
 * exceeds `limit` bytes (head_dim 256 at 8 subgroups: 62,992), the most that fit (at least 1).
 */
export function prefillTensorSubgroupsFor(
  spec: Omit<PrefillTensorSpec, "subgroups">,
  limit: number,
  rows = Infinity,
): number {
  const most = rows <= PREFILL_TENSOR_SMALL_ROWS ? PREFILL_TENSOR_SMALL_SUBGROUPS : PREFILL_TENSOR_SUBGROUPS;
  const fits = SUBGROUP_COUNTS.filter((n) =>
    n <= most && prefillTensorWorkgroupBytes({ ...spec, subgroups: n }) <= limit
  );
  return fits.at(-1) ?? 1;
}

function check(s: PrefillTensorSpec): Required<PrefillTensorSpec> {
  const t = {
    headDim: s.headDim,
    subgroups: s.subgroups ?? PREFILL_TENSOR_SUBGROUPS,
    subgroupSize: s.subgroupSize ?? 32,
    passes: s.passes ?? 1,
    halfRows: s.halfRows ?? false,
    stageEarly: s.stageEarly ?? false,
  };
  if (t.stageEarly && t.passes !== 1) throw new Error("attentionPrefillTensor: stageEarly needs one pass");
  if (!(t.headDim >= 16 && t.headDim <= 256 && t.headDim % 16 === 0)) {
    throw new Error(`attentionPrefillTensor: head_dim ${t.headDim} is not a multiple of 16 up to 256`);
  }
  if (!SUBGROUP_COUNTS.includes(t.subgroups)) {
    throw new Error(`attentionPrefillTensor: ${t.subgroups} subgroups (${SUBGROUP_COUNTS.join(", ")})`);
  }
  if (![1, 2].includes(t.passes)) throw new Error(`attentionPrefillTensor: ${t.passes} passes (1 or 2)`);
  if (![16, 32, 64].includes(t.subgroupSize)) {
    throw new Error(`attentionPrefillTensor: subgroup size ${t.subgroupSize} (16, 32 or 64)`);
  }
  return t;
}

/**
 * Workgroup memory of a kernel: the K and V tiles (f16), S (f32) and P (f16); one pass adds each row's 1 / l (f32)
 * and the rescale flag (in 16 bytes).
 *
 * Every workgroup variable's size is a multiple of 16 bytes. The driver may lay the variables out in any order, and
 * the matrix loads need 16-byte aligned rows: with the flag a lone u32, the one-pass kernel's matrices read garbage
 * on the H200 (session Z).
 */
export function prefillTensorWorkgroupBytes(s: PrefillTensorSpec): number {
  const t = check(s);
  const bq = 16 * t.subgroups;
  return 2 * 2 * BK * (t.headDim + PAD) + 4 * bq * (BK + 4) + 2 * bq * (BK + PAD) + (t.passes === 1 ? 4 * bq + 16 : 0) +
    (t.halfRows ? 16 : 0);
}

/**
 * One pass: how far (log2 units) a tile's row maximum may exceed the row's reference maximum m before m is raised to
 * it and the output rescaled. The probabilities exp2(s - m) stay at most 2^RESCALE_SLACK (f16 holds 65,504), and the
 * rescale, which goes through workgroup memory, is rare: a row's running maximum settles within a few tiles.
 */
export const RESCALE_SLACK = 8;

function kernelName(t: Required<PrefillTensorSpec>, kv: KvDtype): string {
  return `${PREFILL_TENSOR_KERNEL_NAME}_d${t.headDim}_s${t.subgroups}_w${t.subgroupSize}_p${t.passes}${
    kv === "bf16" ? "_kvbf16" : ""
  }${t.halfRows ? "_hr" : ""}${t.stageEarly ? "_se" : ""}`;
}

/** The WGSL kernel for `spec` and caches of `kv` elements. */
export function attentionPrefillTensorKernelFor(spec: PrefillTensorSpec, kv: KvDtype = "f32"): Kernel {
  const t = check(spec);
  const hd = t.headDim, hv = hd / 4, sg = t.subgroupSize;
  const bq = 16 * t.subgroups, threads = sg * t.subgroups;
  const lpr = sg / 16; // invocations per query row in the softmax
  const perLane = BK / lpr; // scores each of them handles
  const cpl = 16 / lpr; // columns of a 16-column matrix each of them rescales (one pass)
  const D = range(hd / 16), J = range(BK / 16), E = range((16 * 16) / sg), P = range((16 * 8) / sg);
  const onePass = t.passes === 1;
  const hr = t.halfRows;
  const lines = (pad: string, ls: string[]) => ls.map((l) => pad + l).join("\n");
  // Each K / V tile is BK * HV vec4 items; invocation t carries items t + s * threads (slot s) in registers.
  const items = BK * hv;
  const slots = range(Math.ceil(items / threads));
  // slot s's statement, guarded where some invocations have no item in that slot (items not a multiple of threads)
  const inTile = (s: number, statement: string) =>
    (s + 1) * threads <= items ? statement : `if (t + ${s * threads}u < ${items}u) { ${statement} }`;
  // The reads of a K (values false) or V tile at keys from k0 into the registers rk<s> (rv<s>); zeros past last_key.
  const fetch = (pad: string, k0: string, values: boolean) =>
    lines(
      pad,
      slots.map((s) =>
        inTile(s, `${values ? "rv" : "rk"}${s} = fetch_kv(${k0} + kj${s}, last_key, col0 + kc${s}, ${values});`)
      ),
    );
  // The registers of a K (V) tile into ks (vs) as f16.
  const put = (pad: string, values: boolean) =>
    lines(
      pad,
      slots.map((s) => inTile(s, `stage4(kj${s} * KS + 4u * kc${s}, kv_f32(${values ? "rv" : "rk"}${s}), ${values});`)),
    );
  // The row reductions over the lpr invocations of a row (consecutive lanes): butterfly shuffles.
  const reduce = (op: string, v: string) =>
    range(Math.log2(lpr)).map((b) => `${v} = ${op}(${v}, subgroupShuffleXor(${v}, ${1 << b}u));`);
  // S = Q K^T of the staged K tile into the subgroup's rows of ss.
  const scores = lines("    ", [
    ...J.map((j) => `var s${j} = Result();`),
    ...D.flatMap((d) =>
      J.map((j) =>
        `s${j} = subgroupMatrixMultiplyAccumulate(qa${d}, subgroupMatrixLoad<Right, col_major>(&ks, ${j * 16}u * KS + ${
          d * 16
        }u, KS), s${j});`
      )
    ),
    ...J.map((j) => `subgroupMatrixStore<row_major>(&ss, sm * SS + ${j * 16}u, s${j}, SS);`),
  ]);
  // O += P V of the staged tiles, 16 keys at a time.
  const pv = lines(
    "    ",
    J.flatMap((j) => [
      `{`,
      `  let pa = subgroupMatrixLoad<Left, row_major>(&ps, sm * PS + ${j * 16}u, PS);`,
      ...D.map((d) =>
        `  o${d} = subgroupMatrixMultiplyAccumulate(pa, subgroupMatrixLoad<Right, row_major>(&vs, ${j * 16}u * KS + ${
          d * 16
        }u, KS), o${d});`
      ),
      `}`,
    ]),
  );
  // The tile's maximum score of row r (keys after pos masked), over the row's invocations.
  const tileMax = `    var tmax = NEG_BIG;
    for (var i = 0u; i < ${perLane}u; i++) {
      let key = k0 + sub + LPR * i;
      tmax = max(tmax, select(NEG_BIG, ss[r * SS + sub + LPR * i], key <= pos));
    }
${lines("    ", reduce("max", "tmax"))}`;
  // The K and V tiles of keys k0.. staged from the registers, the next tile's reads issued, S computed.
  const stageKV = `${put("    ", false)}
${put("    ", true)}
    workgroupBarrier(); // the K and V tiles are staged
    // The next tile's reads are in flight while this one is multiplied.
${fetch("    ", "k0 + BK", false)}
${fetch("    ", "k0 + BK", true)}
${scores}
    workgroupBarrier(); // S is in ss`;
  const outputs = lines("  ", D.map((d) => `var o${d} = Result();`));

  // Two passes: each row's max m and sum l of exp2(score - m) over its keys, then P = exp2(S - m) / l, O += P V.
  const twoPasses = () =>
    `  var m = NEG_BIG;
  var l = 0.0;
  for (var k0 = 0u; k0 <= last_key; k0 += BK) {
${put("    ", false)}
    workgroupBarrier(); // the K tile is staged
${fetch("    ", "k0 + BK", false)}
${scores}
    workgroupBarrier(); // S is in ss
${tileMax}
    let mn = max(m, tmax);
    var sum = 0.0;
    for (var i = 0u; i < ${perLane}u; i++) {
      let key = k0 + sub + LPR * i;
      sum += select(0.0, exp2(ss[r * SS + sub + LPR * i] - mn), key <= pos);
    }
${lines("    ", reduce("add", "sum"))}
    l = l * exp2(m - mn) + sum;
    m = mn;
    workgroupBarrier(); // ks and ss are consumed
  }
  let inv_l = 1.0 / l;
${outputs}
${fetch("  ", "0u", false)}
${fetch("  ", "0u", true)}
  for (var k0 = 0u; k0 <= last_key; k0 += BK) { // pass 2
${stageKV}
    for (var i = 0u; i < ${perLane}u; i++) {
      let key = k0 + sub + LPR * i;
      let p = select(0.0, exp2(ss[r * SS + sub + LPR * i] - m) * inv_l, key <= pos);
      ps[r * PS + sub + LPR * i] = f16(p);
    }
    workgroupBarrier(); // P is in ps
${pv}
    workgroupBarrier(); // ks, vs and ps are consumed
  }`;

  // One pass: P = exp2(S - m) against a reference maximum m that is raised (and O, l rescaled by exp2(m_old - m))
  // only when a tile's row maximum exceeds it by more than SLACK; O / l in the epilogue.
  // With stageEarly three barriers a key tile: the next K tile is staged once S is in ss (ks consumed), the next V
  // tile once P V is done (vs consumed); the barriers after the softmax and after P V make them visible before their
  // products. Else both at the top of the tile (stageKV), four barriers.
  const early = t.stageEarly;
  const onePassBody = () =>
    `  if (t == 0u) { rescale_flag[0] = 0u; } // (zero already, unless workgroup memory is left uninitialized)
  var m = NEG_BIG; // the row's reference maximum
  var l = 0.0;      // the row's sum of exp2(score - m)
${outputs}${
      early
        ? `
${put("  ", false)}
${put("  ", true)}
  workgroupBarrier(); // the first K and V tiles are staged
${fetch("  ", "BK", false)}
${fetch("  ", "BK", true)}`
        : ""
    }
  for (var k0 = 0u; k0 <= last_key; k0 += BK) {
${
      early
        ? `${scores}
    workgroupBarrier(); // S is in ss, ks consumed
    // the next K tile into ks (visible after the barrier below), the reads of the one after it in flight
${put("    ", false)}
${fetch("    ", "k0 + 2u * BK", false)}`
        : stageKV
    }
${tileMax}
    let raise = tmax > m + SLACK; // always on the first tile (m + SLACK is NEG_BIG)
    let mn = select(m, tmax, raise);
    let alpha = exp2(m - mn); // 1 unless raised; 0 on the first tile
    var sum = 0.0;
    for (var i = 0u; i < ${perLane}u; i++) {
      let key = k0 + sub + LPR * i;
      let p = select(0.0, exp2(ss[r * SS + sub + LPR * i] - mn), key <= pos);
      ps[r * PS + sub + LPR * i] = f16(p);
      sum += p;
    }
${lines("    ", reduce("add", "sum"))}
    l = l * alpha + sum;
    m = mn;
    if (raise && k0 > 0u) { rescale_flag[0] = 1u; } // O is still zero on the first tile
    if (workgroupUniformLoad(&rescale_flag[0]) != 0u) { // (a barrier: P is in ps${
      early ? ", the next K tile in ks" : ""
    })
      // Each output matrix through the subgroup's rows of ss, each row scaled by its alpha (1 where not raised).
${
      lines(
        "      ",
        D.flatMap((d) => [
          `subgroupMatrixStore<row_major>(&ss, sm * SS, o${d}, SS);`,
          "workgroupBarrier();",
          `for (var c = 0u; c < ${cpl}u; c++) { ss[r * SS + sub * ${cpl}u + c] *= alpha; }`,
          "workgroupBarrier();",
          `o${d} = subgroupMatrixLoad<Result, row_major>(&ss, sm * SS, SS);`,
          "workgroupBarrier();",
        ]),
      )
    }
    }
${pv}
    workgroupBarrier(); // ${early ? "vs" : "ks, vs"} and ps are consumed, the flag read
    if (t == 0u) { rescale_flag[0] = 0u; }${
      early
        ? `
    // the next V tile into vs (visible after the next barrier), the reads of the one after it in flight
${put("    ", true)}
${fetch("    ", "k0 + 2u * BK", true)}`
        : ""
    }
  }
  if (sub == 0u) { li[r] = 1.0 / l; }`;

  const name = kernelName(t, kv);
  return {
    name,
    source: /* wgsl */ `
// ${name}: causal prefill attention on subgroup matrices (kernels/attention/prefill_tensor.ts), ${
      onePass ? "one pass" : "two passes"
    } over the keys.
// bindings (D = NH * HEAD_DIM; the grid is [NH, ceil(M / BQ), 1]: workgroup (h, y) = head h, query rows
// q0 = BQ * (ceil(M / BQ) - 1 - y) ..), as prefill.ts:
//   0 ctl [CTL_SLOTS] u32, read       control block: ctl[CTL_POS] = position of query row 0
//   1 q   [M, D / 4] vec4<f32>        queries, QK-normed and roped
//   2 kc  [>= POS + M, D] ${kv}        K cache, position-major
//   3 vc  [>= POS + M, D] ${kv}        V cache
${
      hr
        ? "//   4-5 the attention output as HalfRows (row_scale.ts): f16 pairs [M, D / 2], row exponents [M] i32\n" +
          "//   6 vmax [M] u32, read              f32 bits of each row's largest |v| (qk_norm_rope.ts)"
        : "//   4 out [M, D] f32, rw              the attention output (prefill.ts's binding, read as scalars)"
    }
override NH: u32;
override M: u32;
override SCALE: f32;                          // 1 / sqrt(HEAD_DIM)
const HV: u32 = ${hv}u;                        // vec4 per head row (HEAD_DIM ${hd})
const BQ: u32 = ${bq}u;                        // query rows per workgroup: 16 per subgroup
const BK: u32 = ${BK}u;                        // keys per tile
const SUBGROUP_SIZE: u32 = ${sg}u;
const LPR: u32 = ${lpr}u;                      // invocations per row in the softmax
const KS: u32 = ${hd + PAD}u;                  // f16 per staged K / V row
const SS: u32 = ${BK + 4}u;                    // f32 per row of S (16-byte aligned rows)
const PS: u32 = ${BK + PAD}u;                  // f16 per row of P
const LOG2E: f32 = 1.4426950408889634;
const NEG_BIG: f32 = -3.0e38;                  // "masked": finite, so exp2(NEG_BIG - NEG_BIG) is 1, never NaN
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
${kvReadWgsl(kv, 2, 3)}
${
      hr
        ? `@group(0) @binding(4) var<storage, read_write> hr_x: array<u32>; // the output rows as f16, in pairs
@group(0) @binding(5) var<storage, read_write> hr_e: array<i32>; // each row's exponent
@group(0) @binding(6) var<storage, read> vmax: array<u32>;       // each row's largest |v|, as f32 bits
var<workgroup> v_bound: array<atomic<u32>, 4>;                   // [0]: the tile's bound on |o|, as f32 bits
${ROW_SCALE_WGSL}`
        : "@group(0) @binding(4) var<storage, read_write> out: array<f32>;"
    }
var<workgroup> ks: array<f16, ${BK * (hd + PAD)}>;  // [BK, HEAD_DIM] the K tile (first: BK query rows at a time)
var<workgroup> vs: array<f16, ${BK * (hd + PAD)}>;  // [BK, HEAD_DIM] the V tile
var<workgroup> ss: array<f32, ${bq * (BK + 4)}>;    // [BQ, BK] scores of the tile; the output matrices
var<workgroup> ps: array<f16, ${bq * (BK + PAD)}>;  // [BQ, BK] probabilities of the tile${
      onePass
        ? `
var<workgroup> li: array<f32, ${bq}>;               // each row's 1 / l (the epilogue's)
var<workgroup> rescale_flag: array<u32, 4>;        // [0]: some row raised its reference maximum on this tile
const SLACK: f32 = ${RESCALE_SLACK}.0;                     // RESCALE_SLACK`
        : ""
    }
alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;
alias Result = subgroup_matrix_result<f32, 16, 16>;

// Vec4 e - key * NH * HV (head columns) of key \`key\` as the cache holds it; zeros past last_key, which is never read.
fn fetch_kv(key: u32, last_key: u32, e: u32, values: bool) -> KvRaw {
  var v = KvRaw();
  if (key <= last_key) {
    let i = key * NH * HV + e;
    if (values) { v = raw_v(i); } else { v = raw_k(i); }
  }
  return v;
}

// Four f32 as f16 at buffer index i of ks (values false) or vs.
fn stage4(i: u32, v: vec4<f32>, values: bool) {
  let h = vec4<f16>(v);
  if (values) {
    vs[i] = h.x; vs[i + 1u] = h.y; vs[i + 2u] = h.z; vs[i + 3u] = h.w;
  } else {
    ks[i] = h.x; ks[i + 1u] = h.y; ks[i + 2u] = h.z; ks[i + 3u] = h.w;
  }
}

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
${PREFILL_TILE_ORIGIN_WGSL}
  let g = t / SUBGROUP_SIZE;                  // subgroup: rows sm .. sm + 15 of the tile
  let lane = t % SUBGROUP_SIZE;
  let sm = 16u * g;
  // Softmax lanes: row r of the tile (its position pos), keys sub + LPR * i of each tile.
  let r = sm + lane / LPR;
  let sub = lane % LPR;
  let pos = first_pos + r;
  // This invocation's share of each K and V tile: vec4 column kc<s> of the tile's key kj<s> (item t + s * ${threads}),
  // carried in registers from the global reads, issued a tile ahead, to the workgroup stores.
${lines("  ", slots.map((s) => `let kj${s} = (t + ${s * threads}u) / HV; let kc${s} = (t + ${s * threads}u) % HV;`))}
${lines("  ", slots.map((s) => `var rk${s} = KvRaw(); var rv${s} = KvRaw();`))}
  // The first tile's reads are in flight while Q is staged.
${fetch("  ", "0u", false)}
${onePass ? fetch("  ", "0u", true) : ""}${
      hr
        ? `
  // The bound on |o| of every row of the tile: o is a convex combination of the rows of V it attends, all of them
  // keys up to last_key: this pass's rows (vmax, from qk_norm_rope) and, where the pass starts past position 0, the
  // cache's rows before it (every head's). Every workgroup of these rows finds the same bound, so the exponent of a
  // row is one for all its heads: e = row_scale_exponent(bound) puts |o| * 2^-e below 2^15 (f16 holds 65,504).
  if (t == 0u) { atomicStore(&v_bound[0], 0u); }
  workgroupBarrier(); // v_bound is zero
  var vb = 0u;
  for (var i = t; i < q0 + rows_valid; i += ${threads}u) { vb = max(vb, vmax[i]); }
  for (var i = t; i < ctl[CTL_POS] * NH * HV; i += ${threads}u) {
    vb = max(vb, max_abs_bits(kv_f32(raw_v(i))));
  }
  ${atomicMaxWgsl("&v_bound[0]", "vb", true)}
  workgroupBarrier();
  let row_e = row_scale_exponent(atomicLoad(&v_bound[0]));
  let row_f = ldexp(1.0, -row_e);
  if (wid.x == 0u && t < rows_valid) { hr_e[q0 + t] = row_e; }`
        : ""
    }
  // Q times SCALE * log2(e) as f16 left matrices, staged BK rows at a time through ks.
${lines("  ", D.map((d) => `var qa${d} = Left();`))}
  for (var c = 0u; c < BQ; c += BK) {
    // the reads of rows c.. first (the K and V slots' items), then the stores
${
      lines(
        "    ",
        slots.map((s) =>
          `var qv${s} = vec4<f32>(); ` +
          inTile(s, `if (c + kj${s} < rows_valid) { qv${s} = q[(q0 + c + kj${s}) * NH * HV + col0 + kc${s}]; }`)
        ),
      )
    }
${lines("    ", slots.map((s) => inTile(s, `stage4(kj${s} * KS + 4u * kc${s}, qv${s} * (SCALE * LOG2E), false);`)))}
    workgroupBarrier();
    if (sm >= c && sm < c + BK) {
${lines("      ", D.map((d) => `qa${d} = subgroupMatrixLoad<Left, row_major>(&ks, (sm - c) * KS + ${d * 16}u, KS);`))}
    }
    workgroupBarrier();
  }
${onePass ? onePassBody() : twoPasses()}
  // The output matrices, BK / 16 at a time, through the subgroup's rows of ss (16 x 16 each, at stride SS) into the
  // rows inside M${onePass ? ", over l" : ""}.
${
      lines(
        "  ",
        range(Math.ceil(hd / BK)).flatMap((round) => {
          const ds = J.map((j) => round * (BK / 16) + j).filter((d) => d < hd / 16);
          return [
            ...ds.map((d, j) => `subgroupMatrixStore<row_major>(&ss, sm * SS + ${j * 16}u, o${d}, SS);`),
            "workgroupBarrier();",
            ...ds.map((_, j) => j).flatMap((j) =>
              hr
                ? P.map((p) => {
                  // pair p of the lane: row (lane + p * sg) / 8 of the matrix, columns 2 cp, 2 cp + 1
                  const pi = `lane + ${p * sg}u`, row = `sm + (${pi}) / 8u`, cp = `((${pi}) % 8u)`;
                  const at = (c: string) => `ss[(${row}) * SS + ${j * 16}u + 2u * ${cp}${c}]`;
                  const scale = onePass ? ` * li[${row}]` : "";
                  return `if (${row} < rows_valid) { hr_x[(q0 + ${row}) * NH * HV * 2u + 2u * col0 + ${
                    ds[j] * 8
                  }u + ${cp}] = pack2x16float(vec2<f32>(${at("")}, ${at(" + 1u")})${scale} * row_f); }`;
                })
                : E.map((e) => {
                  const el = `lane + ${e * sg}u`;
                  const row = `sm + (${el}) / 16u`, col = `(${el}) % 16u`;
                  const value = `ss[(${row}) * SS + ${j * 16}u + ${col}]${onePass ? ` * li[${row}]` : ""}`;
                  return `if (${row} < rows_valid) { out[(q0 + ${row}) * NH * HV * 4u + 4u * col0 + ${
                    ds[j] * 16
                  }u + ${col}] = ${value}; }`;
                })
            ),
            "workgroupBarrier();",
          ];
        }),
      )
    }
}

fn add(a: f32, b: f32) -> f32 { return a + b; }
`,
  };
}

/**
 * Why the tensor-core prefill attention cannot run on `gpu`, or null: it needs what the tensor-core GEMM needs
 * (subgroup matrices with the f16 16x16x16 config, shader-f16, one fixed subgroup size of 16, 32 or 64).
 */
export function prefillTensorUnsupported(gpu: Gpu): string | null {
  const why = tensorGemmUnsupported(gpu);
  if (why) return why;
  const size = tensorSubgroupSize(gpu);
  return [16, 32, 64].includes(size) ? null : `its subgroups of ${size} invocations are not 16, 32 or 64`;
}

/** The kernel spec for the heads of `a` on `gpu`, without its subgroups. */
function tensorSpec(
  gpu: Gpu,
  a: { headDim: number },
  tiles: { passes?: number } = {},
): Omit<PrefillTensorSpec, "subgroups"> {
  return { headDim: a.headDim, subgroupSize: tensorSubgroupSize(gpu), passes: tiles.passes };
}

/**
 * Records a tensor-core prefill attention dispatch (load time): `a` as for `attentionPrefill` (its FMA tile knobs are
 * not read), `tiles.subgroups` the query rows / 16 of a workgroup (default `prefillTensorSubgroupsFor`), `tiles.passes`
 * 1 or 2, `tiles.stageEarly` (default: one pass above PREFILL_TENSOR_SMALL_ROWS rows; PrefillTensorSpec). Throws where
 * it cannot run or on bad shapes.
 */
export function attentionPrefillTensor(
  gpu: Gpu,
  a: AttentionPrefillArgs,
  tiles: Pick<PrefillTensorSpec, "subgroups" | "passes" | "stageEarly"> = {},
  kernel?: Kernel,
): Dispatch {
  const unsupported = prefillTensorUnsupported(gpu);
  if (unsupported) throw new Error(`attentionPrefillTensor: cannot run here: ${unsupported}`);
  if (!(Number.isInteger(a.rows) && a.rows >= 1)) throw new Error(`attentionPrefillTensor: ${a.rows} query rows`);
  const limit = gpu.device.limits.maxComputeWorkgroupStorageSize;
  const spec = tensorSpec(gpu, a, tiles);
  const t = check({
    ...spec,
    subgroups: tiles.subgroups ?? prefillTensorSubgroupsFor(spec, limit, a.rows),
    halfRows: a.halfRows !== undefined,
    stageEarly: tiles.stageEarly ?? ((spec.passes ?? 1) === 1 && a.rows > PREFILL_TENSOR_SMALL_ROWS),
  });
  const bytes = prefillTensorWorkgroupBytes(t);
  if (bytes > limit) {
    throw new Error(`attentionPrefillTensor: needs ${bytes} bytes of workgroup memory; use fewer subgroups`);
  }
  const kv = a.kvDtype ?? "f32";
  return prefillDispatch(gpu, a, {
    who: "attentionPrefillTensor",
    name: kernelName(t, kv),
    make: () => attentionPrefillTensorKernelFor(t, kv),
    rowsPerWorkgroup: 16 * t.subgroups,
    kernel,
  });
}

/**
 * The prefill attentions: `auto` (default: tensor cores for prompts of at least TENSOR_PREFILL_MIN_ROWS rows whose grid
 * has at least TENSOR_PREFILL_MIN_WORKGROUPS workgroups, where they run; else FMA), FMA (`prefill.ts`) and tensor cores
 * (this module).
 */
export const PREFILL_ATTENTIONS = ["auto", "fma", "tensor"] as const;

/**
 * Fewest query rows for which `auto` takes the tensor-core kernel. Measured on the H200 (Dawn, bf16 cache, session AF,
 * docs/PERF.md, us): 7B heads at 128 rows 21.4 (64 workgroups of 64 rows) against the FMA kernel's 27.5, at 2,048 rows
 * 342.7 against 2,393.8. (Session W, two passes and the K/V reads not yet a tile ahead: 81.6 against 27.5 at 128 rows.)
 */
export const TENSOR_PREFILL_MIN_ROWS = 128;

/**
 * Fewest workgroups (heads x query tiles) for which `auto` takes the tensor-core kernel: the 1B's 16 heads at 128 rows
 * are 32 workgroups of 64 rows, 34.0 us against the FMA kernel's 20.8-27.3 (its variants; H200, session AF); the 7B's
 * 32 heads are 64 workgroups, 21.4 us against 27.5.
 */
export const TENSOR_PREFILL_MIN_WORKGROUPS = 64;

/** One of PREFILL_ATTENTIONS. */
export type PrefillAttention = (typeof PREFILL_ATTENTIONS)[number];

/**
 * The prefill attention `HYDRA_PREFILL_ATTENTION` asks for: `auto` (default), `fma` or `tensor`, a UserError naming
 * the variable where the value is unknown or the tensor kernel cannot run.
 */
export function prefillAttentionFor(gpu: Gpu): PrefillAttention {
  const value = Deno.env.get(PREFILL_ATTENTION_ENV) || "auto";
  if (!(PREFILL_ATTENTIONS as readonly string[]).includes(value)) {
    throw new UserError(
      `${PREFILL_ATTENTION_ENV}=${value} is not a prefill attention: set it to ${PREFILL_ATTENTIONS.join(" or ")}.`,
    );
  }
  if (value === "fma" || value === "auto") return value;
  const why = prefillTensorUnsupported(gpu);
  if (why) {
    throw new UserError(
      `${PREFILL_ATTENTION_ENV}=tensor needs subgroup matrices, which cannot run here (${why}); run on Dawn ` +
        `(HYDRA_WEBGPU=dawn) on a GPU with them, or unset ${PREFILL_ATTENTION_ENV}.`,
    );
  }
  return "tensor";
}

/**
 * The kernel the prefill attention of `a.rows` query rows of `a.nHeads` heads runs on `gpu`: what
 * `prefillAttentionFor` forces, or for `auto` tensor cores where they run, `rows` is at least TENSOR_PREFILL_MIN_ROWS
 * and the grid at least TENSOR_PREFILL_MIN_WORKGROUPS workgroups; else FMA.
 */
export function prefillAttentionKernel(
  gpu: Gpu,
  a: { rows: number; nHeads: number; headDim: number },
): "fma" | "tensor" {
  const pick = prefillAttentionFor(gpu);
  if (pick !== "auto") return pick;
  if (a.rows < TENSOR_PREFILL_MIN_ROWS || prefillTensorUnsupported(gpu) !== null) return "fma";
  const limit = gpu.device.limits.maxComputeWorkgroupStorageSize;
  const subgroups = prefillTensorSubgroupsFor(tensorSpec(gpu, a), limit, a.rows);
  return a.nHeads * Math.ceil(a.rows / (16 * subgroups)) >= TENSOR_PREFILL_MIN_WORKGROUPS ? "tensor" : "fma";
}

/** The prefill attention dispatch `prefillAttentionKernel` picks for `a`. */
export function prefillAttention(gpu: Gpu, a: AttentionPrefillArgs): Dispatch {
  return prefillAttentionKernel(gpu, a) === "tensor" ? attentionPrefillTensor(gpu, a) : attentionPrefill(gpu, a);
}
