/**
 * `validateResults`: checks a parsed results.json against its layout (results_types.ts): types, required names, and
 * the arithmetic that ties the numbers together, e.g. tokens_per_s = 1000 / median_ms.
 * @module
 */

import {
  addedLater,
  type BenchConfig,
  CONFIGURATION_NAMES,
  type ConfigurationName,
  DEFAULT_CONFIG,
  poeSpreads,
  validateBenchConfig,
} from "./config.ts";
import { medianOverPositions, resultKey } from "./headline.ts";
import { WEBGPU_RUNTIMES } from "../kernels/runtime.ts";
import { acceptanceRate, poeCostModel } from "./poe_model.ts";
import { isProcessIdentity } from "./process.ts";
import { type DecodePosition, RESULTS_SCHEMA_VERSION, type ResultsDocument, RUN_STATUSES } from "./results_types.ts";

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
  if (o.discarded_ms !== undefined) c.numbers(o, "discarded_ms", path, 0);
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
    if (e.encode_ms_per_call !== undefined) c.number(e, "encode_ms_per_call", pp, { min: 0 });
    checkPoeModel(c, e, pp, gamma);
  });
}

/**
 * Checks a length sweep (`ttft_by_length` keyed by prompt_length, `decode_contexts` by context): stats per entry, keys
 * ascending and exactly `expected` when the config is known, tokens_per_s = 1000 * tokens(key) / median_ms.
 */
function checkSweep(
  c: Checker,
  v: unknown,
  path: string,
  key: string,
  expected: readonly number[] | null,
  tokens: { of: (k: number) => number; formula: string },
): void {
  if (!Array.isArray(v) || v.length === 0) {
    c.fail(path, "expected a non-empty array");
    return;
  }
  let last = 0;
  const keys = v.map((x, i) => {
    const pp = `${path}[${i}]`;
    const e = c.object(x, pp);
    if (!e) return NaN;
    checkStats(c, e, pp, "n");
    const k = c.number(e, key, pp, { min: 1, int: true });
    if (k <= last) c.fail(`${pp}.${key}`, `expected ${key} ascending, each once`);
    last = k;
    const tps = c.number(e, "tokens_per_s", pp, { min: 0 });
    c.derived(tps, 1000 * tokens.of(k) / (e.median_ms as number), `${pp}.tokens_per_s`, tokens.formula);
    return k;
  });
  const want = expected && [...new Set(expected)].sort((a, b) => a - b);
  if (want && keys.join() !== want.join()) c.fail(path, `expected the ${key}s ${want.join(", ")} (the config's)`);
}

/**
 * Checks the optional sweeps of configuration `name`: present exactly when their knob is set (baseline and
 * hydra_naive only); the prompt_length entry of ttft_by_length is `ttft`.
 */
function checkSweeps(
  c: Checker,
  o: Record<string, unknown>,
  name: ConfigurationName,
  path: string,
  config: BenchConfig | null,
): void {
  const sweeps = [
    {
      field: "ttft_by_length",
      knob: "prompt_lengths",
      key: "prompt_length",
      expected: config && (config.prompt_lengths.length > 0 ? [config.prompt_length, ...config.prompt_lengths] : []),
      tokens: { of: (k: number) => k, formula: "1000 * prompt_length / median_ms" },
    },
    {
      field: "decode_contexts",
      knob: "decode_contexts",
      key: "context",
      expected: config && config.decode_contexts,
      tokens: { of: () => 1, formula: "1000 / median_ms" },
    },
  ];
  for (const s of sweeps) {
    const p = `${path}.${s.field}`;
    const present = o[s.field] !== undefined;
    if (s.expected === null && present && name !== "hydra_poe") {
      checkSweep(c, o[s.field], p, s.key, null, s.tokens); // the config is invalid (reported): the entries alone
    } else if (s.expected !== null && s.expected.length > 0 && name !== "hydra_poe") {
      if (present) checkSweep(c, o[s.field], p, s.key, s.expected, s.tokens);
      else c.fail(p, `missing although the config sets ${s.knob}`);
    } else if (present) {
      c.fail(
        p,
        name === "hydra_poe" ? "expected no sweep for hydra_poe" : `present although the config sets no ${s.knob}`,
      );
    }
  }
  const atPrompt = Array.isArray(o.ttft_by_length)
    ? (o.ttft_by_length as Record<string, unknown>[]).find((e) => e?.prompt_length === config?.prompt_length)
    : undefined;
  const ttft = o.ttft as Record<string, unknown> | null;
  if (atPrompt && ttft && atPrompt.median_ms !== ttft.median_ms) {
    c.fail(`${path}.ttft_by_length`, "its prompt_length entry differs from ttft (they are one measurement)");
  }
}

/** Checks results.json's optional `peers`: each named once, with a command, its log and at least one figure. */
function checkPeers(c: Checker, v: unknown): void {
  if (v === undefined) return;
  if (!Array.isArray(v)) {
    c.fail("peers", "expected an array");
    return;
  }
  const seen = new Set<string>();
  v.forEach((p, i) => {
    const path = `peers[${i}]`;
    const o = c.object(p, path);
    if (!o) return;
    const name = c.string(o, "name", path);
    if (name !== null && seen.has(name)) c.fail(`${path}.name`, `"${name}" appears twice`);
    if (name !== null) seen.add(name);
    c.string(o, "command", path);
    c.string(o, "log", path);
    if (o.decode_ms_per_token !== undefined && c.number(o, "decode_ms_per_token", path, { min: 0 }) === 0) {
      c.fail(`${path}.decode_ms_per_token`, "expected > 0");
    }
    if (o.ttft_ms !== undefined) c.number(o, "ttft_ms", path, { min: 0 });
    if (o.decode_ms_per_token === undefined && o.ttft_ms === undefined) {
      c.fail(path, "expected decode_ms_per_token or ttft_ms");
    }
  });
}

/** The no-op round counters of a gamma result: all four or none (runs before them). */
const NOOP_KEYS = ["dispatches_per_round", "noop_rounds_per_call", "noop_dispatches_per_call", "noop_rounds_cold_call"];

/** The step costs of a cost model: measured, the rest of it is derived from them and the gamma's counters. */
const STEP_COST_KEYS = ["prefill_ms", "draft_step_ms", "verify_ms", "accept_ms", "noop_round_ms", "sync_ms"] as const;

/** A gamma result's acceptance rate, no-op counters and cost model (each optional: older runs lack them). */
function checkPoeModel(c: Checker, e: Record<string, unknown>, pp: string, gamma: number): void {
  const output = e.avg_output_tokens_per_call as number;
  if (e.acceptance_rate !== undefined) {
    const a = c.number(e, "acceptance_rate", pp, { min: 0 });
    if (a > 1) c.fail(`${pp}.acceptance_rate`, "expected at most 1");
    const resampled = (e.resample_rate as number) * output;
    c.derived(a, acceptanceRate(output, resampled, 1), `${pp}.acceptance_rate`, "1 - resampled / (output - 1)");
  }
  const present = NOOP_KEYS.filter((k) => e[k] !== undefined);
  if (present.length > 0 && present.length < NOOP_KEYS.length) {
    c.fail(pp, `has ${present.join(", ")} but not ${NOOP_KEYS.filter((k) => !present.includes(k)).join(", ")}`);
    return;
  }
  if (present.length > 0) {
    const perRound = c.number(e, "dispatches_per_round", pp, { min: 1, int: true });
    const noop = c.number(e, "noop_rounds_per_call", pp, { min: 0 });
    c.number(e, "noop_rounds_cold_call", pp, { min: 0, int: true });
    c.derived(
      c.number(e, "noop_dispatches_per_call", pp, { min: 0 }),
      noop * perRound,
      `${pp}.noop_dispatches_per_call`,
      "noop_rounds_per_call * dispatches_per_round",
    );
  }
  if (e.cost_model === undefined) return;
  const path = `${pp}.cost_model`;
  const m = c.object(e.cost_model, path);
  if (!m) return;
  if (present.length === 0) {
    c.fail(path, "needs the gamma's noop_rounds_per_call and dispatches_per_round");
    return;
  }
  const costs = Object.fromEntries(STEP_COST_KEYS.map((k) => [k, c.number(m, k, path, { min: 0 })]));
  const want = poeCostModel(costs as Record<typeof STEP_COST_KEYS[number], number>, {
    gamma,
    median_ms: e.median_ms as number,
    avg_rounds_per_call: e.avg_rounds_per_call as number,
    avg_output_tokens_per_call: output,
    sync_points_per_call: e.sync_points_per_call as number,
    noop_rounds_per_call: e.noop_rounds_per_call as number,
    dispatches_per_round: e.dispatches_per_round as number,
  });
  for (const [k, v] of Object.entries(want)) {
    if ((STEP_COST_KEYS as readonly string[]).includes(k)) continue;
    c.derived(c.number(m, k, path, { min: 0 }), v, `${path}.${k}`, "the cost model of poe_model.ts");
  }
}

/** hydra_poe's poe_spreads: the other spreads of the config, ascending, each with the gammas of `poe`. */
function checkPoeSpreads(c: Checker, o: Record<string, unknown>, path: string, config: BenchConfig | null): void {
  const v = o.poe_spreads;
  if (v === undefined) return;
  if (!Array.isArray(v)) {
    c.fail(path, "expected an array of {spread, gammas}");
    return;
  }
  const gammas = Array.isArray(o.poe) ? o.poe.map((g) => g?.gamma).join() : "";
  v.forEach((x, i) => {
    const pp = `${path}[${i}]`;
    const e = c.object(x, pp);
    if (!e) return;
    c.number(e, "spread", pp, { min: 0 });
    checkPoe(c, e.gammas, `${pp}.gammas`);
    if (Array.isArray(e.gammas) && e.gammas.map((g) => g?.gamma).join() !== gammas) {
      c.fail(`${pp}.gammas`, "expected the gammas of poe");
    }
  });
  const spreads = v.map((x) => x?.spread).join();
  const want = config ? (config.weights ? [] : poeSpreads(config).slice(1)).join() : spreads;
  if (spreads !== want) {
    c.fail(
      path,
      `holds spreads [${spreads}]; expected the spreads of poe_spread_sweep but synthetic_spread: [${want}]`,
    );
  }
}

/** Checks a result's runtime fields (all three or none: runs before the `webgpu` knob) against its key's runtime. */
function checkRuntime(c: Checker, o: Record<string, unknown>, path: string, runtime: string): void {
  const present = ["runtime", "runtime_version", "runtime_toggles"].filter((k) => o[k] !== undefined);
  if (present.length === 0) {
    if (runtime !== "deno") c.fail(`${path}.runtime`, `missing; expected "${runtime}"`);
    return;
  }
  if (present.length < 3) c.fail(path, "expected runtime, runtime_version and runtime_toggles together");
  if (o.runtime !== runtime) c.fail(`${path}.runtime`, `expected "${runtime}"`);
  if (o.runtime_version !== undefined) c.string(o, "runtime_version", path);
  const t = o.runtime_toggles;
  if (t !== undefined && !(Array.isArray(t) && t.every((x) => typeof x === "string"))) {
    c.fail(`${path}.runtime_toggles`, "expected an array of strings");
  }
}

function checkConfiguration(
  c: Checker,
  v: unknown,
  key: string,
  name: ConfigurationName,
  runtime: string,
  env: Record<string, unknown> | null,
  config: BenchConfig | null,
): void {
  const path = `configurations.${key}`;
  const o = c.object(v, path);
  if (!o) return;
  if (o.name !== name) c.fail(`${path}.name`, `expected "${name}"`);
  checkRuntime(c, o, path, runtime);
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
    checkPoeSpreads(c, o, `${path}.poe_spreads`, config);
    if (o.weights === "random") c.fail(`${path}.weights`, 'expected "synthetic" or checkpoint paths for hydra_poe');
  } else {
    checkDecode(c, o.decode, `${path}.decode`);
    if (o.poe !== null) c.fail(`${path}.poe`, `expected null for ${name}`);
    if (o.poe_spreads !== undefined) c.fail(`${path}.poe_spreads`, `expected none for ${name}`);
  }
  checkSweeps(c, o, name, path, config);
  c.number(o, "load_ms", path, { min: 0 });
  c.number(o, "sync_points", path, { min: 0, int: true });
}

/** Checks an adapter block (environment.adapter, environment.runtimes[i].adapter). */
function checkAdapter(c: Checker, v: unknown, path: string): void {
  const adapter = c.object(v, path);
  if (!adapter) return;
  for (const k of ["vendor", "architecture", "device", "description", "backend"]) c.string(adapter, k, path);
  c.boolean(adapter, "is_fallback_adapter", path);
  if ("driver" in adapter) c.string(adapter, "driver", path);
}

/** Checks environment.runtimes (absent in runs before the `webgpu` knob): one entry per runtime of config.webgpu. */
function checkRuntimes(c: Checker, v: unknown, config: BenchConfig | null): void {
  if (v === undefined) return;
  if (!Array.isArray(v)) {
    c.fail("environment.runtimes", "expected an array");
    return;
  }
  v.forEach((r, i) => {
    const path = `environment.runtimes[${i}]`;
    const o = c.object(r, path);
    if (!o) return;
    if (!(WEBGPU_RUNTIMES as readonly unknown[]).includes(o.runtime)) {
      c.fail(`${path}.runtime`, `expected one of ${WEBGPU_RUNTIMES.join(", ")}`);
    }
    c.string(o, "version", path);
    if (!Array.isArray(o.toggles) || !o.toggles.every((t) => typeof t === "string")) {
      c.fail(`${path}.toggles`, "expected an array of strings");
    }
    checkAdapter(c, o.adapter, `${path}.adapter`);
    if (!Array.isArray(o.features) || !o.features.every((f) => typeof f === "string")) {
      c.fail(`${path}.features`, "expected an array of strings");
    }
    const limits = c.object(o.limits, `${path}.limits`);
    if (limits) { for (const k of Object.keys(limits)) c.number(limits, k, `${path}.limits`); }
    c.boolean(o, "timestamp_query", path);
    c.number(o, "copy_bandwidth_gbps", path, { min: 0 });
  });
  const got = v.map((r) => r?.runtime).join();
  if (config && got !== config.webgpu.join()) {
    c.fail("environment.runtimes", `lists [${got}]; expected the runtimes of config.webgpu: [${config.webgpu}]`);
  }
}

/** The configuration name and runtime a key of `configurations` (or environment.roofline) stands for, or null. */
function parseKey(key: string, runtimes: readonly string[]): { name: ConfigurationName; runtime: string } | null {
  for (const runtime of runtimes) {
    for (const name of CONFIGURATION_NAMES) if (resultKey(name, runtime, runtimes) === key) return { name, runtime };
  }
  return null;
}

/** How a key of `configurations` must look, for messages. */
function keyWords(runtimes: readonly string[]): string {
  return runtimes.length > 1 ? "expected <configuration>@<runtime> of config.configs and config.webgpu" : "";
}

function checkEnvironment(c: Checker, v: unknown, runtimes: readonly string[]): Record<string, unknown> | null {
  const o = c.object(v, "environment");
  if (!o) return null;
  checkAdapter(c, o.adapter, "environment.adapter");
  if ("cpu" in o) {
    const cpu = c.object(o.cpu, "environment.cpu");
    if (cpu && cpu.model !== null && typeof cpu.model !== "string") {
      c.fail("environment.cpu.model", "expected a string or null");
    }
    if (cpu) c.number(cpu, "logical_cores", "environment.cpu", { min: 1, int: true });
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
      if (!parseKey(k, runtimes)) c.fail(path, `unknown configuration name ${keyWords(runtimes)}`.trim());
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

/** Sources a knob of `provenance.knob_sources` may have. */
const KNOB_SOURCES = ["default", "config file", "flag", "software-adapter default"];

/** Checks the provenance block (optional: runs before it was recorded lack it). */
function checkProvenance(c: Checker, v: unknown): void {
  const o = c.object(v, "provenance");
  if (!o) return;
  if (!Array.isArray(o.command_line) || !o.command_line.every((a) => typeof a === "string")) {
    c.fail("provenance.command_line", "expected an array of strings");
  }
  c.string(o, "config_file", "provenance");
  const sources = c.object(o.knob_sources, "provenance.knob_sources");
  if (sources) {
    for (const k of Object.keys(DEFAULT_CONFIG) as (keyof BenchConfig)[]) {
      if (!(k in sources) && addedLater(k)) continue; // a run written before the knob existed
      if (!KNOB_SOURCES.includes(sources[k] as string)) {
        c.fail(`provenance.knob_sources.${k}`, `expected one of ${KNOB_SOURCES.map((s) => `"${s}"`).join(", ")}`);
      }
    }
    for (const k of Object.keys(sources)) {
      if (!(k in DEFAULT_CONFIG)) c.fail(`provenance.knob_sources.${k}`, "unknown knob");
    }
  }
  if (o.dirty !== null && typeof o.dirty !== "boolean") c.fail("provenance.dirty", "expected a boolean or null");
  c.boolean(o, "allow_concurrent", "provenance");
  if (
    "engine_overrides" in o &&
    !(o.engine_overrides !== null && typeof o.engine_overrides === "object" && !Array.isArray(o.engine_overrides) &&
      Object.values(o.engine_overrides).every((x) => typeof x === "string"))
  ) {
    c.fail("provenance.engine_overrides", "expected an object of strings");
  }
  if (!isProcessIdentity(o.process)) {
    c.fail("provenance.process", "expected {pid, hostname, started, start_ticks}");
  }
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
  if (!(RUN_STATUSES as readonly unknown[]).includes(o.status)) {
    c.fail("status", `expected one of ${RUN_STATUSES.map((s) => `"${s}"`).join(", ")}`);
  }
  let config: BenchConfig | null = null;
  try {
    config = validateBenchConfig(o.config, "results.json config");
  } catch (e) {
    c.fail("config", (e as Error).message);
  }
  const runtimes: readonly string[] = config?.webgpu ?? WEBGPU_RUNTIMES;
  const env = checkEnvironment(c, o.environment, config?.webgpu ?? ["deno"]);
  if (env) checkRuntimes(c, env.runtimes, config);
  const confs = c.object(o.configurations, "configurations");
  if (confs) {
    for (const [k, v] of Object.entries(confs)) {
      const parsed = parseKey(k, config ? runtimes : ["deno"]) ?? (config ? null : parseKey(k, runtimes));
      if (!parsed) {
        c.fail(`configurations.${k}`, `unknown configuration name ${keyWords(runtimes)}`.trim());
        continue;
      }
      if (config && !config.configs.includes(parsed.name)) {
        c.fail(`configurations.${k}`, "not among config.configs");
      }
      checkConfiguration(c, v, k, parsed.name, parsed.runtime, env, config);
    }
    if (o.status === "complete" && config) {
      for (const r of config.webgpu) {
        for (const n of config.configs) {
          const k = resultKey(n, r, config.webgpu);
          if (!(k in confs)) c.fail(`configurations.${k}`, "missing in a complete run");
        }
      }
    }
  }
  checkPeers(c, o.peers);
  if (o.status === "failed" || o.status === "interrupted") {
    const f = c.object(o.failure, "failure");
    if (f) {
      c.string(f, "message", "failure");
      if (f.configuration !== null && !(CONFIGURATION_NAMES as readonly unknown[]).includes(f.configuration)) {
        c.fail("failure.configuration", "expected a configuration name or null");
      }
      if (f.runtime !== undefined && f.runtime !== null && !runtimes.includes(f.runtime as string)) {
        c.fail("failure.runtime", `expected one of ${runtimes.join(", ")} or null`);
      }
    }
  } else if (o.failure !== null) {
    c.fail("failure", `expected null when status is ${JSON.stringify(o.status)}`);
  }
  if ("provenance" in o) checkProvenance(c, o.provenance);
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
