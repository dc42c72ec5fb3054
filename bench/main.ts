/**
 * `deno task bench`: reads config.json (every knob also a flag, `--help` lists them), runs baseline, hydra_naive and
 * hydra_poe back-to-back on one GPU, freeing GPU memory between them, on each WebGPU runtime of the `webgpu` knob in
 * turn (deno, then dawn with `--webgpu deno,dawn`), and writes results/<YYYY-MM-DD>_run<NN>/:
 * results.json after each configuration, bench.log (everything the run prints), then graph.png and report.html
 * (skipped with a note where the chart packages are not installed, e.g. on the GPU machine: `deno task graph DIR`
 * renders them later), and prints the summary.
 *
 * Order: every input is checked before any configuration runs (config, weights, the PoE prompt before the GPU is
 * touched; the knobs as a whole once the adapter is known: bench/plan.ts), then the device lock is taken (one
 * benchmark per GPU: bench/lock.ts), then the run folder is made. The device of every runtime is made up front, so a
 * runtime without an adapter (Dawn on a software adapter) stops the run before anything is timed; each is destroyed
 * once its configurations are done, so the next runtime's configurations have the GPU's memory to themselves. SIGINT
 * and SIGTERM end the run with status "interrupted", keeping the configurations that finished.
 * @module
 */

import { resolve } from "@std/path";
import { Gpu, runtimeFromEnv, WEBGPU_ENV, type WebgpuRuntime } from "../kernels/runtime.ts";
import { UserError } from "../common/errors.ts";
import { PRESETS } from "../model/config.ts";
import { Decoder, headsFor } from "../model/generate.ts";
import { measureCopyBandwidth } from "./bandwidth.ts";
import {
  type BenchConfig,
  type ConfigurationName,
  helpText,
  knobSources,
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
import { acquireDeviceLock, describeHolder, type DeviceLock, deviceName, lockHolder } from "./lock.ts";
import { rooflineTps } from "./metrics.ts";
import { measureSyncMs } from "./poe_costs.ts";
import { measurePoeGammas, measurePoeSpreads, poeOptionsOf, type PoeSweep } from "./poe_sweep.ts";
import { planRun, type PoePrompt, readRunInput, type RunPlan } from "./plan.ts";
import { thisProcess } from "./process.ts";
import {
  adapterDriver,
  cpuModel,
  dirtyTree,
  engineOverrides,
  ownCommit,
  vulkanDevices,
  wgpuBackend,
} from "./provenance.ts";
import { createRunDir, ResultsWriter } from "./results.ts";
import type {
  ConfigurationResult,
  Environment,
  Provenance,
  RuntimeEnvironment,
  WeightsLabel,
} from "./results_types.ts";
import { benchmarkSweeps, decodeModelShape, randomIds } from "./contexts.ts";
import { runPeers } from "./peers.ts";
import { decodeHeadline, formatFigure, resultKey } from "./headline.ts";
import { measurementsOf, RunProgress } from "./progress.ts";
import { runSummaryText, writeRunFiles } from "./run_outputs.ts";
import { RunLog } from "./run_log.ts";

/** What the run prints, for bench.log. */
const runLog = new RunLog();
const stdout = new TextEncoder();
const terminal = new RunProgress({ write: runLog.tee((text) => Deno.stdout.writeSync(stdout.encode(text))) });
function log(message: string): void {
  terminal.line(message);
}

/** The adapter block of `gpu` for results.json. */
async function adapterOf(gpu: Gpu, vulkan: Awaited<ReturnType<typeof vulkanDevices>>): Promise<Environment["adapter"]> {
  const d = gpu.description;
  return {
    vendor: d.vendor,
    architecture: d.architecture,
    device: d.device,
    description: d.description,
    is_fallback_adapter: d.isFallbackAdapter,
    backend: d.runtime === "dawn"
      ? d.backend
      : wgpuBackend(d, Deno.env.get("DENO_WEBGPU_BACKEND"), Deno.build.os, vulkan),
    driver: await adapterDriver(d, vulkan),
  };
}

/** The environment block: the first runtime's adapter, features and bandwidth at the top, every runtime listed. */
async function environment(runtimes: readonly RuntimeGpu[]): Promise<Environment> {
  const vulkan = await vulkanDevices();
  const listed: RuntimeEnvironment[] = [];
  for (const { gpu, copyGbps } of runtimes) {
    const d = gpu.description;
    listed.push({
      runtime: d.runtime,
      version: d.runtimeVersion,
      toggles: d.toggles,
      adapter: await adapterOf(gpu, vulkan),
      features: d.featuresGranted,
      limits: d.limitsGranted,
      timestamp_query: gpu.has("timestamp-query"),
      copy_bandwidth_gbps: copyGbps,
    });
  }
  const first = listed[0];
  return {
    adapter: first.adapter,
    cpu: { model: await cpuModel(), logical_cores: navigator.hardwareConcurrency },
    features: first.features,
    limits: first.limits,
    deno: { ...Deno.version },
    os: { os: Deno.build.os, arch: Deno.build.arch, release: Deno.osRelease() },
    commit: await ownCommit(),
    date: new Date().toISOString(),
    timestamp_query: first.timestamp_query,
    copy_bandwidth_gbps: first.copy_bandwidth_gbps,
    roofline: {},
    runtimes: listed,
  };
}

/** One WebGPU runtime of a run: its Gpu and the copy bandwidth measured on it. */
interface RuntimeGpu {
  gpu: Gpu;
  copyGbps: number;
}

/**
 * A Gpu per runtime of `runtimes`, in order; when one cannot be made (UserError: no adapter, Dawn's addon missing),
 * those made before it are destroyed and the error goes on to the user.
 */
async function makeGpus(runtimes: readonly WebgpuRuntime[]): Promise<Gpu[]> {
  const gpus: Gpu[] = [];
  try {
    for (const r of runtimes) gpus.push(await Gpu.create(r));
  } catch (e) {
    gpus.forEach((g) => g.destroy());
    throw e;
  }
  return gpus;
}

/**
 * prefill_math f16 needs `shader-f16` on every runtime of the run (the f16-multiply GEMM; where the tensor-core GEMM
 * runs it takes precedence, and it needs the feature too): a UserError before anything is timed.
 */
function checkPrefillMath(c: BenchConfig, gpus: readonly Gpu[]): void {
  if (c.prefill_math !== "f16") return;
  const lacking = gpus.find((g) => !g.has("shader-f16"));
  if (lacking) {
    throw new UserError(
      `prefill_math f16 needs the shader-f16 feature, which the ${lacking.description.runtime} adapter ` +
        `"${lacking.description.description}" lacks; set prefill_math to f32 (--prefill-math f32).`,
    );
  }
}

/** The prompt of the baseline / naive benchmarks: prompt_length seeded random ids (random weights care for no text). */
function randomPrompt(c: BenchConfig, vocab: number): number[] {
  return randomIds(c.seed, c.prompt_length, vocab);
}

/** The signals that end a run as "interrupted", with the exit code a shell gives a process they killed. */
const STOP_SIGNALS = { SIGINT: 130, SIGTERM: 143 } as const;

/**
 * Runs `onStop(signal)` on SIGINT or SIGTERM until the returned function removes the listeners (Windows has no
 * SIGTERM listener; SIGINT alone there).
 */
function onStopSignals(onStop: (signal: keyof typeof STOP_SIGNALS) => void): () => void {
  const removers: (() => void)[] = [];
  for (const signal of Object.keys(STOP_SIGNALS) as (keyof typeof STOP_SIGNALS)[]) {
    const listener = () => onStop(signal);
    try {
      Deno.addSignalListener(signal, listener);
      removers.push(() => Deno.removeSignalListener(signal, listener));
    } catch { /* this OS cannot listen for it */ }
  }
  return () => removers.forEach((r) => r());
}

/** Takes the device lock (see bench/lock.ts), or with --allow-concurrent only says who else holds the device. */
async function lockDevice(gpu: Gpu, noWait: boolean, allowConcurrent: boolean): Promise<DeviceLock | null> {
  const d = gpu.description;
  if (allowConcurrent) {
    const holder = await lockHolder(d);
    if (holder) log(`--allow-concurrent: running alongside another benchmark on this GPU (${describeHolder(holder)})`);
    return null;
  }
  return await acquireDeviceLock(d, {
    wait: !noWait,
    onWait: (h) => log(`waiting for ${deviceName(d)}: another benchmark holds it (${describeHolder(h)})`),
  });
}

async function run(argv: string[]): Promise<number> {
  if (wantsHelp(argv)) {
    console.log(helpText());
    return 0;
  }
  const input = await readRunInput(argv);
  const runtimes = input.resolved.config.webgpu;
  checkWebgpuEnv(runtimes);
  const gpus = await makeGpus(runtimes);
  const several = runtimes.length > 1;
  for (const gpu of gpus) {
    const d = gpu.description;
    log(
      `${several ? `${d.runtime}: ` : ""}adapter: ${d.description} (vendor ${d.vendor}); features ${
        d.featuresGranted.join(", ")
      }${d.runtime === "dawn" ? `; Dawn ${d.runtimeVersion}, toggles ${d.toggles.join(" ")}` : ""}`,
    );
  }
  const gpu = gpus[0];
  const software = gpus.some((g) => g.isSoftware);
  const plan = await planRun(input, { software });
  const config = plan.config;
  checkPrefillMath(config, gpus);
  if (software) {
    const applied = plan.softwareKnobs.map((k) => `${k} ${JSON.stringify(config[k])}`).join(", ");
    log(
      `software adapter: these figures are a smoke test, not GPU numbers (${
        applied ? `smoke-test values for the knobs left unset: ${applied}` : "every smoke-test knob is set"
      })`,
    );
  }
  const { noWait, allowConcurrent } = input.switches;
  /** What a stop signal must finish: the lock, and once the run has a results.json, its status. */
  const state = {
    lock: null as DeviceLock | null,
    writer: null as ResultsWriter | null,
    current: null as ConfigurationName | null,
    runtime: null as WebgpuRuntime | null,
    finished: false,
    /** Aborted by a stop signal: kills a running peer (bench/peers.ts), which would otherwise outlive the bench. */
    peers: new AbortController(),
  };
  const removeListeners = onStopSignals(async (signal) => {
    state.peers.abort();
    const { writer, current, runtime } = state;
    if (writer && !state.finished) {
      await writer.interrupt(current, signal, runtime).catch(() => {});
      const where = current ? ` in ${current}${several ? ` on ${runtime}` : ""}` : "";
      log(`${signal}: run interrupted${where}; results.json keeps what finished`);
    } else if (!writer) log(`${signal}: stopped before the run began`);
    state.lock?.release();
    Deno.exit(STOP_SIGNALS[signal]);
  });
  const live = new Set(gpus);
  try {
    state.lock = await lockDevice(gpu, noWait, allowConcurrent);
    const measured: RuntimeGpu[] = [];
    for (const g of gpus) {
      const bw = await measureCopyBandwidth(g, g.isSoftware ? 64 << 20 : 1 << 30);
      measured.push({ gpu: g, copyGbps: bw.kernel_copy_gbps });
      log(
        `${several ? `${g.description.runtime}: ` : ""}copy bandwidth: ${
          bw.kernel_copy_gbps.toFixed(0)
        } GB/s (WGSL copy kernel, read + write)`,
      );
    }
    // The roofline is the hardware's: every runtime's is computed from the first runtime's bandwidth.
    const copyGbps = measured[0].copyGbps;
    const env = await environment(measured);
    const provenance = await provenanceOf(argv, plan, allowConcurrent);
    const dir = await createRunDir(config.results_dir);
    const writer = state.writer = new ResultsWriter(dir, config, env, provenance);
    runLog.attach(dir);
    state.lock?.setRun(dir);
    await writer.start();
    log(`run folder ${dir}`);
    const overrides = Object.entries(provenance.engine_overrides ?? {});
    if (overrides.length > 0) {
      log(
        `engine overrides: ${overrides.map(([k, v]) => `${k}=${v}`).join(" ")}: this run measures those kernels, ` +
          "not the defaults (results.json provenance.engine_overrides)",
      );
    }
    try {
      for (const [i, runtime] of runtimes.entries()) {
        state.runtime = runtime;
        for (const name of config.configs) {
          state.current = name;
          const label = several ? `${name} · ${runtime}` : name;
          log(`=== ${label} (${config.size})`);
          terminal.begin(label, measurementsOf(name, config));
          const result = await runConfiguration(gpus[i], name, label, plan, copyGbps);
          terminal.end();
          env.roofline[resultKey(name, runtime, runtimes)] = {
            weight_bytes_per_step: result.weight_bytes_per_step,
            roofline_tps: result.roofline_tps,
          };
          await writer.setEnvironment(env);
          await writer.record(result);
          log(`${label} done; results.json updated`);
        }
        // The next runtime's configurations get the GPU's memory to themselves.
        gpus[i].destroy();
        live.delete(gpus[i]);
      }
      state.current = null;
      state.runtime = null;
      // each peer's result is in results.json as soon as it has one (a run stopped in the next peer keeps it)
      await runPeers(config.peers, {
        size: config.size,
        dir,
        log,
        device: gpu.description.description,
        onResult: (done) => writer.setPeers(done),
        stop: state.peers.signal,
      });
      state.finished = true;
      await writer.complete();
    } catch (e) {
      terminal.end();
      state.finished = true;
      await writer.fail(state.current, e, state.current ? state.runtime : null);
      throw e;
    }
    state.lock?.release();
    await writeRunFiles(dir, log);
    log(`done: ${dir}`);
    console.log(await runSummaryText(dir));
  } finally {
    removeListeners();
    state.lock?.release();
    live.forEach((g) => g.destroy());
  }
  return 0;
}

/**
 * The bench's runtimes are the `webgpu` knob; `HYDRA_WEBGPU` picks the runtime of tests and tools. A run that would
 * ignore it (set to a runtime the knob leaves out, or to no runtime) stops with a UserError instead of timing another
 * runtime than the one the environment asks for.
 */
function checkWebgpuEnv(runtimes: readonly WebgpuRuntime[]): void {
  if (!Deno.env.get(WEBGPU_ENV)) return;
  const wanted = runtimeFromEnv();
  if (!runtimes.includes(wanted)) {
    throw new UserError(
      `${WEBGPU_ENV}=${wanted} is set, but the run's webgpu knob is ${runtimes.join(",")}: pass --webgpu ${wanted} ` +
        `(or set "webgpu" in the config file), or unset ${WEBGPU_ENV}.`,
    );
  }
}

/** How the run was started, for results.json. */
async function provenanceOf(argv: string[], plan: RunPlan, allowConcurrent: boolean): Promise<Provenance> {
  return {
    command_line: [Deno.execPath(), Deno.mainModule, ...argv],
    config_file: resolve(plan.resolved.file),
    knob_sources: knobSources(plan.resolved),
    dirty: await dirtyTree(),
    allow_concurrent: allowConcurrent,
    engine_overrides: engineOverrides(),
    process: thisProcess(),
  };
}

/**
 * Times one configuration on `gpu` (its runtime recorded in the result; `label` names it in the log) and frees its GPU
 * memory before returning.
 */
async function runConfiguration(
  gpu: Gpu,
  name: ConfigurationName,
  label: string,
  plan: RunPlan,
  copyGbps: number,
): Promise<ConfigurationResult> {
  const syncBefore = gpu.syncPoints;
  const run: ConfigurationRun = {
    gpu,
    c: plan.config,
    poePrompt: plan.poe,
    copyGbps,
    progress: (m) => log(`[${label}] ${m}`),
  };
  const result = name === "hydra_poe" ? await runPoeConfiguration(run) : await runDecodeConfiguration(name, run);
  const d = gpu.description;
  const { name: _, ...rest } = result;
  return {
    name,
    runtime: d.runtime,
    runtime_version: d.runtimeVersion,
    runtime_toggles: d.toggles,
    ...rest,
    sync_points: gpu.syncPoints - syncBefore,
  };
}

/** What the decode and PoE halves of `runConfiguration` are given. */
interface ConfigurationRun {
  gpu: Gpu;
  c: BenchConfig;
  /** hydra_poe's prompt, prepared and checked before the run (null when hydra_poe is not configured). */
  poePrompt: PoePrompt | null;
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
  const shape = { ...decodeModelShape(c), kvDtype: c.kv_dtype, prefillMath: c.prefill_math };
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
async function runPoeConfiguration({ gpu, c, poePrompt, copyGbps, progress }: ConfigurationRun): Promise<Measured> {
  const config = PRESETS[c.size];
  const loadStart = performance.now();
  const { ids: promptIds, tokenizer, chat, folded } = poePrompt!;
  // The tiny test size has a 500-id vocabulary: its synthetic weights know no text, so ids are folded into it.
  if (folded) progress(`tiny vocabulary: prompt ids folded modulo ${config.vocabSize}`);
  const gammas = poeGammas(c);
  const build = (spread: number) =>
    buildHydraModel(gpu, config, {
      nHeads: c.n_heads,
      headsDepth: c.heads_depth,
      maxPos: poeKvLength(c, promptIds.length),
      maxRows: promptIds.length,
      maxLogitRows: Math.max(...gammas),
      kvDtype: c.kv_dtype,
      prefillMath: c.prefill_math,
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
  runLog.captureConsole();
  try {
    Deno.exit(await run(Deno.args));
  } catch (e) {
    if (e instanceof UserError) {
      console.error(`error: ${e.message}`);
      Deno.exit(2);
    }
    console.error(e instanceof Error && e.stack ? e.stack : e); // bench.log keeps the trace of a bug too
    Deno.exit(1);
  }
}
