/**
 * `deno task generate`: load weights and generate, for people checking a checkpoint (or the suite).
 *
 *   deno task generate --weights DIR [--adapter DIR ...] (--ids 1,2,3 | --prompt TEXT [--chat]) [--max-new-tokens N]
 *   deno task generate --size tiny|1b|7b (--random | --synthetic) [--seed S] --ids ...
 *   Hydra / PoE: --heads N --heads-depth D [--head-adapter H=DIR ...] --mode greedy|naive|jury|poe
 *                [--gamma G --beta B --temperature T --draft-head H]
 *   Output: text (or --json: {"ids": [...], "prompt_last_logits": [...] (with --logits), "stats": {...}}).
 *
 * Greedy by default; `--mode greedy` is head 0 (the plain model when --heads is 1). Bad input: one sentence, exit 2.
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { formatBytes, getGpu } from "../kernels/runtime.ts";
import { UserError } from "../common/errors.ts";
import { Checkpoint } from "../model/checkpoint.ts";
import { type ModelConfig, PRESETS } from "../model/config.ts";
import { Decoder, type PickMode } from "../model/generate.ts";
import { HydraTransformer } from "../model/hydra.ts";
import { KV_DTYPES, type KvDtype } from "../kernels/attention/kv_cache.ts";
import { type EnsembleWeights, loadEnsemble } from "../model/ensemble.ts";
import { destroyWeights } from "../model/weights.ts";
import { loadChatTemplateConfig } from "../poe/chat_template.ts";
import { PoE, userPrompt } from "../poe/poe.ts";
import { loadTokenizer, type Tokenizer } from "../poe/tokenizer.ts";

const USAGE = `Usage:
  deno task generate --weights DIR [--adapter DIR ...] (--ids 1,2,3 | --prompt TEXT [--chat]) [options]
  deno task generate --size tiny|1b|7b (--random | --synthetic) [--seed S] (--ids ... | --prompt ...) [options]
Options:
  --max-new-tokens N     tokens to generate (default 16)
  --mode M               greedy (head 0) | naive (mean of heads) | jury (heads but the draft) | poe (default greedy)
  --heads N              Hydra heads (default 1; 5 with --synthetic)
  --heads-depth D        blocks per head (default 0, or 3 with --heads > 1; all layers when --adapter is given alone)
  --adapter DIR          PEFT adapter merged into every head's blocks, in order (repeatable)
  --head-adapter H=DIR   PEFT adapter merged into head H only (repeatable)
  --gamma G --beta B --temperature T --draft-head H   PoE knobs (defaults 4, 1, 0, 0)
  --chat                 apply the chat template to --prompt (default with --mode poe)
  --tokenizer DIR        tokenizer.json directory (default: --weights, else the built-in dolma2)
  --stop-at-eos          cut the output at the first end-of-text token
  --json                 print JSON; --logits adds the last prompt position's logits (naive: mean; jury: log-probs)
  --seed S               random weights / sampling seed (default 1234)
  --kv-dtype T           K/V cache element type: bf16 (default) | f32 (exact)`;

const STRING = ["weights", "adapter", "head-adapter", "ids", "prompt", "size", "mode", "tokenizer", "kv-dtype"];
const NUMBER = ["max-new-tokens", "heads", "heads-depth", "gamma", "beta", "temperature", "draft-head", "seed"];
const BOOLEAN = ["random", "synthetic", "json", "logits", "chat", "stop-at-eos", "help"];

function fail(message: string): never {
  throw new UserError(message);
}

function int(v: unknown, flag: string, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) fail(`--${flag} must be an integer >= ${min}, got "${v}".`);
  return n;
}

function list(v: unknown): string[] {
  return v === undefined ? [] : (Array.isArray(v) ? v : [v]).map(String);
}

/** Runs the tool on `argv`; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const unknown: string[] = [];
  const a = parseArgs(argv, {
    string: [...STRING, ...NUMBER],
    boolean: BOOLEAN,
    collect: ["adapter", "head-adapter"],
    unknown: (arg: string) => {
      if (arg.startsWith("-")) unknown.push(arg);
      return false;
    },
  });
  if (a.help) {
    console.log(USAGE);
    return 0;
  }
  if (unknown.length) fail(`Unknown flag ${unknown[0]}; run with --help for the flags.`);
  const raw = a as unknown as Record<string, unknown>;
  for (const f of NUMBER) if (raw[f] !== undefined && Number.isNaN(Number(raw[f]))) fail(`--${f} must be a number.`);
  const mode = String(a.mode ?? "greedy");
  if (!["greedy", "naive", "jury", "poe"].includes(mode)) {
    fail(`--mode must be greedy, naive, jury or poe, not "${mode}".`);
  }
  const kvDtype = String(a["kv-dtype"] ?? "bf16") as KvDtype;
  if (!KV_DTYPES.includes(kvDtype)) fail(`--kv-dtype must be ${KV_DTYPES.join(" or ")}, not "${kvDtype}".`);
  const maxNew = int(raw["max-new-tokens"] ?? 16, "max-new-tokens", 1);
  const seed = int(raw.seed ?? 1234, "seed", 0);
  const adapters = list(a.adapter);
  const headAdapters = list(a["head-adapter"]).map((s) => {
    const m = /^(\d+)=(.+)$/.exec(s);
    if (!m) fail(`--head-adapter takes H=DIR (a head index and a directory), not "${s}".`);
    return { head: Number(m[1]), dir: m[2] };
  });
  if (!a.weights && !a.size) {
    fail("Give --weights DIR (a checkpoint) or --size tiny|1b|7b with --random or --synthetic.");
  }
  if (a.weights && (a.size || a.random || a.synthetic)) {
    fail("--weights cannot be combined with --size, --random or --synthetic.");
  }
  if (a.size && !a.random && !a.synthetic) fail("--size needs --random or --synthetic (which random weights).");
  if (!a.weights && (adapters.length || headAdapters.length)) fail("--adapter and --head-adapter need --weights.");
  if ((a.ids === undefined) === (a.prompt === undefined)) fail("Give exactly one of --ids 1,2,3 or --prompt TEXT.");

  let config: ModelConfig;
  if (a.weights) {
    const ckpt = await Checkpoint.open(String(a.weights)); // headers only: the config, and early errors
    config = ckpt.config;
    ckpt.close();
  } else {
    const size = String(a.size);
    if (!(size in PRESETS)) fail(`--size must be tiny, 1b or 7b, not "${size}".`);
    config = PRESETS[size as keyof typeof PRESETS];
  }
  const nHeads = int(raw.heads ?? (a.synthetic ? 5 : 1), "heads", 1);
  const defaultDepth = nHeads > 1 ? 3 : (adapters.length ? config.nLayers : 0);
  const depth = int(raw["heads-depth"] ?? defaultDepth, "heads-depth", 0);
  if (depth > config.nLayers) fail(`--heads-depth ${depth} exceeds the model's ${config.nLayers} layers.`);
  if ((mode === "jury" || mode === "poe") && nHeads < 2) fail(`--mode ${mode} needs --heads 2 or more.`);

  // Tokenizer and prompt.
  let tokenizer: Tokenizer | undefined;
  const tokenizerDir = a.tokenizer ? String(a.tokenizer) : (a.weights ? String(a.weights) : undefined);
  let ids: number[];
  if (a.prompt !== undefined) {
    tokenizer = await loadTokenizer(tokenizerDir);
    let text = String(a.prompt);
    if (a.chat || mode === "poe") {
      text = userPrompt(text, await loadChatTemplateConfig(tokenizerDir));
    }
    ids = tokenizer.encode(text);
  } else {
    ids = String(a.ids).split(",").map((s) => {
      const n = Number(s.trim());
      if (!Number.isInteger(n) || n < 0) fail(`--ids must be comma-separated token ids, and "${s}" is not one.`);
      return n;
    });
  }
  const tooBig = ids.find((t) => t >= config.vocabSize);
  if (tooBig !== undefined) fail(`Token id ${tooBig} is outside the model's vocabulary of ${config.vocabSize}.`);

  // Weights: --adapter into every head, then each --head-adapter into its head.
  const gpu = await getGpu();
  const gamma = int(raw.gamma ?? 4, "gamma", 1);
  for (const { head, dir } of headAdapters) {
    if (head >= nHeads) fail(`--head-adapter ${head}=${dir}: there are only ${nHeads} heads (0..${nHeads - 1}).`);
  }
  const weights: EnsembleWeights = a.weights
    ? {
      kind: "checkpoint",
      base: String(a.weights),
      heads: Array.from(
        { length: nHeads },
        (_, h) => [...adapters, ...headAdapters.filter((x) => x.head === h).map((x) => x.dir)],
      ),
    }
    : { kind: a.synthetic ? "synthetic" : "random", seed };
  const w = await loadEnsemble(gpu, { config, nHeads, headsDepth: depth, weights });
  let model: HydraTransformer;
  try {
    model = new HydraTransformer(gpu, w, {
      maxPos: ids.length + maxNew + gamma,
      maxRows: ids.length,
      maxLogitRows: mode === "poe" ? gamma : 1,
      kvDtype,
    });
  } catch (e) {
    destroyWeights(w);
    throw e;
  }
  const memory = `GPU memory: weights ${formatBytes(model.weightBytes)}, KV caches + activations ${
    formatBytes(model.stateBytes)
  }`;

  // Generate.
  const t0 = performance.now();
  const syncs = gpu.syncPoints;
  let out: number[];
  let promptLogits: Float32Array | undefined;
  let stats: Record<string, unknown> = {};
  if (mode === "poe") {
    const poe = new PoE(model, {
      gamma,
      beta: Number(raw.beta ?? 1),
      temperature: Number(raw.temperature ?? 0),
      maxNewTokens: maxNew,
      draftHead: int(raw["draft-head"] ?? 0, "draft-head", 0),
      seed,
    });
    const r = await poe.generateIds(ids);
    out = r.ids;
    const { ids: _ids, ...rest } = r;
    stats = rest;
    poe.destroy();
  } else {
    const pick: PickMode = mode === "greedy" ? "single" : mode as PickMode;
    const decoder = new Decoder(model);
    const r = await decoder.generate(ids, maxNew, pick, { withPromptLogits: Boolean(a.logits) });
    out = r.ids;
    promptLogits = r.promptLogits;
    decoder.destroy();
  }
  const wallMs = performance.now() - t0;
  stats = { ...stats, wall_ms: wallMs, sync_points: gpu.syncPoints - syncs, mode, heads: nHeads, heads_depth: depth };
  if (a["stop-at-eos"]) {
    const eos = tokenizer?.eosId ?? 100257;
    const at = out.indexOf(eos);
    if (at >= 0) out = out.slice(0, at + 1);
  }
  model.destroy();

  if (a.json) {
    const json: Record<string, unknown> = { ids: out, stats: { ...stats, gpu_memory: memory } };
    if (a.logits && promptLogits) json.prompt_last_logits = Array.from(promptLogits.subarray(0, config.vocabSize));
    console.log(JSON.stringify(json));
  } else {
    console.error(memory);
    console.error(`${out.length} tokens in ${wallMs.toFixed(1)} ms (wall, ${stats.sync_points} sync points)`);
    if (tokenizer) console.log(tokenizer.decode(out));
    console.log(JSON.stringify(out));
  }
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    if (e instanceof UserError) {
      console.error(`error: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
