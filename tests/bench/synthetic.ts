/**
 * A synthetic but plausible results document (an H100-like run of the 7B), built through the same functions the
 * runner uses (summarize, decodePosition, poeGammaResult), for the schema, results and graph tests.
 */

import { Rng } from "../../kernels/testing/harness.ts";
import { type ConfigurationName, DEFAULT_CONFIG } from "../../bench/config.ts";
import { decodeResult } from "../../bench/headline.ts";
import { ttftLengths } from "../../bench/contexts.ts";
import { decodePosition, poeGammaResult, rooflineTps } from "../../bench/metrics.ts";
import type {
  Clock,
  ConfigurationResult,
  Environment,
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
    return poeGammaResult(gamma, timings(rng, 128 * 10 / (1 + gamma * 0.4), 6), calls);
  });
  return { ...common, weights: "synthetic", decode: null, poe };
}

/** A complete run of `configs` (all three by default). */
export function syntheticResults(configs: readonly ConfigurationName[] = DEFAULT_CONFIG.configs): ResultsDocument {
  const config = { ...structuredClone(DEFAULT_CONFIG), configs: [...configs] };
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
