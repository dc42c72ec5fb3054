/**
 * `deno task bench`: reads config.json (every knob also a flag, `--help` lists them), runs baseline, hydra_naive and
 * hydra_poe back-to-back on one GPU, freeing GPU memory between them, and writes results/<YYYY-MM-DD>_run<NN>/:
 * results.json after each configuration, then graph.png and report.html (skipped with a note where the chart packages
 * are not installed, e.g. on the GPU machine: `deno task graph DIR` renders them later), and prints the summary.
 */

import { parseArgs } from "@std/cli/parse-args";
import { getGpu, type Gpu } from "../kernels/runtime.ts";
import { UserError } from "../common/errors.ts";
import { PRESETS } from "../model/config.ts";
import { Decoder } from "../model/generate.ts";
import type { HydraTransformer } from "../model/hydra.ts";
import { applyChatTemplate, loadChatTemplateConfig } from "../poe/chat_template.ts";
import { loadTokenizer } from "../poe/tokenizer.ts";
import { measureCopyBandwidth } from "./bandwidth.ts";
import { type BenchConfig, type ConfigurationName, helpText, loadConfig, poeGammas, wantsHelp } from "./config.ts";
import {
  benchmarkDecode,
  benchmarkPoe,
  benchmarkPoeTtft,
  benchmarkTtft,
  buildBaselineModel,
  buildHydraModel,
  buildPoe,
  weightBytesPerStep,
} from "./configurations.ts";
import { rooflineTps } from "./metrics.ts";
import { createRunDir, ResultsWriter } from "./results.ts";
import type { ConfigurationResult, Environment, WeightsLabel } from "./schema.ts";
import { Rng } from "./rng.ts";
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
  const rng = new Rng(c.seed);
  return Array.from({ length: c.prompt_length }, () => rng.int(vocab));
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
    const given = new Set(Object.keys(parseArgs(argv)).map((k) => k.replaceAll("-", "_")));
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

async function runConfiguration(
  gpu: Gpu,
  name: ConfigurationName,
  c: BenchConfig,
  copyGbps: number,
): Promise<ConfigurationResult> {
  const config = PRESETS[c.size];
  const budgets = { warmupMs: c.warmup_ms, repMs: c.rep_ms, onMeasured: () => terminal.tick() };
  const syncBefore = gpu.syncPoints;
  const loadStart = performance.now();
  const progress = (m: string) => log(`[${name}] ${m}`);
  let model: HydraTransformer | null = null;
  try {
    if (name !== "hydra_poe") {
      const prompt = randomPrompt(c, config.vocabSize);
      const maxPos = c.prompt_length + c.gen_length;
      model = name === "baseline"
        ? await buildBaselineModel(gpu, config, { maxPos, maxRows: c.prompt_length, seed: c.seed })
        : await buildHydraModel(gpu, config, {
          nHeads: c.n_heads,
          headsDepth: c.heads_depth,
          maxPos,
          maxRows: c.prompt_length,
          weights: { kind: "random", seed: c.seed },
        });
      const decoder = new Decoder(model);
      const mode = name === "baseline" ? "single" : "naive";
      const load_ms = performance.now() - loadStart;
      progress(
        `built in ${(load_ms / 1000).toFixed(1)} s: weights ${
          (model.weightBytes / 1e9).toFixed(2)
        } GB, KV + activations ${(model.stateBytes / 1e9).toFixed(3)} GB`,
      );
      const bytes = weightBytesPerStep(model, mode === "single" ? [0] : model.weights.heads.map((_, h) => h));
      const ttft = await benchmarkTtft(decoder, prompt, mode, budgets);
      progress(`ttft ${ttft.median_ms.toFixed(3)} ms (${ttft.n} reps, GPU time)`);
      const decode = await benchmarkDecode(decoder, prompt, mode, {
        ...budgets,
        genLength: c.gen_length,
        stepInterval: c.step_interval,
      }, progress);
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
        load_ms,
        sync_points: gpu.syncPoints - syncBefore,
      };
    }
    // hydra_poe
    const tokenizerDir = c.weights?.base;
    const tokenizer = await loadTokenizer(tokenizerDir);
    const chat = await loadChatTemplateConfig(tokenizerDir);
    const text = applyChatTemplate([{ role: "user", content: c.poe_prompt }], {
      template: chat.template,
      addGenerationPrompt: true,
      specialTokens: chat.specialTokens,
    });
    let promptIds = tokenizer.encode(text);
    if (!c.weights && config.vocabSize < tokenizer.vocabSize) {
      // The tiny test size has a 500-id vocabulary: its synthetic weights know no text, so ids are folded into it.
      promptIds = promptIds.map((t) => t % config.vocabSize);
      progress(`tiny vocabulary: prompt ids folded modulo ${config.vocabSize}`);
    }
    const gammas = poeGammas(c);
    const maxGamma = Math.max(...gammas);
    model = await buildHydraModel(gpu, config, {
      nHeads: c.n_heads,
      headsDepth: c.heads_depth,
      maxPos: promptIds.length + c.poe_max_new_tokens + maxGamma,
      maxRows: promptIds.length,
      maxLogitRows: maxGamma,
      weights: c.weights ? { kind: "checkpoint", ...c.weights } : { kind: "synthetic", seed: c.seed },
    }, progress);
    const load_ms = performance.now() - loadStart;
    progress(
      `built in ${(load_ms / 1000).toFixed(1)} s (${model.weights.source} weights ${
        (model.weightBytes / 1e9).toFixed(2)
      } GB); prompt ${promptIds.length} tokens`,
    );
    const bytes = weightBytesPerStep(model, [0]);
    const knobs = {
      beta: c.poe_beta,
      temperature: c.poe_temperature,
      maxNewTokens: c.poe_max_new_tokens,
      seed: c.seed,
    };
    const first = buildPoe(model, { ...knobs, gamma: c.poe_gamma }, tokenizer, chat);
    const ttft = await benchmarkPoeTtft(first, promptIds, budgets);
    first.destroy();
    progress(`poe ttft ${ttft.median_ms.toFixed(3)} ms (${ttft.n} reps, GPU time)`);
    const poe = [];
    for (const gamma of gammas) {
      const p = buildPoe(model, { ...knobs, gamma }, tokenizer, chat);
      const r = await benchmarkPoe(p, promptIds, budgets);
      p.destroy();
      poe.push(r);
      progress(
        `gamma ${gamma}: ${r.median_ms.toFixed(1)} ms/call (wall), ${
          r.avg_rounds_per_call.toFixed(1)
        } rounds, resample rate ${r.resample_rate.toFixed(2)}, effective ${
          r.effective_tps.toFixed(1)
        } tok/s, user-visible ${r.user_visible_tps.toFixed(1)} tok/s, ${r.sync_points_per_call} syncs/call`,
      );
    }
    const label: WeightsLabel = c.weights ? { base: c.weights.base, heads: c.weights.heads } : "synthetic";
    return {
      name,
      weights: label,
      weight_bytes_per_step: bytes,
      roofline_tps: rooflineTps(copyGbps, bytes),
      ttft,
      decode: null,
      poe,
      load_ms,
      sync_points: gpu.syncPoints - syncBefore,
    };
  } finally {
    model?.destroy();
  }
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
