/**
 * The layout of results.json, as TypeScript types (checked by `validateResults` in schema.ts).
 *
 * Units: every `*_ms` is milliseconds, `*_tps` and `tokens_per_s` tokens per second, bytes are bytes, bandwidth is
 * GB/s (1e9 bytes per second). Metric names are those of design.md section 5.
 * @module
 */

import type { BenchConfig, ConfigurationName } from "./config.ts";

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
}

/** Which weights a configuration ran on. "random": generated on the GPU; "synthetic": a random LoRA ensemble. */
export type WeightsLabel = "random" | "synthetic" | { base: string; heads: string[][] };

/** Everything measured for one configuration. */
export interface ConfigurationResult {
  name: ConfigurationName;
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
  /** One entry per gamma, ascending (hydra_poe; null otherwise). */
  poe: PoeGammaResult[] | null;
  /**
   * TTFT at every length of prompt_lengths and at prompt_length (that entry's stats are `ttft`), ascending; present
   * when prompt_lengths is not empty (baseline and hydra_naive).
   */
  ttft_by_length?: TtftAtLength[];
  /** A decode step at every KV length of decode_contexts, ascending; present when it is not empty (baseline, naive). */
  decode_contexts?: DecodeContext[];
  /** Time to build the model (weights, pipelines, bind groups), wall ms; not a benchmark number. */
  load_ms: number;
  /** CPU waits on the GPU during the whole configuration (load, warm-up and timed repetitions). */
  sync_points: number;
}

/** The machine and software a run measured. */
export interface Environment {
  adapter: {
    vendor: string;
    architecture: string;
    device: string;
    description: string;
    is_fallback_adapter: boolean;
    backend: string;
  };
  /** Features the device was granted. */
  features: string[];
  /** Limits the device was granted (the suite asks for the adapter's maxima). */
  limits: Record<string, number>;
  /** Deno.version. */
  deno: { deno: string; v8: string; typescript: string };
  /** Deno.build.os / arch and Deno.osRelease(). */
  os: { os: string; arch: string; release: string };
  /** git HEAD of the suite, or null when it ran outside a git checkout. */
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
  /** Roofline of every configuration of the run (also those a crash did not reach). */
  roofline: Partial<Record<ConfigurationName, { weight_bytes_per_step: number; roofline_tps: number }>>;
}

/** State of a run: written as "running" before the first configuration and rewritten after each one. */
export type RunStatus = "running" | "complete" | "failed";

/** The whole results.json. */
export interface ResultsDocument {
  schema_version: typeof RESULTS_SCHEMA_VERSION;
  /** Run folder name, `<YYYY-MM-DD>_runNN`. */
  run: string;
  status: RunStatus;
  /** The knobs the run used (weight paths absolute). */
  config: BenchConfig;
  environment: Environment;
  /** Results of the configurations finished so far, keyed by name. */
  configurations: Partial<Record<ConfigurationName, ConfigurationResult>>;
  /** Why the run stopped, when status is "failed". */
  failure: { configuration: ConfigurationName | null; message: string } | null;
  /** The peers that ran (the `peers` knob), in its order; absent when none did. */
  peers?: PeerResult[];
}
