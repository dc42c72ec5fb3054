/**
 * A synthetic but plausible results document (an H100-like run of the 7B), built through the same functions the
 * runner uses (summarize, decodePosition, poeGammaResult), for the schema, results and graph tests.
 */

import { Rng } from "../../kernels/testing/harness.ts";
import { type ConfigurationName, DEFAULT_CONFIG } from "../../bench/config.ts";
import { decodeResult } from "../../bench/headline.ts";
import { ttftLengths } from "../../bench/contexts.ts";
import { decodePosition, type PoeCallCounts, poeGammaResult, poeNoopCounts, rooflineTps } from "../../bench/metrics.ts";
import { poeCostModel } from "../../bench/poe_model.ts";
import type {
  Clock,
  ConfigurationResult,
  Environment,
  PoeGammaResult,
  ResultsDocument,
  TimedStats,
} from "../../bench/results_types.ts";
import { summarize } from "../../bench/stats.ts";

const COPY_GBPS = 3001;
const WEIGHT_BYTES: Record<ConfigurationName, number> = {
  baseline: 14.6e9,
  hydra_naive: 14.6e9 + 4 * 2.0e9,
  hydra_poe: 14.6e9,
};

/** `n` timings around `center` ms with ~3% jitter and one slow outlier every 20 samples. */
function timings(rng: Rng, center: number, n: number, clock: Clock = "gpu"): TimedStats {
  const raw = Array.from({ length: n }, (_, i) => center * (1 + 0.03 * rng.normal()) * (i % 20 === 7 ? 1.6 : 1));
  return { ...summarize(raw), clock };
}

/** An environment block like the H100's. */
export function syntheticEnvironment(configs: readonly ConfigurationName[] = DEFAULT_CONFIG.configs): Environment {
  return {
    adapter: {
      vendor: "nvidia",
      architecture: "hopper",
      device: "0x2330",
      description: "NVIDIA H100 80GB HBM3",
      is_fallback_adapter: false,
      backend: "vulkan",
    },
    features: ["shader-f16", "timestamp-query"],
    limits: { maxStorageBufferBindingSize: 2 ** 31 - 1, maxBufferSize: 2 ** 32 - 1 },
    deno: { deno: "2.9.6", v8: "15.0.245.2-rusty", typescript: "6.0.3" },
    os: { os: "linux", arch: "x86_64", release: "6.8.0" },
    commit: "0123456789abcdef0123456789abcdef01234567",
    date: "2026-11-28T09:30:00.000Z",
    timestamp_query: true,
    copy_bandwidth_gbps: COPY_GBPS,
    roofline: Object.fromEntries(
      configs.map((n) => [n, {
        weight_bytes_per_step: WEIGHT_BYTES[n],
        roofline_tps: rooflineTps(COPY_GBPS, WEIGHT_BYTES[n]),
      }]),
    ),
  };
}

/** One configuration's results. */
export function syntheticConfiguration(name: ConfigurationName, seed = 1): ConfigurationResult {
  const rng = new Rng(seed * 7919 + name.length);
  const step = name === "hydra_naive" ? 15 : 10;
  const common = {
    name,
    weight_bytes_per_step: WEIGHT_BYTES[name],
    roofline_tps: rooflineTps(COPY_GBPS, WEIGHT_BYTES[name]),
    ttft: timings(rng, { baseline: 30, hydra_naive: 45, hydra_poe: 52 }[name], 40),
    load_ms: 5200,
    sync_points: 310,
  };
  if (name !== "hydra_poe") {
    const positions = [];
    for (let p = 0; p < DEFAULT_CONFIG.gen_length; p += DEFAULT_CONFIG.step_interval) {
      positions.push(decodePosition(p, timings(rng, step * (1 + p / 600), 30)));
    }
    return {
      ...common,
      weights: "random",
      decode: decodeResult(DEFAULT_CONFIG.gen_length, DEFAULT_CONFIG.step_interval, positions),
      poe: null,
    };
  }
  const poe = [1, 2, 4, 8].map((gamma) => {
    const calls = Array.from({ length: 6 }, () => {
      const accepted_at = Array.from({ length: gamma }, (_, i) => Math.round(40 * (0.9 - 0.02 * gamma) ** (i + 1)));
      return { output_tokens: 128, resampled_tokens: 20 + gamma, rounds: 40, accepted_at, sync_points: 1 };
    });
    return withCostModel(gamma, timings(rng, 128 * 10 / (1 + gamma * 0.4), 6), calls);
  });
  const poe_spreads = SYNTHETIC_SPREADS.map((spread) => ({
    spread,
    gammas: [1, 2, 4, 8].map((gamma) => {
      // geometric acceptance: 1 at spread 0, lower as the heads drift apart
      const alpha = 1 - 0.3 * spread, perRound = (1 - alpha ** gamma) / (1 - alpha) || gamma;
      const rounds = Math.ceil(127 / perRound), resampled = Math.round(rounds * (1 - alpha ** gamma));
      const accepted_at = Array.from({ length: gamma }, (_, i) => Math.round(rounds * alpha ** (i + 1)));
      const call = {
        output_tokens: 128,
        resampled_tokens: resampled,
        rounds,
        accepted_at,
        sync_points: 1,
      };
      const ms = 57 + rounds * (gamma * 8.2 + 2 + 1.5 * gamma) + 11;
      return withCostModel(gamma, timings(rng, ms, 6, "wall"), Array.from({ length: 6 }, () => call));
    }),
  }));
  return { ...common, weights: "synthetic", decode: null, poe, poe_spreads };
}

/** The spreads of poe_spread_sweep in the synthetic run (besides synthetic_spread 1). */
export const SYNTHETIC_SPREADS = [0, 0.5];

/**
 * A gamma result from the call counters, with no-op counters (2 gated-off rounds per call after the first) and a cost
 * model of 7B-like step costs (a gated-off dispatch 2 us).
 */
function withCostModel(gamma: number, stats: TimedStats, calls: PoeCallCounts[]): PoeGammaResult {
  const encoded = calls.map((c) => ({ ...c, rounds_encoded: c.rounds + 2 }));
  const perRound = 330 * gamma + 40 * 4;
  const r = { ...poeGammaResult(gamma, stats, encoded), ...poeNoopCounts(encoded, encoded[0], perRound) };
  const costs = {
    prefill_ms: 57,
    draft_step_ms: 8.2,
    verify_ms: 2 + 1.5 * gamma,
    accept_ms: 0.3,
    noop_round_ms: perRound * 0.002,
    sync_ms: 11,
  };
  return { ...r, cost_model: poeCostModel(costs, r) };
}

/** A complete run of `configs` (all three by default). */
export function syntheticResults(configs: readonly ConfigurationName[] = DEFAULT_CONFIG.configs): ResultsDocument {
  const config = {
    ...structuredClone(DEFAULT_CONFIG),
    configs: [...configs],
    poe_spread_sweep: [...SYNTHETIC_SPREADS],
  };
  return {
    schema_version: 1,
    run: "2026-11-28_run01",
    status: "complete",
    config,
    environment: syntheticEnvironment(configs),
    configurations: Object.fromEntries(configs.map((n, i) => [n, syntheticConfiguration(n, i + 1)])),
    failure: null,
  };
}

/**
 * `doc` (modified and returned) with the length sweeps of an H100-like 7B run, prompt_lengths 512, 2048 and
 * decode_contexts 128, 1024, 4095 (TTFT roughly linear in the prompt, a step ~1% slower per 100 cached tokens),
 * and the two PyTorch peers as `deno task bench --peers torch,hf` stores them.
 */
export function withSweepsAndPeers(doc: ResultsDocument): ResultsDocument {
  const rng = new Rng(4242);
  const c = doc.config;
  c.prompt_lengths = [512, 2048];
  c.decode_contexts = [128, 1024, 4095];
  for (const conf of Object.values(doc.configurations)) {
    if (!conf || conf.name === "hydra_poe") continue;
    const step = conf.decode!.median_ms!;
    conf.ttft_by_length = ttftLengths(c).map((n) => {
      const t = n === c.prompt_length ? conf.ttft : timings(rng, conf.ttft.median_ms * n / c.prompt_length, 12);
      return { prompt_length: n, ...t, tokens_per_s: 1000 * n / t.median_ms };
    });
    conf.decode_contexts = c.decode_contexts.map((n) => {
      const t = timings(rng, step * (1 + n / 10_000), 20);
      return { context: n, ...t, tokens_per_s: 1000 / t.median_ms };
    });
  }
  doc.peers = [
    {
      name: "torch",
      decode_ms_per_token: 9.092,
      command: "python3 tools/peers/torch_decode_peer.py 7b",
      log: "peer_torch.log",
      size: "7b",
      device: "NVIDIA H100 80GB HBM3",
    },
    {
      name: "hf",
      decode_ms_per_token: 24.1,
      ttft_ms: 41.5,
      command: "python3 tools/peers/hf_eager_peer.py 7b",
      log: "peer_hf.log",
      size: "7b",
      device: "NVIDIA H100 80GB HBM3",
    },
  ];
  return doc;
}

/** The runtime fields of a result on `runtime`, as the runner records them. */
function runtimeFields(runtime: "deno" | "dawn") {
  return runtime === "dawn"
    ? { runtime, runtime_version: "webgpu@0.6.2", runtime_toggles: ["backend=vulkan"] }
    : { runtime, runtime_version: "deno 2.9.6", runtime_toggles: [] };
}

/**
 * A complete run of `configs` on `--webgpu deno,dawn`: every configuration once per runtime, keyed
 * `<name>@<runtime>`, Dawn's timings from other seeds, and both runtimes in environment.runtimes.
 */
export function syntheticTwoRuntimes(configs: readonly ConfigurationName[] = DEFAULT_CONFIG.configs): ResultsDocument {
  const doc = syntheticResults(configs);
  const runtimes = ["deno", "dawn"] as const;
  doc.config.webgpu = [...runtimes];
  const env = doc.environment;
  env.runtimes = runtimes.map((runtime) => ({
    runtime,
    version: runtimeFields(runtime).runtime_version,
    toggles: runtimeFields(runtime).runtime_toggles,
    adapter: structuredClone(env.adapter),
    features: [...env.features, ...(runtime === "dawn" ? ["chromium-experimental-subgroup-matrix"] : [])],
    limits: structuredClone(env.limits),
    timestamp_query: true,
    copy_bandwidth_gbps: runtime === "deno" ? COPY_GBPS : 3050,
  }));
  const roofline = env.roofline;
  env.roofline = {};
  doc.configurations = {};
  for (const [r, runtime] of runtimes.entries()) {
    configs.forEach((n, i) => {
      doc.configurations[`${n}@${runtime}`] = {
        ...runtimeFields(runtime),
        ...syntheticConfiguration(n, 1 + i + 10 * r),
      };
      env.roofline[`${n}@${runtime}`] = roofline[n];
    });
  }
  return doc;
}
