/**
 * Where a decode step goes: the GPU time of every dispatch of a recorded step, grouped by kernel family, with the
 * bytes each family must move at least and the bandwidth that implies.
 *
 * Method. The step is replayed twice over:
 *   - whole: the dispatches in one compute pass (as the benchmark times a step), `PASSES` such passes back to back per
 *     sample, each with its own begin/end timestamps;
 *   - split: every dispatch in a compute pass of its own with begin/end timestamps, the step's dispatches in order,
 *     `PASSES` steps back to back per sample (so the data flow and the clocks are those of real decoding).
 * Before every replay the control block is restored (the step's control kernel advances it), so every replay runs at
 * the same context length. A pass of its own costs a dispatch more than its place in one pass does (measured on an
 * H200: ~3 us, 12% of a 7B step's 294 dispatches), so that overhead is measured alongside (a gated-off dispatch timed
 * in n passes of its own and n times in one pass) and subtracted from each dispatch's median pass time. A family's
 * time is the sum over its dispatches. The report states the sum and the step timed whole and their difference, and
 * `--check` fails when they differ by more than 5%.
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

/** Shapes the byte counts need that the constants do not carry. */
export interface ProfileShape {
  dModel: number;
  ffnHidden: number;
  paddedVocab: number;
  /** Keys each attention dispatch reads (the context length + the rows of the step). */
  keys: number;
  /** Bytes per K/V element in the cache (4 for f32, 2 for bf16/f16). */
  kvBytes: number;
}

/** One kernel family's share of a step. */
export interface FamilyProfile {
  family: string;
  dispatches: number;
  us: number;
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
  /** Sum of the per-dispatch times (split replay), µs. */
  sum_us: number;
  /** The step timed whole (one compute pass), µs. */
  step_us: number;
  /**
   * What a compute pass of its own adds to a dispatch, µs: (n one-dispatch passes - one pass of n dispatches) / n for
   * a gated-off dispatch, measured alongside. Subtracted from every dispatch of the split replay.
   */
  pass_overhead_us: number;
  /** (sum_us - step_us) / step_us, sum_us after the pass overhead is subtracted. */
  reconcile: number;
  dispatches: number;
  copy_gbps: number;
}

const c = (d: Dispatch, name: string): number => {
  const v = d.constants[name];
  return typeof v === "boolean" ? (v ? 1 : 0) : v ?? 0;
};

/** The family name and minimum bytes of one dispatch of a step. */
export function classify(d: Dispatch, s: ProfileShape): { family: string; bytes: number } {
  const name = d.label.replace(/_sg$/, ""); // the subgroup variant of a kernel is the same family
  const f32 = 4;
  if (name.startsWith("matvec")) {
    const K = c(d, "K"), N = c(d, "N"), swiglu = c(d, "EPILOGUE") === 1;
    const rows = Number(/_m(\d+)/.exec(name)?.[1] ?? 1);
    const bytes = N * K * 2 * (swiglu ? 2 : 1) + rows * (K + N) * f32;
    let family = `matvec ${N}x${K}`;
    if (swiglu) family = "gate_up+swiglu";
    else if (N === 3 * s.dModel) family = "qkv";
    else if (N === s.paddedVocab) family = "lm_head";
    else if (K === s.ffnHidden) family = "down";
    else if (N === s.dModel && K === s.dModel) family = "o";
    return { family, bytes };
  }
  const m = c(d, "M") || 1;
  switch (name) {
    case "attention_decode": {
      const nh = c(d, "NH"), hd = c(d, "HEAD_DIM");
      return { family: "attention", bytes: 2 * s.keys * nh * hd * s.kvBytes + 2 * m * nh * hd * f32 };
    }
    case "attention_decode_merge":
      return { family: "attention merge", bytes: 2 * m * s.dModel * f32 };
    case "qk_norm_rope":
      return {
        family: "qk_norm_rope+kv append",
        bytes: m * (3 * c(d, "D") + c(d, "D")) * f32 + 2 * m * c(d, "D") * s.kvBytes,
      };
    case "rmsnorm": {
      const D = c(d, "D"), rows = d.workgroups[0] * d.workgroups[1];
      return {
        family: c(d, "RESIDUAL") ? "rmsnorm+residual" : "rmsnorm",
        bytes: rows * D * f32 * (c(d, "RESIDUAL") ? 3 : 2),
      };
    }
    case "embedding_bf16":
      return { family: "embedding", bytes: m * c(d, "D") * (2 + f32) };
    case "copy_vec4":
      return { family: "copy", bytes: 2 * c(d, "COUNT") * 16 };
    case "combine_mean":
      return { family: "logits combine", bytes: (c(d, "HEADS") + 1) * m * c(d, "VP") * f32 };
    case "log_softmax":
      return { family: "logits combine", bytes: c(d, "HEADS") * m * c(d, "VP") * f32 };
    case "argmax":
      return { family: "argmax", bytes: m * c(d, "VP") * f32 };
    default:
      return { family: name, bytes: 0 };
  }
}

/** Timed replays per sample (back to back: an idle GPU lowers its clocks). */
const PASSES = 4;

/**
 * Profiles `step` (dispatches recorded for one decode step). `restore(encoder)` records what puts the model back in
 * the state before the step (the control block copy). Takes `samples` samples of each replay.
 */
export async function profileStep(
  gpu: Gpu,
  step: readonly Dispatch[],
  restore: (encoder: GPUCommandEncoder) => void,
  shape: ProfileShape,
  copyGbps: number,
  samples = 20,
  gatedOff?: Dispatch,
): Promise<StepProfile> {
  const overheadUs = gatedOff ? await passOverheadUs(gpu, gatedOff, step.length, samples) : 0;
  const n = step.length;
  // Split replay: one timed pass per dispatch; at most 2048 passes (4096 timestamps) per submission.
  const perSubmit = Math.max(1, Math.min(PASSES, Math.floor(2048 / n)));
  const split = new PassTimer(gpu, perSubmit * n);
  const whole = new PassTimer(gpu, PASSES);
  const perDispatch: number[][] = step.map(() => []);
  const wholeMs: number[] = [];
  try {
    for (let sample = 0; sample < samples; sample++) {
      split.reset();
      let encoder = gpu.device.createCommandEncoder({ label: "profile split" });
      for (let r = 0; r < perSubmit; r++) {
        restore(encoder);
        for (const d of step) {
          const pass = encoder.beginComputePass(split.pass(d.label));
          encodeDispatches(pass, [d]);
          pass.end();
        }
      }
      split.resolve(encoder);
      gpu.device.queue.submit([encoder.finish()]);
      const ms = await split.readMs();
      ms.forEach((v, i) => perDispatch[i % n].push(v));

      whole.reset();
      encoder = gpu.device.createCommandEncoder({ label: "profile whole" });
      for (let r = 0; r < PASSES; r++) {
        restore(encoder);
        const pass = encoder.beginComputePass(whole.pass("step"));
        encodeDispatches(pass, step);
        pass.end();
      }
      whole.resolve(encoder);
      gpu.device.queue.submit([encoder.finish()]);
      wholeMs.push(...await whole.readMs());
    }
  } finally {
    split.destroy();
    whole.destroy();
  }
  const byFamily = new Map<string, { dispatches: number; us: number; bytes: number }>();
  step.forEach((d, i) => {
    const { family, bytes } = classify(d, shape);
    const f = byFamily.get(family) ?? { dispatches: 0, us: 0, bytes: 0 };
    f.dispatches++;
    f.us += Math.max(0, median(perDispatch[i]) * 1000 - overheadUs);
    f.bytes += bytes;
    byFamily.set(family, f);
  });
  const sumUs = [...byFamily.values()].reduce((a, f) => a + f.us, 0);
  const stepUs = median(wholeMs) * 1000;
  const families = [...byFamily.entries()]
    .map(([family, f]) => {
      const gbps = f.us > 0 ? f.bytes / f.us / 1e3 : 0;
      return {
        family,
        dispatches: f.dispatches,
        us: f.us,
        bytes: f.bytes,
        gbps,
        frac_of_copy: gbps / copyGbps,
        frac_of_step: f.us / sumUs,
      };
    })
    .sort((a, b) => b.us - a.us);
  return {
    families,
    sum_us: sumUs,
    step_us: stepUs,
    pass_overhead_us: overheadUs,
    reconcile: (sumUs - stepUs) / stepUs,
    dispatches: n,
    copy_gbps: copyGbps,
  };
}

/** µs a compute pass of its own adds to a dispatch (see StepProfile.pass_overhead_us). */
async function passOverheadUs(gpu: Gpu, noop: Dispatch, n: number, samples: number): Promise<number> {
  const count = Math.min(n, 1000);
  const split = new PassTimer(gpu, count), whole = new PassTimer(gpu, 1);
  const diffs: number[] = [];
  try {
    for (let s = 0; s < Math.max(5, Math.ceil(samples / 2)); s++) {
      split.reset();
      whole.reset();
      const encoder = gpu.device.createCommandEncoder({ label: "pass overhead" });
      for (let i = 0; i < count; i++) {
        const pass = encoder.beginComputePass(split.pass("noop"));
        encodeDispatches(pass, [noop]);
        pass.end();
      }
      const pass = encoder.beginComputePass(whole.pass("noops"));
      encodeDispatches(pass, Array(count).fill(noop));
      pass.end();
      split.resolve(encoder);
      whole.resolve(encoder);
      gpu.device.queue.submit([encoder.finish()]);
      const a = (await split.readMs()).reduce((x, y) => x + y, 0), b = (await whole.readMs())[0];
      diffs.push(((a - b) / count) * 1000);
    }
  } finally {
    split.destroy();
    whole.destroy();
  }
  return Math.max(0, median(diffs));
}

/** The profile as a Markdown table (the form PERF.md keeps). */
export function profileTable(p: StepProfile): string {
  const rows = [
    "| family | dispatches | GPU us | MB moved | GB/s | % of copy | % of step |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...p.families.map((f) =>
      `| ${f.family} | ${f.dispatches} | ${f.us.toFixed(1)} | ${(f.bytes / 1e6).toFixed(1)} | ${f.gbps.toFixed(0)} | ${
        (100 * f.frac_of_copy).toFixed(0)
      }% | ${(100 * f.frac_of_step).toFixed(1)}% |`
    ),
    `| **sum of dispatches** | ${p.dispatches} | ${p.sum_us.toFixed(1)} | ${
      (p.families.reduce((a, f) => a + f.bytes, 0) / 1e6).toFixed(1)
    } | | | |`,
    `| **step, one pass** | | ${p.step_us.toFixed(1)} | | | | sum ${(100 * p.reconcile).toFixed(1)}% off |`,
    "",
    `Each dispatch's time is its own timed pass less ${p.pass_overhead_us.toFixed(2)} us, what a pass of its own ` +
    "adds (a gated-off dispatch, timed alone in n passes and n times in one pass).",
  ];
  return rows.join("\n");
}
