/**
 * Where a decode step goes: the GPU time of every dispatch of a recorded step, grouped by kernel family, with the
 * bytes each family must move at least and the bandwidth that implies. A "step" is any recorded dispatch list replayed
 * from a restored control block: a decode step, or a PoE round's verify pass (every verifier head over gamma rows, the
 * jury's log-softmax), whose M-row matvecs read their weights once for all M rows.
 *
 * Method: what a family costs inside the step is what the step saves without it. The step is timed whole (its
 * dispatches in one compute pass, as the benchmark times a step, `passesFor` passes back to back per sample), then once
 * for every family with that family's dispatches left out; a family's in-step time is the difference of the two
 * medians. It carries the family's share of the boundaries between dependent dispatches (the drain and refill of the
 * GPU at each one), which is where a decode step loses most of its time, so the in-step times add up to the step
 * (the check: within 5%; `--check` fails otherwise). Leaving a kernel out changes what later kernels read (stale
 * activations), not how much they read or compute, so their times do not move. The "alone" column times each dispatch
 * in a compute pass of its own (its own begin and end timestamps); that includes a pass boundary per dispatch, so
 * those add up to more than the step (measured on an H200: 12% for a 7B step of 294 dispatches).
 * Before every replay the control block is restored (the step's control kernel advances it), so every replay runs at
 * the same context length.
 *
 * Dispatches that run beside others (model/hydra.ts: heads in lock-step, the L2 prefetch beside latency-bound
 * kernels) make a family's in-step time its marginal cost next to the others, so the times no longer add up to the
 * step (the check is skipped; `overlapping` says so). The read barriers' row is what leaving them out costs, negative:
 * the heads' overlap's gain; the prefetch's row is what it costs the step (negative: what it saves).
 * `HYDRA_OVERLAP_HEADS=0 HYDRA_PREFETCH_MB=0` profiles the same step one dispatch at a time, where the times add up.
 *
 * Bytes are the minimum each kernel must move (weights, KV rows read, activations in and out), from the dispatch's
 * override constants and the context length; GB/s is bytes / time, and "% of copy" compares that with the copy
 * kernel's bandwidth measured in the same process.
 * @module
 */

import { type Dispatch, encodeDispatches, type Gpu } from "../kernels/runtime.ts";
import { PassTimer } from "../kernels/timing.ts";
import { quantile } from "./stats.ts";

const median = (v: readonly number[]) => quantile(v, 0.5);

/** Rounds of the leave-one-family-out timings (`profileStep`); each time is its least median over them. */
const PROFILE_ROUNDS = 2;

/** The family of the read barriers of heads in lock-step. */
const READ_BARRIER_FAMILY = "read barrier";
/** The family of the L2 prefetches beside latency-bound dispatches. */
const PREFETCH_FAMILY = "L2 prefetch";
/** Families whose dispatches run beside others (a step with them does not reconcile by leaving families out). */
const OVERLAPPING_FAMILIES = [READ_BARRIER_FAMILY, PREFETCH_FAMILY];

/** Shapes the byte counts need that the constants do not carry. */
export interface ProfileShape {
  dModel: number;
  ffnHidden: number;
  paddedVocab: number;
  /** Keys each attention dispatch reads (the context length + the rows of the step: 1, or gamma for a verify pass). */
  keys: number;
  /** Bytes per K/V element in the cache (4 for f32, 2 for bf16/f16). */
  kvBytes: number;
}

/** One kernel family's share of a step. */
export interface FamilyProfile {
  family: string;
  dispatches: number;
  /** In-step time: the step's time less the step's time without this family, µs. */
  us: number;
  /** The family's dispatches each timed in a pass of its own, summed, µs. */
  alone_us: number;
  bytes: number;
  gbps: number;
  /** gbps / the copy kernel's GB/s. */
  frac_of_copy: number;
  /** us / the sum over families. */
  frac_of_step: number;
}

/** A decode step's profile. */
export interface StepProfile {
  families: FamilyProfile[];
  /** Sum of the families' in-step times, µs. */
  sum_us: number;
  /** The step timed whole (one compute pass), µs. */
  step_us: number;
  /** (sum_us - step_us) / step_us. */
  reconcile: number;
  /** The step has read barriers (heads in lock-step) or L2 prefetches: its families overlap, `reconcile` is no check. */
  overlapping: boolean;
  dispatches: number;
  copy_gbps: number;
}

const c = (d: Dispatch, name: string): number => {
  const v = d.constants[name];
  return typeof v === "boolean" ? (v ? 1 : 0) : v ?? 0;
};

/** The family name and minimum bytes of one dispatch of a step. */
export function classify(d: Dispatch, s: ProfileShape): { family: string; bytes: number } {
  // a kernel's path variants (subgroups, vec4, bf16 cache; QK statistics from the QKV matvec; the residual added
  // out of place; the read barrier's width): one family
  // (the decode attention's split pass names its generated rows, vec4 per key, unrolling and rows per round:
  // _m<rows>v<keyVec>u<n>p<n>[r<n>])
  const name = d.label.replace(/(_sg|_v4|_kvbf16)+$/, "").replace(/_m\d+v\d+(u\d+p\d+(r\d+)?)?$/, "")
    // prefill kernels' tile and variant suffixes (attention_prefill_tensor_d128_s4_w32, split_k_reduce_plain_v4)
    .replace(/^(attention_prefill_tensor|attention_prefill|split_k_reduce)_.*$/, "$1")
    .replace(/^attention_decode_qks$/, "attention_decode_qk").replace(/^(matvec.*)_qks$/, "$1")
    .replace(/^rmsnorm(_from)?(_sk)?(_half)?$/, "rmsnorm").replace(/^qk_norm_rope_sk$/, "qk_norm_rope").replace(
      /^read_barrier_\d+$/,
      "read_barrier",
    );
  const f32 = 4;
  // a weight product's family by its shape
  const product = (N: number, K: number, swiglu: boolean, other: string) =>
    swiglu
      ? "gate_up+swiglu"
      : N === 3 * s.dModel
      ? "qkv"
      : N === s.paddedVocab
      ? "lm_head"
      : K === s.ffnHidden
      ? "down"
      : N === s.dModel && K === s.dModel
      ? "o"
      : other;
  if (name.startsWith("matvec")) {
    const K = c(d, "K"), N = c(d, "N"), swiglu = c(d, "EPILOGUE") === 1;
    const rows = Number(/_m(\d+)/.exec(name)?.[1] ?? 1);
    // the post-norm prologue (matvec.ts): proj and the norm weight read, the new residual written
    const postNorm = /_norm(st)?$/.test(name);
    const bytes = N * K * 2 * (swiglu ? 2 : 1) + rows * (K + N) * f32 + (postNorm ? (2 * rows + 1) * K * f32 : 0);
    const family = product(N, K, swiglu, `matvec ${N}x${K}`);
    return { family: postNorm ? `${family}+post-norm` : family, bytes };
  }
  // a prefill GEMM (gemm.ts, gemm_tensor.ts): its product's family, "gemm" added; the weight rows of the columns it
  // computes read once, the M input rows (f32 at most) and the outputs (split-K: each split's partial sums). A product
  // whose last wave linear splits apart (`tailSplit`) is two such dispatches: the full waves' columns (a grid of fewer
  // tiles) and the rest (from the override N_BEGIN), so the columns are the grid's, from the tile in the name.
  if (/^gemm_(bf16|tensor)_/.test(name)) {
    const K = c(d, "K"), N = c(d, "N"), M = c(d, "M"), swiglu = /_swiglu_/.test(name);
    const splits = Number(/_split(\d+)$/.exec(name)?.[1] ?? 1);
    const t = /_s(\d+)x(\d+)_f(\d+)x(\d+)_/.exec(name) ?? /_t(\d+)x(\d+)_b(\d+)x(\d+)_/.exec(name);
    const [tileM, tileN] = name.startsWith("gemm_tensor")
      ? [16 * Number(t?.[1]) * Number(t?.[3]), 16 * Number(t?.[2]) * Number(t?.[4])]
      : [Number(t?.[1]) * Number(t?.[3]), Number(t?.[2]) * Number(t?.[4])];
    const grid = d.workgroups[0] * d.workgroups[1] * d.workgroups[2];
    const columns = Math.min(N - c(d, "N_BEGIN"), Math.ceil(grid / (Math.ceil(M / tileM) * splits)) * tileN) || N;
    const bytes = columns * K * 2 * (swiglu ? 2 : 1) + M * K * f32 + splits * M * columns * (swiglu ? 2 : 1) * f32;
    return { family: `${product(N, K, swiglu, `${N}x${K}`)} gemm`, bytes };
  }
  const m = c(d, "M") || Number(/^attention_decode\w*_m(\d+)v\d+/.exec(d.label)?.[1] ?? 1);
  switch (name) {
    case "attention_decode": {
      const nh = c(d, "NH"), hd = c(d, "HEAD_DIM");
      return { family: "attention", bytes: 2 * s.keys * nh * hd * s.kvBytes + 2 * m * nh * hd * f32 };
    }
    case "attention_decode_qk": { // fused: qkv read instead of q, the new K/V rows written
      const D = c(d, "NH") * c(d, "HEAD_DIM");
      return {
        family: "attention+qk_norm_rope",
        bytes: 2 * (s.keys - m) * D * s.kvBytes + 4 * m * D * f32 + 2 * m * D * s.kvBytes,
      };
    }
    case "attention_decode_merge":
      return { family: "attention merge", bytes: 2 * m * s.dModel * f32 };
    case "qk_norm_rope": { // with the QKV product's S split-K partials read instead of its rows (prefillNorm)
      const splits = c(d, "SPLIT_K") || 1;
      return {
        family: `qk_norm_rope+kv append${splits > 1 ? "+split-K sum" : ""}`,
        bytes: m * (3 * splits * c(d, "D") + c(d, "D")) * f32 + 2 * m * c(d, "D") * s.kvBytes,
      };
    }
    case "rmsnorm": {
      // the prefill fusions (rmsnorm.ts): S split-K partials read instead of one row, the f16 rows written too
      const D = c(d, "D"), rows = d.workgroups[0] * d.workgroups[1], splits = c(d, "SPLIT_K") || 1;
      const half = /_half(_sg)?(_v4)?$/.test(d.label);
      const family = (c(d, "RESIDUAL") ? "rmsnorm+residual" : "rmsnorm") + (splits > 1 ? "+split-K sum" : "") +
        (half ? "+f16 rows" : "");
      return { family, bytes: rows * D * (f32 * (splits + (c(d, "RESIDUAL") ? 2 : 1)) + (half ? 2 : 0)) };
    }
    case "prefetch": // loads the next product's first bytes into L2 (kernels/memory/prefetch.ts); the product counts them
      return { family: PREFETCH_FAMILY, bytes: 0 };
    case "read_barrier": // binds the outputs of the heads' last op, reads nothing (kernels/control/read_barrier.ts)
      return { family: READ_BARRIER_FAMILY, bytes: 0 };
    case "embedding_bf16":
      return { family: "embedding", bytes: m * c(d, "D") * (2 + f32) };
    case "copy_vec4":
      return { family: "copy", bytes: 2 * c(d, "COUNT") * 16 };
    case "combine_mean":
      return { family: "logits combine", bytes: (c(d, "HEADS") + 1) * m * c(d, "VP") * f32 };
    case "log_softmax": // the PoE jury: phase 0 sums HEADS logit rows into out, phase 1 normalises out in place
      return {
        family: "jury log_softmax",
        bytes: (c(d, "PHASE") === 0 ? c(d, "HEADS") + 1 : 2) * m * c(d, "VP") * f32,
      };
    case "argmax": // one pass over whole rows, or the first pass over chunks (each chunk's result: 16 bytes)
      return {
        family: "argmax",
        bytes: m * c(d, "VOCAB") * f32 + (c(d, "CHUNK") ? m * Math.ceil(c(d, "VOCAB") / c(d, "CHUNK")) * 16 : 0),
      };
    case "argmax_combine": // the second pass: the chunk results
      return { family: "argmax", bytes: m * Math.ceil(c(d, "VOCAB") / c(d, "CHUNK")) * 16 };
    default:
      return { family: name, bytes: 0 };
  }
}

/**
 * Timed replays per sample (`passesFor` a step's µs), back to back: enough for ~40 ms of GPU work between two readbacks (~11 ms each), since an
 * idle GPU lowers its clocks (measured: 4 passes of a 1.8 ms 1B step left the GPU idle 60% of the time and the
 * leave-one-out differences came out 30-60% off; a 6 ms 7B step with 4 passes reconciled within 1.3%).
 */
function passesFor(stepUs: number): number {
  return Math.max(4, Math.min(64, Math.ceil(40_000 / stepUs)));
}

/** Median µs of `samples` samples of `step` replayed whole, `timer.capacity` passes a sample. */
async function timeWhole(
  gpu: Gpu,
  timer: PassTimer,
  step: readonly Dispatch[],
  restore: (encoder: GPUCommandEncoder) => void,
  samples: number,
): Promise<number> {
  const ms: number[] = [];
  for (let sample = 0; sample < samples; sample++) {
    timer.reset();
    const encoder = gpu.device.createCommandEncoder({ label: "profile whole" });
    for (let r = 0; r < timer.capacity; r++) {
      restore(encoder);
      const pass = encoder.beginComputePass(timer.pass("step"));
      encodeDispatches(pass, step);
      pass.end();
    }
    timer.resolve(encoder);
    gpu.device.queue.submit([encoder.finish()]);
    ms.push(...await timer.readMs());
  }
  return median(ms) * 1000;
}

/** Median µs of each dispatch of `step` timed in a pass of its own (the step's dispatches in order). */
async function timeAlone(
  gpu: Gpu,
  step: readonly Dispatch[],
  restore: (encoder: GPUCommandEncoder) => void,
  samples: number,
  passes: number,
): Promise<number[]> {
  const n = step.length;
  const perSubmit = Math.max(1, Math.min(passes, Math.floor(2048 / n))); // <= 4096 timestamps a query set
  const timer = new PassTimer(gpu, perSubmit * n);
  const per: number[][] = step.map(() => []);
  try {
    for (let sample = 0; sample < samples; sample++) {
      timer.reset();
      const encoder = gpu.device.createCommandEncoder({ label: "profile alone" });
      for (let r = 0; r < perSubmit; r++) {
        restore(encoder);
        for (const d of step) {
          const pass = encoder.beginComputePass(timer.pass(d.label));
          encodeDispatches(pass, [d]);
          pass.end();
        }
      }
      timer.resolve(encoder);
      gpu.device.queue.submit([encoder.finish()]);
      (await timer.readMs()).forEach((v, i) => per[i % n].push(v));
    }
  } finally {
    timer.destroy();
  }
  return per.map((v) => median(v) * 1000);
}

/**
 * Profiles `step` (dispatches recorded for one decode step, or a PoE verify pass). `restore(encoder)` records what
 * puts the model back in the state before the step (the control block copy). Takes `samples` samples of each replay.
 * `groups[i]`, where given, groups dispatch i under that name instead of its kernel's family (a PoE round's accept
 * part as one row), with its bytes as classified. `wholeOnly` times the step whole only: no family rows (each costs
 * the step's time again, replayed without it), for an A/B of the whole step.
 */
export async function profileStep(
  gpu: Gpu,
  step: readonly Dispatch[],
  restore: (encoder: GPUCommandEncoder) => void,
  shape: ProfileShape,
  copyGbps: number,
  samples = 20,
  groups: readonly (string | undefined)[] = [],
  wholeOnly = false,
): Promise<StepProfile> {
  const classes = step.map((d, i) => {
    const k = classify(d, shape);
    return { family: groups[i] ?? k.family, bytes: k.bytes };
  });
  // `wholeOnly`: the step timed whole and nothing else (no family rows), for an A/B of the step's time
  const names = wholeOnly ? [] : [...new Set(classes.map((c) => c.family))];
  let timer = new PassTimer(gpu, 4);
  let stepUs: number;
  const without = new Map<string, number>();
  try {
    const warm = await timeWhole(gpu, timer, step, restore, 3); // warm-up: clocks up, pipelines resident
    timer.destroy();
    timer = new PassTimer(gpu, passesFor(warm));
    // PROFILE_ROUNDS rounds over the whole step and every step without a family, each time the least over the rounds:
    // the H200 can run a measurement at its idle clock (345 MHz, seen with nvidia-smi dmon), which made a Dawn profile
    // read the step without control_step 12 ms slower than with it (session V).
    stepUs = Infinity;
    for (let round = 0; round < PROFILE_ROUNDS; round++) {
      stepUs = Math.min(stepUs, await timeWhole(gpu, timer, step, restore, samples));
      for (const family of names) {
        const us = await timeWhole(gpu, timer, step.filter((_, i) => classes[i].family !== family), restore, samples);
        without.set(family, Math.min(without.get(family) ?? Infinity, us));
      }
    }
  } finally {
    timer.destroy();
  }
  const alone = wholeOnly ? [] : await timeAlone(gpu, step, restore, samples, passesFor(stepUs));
  const families = names.map((family) => {
    const idx = classes.flatMap((c, i) => c.family === family ? [i] : []);
    const us = stepUs - without.get(family)!;
    const bytes = idx.reduce((a, i) => a + classes[i].bytes, 0);
    const gbps = us > 0 ? bytes / us / 1e3 : 0;
    return {
      family,
      dispatches: idx.length,
      us,
      alone_us: idx.reduce((a, i) => a + alone[i], 0),
      bytes,
      gbps,
      frac_of_copy: gbps / copyGbps,
      frac_of_step: us / stepUs,
    };
  }).sort((a, b) => b.us - a.us);
  const sumUs = families.reduce((a, f) => a + f.us, 0);
  return {
    families,
    sum_us: sumUs,
    step_us: stepUs,
    reconcile: (sumUs - stepUs) / stepUs,
    overlapping: classes.some((c) => OVERLAPPING_FAMILIES.includes(c.family)),
    dispatches: step.length,
    copy_gbps: copyGbps,
  };
}

/** The profile as a Markdown table (the form PERF.md keeps). */
export function profileTable(p: StepProfile): string {
  const rows = [
    "| family | dispatches | in-step us | alone us | MB moved | GB/s in step | % of copy | % of step |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...p.families.map((f) =>
      `| ${f.family} | ${f.dispatches} | ${f.us.toFixed(1)} | ${f.alone_us.toFixed(1)} | ${
        (f.bytes / 1e6).toFixed(1)
      } | ${f.gbps.toFixed(0)} | ${(100 * f.frac_of_copy).toFixed(0)}% | ${(100 * f.frac_of_step).toFixed(1)}% |`
    ),
    `| **sum of families** | ${p.dispatches} | ${p.sum_us.toFixed(1)} | ${
      p.families.reduce((a, f) => a + f.alone_us, 0).toFixed(1)
    } | ${(p.families.reduce((a, f) => a + f.bytes, 0) / 1e6).toFixed(1)} | | | |`,
    `| **step, one pass** | | ${p.step_us.toFixed(1)} | | | | | sum ${(100 * p.reconcile).toFixed(1)}% off |`,
    ...(p.overlapping
      ? [
        "",
        "Dispatches overlap here (heads in lock-step, L2 prefetches), so each in-step time is a marginal cost and the " +
        "sum is no check. HYDRA_OVERLAP_HEADS=0 HYDRA_PREFETCH_MB=0 gives the one-at-a-time step.",
      ]
      : []),
  ];
  return rows.join("\n");
}
