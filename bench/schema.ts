/**
 * The layout of results.json, as TypeScript types, and `validateResults`, which checks a parsed file against it
 * (types, required names, and the arithmetic that ties the numbers together, e.g. tokens_per_s = 1000 / median_ms).
 *
 * Units: every `*_ms` is milliseconds, `*_tps` and `tokens_per_s` tokens per second, bytes are bytes, bandwidth is
 * GB/s (1e9 bytes per second). Metric names are those of design.md section 5.
 */

import { type BenchConfig, CONFIGURATION_NAMES, type ConfigurationName, validateBenchConfig } from "./config.ts";
import { medianOverPositions } from "./headline.ts";

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
 * PASSES_PER_SAMPLE: keeps the GPU at full clock); "wall" = performance.now() around the whole call, its waits on
 * the GPU (~11 ms each in Deno) included.
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
}

// ---------------------------------------------------------------------------------------------------------------------
// Validation

/** Relative tolerance of the derived-number checks: results.json holds float64s, so only rounding can differ. */
const DERIVED_RTOL = 1e-9;

/** Collects problems as "path: message". */
class Checker {
  readonly problems: string[] = [];

  fail(path: string, message: string): void {
    this.problems.push(`${path}: ${message}`);
  }

  object(v: unknown, path: string): Record<string, unknown> | null {
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
    this.fail(path, "expected an object");
    return null;
  }

  string(o: Record<string, unknown>, key: string, path: string): string | null {
    if (typeof o[key] === "string") return o[key] as string;
    this.fail(`${path}.${key}`, "expected a string");
    return null;
  }

  boolean(o: Record<string, unknown>, key: string, path: string): void {
    if (typeof o[key] !== "boolean") this.fail(`${path}.${key}`, "expected a boolean");
  }

  /** A finite number, optionally >= 0 or an integer. */
  number(o: Record<string, unknown>, key: string, path: string, opts: { min?: number; int?: boolean } = {}): number {
    const v = o[key];
    if (typeof v !== "number" || !Number.isFinite(v)) {
      this.fail(`${path}.${key}`, "expected a finite number");
      return NaN;
    }
    if (opts.int && !Number.isInteger(v)) this.fail(`${path}.${key}`, "expected a whole number");
    if (opts.min !== undefined && v < opts.min) this.fail(`${path}.${key}`, `expected >= ${opts.min}, got ${v}`);
    return v;
  }

  numbers(o: Record<string, unknown>, key: string, path: string, min?: number): number[] | null {
    const v = o[key];
    if (!Array.isArray(v) || !v.every((x) => typeof x === "number" && Number.isFinite(x))) {
      this.fail(`${path}.${key}`, "expected an array of finite numbers");
      return null;
    }
    if (min !== undefined && v.some((x) => x < min)) this.fail(`${path}.${key}`, `expected every value >= ${min}`);
    return v as number[];
  }

  /** `actual` equals `expected` up to DERIVED_RTOL. */
  derived(actual: number, expected: number, path: string, formula: string): void {
    if (!Number.isFinite(actual) || !Number.isFinite(expected)) return;
    if (Math.abs(actual - expected) > DERIVED_RTOL * Math.max(1, Math.abs(expected))) {
      this.fail(path, `is ${actual} but ${formula} = ${expected}`);
    }
  }
}

/** Checks the shared fields of BenchStats (`countKey` = "n" or "n_calls") and their consistency. */
function checkStats(c: Checker, o: Record<string, unknown>, path: string, countKey: "n" | "n_calls"): void {
  const names = ["median_ms", "mean_ms", "p10_ms", "p90_ms", "min_ms", "max_ms"] as const;
  const v = Object.fromEntries(names.map((k) => [k, c.number(o, k, path, { min: 0 })])) as Record<string, number>;
  const raw = c.numbers(o, "raw_ms", path, 0);
  const filtered = c.numbers(o, "filtered_ms", path, 0);
  const n = c.number(o, countKey, path, { min: 1, int: true });
  if (o.clock !== "gpu" && o.clock !== "wall") c.fail(`${path}.clock`, 'expected "gpu" or "wall"');
  if (raw && raw.length !== n) c.fail(`${path}.${countKey}`, `is ${n} but raw_ms holds ${raw.length} samples`);
  if (raw && filtered && (filtered.length === 0 || filtered.length > raw.length)) {
    c.fail(`${path}.filtered_ms`, `holds ${filtered.length} samples; expected 1 to raw_ms.length (${raw.length})`);
  }
  if (!(v.min_ms <= v.p10_ms && v.p10_ms <= v.median_ms && v.median_ms <= v.p90_ms && v.p90_ms <= v.max_ms)) {
    c.fail(path, "expected min_ms <= p10_ms <= median_ms <= p90_ms <= max_ms");
  }
  if (!(v.min_ms <= v.mean_ms && v.mean_ms <= v.max_ms)) {
    c.fail(`${path}.mean_ms`, "expected min_ms <= mean_ms <= max_ms");
  }
}

function checkWeights(c: Checker, v: unknown, path: string): void {
  if (v === "random" || v === "synthetic") return;
  const o = c.object(v, path);
  if (!o) return;
  c.string(o, "base", path);
  if (!Array.isArray(o.heads) || !o.heads.every((l) => Array.isArray(l) && l.every((p) => typeof p === "string"))) {
    c.fail(`${path}.heads`, "expected one list of adapter paths per head");
  }
}

function checkDecode(c: Checker, v: unknown, path: string): void {
  const o = c.object(v, path);
  if (!o) return;
  c.number(o, "gen_length", path, { min: 1, int: true });
  c.number(o, "step_interval", path, { min: 1, int: true });
  if (!Array.isArray(o.positions) || o.positions.length === 0) {
    c.fail(`${path}.positions`, "expected a non-empty array");
    return;
  }
  let last = -1;
  o.positions.forEach((p, i) => {
    const pp = `${path}.positions[${i}]`;
    const e = c.object(p, pp);
    if (!e) return;
    checkStats(c, e, pp, "n");
    const pos = c.number(e, "position", pp, { min: 0, int: true });
    if (pos <= last) c.fail(`${pp}.position`, "expected positions in ascending order");
    last = pos;
    const tps = c.number(e, "tokens_per_s", pp, { min: 0 });
    c.derived(tps, 1000 / (e.median_ms as number), `${pp}.tokens_per_s`, "1000 / median_ms");
  });
  if (o.median_ms === undefined && o.tokens_per_s === undefined) return; // a run from before the headline fields
  const med = c.number(o, "median_ms", path, { min: 0 });
  const ok = o.positions.every((p) => Number.isFinite((p as DecodePosition | null)?.median_ms));
  if (ok) c.derived(med, medianOverPositions(o.positions), `${path}.median_ms`, "the median of positions[].median_ms");
  c.derived(c.number(o, "tokens_per_s", path, { min: 0 }), 1000 / med, `${path}.tokens_per_s`, "1000 / median_ms");
}

function checkPoe(c: Checker, v: unknown, path: string): void {
  if (!Array.isArray(v) || v.length === 0) {
    c.fail(path, "expected a non-empty array of per-gamma results");
    return;
  }
  let last = 0;
  v.forEach((g, i) => {
    const pp = `${path}[${i}]`;
    const e = c.object(g, pp);
    if (!e) return;
    checkStats(c, e, pp, "n_calls");
    const gamma = c.number(e, "gamma", pp, { min: 1, int: true });
    if (gamma <= last) c.fail(`${pp}.gamma`, "expected gammas in ascending order, each once");
    last = gamma;
    const accepted = c.number(e, "avg_accepted_tokens_per_call", pp, { min: 0 });
    const output = c.number(e, "avg_output_tokens_per_call", pp, { min: 0 });
    c.number(e, "avg_rounds_per_call", pp, { min: 0 });
    const rate = c.number(e, "resample_rate", pp, { min: 0 });
    if (rate > 1) c.fail(`${pp}.resample_rate`, "expected at most 1");
    if (accepted > output) c.fail(`${pp}.avg_accepted_tokens_per_call`, "exceeds avg_output_tokens_per_call");
    const median = e.median_ms as number;
    c.derived(
      c.number(e, "effective_tps", pp, { min: 0 }),
      1000 * accepted / median,
      `${pp}.effective_tps`,
      "1000 * avg_accepted_tokens_per_call / median_ms",
    );
    c.derived(
      c.number(e, "user_visible_tps", pp, { min: 0 }),
      1000 * output / median,
      `${pp}.user_visible_tps`,
      "1000 * avg_output_tokens_per_call / median_ms",
    );
    const acc = c.numbers(e, "acceptance_per_position", pp, 0);
    if (acc && acc.length !== gamma) c.fail(`${pp}.acceptance_per_position`, `expected ${gamma} entries (gamma)`);
    if (acc && acc.some((a) => a > 1)) c.fail(`${pp}.acceptance_per_position`, "expected fractions in [0, 1]");
    c.number(e, "sync_points_per_call", pp, { min: 0 });
  });
}

function checkConfiguration(
  c: Checker,
  v: unknown,
  name: ConfigurationName,
  env: Record<string, unknown> | null,
): void {
  const path = `configurations.${name}`;
  const o = c.object(v, path);
  if (!o) return;
  if (o.name !== name) c.fail(`${path}.name`, `expected "${name}"`);
  checkWeights(c, o.weights, `${path}.weights`);
  const bytes = c.number(o, "weight_bytes_per_step", path, { min: 1 });
  const roof = c.number(o, "roofline_tps", path, { min: 0 });
  if (env && typeof env.copy_bandwidth_gbps === "number") {
    c.derived(
      roof,
      env.copy_bandwidth_gbps * 1e9 / bytes,
      `${path}.roofline_tps`,
      "environment.copy_bandwidth_gbps * 1e9 / weight_bytes_per_step",
    );
  }
  const ttft = c.object(o.ttft, `${path}.ttft`);
  if (ttft) checkStats(c, ttft, `${path}.ttft`, "n");
  if (name === "hydra_poe") {
    if (o.decode !== null) c.fail(`${path}.decode`, "expected null for hydra_poe");
    checkPoe(c, o.poe, `${path}.poe`);
    if (o.weights === "random") c.fail(`${path}.weights`, 'expected "synthetic" or checkpoint paths for hydra_poe');
  } else {
    checkDecode(c, o.decode, `${path}.decode`);
    if (o.poe !== null) c.fail(`${path}.poe`, `expected null for ${name}`);
  }
  c.number(o, "load_ms", path, { min: 0 });
  c.number(o, "sync_points", path, { min: 0, int: true });
}

function checkEnvironment(c: Checker, v: unknown): Record<string, unknown> | null {
  const o = c.object(v, "environment");
  if (!o) return null;
  const adapter = c.object(o.adapter, "environment.adapter");
  if (adapter) {
    for (const k of ["vendor", "architecture", "device", "description", "backend"]) {
      c.string(adapter, k, "environment.adapter");
    }
    c.boolean(adapter, "is_fallback_adapter", "environment.adapter");
  }
  if (!Array.isArray(o.features) || !o.features.every((f) => typeof f === "string")) {
    c.fail("environment.features", "expected an array of strings");
  }
  const limits = c.object(o.limits, "environment.limits");
  if (limits) { for (const k of Object.keys(limits)) c.number(limits, k, "environment.limits"); }
  const deno = c.object(o.deno, "environment.deno");
  if (deno) { for (const k of ["deno", "v8", "typescript"]) c.string(deno, k, "environment.deno"); }
  const os = c.object(o.os, "environment.os");
  if (os) { for (const k of ["os", "arch", "release"]) c.string(os, k, "environment.os"); }
  if (o.commit !== null && typeof o.commit !== "string") c.fail("environment.commit", "expected a string or null");
  const date = c.string(o, "date", "environment");
  if (date !== null && Number.isNaN(Date.parse(date))) c.fail("environment.date", "expected an ISO 8601 date");
  c.boolean(o, "timestamp_query", "environment");
  const bw = c.number(o, "copy_bandwidth_gbps", "environment", { min: 0 });
  const roof = c.object(o.roofline, "environment.roofline");
  if (roof) {
    for (const [k, r] of Object.entries(roof)) {
      const path = `environment.roofline.${k}`;
      if (!(CONFIGURATION_NAMES as readonly string[]).includes(k)) c.fail(path, "unknown configuration name");
      const e = c.object(r, path);
      if (!e) continue;
      const bytes = c.number(e, "weight_bytes_per_step", path, { min: 1 });
      c.derived(
        c.number(e, "roofline_tps", path, { min: 0 }),
        bw * 1e9 / bytes,
        `${path}.roofline_tps`,
        "copy_bandwidth_gbps * 1e9 / weight_bytes_per_step",
      );
    }
  }
  return o;
}

/**
 * Checks a parsed results.json against ResultsDocument. Returns the problems found, each as "json.path: what is
 * wrong"; an empty array means the document is valid.
 */
export function validateResults(json: unknown): string[] {
  const c = new Checker();
  const o = c.object(json, "results");
  if (!o) return c.problems;
  if (o.schema_version !== RESULTS_SCHEMA_VERSION) {
    c.fail("schema_version", `expected ${RESULTS_SCHEMA_VERSION}, got ${JSON.stringify(o.schema_version)}`);
  }
  const run = c.string(o, "run", "results");
  if (run !== null && !/^\d{4}-\d{2}-\d{2}_run\d{2,}$/.test(run)) c.fail("run", "expected <YYYY-MM-DD>_runNN");
  if (!["running", "complete", "failed"].includes(o.status as string)) {
    c.fail("status", 'expected "running", "complete" or "failed"');
  }
  let config: BenchConfig | null = null;
  try {
    config = validateBenchConfig(o.config, "results.json config");
  } catch (e) {
    c.fail("config", (e as Error).message);
  }
  const env = checkEnvironment(c, o.environment);
  const confs = c.object(o.configurations, "configurations");
  if (confs) {
    for (const [k, v] of Object.entries(confs)) {
      if (!(CONFIGURATION_NAMES as readonly string[]).includes(k)) {
        c.fail(`configurations.${k}`, "unknown configuration name");
        continue;
      }
      if (config && !config.configs.includes(k as ConfigurationName)) {
        c.fail(`configurations.${k}`, "not among config.configs");
      }
      checkConfiguration(c, v, k as ConfigurationName, env);
    }
    if (o.status === "complete" && config) {
      for (const k of config.configs) if (!(k in confs)) c.fail(`configurations.${k}`, "missing in a complete run");
    }
  }
  if (o.status === "failed") {
    const f = c.object(o.failure, "failure");
    if (f) {
      c.string(f, "message", "failure");
      if (f.configuration !== null && !(CONFIGURATION_NAMES as readonly unknown[]).includes(f.configuration)) {
        c.fail("failure.configuration", "expected a configuration name or null");
      }
    }
  } else if (o.failure !== null) {
    c.fail("failure", `expected null when status is ${JSON.stringify(o.status)}`);
  }
  return c.problems;
}

/** Throws an Error listing the problems when `json` is not a valid results.json. */
export function assertValidResults(json: unknown): asserts json is ResultsDocument {
  const problems = validateResults(json);
  if (problems.length > 0) {
    const shownProblems = problems.slice(0, 10).join("\n  ");
    const more = problems.length > 10 ? `\n  ... and ${problems.length - 10} more` : "";
    throw new Error(`results.json does not match the schema:\n  ${shownProblems}${more}`);
  }
}
