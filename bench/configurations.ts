/**
 * The three timed configurations of design.md section 1 and the benchmarks of section 5, in the original benchmark's
 * vocabulary: `buildBaselineModel`, `buildHydraModel`, `buildPoe`, `benchmarkTtft`, `benchmarkDecode`,
 * `benchmarkPoeTtft`, `benchmarkPoe`.
 *
 * GPU time comes from timestamp queries around the timed compute passes; each repetition reads its timestamps back
 * (one ~11 ms sync, outside the measured GPU time). PoE calls are timed by wall clock, their syncs included, because
 * that is what a user of generate_with_cache waits for.
 * @module
 */

import { PassTimer } from "../kernels/timing.ts";
import { type Dispatch, encodePass, type Gpu } from "../kernels/runtime.ts";
import { CTL } from "../kernels/control/ctl.ts";
import type { KvDtype } from "../kernels/attention/kv_cache.ts";
import type { ModelConfig } from "../model/config.ts";
import { Decoder, type PickMode } from "../model/generate.ts";
import { type HydraShape, HydraTransformer } from "../model/hydra.ts";
import type { PrefillMath } from "../kernels/matmul/linear.ts";
import { type EnsembleWeights, loadEnsemble } from "../model/ensemble.ts";
import { blockBytes, destroyWeights } from "../model/weights.ts";
import { PoE, type PoeCallResult } from "../poe/poe.ts";
import { decodePositions } from "./config.ts";
import { benchmark, type BenchmarkOptions, type BenchmarkResult, planSamples } from "./harness.ts";
import {
  decodePosition,
  pickStats,
  type PoeCallCounts,
  poeGammaResult,
  type PoeNoopCounts,
  poeNoopCounts,
} from "./metrics.ts";
import { decodeResult } from "./headline.ts";
import type { DecodeResult, PoeGammaResult, TimedStats } from "./results_types.ts";

/** Budgets of one benchmark. */
export type Budgets = Pick<BenchmarkOptions, "warmupMs" | "repMs" | "onMeasured">;

/** Prints progress (the runner passes a terminal logger). */
export type Progress = (message: string) => void;

/** Vanilla OLMo-2 with random weights generated on the GPU: one head of depth 0 on a trunk of every layer. */
export function buildBaselineModel(
  gpu: Gpu,
  config: ModelConfig,
  o: { maxPos: number; maxRows: number; seed: number; kvDtype?: KvDtype; prefillMath?: PrefillMath },
): Promise<HydraTransformer> {
  return buildHydraModel(gpu, config, { ...o, nHeads: 1, headsDepth: 0, weights: { kind: "random", seed: o.seed } });
}

/** A HydraTransformer of `nHeads` heads of `headsDepth` blocks, with random, synthetic-ensemble or real weights. */
export async function buildHydraModel(
  gpu: Gpu,
  config: ModelConfig,
  o: {
    nHeads: number;
    headsDepth: number;
    maxPos: number;
    maxRows: number;
    maxLogitRows?: number;
    /** K/V cache element type (HydraShape's default, bf16, when absent). */
    kvDtype?: KvDtype;
    weights: EnsembleWeights;
    /** Kernel fusion (HydraShape's default when absent; tools/profile.ts A/B-tests it). */
    fuse?: HydraShape["fuse"];
    /** The prefill GEMM's arithmetic where no tensor cores run (HydraShape's default, f32, when absent). */
    prefillMath?: PrefillMath;
  },
  progress?: Progress,
): Promise<HydraTransformer> {
  const w = await loadEnsemble(
    gpu,
    { config, nHeads: o.nHeads, headsDepth: o.headsDepth, weights: o.weights },
    progress,
  );
  try {
    return await gpu.scoped(
      `allocating KV caches of ${o.maxPos} positions`,
      () =>
        new HydraTransformer(gpu, w, {
          maxPos: o.maxPos,
          maxRows: o.maxRows,
          maxLogitRows: o.maxLogitRows,
          kvDtype: o.kvDtype,
          fuse: o.fuse,
          prefillMath: o.prefillMath,
        }),
    );
  } catch (e) {
    destroyWeights(w);
    throw e;
  }
}

/** The PoE decoder on a Hydra. */
export function buildPoe(
  model: HydraTransformer,
  o: { gamma: number; beta: number; temperature: number; maxNewTokens: number; seed: number },
  tokenizer?: ConstructorParameters<typeof PoE>[2],
  chat?: ConstructorParameters<typeof PoE>[3],
): PoE {
  return new PoE(model, o, tokenizer, chat);
}

/** Weight bytes one single-token step streams: the trunk plus the given heads' blocks and lm_heads. */
export function weightBytesPerStep(model: HydraTransformer, heads: readonly number[]): number {
  const w = model.weights;
  let bytes = w.trunk.reduce((s, b) => s + blockBytes(b), 0);
  for (const h of heads) {
    bytes += w.heads[h].blocks.reduce((s, b) => s + blockBytes(b), 0) + w.heads[h].norm.size + w.heads[h].lmHead.size;
  }
  return bytes + model.config.dModel * 2; // + the one embedding row gathered
}

/**
 * Timed passes per sample. A sample is the mean GPU time of this many identical passes submitted back to back: one
 * pass per readback would leave the GPU idle ~80% of the time waiting on Deno's ~11 ms sync, and an idle-looking GPU
 * lowers its clocks (measured on the H100: the 1B decode step drifted from 2.2 to 6.7 ms over 20 s of single-pass
 * samples, while back-to-back passes stay at full clock). A pass of LONG_PASS_MS or more (harness.ts) keeps the GPU
 * busy alone and is a sample by itself.
 */
export const PASSES_PER_SAMPLE = 8;

/**
 * Fewest TTFT samples: a TTFT distribution (the graph's KDE) needs more than one point, and a prefill can outlast the
 * default repetition budget. For long passes (a 7B prefill of 2,048 tokens takes ~1.3 s) `planSamples` lets the
 * budget lower it, to LONG_PASS_MIN_SAMPLES at the least.
 */
export const TTFT_MIN_SAMPLES = 10;

/**
 * A measurement that starts after the GPU idled longer than this (ms: no measurement ran, e.g. while a model was
 * built) first ramps the clocks up (`rampClocks`).
 */
export const RAMP_AFTER_IDLE_MS = 1000;

/** The clock ramp lasts this many times the warm-up budget (warmup_ms: 200 ms by default, so 1 s). */
export const RAMP_WARMUPS = 5;

/** performance.now() when the last GPU measurement of this process ended. */
let lastMeasurementEnd = Number.NEGATIVE_INFINITY;

/**
 * Wall ms of clock ramp a measurement starting `idleMs` after the previous one gets: RAMP_WARMUPS x `warmupMs` after an
 * idle GPU, else none. Why: an idle GPU lowers its clocks and raises them only under sustained load (docs/PERF.md,
 * "Caution, learned the hard way"). On the H200 (2026-11-30, session U) a process that began with Dawn measured its
 * 7B 128-token TTFT, its first measurement after ~10 s of pipeline builds, 1.6-1.8x slower than the same process run
 * second in a call, whatever its toggles; its 2,048-token TTFT and decode, later, agreed within 0.4%. Not yet re-measured
 * with the ramp.
 */
export function rampMsAfter(idleMs: number, warmupMs: number): number {
  return idleMs > RAMP_AFTER_IDLE_MS ? RAMP_WARMUPS * warmupMs : 0;
}

/**
 * A measurement whose slowest kept sample (`max_ms`, after Tukey's filter) exceeds its fastest by this factor is taken
 * again after a clock ramp (`gpuBenchmark`), and the first one's samples are kept as `discarded_ms`. Why: on the H200
 * (results/2026-12-01_run02) the 1B's 2,048-token TTFT on Dawn read five samples at 53-59 ms, then five at 35.9: the
 * clocks were still rising, no idle second had gone before to trigger the ramp, and the median (44.5 ms) was neither.
 * Steady measurements there spread by under 1% (e.g. 37.61-37.69 ms over 24 samples). It was 1.2 until
 * results/2026-12-02_run04, whose same measurement kept samples at three clock steps (29.2, 27.25, 25.6 ms: 1.14x) and
 * took the middle one for its median; every steady TTFT and decode measurement of the eight runs before spread by at
 * most 3%, so 1.05 re-measures what is not one clock state and nothing else.
 */
export const RESAMPLE_SPREAD = 1.05;

/** Whether `s` spreads too far to be one steady measurement (see RESAMPLE_SPREAD). */
export function spreadTooFar(s: { min_ms: number; max_ms: number }): boolean {
  return s.max_ms > RESAMPLE_SPREAD * s.min_ms;
}

/**
 * `measure`, and where its samples spread too far (`spreadTooFar`), `ramp` and `measure` once more: the second
 * measurement with the first one's samples as `discarded_ms`. `onMeasured` is passed to the first only (one progress
 * tick a measurement).
 */
export async function measureSteady<T extends TimedStats>(
  measure: (onMeasured?: (result: T) => void) => Promise<T>,
  ramp: () => Promise<unknown>,
  onMeasured?: (result: T) => void,
): Promise<T> {
  const first = await measure(onMeasured);
  if (!spreadTooFar(first)) return first;
  await ramp();
  return { ...(await measure()), discarded_ms: first.raw_ms };
}

/**
 * Keeps the GPU busy with untimed copies of the measured pass for `ms` of wall time, in submissions grown to ~50 ms each
 * (a pass per readback would leave the GPU idle behind Deno's ~11 ms sync). Returns the passes run.
 */
export async function rampClocks(
  gpu: Gpu,
  label: string,
  encode: (encoder: GPUCommandEncoder, pass: GPUComputePassDescriptor) => void,
  ms: number,
): Promise<number> {
  const end = performance.now() + ms;
  let batch = 1, passes = 0;
  while (performance.now() < end) {
    const t0 = performance.now();
    const encoder = gpu.device.createCommandEncoder({ label: `${label} (clock ramp)` });
    for (let i = 0; i < batch; i++) encode(encoder, { label: `${label} (clock ramp)` });
    gpu.device.queue.submit([encoder.finish()]);
    await gpu.finish();
    passes += batch;
    batch = Math.min(1024, Math.max(batch, Math.ceil((batch * 50) / Math.max(performance.now() - t0, 0.01))));
  }
  return passes;
}

/**
 * Times GPU work: `encode(encoder, descriptor)` records one pass (and any copies it needs before it, e.g. a state
 * reset) with the given timestamp descriptor. After an idle GPU the clocks are ramped up first (`rampMsAfter`), and a
 * measurement that spreads too far is ramped and taken again (`measureSteady`). One probe pass is timed (it also warms
 * up), and `planSamples` decides from its GPU time how many back-to-back passes a sample averages (PASSES_PER_SAMPLE,
 * or one for a long pass) and how few samples are enough (`minSamples`, or fewer for long passes when the budget
 * affords no more).
 */
async function gpuBenchmark(
  gpu: Gpu,
  label: string,
  encode: (encoder: GPUCommandEncoder, pass: GPUComputePassDescriptor) => void,
  budgets: Budgets,
  minSamples = 1,
): Promise<BenchmarkResult> {
  const timer = new PassTimer(gpu, PASSES_PER_SAMPLE);
  const sample = async (passes: number) => {
    timer.reset();
    const encoder = gpu.device.createCommandEncoder({ label });
    for (let i = 0; i < passes; i++) encode(encoder, timer.pass(label));
    timer.resolve(encoder);
    gpu.device.queue.submit([encoder.finish()]);
    const ms = await timer.readMs();
    return ms.reduce((a, b) => a + b, 0) / ms.length;
  };
  try {
    const ramp = rampMsAfter(performance.now() - lastMeasurementEnd, budgets.warmupMs);
    if (ramp > 0) await rampClocks(gpu, label, encode, ramp);
    const plan = planSamples(await sample(1), { repMs: budgets.repMs, passesPerSample: PASSES_PER_SAMPLE, minSamples });
    return await measureSteady(
      (onMeasured) => benchmark(() => sample(plan.passes), { ...budgets, minReps: plan.minReps, onMeasured }),
      () => rampClocks(gpu, label, encode, RAMP_WARMUPS * budgets.warmupMs),
      budgets.onMeasured,
    );
  } finally {
    timer.destroy();
    lastMeasurementEnd = performance.now();
  }
}

/** `benchmark_ttft`: prefill of the prompt + the pick of the next token (last position only), GPU time. */
export async function benchmarkTtft(
  decoder: Decoder,
  promptIds: readonly number[],
  mode: PickMode,
  budgets: Budgets,
): Promise<TimedStats> {
  decoder.setPrompt(promptIds, 1);
  const prefill = decoder.prefill(mode);
  const stats = await gpuBenchmark(
    decoder.gpu,
    "ttft",
    (encoder, pass) => {
      decoder.encodeReset(encoder);
      encodePass(encoder, prefill, pass);
    },
    budgets,
    TTFT_MIN_SAMPLES,
  );
  return pickStats(stats);
}

/** `forward_and_sample`: one naive Hydra step (trunk + every head, mean of logits, argmax), as dispatches. */
export function forwardAndSample(decoder: Decoder): Dispatch[] {
  return decoder.step("naive");
}

/**
 * `benchmark_decode`: generate `genLength` tokens once (filling the KV cache), then at every `stepInterval`-th
 * generated position time one decode step, the control block reset to that position (LEN = POS = prompt + p) before
 * every timed pass.
 */
export async function benchmarkDecode(
  decoder: Decoder,
  promptIds: readonly number[],
  mode: PickMode,
  o: Budgets & { genLength: number; stepInterval: number },
  progress?: Progress,
): Promise<DecodeResult> {
  await decoder.generate(promptIds, o.genLength, mode);
  const step = decoder.step(mode);
  const positions = [];
  for (const p of decodePositions({ gen_length: o.genLength, step_interval: o.stepInterval })) {
    const stats = await benchmarkStepAt(decoder, step, promptIds.length + p, `decode ${p}`, o);
    positions.push(decodePosition(p, stats));
    progress?.(`decode position ${p}/${o.genLength}: ${stats.median_ms.toFixed(3)} ms (${stats.n} samples)`);
  }
  return decodeResult(o.genLength, o.stepInterval, positions);
}

/**
 * Times decode step `step` (`Decoder.step`) at KV length `length`: the control block is copied to LEN = POS =
 * `length` before every timed pass, so each pass processes position `length` over the `length` cached positions
 * below it (and writes row `length`: the model's maxPos must exceed it).
 */
export async function benchmarkStepAt(
  decoder: Decoder,
  step: readonly Dispatch[],
  length: number,
  label: string,
  budgets: Budgets,
): Promise<BenchmarkResult> {
  const gpu = decoder.gpu, model = decoder.model;
  if (!(Number.isInteger(length) && length >= 0 && length < model.maxPos)) {
    throw new Error(`benchmarkStepAt: KV length ${length} outside 0..${model.maxPos - 1} (maxPos ${model.maxPos})`);
  }
  const at = gpu.buffer("ctl at position", model.ctl.size);
  try {
    const ctl = new Uint32Array(model.ctl.size / 4);
    ctl[CTL.POS] = ctl[CTL.LEN] = length;
    ctl[CTL.ACTIVE] = 1;
    ctl[CTL.MAX_OUT] = 0xffffffff; // never gates: each pass starts from this copy
    gpu.write(at, ctl);
    return await gpuBenchmark(gpu, label, (encoder, pass) => {
      encoder.copyBufferToBuffer(at, 0, model.ctl, 0, at.size);
      encodePass(encoder, step, pass);
    }, budgets);
  } finally {
    at.destroy();
  }
}

/** `benchmark_poe_ttft`: `residual_forward` over all heads, last token only, fresh KV each time (GPU time). */
export async function benchmarkPoeTtft(poe: PoE, promptIds: readonly number[], budgets: Budgets): Promise<TimedStats> {
  const encode = (encoder: GPUCommandEncoder, pass: GPUComputePassDescriptor) =>
    poe.encodePrefill(encoder, promptIds, pass);
  return pickStats(await gpuBenchmark(poe.gpu, "poe ttft", encode, budgets, TTFT_MIN_SAMPLES));
}

/** Fewest timed PoE calls per gamma: a call can outlast the repetition budget, and a median of one is no median. */
export const POE_MIN_CALLS = 5;

/**
 * `benchmark_poe`: whole `generate_with_cache` calls on `promptIds` (already templated and tokenized), wall time, and
 * the no-op rounds they encoded (the first call, the harness's estimate, is the decoder's cold call).
 */
export async function benchmarkPoe(
  poe: PoE,
  promptIds: readonly number[],
  budgets: Budgets,
): Promise<PoeGammaResult & PoeNoopCounts> {
  const calls: PoeCallResult[] = [];
  const stats = await benchmark(async () => {
    calls.push(await poe.generateIds(promptIds));
  }, { ...budgets, minReps: POE_MIN_CALLS });
  const timed: PoeCallCounts[] = calls.slice(-stats.n);
  return { ...poeGammaResult(poe.options.gamma, stats, timed), ...poeNoopCounts(timed, calls[0], poe.round.length) };
}
