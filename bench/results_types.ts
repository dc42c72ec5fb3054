/**
 * The layout of results.json, as TypeScript types (checked by `validateResults` in schema.ts).
 *
 * Units: every `*_ms` is milliseconds, `*_tps` and `tokens_per_s` tokens per second, bytes are bytes, bandwidth is
 * GB/s (1e9 bytes per second). Metric names are those of design.md section 5.
 * @module
 */

import type { BenchConfig, ConfigurationName, KnobSource } from "./config.ts";
import type { ProcessIdentity } from "./process.ts";
import type { WebgpuRuntime } from "../kernels/runtime.ts";

/** Version of this layout; bumped on any change a reader of an older file would trip over. */
export const RESULTS_SCHEMA_VERSION = 1;

/**
 * Summary of timed repetitions. `raw_ms` holds every sample in the order measured; `filtered_ms` the samples within
 * Tukey's fences (1.5 x IQR beyond the quartiles), in the same order. median/mean/p10/p90/min/max are computed on
 * `filtered_ms` (see stats.ts); `n` is the number of timed repetitions (`raw_ms.length`).
 */
export interface BenchStats {
  median_ms: number;
  mean_ms: number;
  p10_ms: number;
  p90_ms: number;
  min_ms: number;
  max_ms: number;
  raw_ms: number[];
  filtered_ms: number[];
  n: number;
}

/**
 * What a sample measures: "gpu" = GPU time from timestamp queries written at the begin and end of a timed compute
 * pass, averaged over the identical passes one repetition submits back to back (bench/configurations.ts,
 * PASSES_PER_SAMPLE: keeps the GPU at full clock; a single pass when one lasts LONG_PASS_MS or more, harness.ts);
 * "wall" = performance.now() around the whole call, its waits on the GPU (~11 ms each in Deno) included.
 */
export type Clock = "gpu" | "wall";

/** BenchStats with the clock its samples were read from. */
export interface TimedStats extends BenchStats {
  clock: Clock;
  /**
   * The samples of a first measurement of the same work, discarded because they spread too far to be one steady
   * measurement (clocks still rising; bench/configurations.ts, RESAMPLE_SPREAD): the stats above are of a second one,
   * taken after a clock ramp. Absent when the first was kept.
   */
  discarded_ms?: number[];
}

/** Decode latency at one generated position. */
export interface DecodePosition extends TimedStats {
  /**
   * Generated position: the step that processes the p-th generated token (0 = the token prefill chose), with
   * prompt_length + p tokens already in the KV cache.
   */
  position: number;
  /** 1000 / median_ms. */
  tokens_per_s: number;
}

/** The decode benchmark of one model (baseline or hydra_naive). */
export interface DecodeResult {
  gen_length: number;
  step_interval: number;
  /** The headline: median over positions of positions[].median_ms (headline.ts). Absent in runs made before it. */
  median_ms?: number;
  /** 1000 / median_ms. Absent in runs made before it (readers compute both then: headline.ts decodeHeadline). */
  tokens_per_s?: number;
  /** One entry per timed position, ascending. */
  positions: DecodePosition[];
}

/** Decode step latency at one KV length (the `decode_contexts` knob). */
export interface DecodeContext extends TimedStats {
  /** KV length: tokens in the cache before the step (LEN = POS); the step attends over context + 1 positions. */
  context: number;
  /** 1000 / median_ms. */
  tokens_per_s: number;
}

/** TTFT at one prompt length (the `prompt_lengths` knob). */
export interface TtftAtLength extends TimedStats {
  prompt_length: number;
  /** Prefill tokens per second: 1000 * prompt_length / median_ms. */
  tokens_per_s: number;
}

/**
 * A PyTorch peer measured after the configurations (the `peers` knob): the final JSON line of its script, keys other
 * than these kept as the script wrote them (size, device, prompt_tokens, ...).
 */
export interface PeerResult {
  /** The peer's name in the `peers` knob ("torch", "hf"). */
  name: string;
  /** Decode time per generated token, ms (absent when the peer does not measure it). */
  decode_ms_per_token?: number;
  /** Time to first token, ms (absent when the peer does not measure it). */
  ttft_ms?: number;
  /** The command line the bench ran. */
  command: string;
  /** Its output (stdout and stderr) in the run folder. */
  log: string;
  [key: string]: unknown;
}

/**
 * PoE at one gamma: whole `generate_with_cache` calls (design.md section 5). The stats are over call times; the
 * count of timed calls is named `n_calls` (= raw_ms.length) instead of `n`.
 */
export interface PoeGammaResult extends Omit<TimedStats, "n"> {
  gamma: number;
  /** Timed calls (= raw_ms.length). */
  n_calls: number;
  /** Mean over calls of output tokens minus resampled tokens. */
  avg_accepted_tokens_per_call: number;
  /** Mean over calls of output tokens (poe_max_new_tokens for a benchmark call: EOS does not stop it). */
  avg_output_tokens_per_call: number;
  /** Mean over calls of draft/verify rounds. */
  avg_rounds_per_call: number;
  /** Resampled tokens / output tokens, over all calls. */
  resample_rate: number;
  /** 1000 * avg_accepted_tokens_per_call / median_ms. */
  effective_tps: number;
  /** 1000 * avg_output_tokens_per_call / median_ms. */
  user_visible_tps: number;
  /** Length gamma: entry i = drafts accepted at draft position i / rounds, over all calls. */
  acceptance_per_position: number[];
  /** CPU waits on the GPU per call (the design goal is one: the final readback). */
  sync_points_per_call: number;
  /**
   * Mean over the timed calls of the CPU milliseconds spent encoding and submitting command buffers: near median_ms,
   * the call is bound by the CPU, not the GPU. Absent in runs made before it.
   */
  encode_ms_per_call?: number;
  /**
   * Draft acceptance rate: accepted drafts / drafts the jury judged (each round judges up to its first rejection),
   * over all calls = 1 - resampled / (output tokens - 1 per call): the per-draft probability of the geometric model
   * (bench/poe_model.ts). Absent in runs made before it (readers compute it: poe_model.ts acceptanceRateOf).
   */
  acceptance_rate?: number;
  /** Dispatches one round records (each costs GPU time even when gated off). Absent in older runs. */
  dispatches_per_round?: number;
  /** Mean over the timed calls of rounds encoded but gated off (after the call's end). Absent in older runs. */
  noop_rounds_per_call?: number;
  /** noop_rounds_per_call * dispatches_per_round. */
  noop_dispatches_per_call?: number;
  /** No-op rounds of the decoder's first call, whose first batch had no acceptance to be sized by (poe/poe.ts). */
  noop_rounds_cold_call?: number;
  /** The cost model of this gamma (bench/poe_model.ts, ARCHITECTURE.md "PoE cost model"). Absent in older runs. */
  cost_model?: PoeCostModel;
}

/**
 * What the PoE cost model is made of: GPU times of the parts of a round (timestamp queries, median of replays from
 * the control block after the prefill) and of the prefill (the configuration's ttft median), and the wall time of
 * one sync (a trivial readback).
 */
export interface PoeStepCosts {
  /** Prefill of every head, last token only (ttft.median_ms of the configuration). */
  prefill_ms: number;
  /** One draft step: trunk + draft head, one token. */
  draft_step_ms: number;
  /** The verifier heads over gamma saved trunk states, and the jury. */
  verify_ms: number;
  /** The jury's row argmax and the acceptance kernel (with the round's opening control step). */
  accept_ms: number;
  /** One whole round gated off (ctl ACTIVE = 0): what a no-op round costs. */
  noop_round_ms: number;
  /** Wall ms of one readback with nothing queued (Deno's sync floor). */
  sync_ms: number;
}

/** The cost model of one gamma: its inputs and what it predicts (formulas in bench/poe_model.ts). */
export interface PoeCostModel extends PoeStepCosts {
  /** gamma * draft_step_ms + verify_ms + accept_ms. */
  round_ms: number;
  /** 1000 * noop_round_ms / dispatches_per_round: GPU microseconds of one gated-off dispatch. */
  gated_dispatch_us: number;
  /**
   * prefill_ms + avg_rounds_per_call * round_ms + noop_rounds_per_call * noop_round_ms + sync_points_per_call *
   * sync_ms.
   */
  predicted_ms: number;
  /** median_ms / predicted_ms. */
  measured_over_predicted: number;
  /** noop_rounds_per_call * noop_round_ms / median_ms: the share of a call spent in no-op rounds. */
  noop_fraction: number;
  /** Rounds at acceptance 1: ceil((avg_output_tokens_per_call - 1) / gamma) (the prefill emits one token). */
  ceiling_rounds: number;
  /** prefill_ms + ceiling_rounds * round_ms + sync_ms (one sync, no no-op round). */
  ceiling_ms: number;
  /** 1000 * avg_output_tokens_per_call / ceiling_ms: user-visible tokens/s at acceptance 1. */
  ceiling_tps: number;
}

/** PoE at one spread of the synthetic ensemble (config.poe_spread_sweep). */
export interface PoeSpreadResult {
  /** The spread (synthetic_spread value) the ensemble was built with. */
  spread: number;
  /** One entry per gamma, ascending (the gammas of `poe`). */
  gammas: PoeGammaResult[];
}

/** Which weights a configuration ran on. "random": generated on the GPU; "synthetic": a random LoRA ensemble. */
export type WeightsLabel = "random" | "synthetic" | { base: string; heads: string[][] };

/** Everything measured for one configuration on one WebGPU runtime. */
export interface ConfigurationResult {
  name: ConfigurationName;
  /**
   * The WebGPU runtime it ran on (the `webgpu` knob). Absent in runs made before the knob, which ran on `deno`. With
   * one runtime in config.webgpu the result is stored under its name (`configurations.baseline`); with several,
   * under `<name>@<runtime>` (`configurations["baseline@dawn"]`): headline.ts resultKey.
   */
  runtime?: WebgpuRuntime;
  /** The runtime's version: `deno <version>` or the npm package (`webgpu@0.6.2`). Absent with `runtime`. */
  runtime_version?: string;
  /** The instance toggles the runtime was made with (Dawn's; empty for deno). Absent with `runtime`. */
  runtime_toggles?: string[];
  weights: WeightsLabel;
  /**
   * Weight bytes one single-token step reads: the whole model for baseline, trunk + every head for hydra_naive,
   * trunk + the draft head for hydra_poe (one draft step).
   */
  weight_bytes_per_step: number;
  /** environment.copy_bandwidth_gbps * 1e9 / weight_bytes_per_step: tokens/s if a step only streamed its weights. */
  roofline_tps: number;
  /** Time to first token (hydra_poe: `residual_forward` over all heads, last token only, fresh KV each time). */
  ttft: TimedStats;
  /** Per-position decode latency (baseline and hydra_naive; null for hydra_poe). */
  decode: DecodeResult | null;
  /** One entry per gamma, ascending (hydra_poe; null otherwise), at config.synthetic_spread for synthetic weights. */
  poe: PoeGammaResult[] | null;
  /**
   * TTFT at every length of prompt_lengths and at prompt_length (that entry's stats are `ttft`), ascending; present
   * when prompt_lengths is not empty (baseline and hydra_naive).
   */
  ttft_by_length?: TtftAtLength[];
  /** A decode step at every KV length of decode_contexts, ascending; present when it is not empty (baseline, naive). */
  decode_contexts?: DecodeContext[];
  /**
   * hydra_poe on synthetic weights: PoE at the other spreads of config.poe_spread_sweep, ascending (empty when there
   * are none). Absent for the other configurations and in older runs.
   */
  poe_spreads?: PoeSpreadResult[];
  /** Time to build the model (weights, pipelines, bind groups), wall ms; not a benchmark number. */
  load_ms: number;
  /** CPU waits on the GPU during the whole configuration (load, warm-up and timed repetitions). */
  sync_points: number;
}

/** One WebGPU runtime of a run (`environment.runtimes`): what it is and the adapter and device it gave. */
export interface RuntimeEnvironment {
  runtime: WebgpuRuntime;
  /** `deno <version>` or the npm package (`webgpu@0.6.2`). */
  version: string;
  /** Instance toggles (Dawn's; empty for deno). */
  toggles: string[];
  adapter: Environment["adapter"];
  /** Features the device was granted. */
  features: string[];
  /** Limits the device was granted. */
  limits: Record<string, number>;
  /** Whether this runtime's device has timestamp queries (its GPU-time samples). */
  timestamp_query: boolean;
  /** Copy bandwidth measured on this runtime's device, GB/s (as copy_bandwidth_gbps; the roofline uses the first). */
  copy_bandwidth_gbps: number;
}

/**
 * The machine and software a run measured. `adapter`, `features`, `limits`, `timestamp_query` and
 * `copy_bandwidth_gbps` are those of the run's first WebGPU runtime (config.webgpu[0]); `runtimes` lists every one.
 */
export interface Environment {
  adapter: {
    vendor: string;
    architecture: string;
    device: string;
    description: string;
    is_fallback_adapter: boolean;
    /**
     * The wgpu backend: DENO_WEBGPU_BACKEND when set, else as told from the adapter ("vulkan", "metal", or "unknown");
     * runs before provenance was recorded wrote "default" when the variable was unset.
     */
    backend: string;
    /** The driver: vulkaninfo's driver name and info, the NVIDIA kernel module version, or the adapter description. */
    driver?: string;
  };
  /** The CPU (absent in runs before provenance was recorded). */
  cpu?: { model: string | null; logical_cores: number };
  /** Features the device was granted. */
  features: string[];
  /** Limits the device was granted (the suite asks for the adapter's maxima). */
  limits: Record<string, number>;
  /** Deno.version. */
  deno: { deno: string; v8: string; typescript: string };
  /** Deno.build.os / arch and Deno.osRelease(). */
  os: { os: string; arch: string; release: string };
  /**
   * git HEAD of the suite's own checkout (or HYDRA_BENCH_COMMIT), null when the project folder has no .git of its
   * own (never an enclosing repository's commit).
   */
  commit: string | null;
  /** ISO 8601 start time of the run. */
  date: string;
  /** Whether GPU time came from timestamp queries (else every clock is "wall"). */
  timestamp_query: boolean;
  /**
   * Device-to-device copy bandwidth, GB/s, counting bytes read plus bytes written (HBM serves both from one budget,
   * so this is the rate a weight-streaming GEMV can at best read at).
   */
  copy_bandwidth_gbps: number;
  /**
   * Roofline of every configuration of the run (also those a crash did not reach), keyed as `configurations` is
   * (headline.ts resultKey; the roofline is the same on every runtime: the first runtime's copy bandwidth).
   */
  roofline: Partial<Record<string, { weight_bytes_per_step: number; roofline_tps: number }>>;
  /** Every WebGPU runtime of the run, in config.webgpu's order. Absent in runs made before the `webgpu` knob. */
  runtimes?: RuntimeEnvironment[];
}

/**
 * State of a run: written as "running" before the first configuration and rewritten after each one; "interrupted"
 * when SIGINT or SIGTERM ended it (what finished is kept). A "running" run whose process is gone was killed outright
 * (`deno task runs` shows it as interrupted).
 */
export type RunStatus = "running" | "complete" | "failed" | "interrupted";

/** The run statuses, for the validator. */
export const RUN_STATUSES: readonly RunStatus[] = ["running", "complete", "failed", "interrupted"];

/** How a run was started (absent in runs before provenance was recorded). */
export interface Provenance {
  /** The command line: Deno's executable, the entry module, then the arguments as given. */
  command_line: string[];
  /** The config file read. */
  config_file: string;
  /** Where each knob's value came from. */
  knob_sources: Record<keyof BenchConfig, KnobSource>;
  /** Whether tracked files of the suite's checkout differed from `environment.commit`; null without its own .git. */
  dirty: boolean | null;
  /** Whether `--allow-concurrent` let this run share its GPU with another benchmark (no device lock taken). */
  allow_concurrent: boolean;
  /**
   * The engine's A/B environment variables that were set (bench/provenance.ts `ENGINE_ENV`), by name: with any, the
   * run measured overridden kernels, not the defaults. Absent in runs made before it was recorded.
   */
  engine_overrides?: Record<string, string>;
  /** The process that ran it (to tell a killed "running" run from a live one). */
  process: ProcessIdentity;
}
/** The whole results.json. */
export interface ResultsDocument {
  schema_version: typeof RESULTS_SCHEMA_VERSION;
  /** Run folder name, `<YYYY-MM-DD>_runNN`. */
  run: string;
  status: RunStatus;
  /** The knobs the run used (weight paths absolute). */
  config: BenchConfig;
  environment: Environment;
  /**
   * Results of the configurations finished so far, keyed by name, or with several runtimes in config.webgpu by
   * `<name>@<runtime>` (headline.ts resultKey).
   */
  configurations: Partial<Record<string, ConfigurationResult>>;
  /**
   * Why the run stopped, when status is "failed" or "interrupted" (the configuration it was in, if any, and its
   * runtime; `runtime` is absent in runs made before the `webgpu` knob).
   */
  failure: { configuration: ConfigurationName | null; runtime?: WebgpuRuntime | null; message: string } | null;
  /** The peers that ran (the `peers` knob), in its order; absent when none did. */
  peers?: PeerResult[];
  /** How the run was started (absent in runs before provenance was recorded). */
  provenance?: Provenance;
}
