/**
 * `deno task bench`: reads config.json (every knob also a flag, `--help` lists them), runs baseline, hydra_naive and
 * hydra_poe back-to-back on one GPU, freeing GPU memory between them, and writes results/<YYYY-MM-DD>_run<NN>/:
 * results.json after each configuration, then graph.png and report.html (skipped with a note where the chart packages
 * are not installed, e.g. on the GPU machine: `deno task graph DIR` renders them later), and prints the summary.
 * @module
 */

import { getGpu, type Gpu } from "../kernels/runtime.ts";
import { UserError } from "../common/errors.ts";
import { PRESETS } from "../model/config.ts";
import { Decoder, headsFor } from "../model/generate.ts";
import { loadChatTemplateConfig } from "../poe/chat_template.ts";
import { userPrompt } from "../poe/poe.ts";
import { loadTokenizer } from "../poe/tokenizer.ts";
import { measureCopyBandwidth } from "./bandwidth.ts";
import {
  type BenchConfig,
  type ConfigurationName,
  helpText,
  knobsSetByFlags,
  loadConfig,
  poeGammas,
  poeKvLength,
  wantsHelp,
} from "./config.ts";
import {
  benchmarkDecode,
  benchmarkPoeTtft,
  benchmarkTtft,
  type Budgets,
  buildBaselineModel,
  buildHydraModel,
  buildPoe,
  type Progress,
  weightBytesPerStep,
} from "./configurations.ts";
import { rooflineTps } from "./metrics.ts";
import { measureSyncMs } from "./poe_costs.ts";
import { measurePoeGammas, measurePoeSpreads, poeOptionsOf, type PoeSweep } from "./poe_sweep.ts";
import { createRunDir, ResultsWriter } from "./results.ts";
import type { ConfigurationResult, Environment, WeightsLabel } from "./results_types.ts";
import { benchmarkSweeps, decodeModelShape, randomIds } from "./contexts.ts";
import { runPeers } from "./peers.ts";
import { decodeHeadline, formatFigure } from "./headline.ts";
import { measurementsOf, RunProgress } from "./progress.ts";
import { runSummaryText, writeRunFiles } from "./run_outputs.ts";

const terminal = new RunProgress();
function log(message: string): void {
  terminal.line(message);
}

/** Settings a software adapter gets unless a flag sets them, so the README command finishes in about two minutes. */
const SOFTWARE_DEFAULTS: Partial<BenchConfig> = {
  size: "tiny",
  gen_length: 32,
  poe_max_new_tokens: 32,
  poe_gamma_sweep: [1, 2, 4],
  warmup_ms: 50,
  rep_ms: 200,
};

async function gitCommit(): Promise<string | null> {
  const fromEnv = Deno.env.get("HYDRA_BENCH_COMMIT");
  if (fromEnv) return fromEnv;
  try {
    const out = await new Deno.Command("git", { args: ["rev-parse", "HEAD"], stdout: "piped", stderr: "null" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

async function environment(gpu: Gpu, copyGbps: number): Promise<Environment> {
  const d = gpu.description;
  return {
    adapter: {
      vendor: d.vendor,
      architecture: d.architecture,
      device: d.device,
      description: d.description,
      is_fallback_adapter: d.isFallbackAdapter,
      backend: d.backend,
    },
    features: d.featuresGranted,
    limits: d.limitsGranted,
    deno: { ...Deno.version },
    os: { os: Deno.build.os, arch: Deno.build.arch, release: Deno.osRelease() },
    commit: await gitCommit(),
    date: new Date().toISOString(),
    timestamp_query: gpu.has("timestamp-query"),
    copy_bandwidth_gbps: copyGbps,
    roofline: {},
  };
}

/** The prompt of the baseline / naive benchmarks: prompt_length seeded random ids (random weights care for no text). */
function randomPrompt(c: BenchConfig, vocab: number): number[] {
  return randomIds(c.seed, c.prompt_length, vocab);
}

async function run(argv: string[]): Promise<number> {
  if (wantsHelp(argv)) {
    console.log(helpText());
    return 0;
  }
  let config = await loadConfig("config.json", argv);
  const gpu = await getGpu();
  log(
    `adapter: ${gpu.description.description} (vendor ${gpu.description.vendor}); features ${
      gpu.description.featuresGranted.join(", ")
    }`,
  );
  if (gpu.isSoftware) {
    const given: Set<string> = knobsSetByFlags(argv);
    const applied = Object.fromEntries(Object.entries(SOFTWARE_DEFAULTS).filter(([k]) => !given.has(k)));
    config = { ...config, ...applied };
    log(`software adapter: these figures are a smoke test, not GPU numbers (using ${JSON.stringify(applied)})`);
  }
  const dir = await createRunDir(config.results_dir);
  log(`run folder ${dir}`);
  const bw = await measureCopyBandwidth(gpu, gpu.isSoftware ? 64 << 20 : 1 << 30);
  log(`copy bandwidth: ${bw.kernel_copy_gbps.toFixed(0)} GB/s (WGSL copy kernel, read + write)`);
  const env = await environment(gpu, bw.kernel_copy_gbps);
  const writer = new ResultsWriter(dir, config, env);
  await writer.start();
  let current: ConfigurationName | null = null;
  try {
    for (const name of config.configs) {
      current = name;
      log(`=== ${name} (${config.size})`);
      terminal.begin(name, measurementsOf(name, config));
      const result = await runConfiguration(gpu, name, config, bw.kernel_copy_gbps);
      terminal.end();
      env.roofline[name] = { weight_bytes_per_step: result.weight_bytes_per_step, roofline_tps: result.roofline_tps };
      await writer.setEnvironment(env);
      await writer.record(result);
      log(`${name} done; results.json updated`);
    }
    current = null;
    const peers = await runPeers(config.peers, { size: config.size, dir, log, device: gpu.description.description });
    if (peers.length > 0) await writer.setPeers(peers);
    await writer.complete();
  } catch (e) {
    terminal.end();
    await writer.fail(current, e);
    throw e;
  }
  await writeRunFiles(dir, log);
  log(`done: ${dir}`);
  console.log(await runSummaryText(dir));
  return 0;
}

/** Times one configuration and frees its GPU memory before returning. */
async function runConfiguration(
  gpu: Gpu,
  name: ConfigurationName,
  c: BenchConfig,
  copyGbps: number,
): Promise<ConfigurationResult> {
  const syncBefore = gpu.syncPoints;
  const run: ConfigurationRun = { gpu, c, copyGbps, progress: (m) => log(`[${name}] ${m}`) };
  const result = name === "hydra_poe" ? await runPoeConfiguration(run) : await runDecodeConfiguration(name, run);
  return { ...result, sync_points: gpu.syncPoints - syncBefore };
}

/** What the decode and PoE halves of `runConfiguration` are given. */
interface ConfigurationRun {
  gpu: Gpu;
  c: BenchConfig;
  /** The device's measured copy bandwidth, GB/s (for the roofline). */
  copyGbps: number;
  progress: Progress;
}

/** A configuration's results but its sync points (counted by `runConfiguration`). */
type Measured = Omit<ConfigurationResult, "sync_points">;

/** The budgets of every benchmark of a run. */
function budgetsOf(c: BenchConfig): Budgets {
  return { warmupMs: c.warmup_ms, repMs: c.rep_ms, onMeasured: () => terminal.tick() };
}

/** baseline or hydra_naive on random weights: TTFT, then the decode latency at every step_interval-th position. */
async function runDecodeConfiguration(
  name: "baseline" | "hydra_naive",
  { gpu, c, copyGbps, progress }: ConfigurationRun,
): Promise<Measured> {
  const config = PRESETS[c.size];
  const loadStart = performance.now();
  const shape = { ...decodeModelShape(c), kvDtype: c.kv_dtype };
  const model = name === "baseline"
    ? await buildBaselineModel(gpu, config, { ...shape, seed: c.seed })
    : await buildHydraModel(gpu, config, {
      ...shape,
      nHeads: c.n_heads,
      headsDepth: c.heads_depth,
      weights: { kind: "random", seed: c.seed },
    });
  try {
    const load_ms = performance.now() - loadStart;
    progress(
      `built in ${(load_ms / 1000).toFixed(1)} s: weights ${
        (model.weightBytes / 1e9).toFixed(2)
      } GB, KV + activations ${(model.stateBytes / 1e9).toFixed(3)} GB`,
    );
    const mode = name === "baseline" ? "single" : "naive";
    const bytes = weightBytesPerStep(model, headsFor(model, mode));
    const prompt = randomPrompt(c, config.vocabSize);
    const decoder = new Decoder(model);
    const ttft = await benchmarkTtft(decoder, prompt, mode, budgetsOf(c));
    progress(`ttft ${ttft.median_ms.toFixed(3)} ms (${ttft.n} reps, GPU time)`);
    const decode = await benchmarkDecode(decoder, prompt, mode, {
      ...budgetsOf(c),
      genLength: c.gen_length,
      stepInterval: c.step_interval,
    }, progress);
    const sweeps = await benchmarkSweeps(decoder, mode, c, ttft, budgetsOf(c), progress);
    decoder.destroy();
    const roof = rooflineTps(copyGbps, bytes);
    const { median_ms: med, tokens_per_s: tps } = decodeHeadline(decode); // the stored headline
    progress(
      `decode median ${formatFigure("decode_ms_per_token", med)} ms/token = ${
        formatFigure("decode_tokens_per_s", tps)
      } tok/s; roofline ${roof.toFixed(1)} tok/s (${formatFigure("roofline_share", tps / roof)})`,
    );
    return {
      name,
      weights: "random",
      weight_bytes_per_step: bytes,
      roofline_tps: roof,
      ttft,
      decode,
      poe: null,
      ...sweeps,
      load_ms,
    };
  } finally {
    model.destroy();
  }
}

/**
 * hydra_poe on `weights` (else a synthetic LoRA ensemble at synthetic_spread): the chat-templated poe_prompt, PoE TTFT
 * (GPU time), the sync cost, then at every gamma whole calls (wall time) and the cost model; then the other spreads
 * of poe_spread_sweep, each on a rebuilt ensemble (poe_sweep.ts).
 */
async function runPoeConfiguration({ gpu, c, copyGbps, progress }: ConfigurationRun): Promise<Measured> {
  const config = PRESETS[c.size];
  const loadStart = performance.now();
  const tokenizer = await loadTokenizer(c.weights?.base);
  const chat = await loadChatTemplateConfig(c.weights?.base);
  let promptIds = tokenizer.encode(userPrompt(c.poe_prompt, chat));
  if (!c.weights && config.vocabSize < tokenizer.vocabSize) {
    // The tiny test size has a 500-id vocabulary: its synthetic weights know no text, so ids are folded into it.
    promptIds = promptIds.map((t) => t % config.vocabSize);
    progress(`tiny vocabulary: prompt ids folded modulo ${config.vocabSize}`);
  }
  const gammas = poeGammas(c);
  const build = (spread: number) =>
    buildHydraModel(gpu, config, {
      nHeads: c.n_heads,
      headsDepth: c.heads_depth,
      maxPos: poeKvLength(c, promptIds.length),
      maxRows: promptIds.length,
      maxLogitRows: Math.max(...gammas),
      kvDtype: c.kv_dtype,
      weights: c.weights ? { kind: "checkpoint", ...c.weights } : { kind: "synthetic", seed: c.seed, spread },
    }, progress);
  const model = await build(c.synthetic_spread);
  let sweep: PoeSweep, result: Measured;
  try {
    const load_ms = performance.now() - loadStart;
    progress(
      `built in ${(load_ms / 1000).toFixed(1)} s (${model.weights.source} weights ${
        (model.weightBytes / 1e9).toFixed(2)
      } GB); prompt ${promptIds.length} tokens`,
    );
    const bytes = weightBytesPerStep(model, [0]);
    const first = buildPoe(model, poeOptionsOf(c, c.poe_gamma), tokenizer, chat);
    const ttft = await benchmarkPoeTtft(first, promptIds, budgetsOf(c));
    first.destroy();
    progress(`poe ttft ${ttft.median_ms.toFixed(3)} ms (${ttft.n} reps, GPU time)`);
    const syncMs = await measureSyncMs(gpu);
    progress(`sync: ${syncMs.toFixed(1)} ms per readback (wall, nothing queued)`);
    sweep = { c, promptIds, budgets: budgetsOf(c), prefillMs: ttft.median_ms, syncMs, tokenizer, chat, progress };
    const poe = await measurePoeGammas(model, sweep);
    const label: WeightsLabel = c.weights ? { base: c.weights.base, heads: c.weights.heads } : "synthetic";
    result = {
      name: "hydra_poe",
      weights: label,
      weight_bytes_per_step: bytes,
      roofline_tps: rooflineTps(copyGbps, bytes),
      ttft,
      decode: null,
      poe,
      load_ms,
    };
  } finally {
    model.destroy();
  }
  return { ...result, poe_spreads: await measurePoeSpreads(build, sweep) };
}

if (import.meta.main) {
  try {
    Deno.exit(await run(Deno.args));
  } catch (e) {
    if (e instanceof UserError) {
      console.error(`error: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
