/**
 * `deno task generate`: load weights and generate, for people checking a checkpoint (or the suite).
 *
 *   deno task generate --weights DIR [--adapter DIR ...] (--ids 1,2,3 | --prompt TEXT [--chat]) [--max-new-tokens N]
 *   deno task generate --size tiny|1b|7b (--random | --synthetic) [--seed S] --ids ...
 *   Hydra / PoE: --heads N --heads-depth D [--head-adapter H=DIR ...] --mode greedy|naive|jury|poe
 *                [--gamma G --beta B --temperature T --draft-head H]
 *   Output: text (or --json: {"ids": [...], "prompt_last_logits": [...] (with --logits), "stats": {...}}).
 *
 * Greedy by default; `--mode greedy` is head 0 (the plain model when --heads is 1). Bad input: one sentence, exit 2,
 * and every flag, the tokenizer, the chat template and the prompt are checked before any GPU work.
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
import { PREFILL_MATHS, type PrefillMath } from "../kernels/matmul/linear.ts";
import { type EnsembleWeights, loadEnsemble } from "../model/ensemble.ts";
import { destroyWeights } from "../model/weights.ts";
import { LOGITS_MAX_HEADS } from "../kernels/logits/log_softmax.ts";
import { PoE, POE_MAX_GAMMA as MAX_GAMMA } from "../poe/poe.ts";
import { preparePrompt } from "../poe/prompt.ts";
import { loadTokenizer, type Tokenizer } from "../poe/tokenizer.ts";

const USAGE = `Usage:
  deno task generate --weights DIR [--adapter DIR ...] (--ids 1,2,3 | --prompt TEXT [--chat]) [options]
  deno task generate --size tiny|1b|7b (--random | --synthetic) [--seed S] (--ids ... | --prompt ...) [options]
Options:
  --max-new-tokens N     tokens to generate (default 16)
  --mode M               greedy (head 0) | naive (mean of heads) | jury (heads but the draft) | poe (default greedy)
  --heads N              Hydra heads, 1..${LOGITS_MAX_HEADS} (default 1; 5 with --synthetic)
  --heads-depth D        blocks per head (default 0, or 3 with --heads > 1; all layers when --adapter is given alone)
  --adapter DIR          PEFT adapter merged into every head's blocks, in order (repeatable)
  --head-adapter H=DIR   PEFT adapter merged into head H only (repeatable)
  --gamma G --beta B --temperature T --draft-head H   PoE knobs (defaults 4, 1, 0, 0; G in 1..${MAX_GAMMA},
                         B in (0, 1], T >= 0, H a head)
  --chat                 apply the chat template to --prompt (default with --mode poe)
  --tokenizer DIR        tokenizer.json directory (default: --weights, else the built-in dolma2)
  --stop-at-eos          cut the output at the first end-of-text token
  --json                 print JSON; --logits adds the last prompt position's logits (naive: mean; jury: log-probs)
  --seed S               random weights / sampling seed (default 1234)
  --kv-dtype T           K/V cache element type: bf16 (default) | f32 (exact)
  --prefill-math T       prefill GEMM arithmetic where no tensor cores run: f32 (default) | f16 (needs shader-f16)`;

const STRING = [
  "weights",
  "adapter",
  "head-adapter",
  "ids",
  "prompt",
  "size",
  "mode",
  "tokenizer",
  "kv-dtype",
  "prefill-math",
];
const NUMBER = ["max-new-tokens", "heads", "heads-depth", "gamma", "beta", "temperature", "draft-head", "seed"];
const BOOLEAN = ["random", "synthetic", "json", "logits", "chat", "stop-at-eos", "help"];

function fail(message: string): never {
  throw new UserError(message);
}

/** The number a flag's text spells (NaN for empty text: `Number("")` would be 0). */
function numberOf(v: unknown): number {
  const text = String(v).trim();
  return text === "" ? NaN : Number(text);
}

function int(v: unknown, flag: string, min: number, max = Infinity): number {
  const n = numberOf(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    fail(`--${flag} must be an integer ${max === Infinity ? `>= ${min}` : `in ${min}..${max}`}, got "${v}".`);
  }
  return n;
}

/** The token ids of `--ids`: comma-separated non-negative integers, at least one. */
function parseIds(text: string): number[] {
  if (text.trim() === "") fail('--ids is empty; give comma-separated token ids such as "1,2,3".');
  return text.split(",").map((s, i) => {
    if (!/^\s*\d+\s*$/.test(s)) {
      fail(
        `--ids must be comma-separated token ids such as "1,2,3", and ${
          s.trim() === "" ? `item ${i + 1} is empty` : `"${s.trim()}" is not a token id`
        }.`,
      );
    }
    return Number(s);
  });
}

/**
 * `argv` with `--flag -1` written `--flag=-1` for the flags that take a value: the parser would read "-1" as a flag
 * of its own (a negative number is then checked against the flag's range, not reported as "Unknown flag -1").
 */
function joinNegativeValues(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const flag = /^--([^=]+)$/.exec(argv[i])?.[1];
    const next = argv[i + 1];
    if (flag && [...STRING, ...NUMBER].includes(flag) && next !== undefined && /^-\.?\d/.test(next)) {
      out.push(`--${flag}=${next}`);
      i++;
    } else {
      out.push(argv[i]);
    }
  }
  return out;
}

function list(v: unknown): string[] {
  return v === undefined ? [] : (Array.isArray(v) ? v : [v]).map(String);
}

/** Runs the tool on `argv`; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const unknown: string[] = [];
  const a = parseArgs(joinNegativeValues(argv), {
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
  for (const f of NUMBER) {
    if (raw[f] !== undefined && Number.isNaN(numberOf(raw[f]))) fail(`--${f} must be a number, not "${raw[f]}".`);
  }
  const mode = String(a.mode ?? "greedy");
  if (!["greedy", "naive", "jury", "poe"].includes(mode)) {
    fail(`--mode must be greedy, naive, jury or poe, not "${mode}".`);
  }
  const kvDtype = String(a["kv-dtype"] ?? "bf16") as KvDtype;
  if (!KV_DTYPES.includes(kvDtype)) fail(`--kv-dtype must be ${KV_DTYPES.join(" or ")}, not "${kvDtype}".`);
  const prefillMath = String(a["prefill-math"] ?? "f32") as PrefillMath;
  if (!PREFILL_MATHS.includes(prefillMath)) {
    fail(`--prefill-math must be ${PREFILL_MATHS.join(" or ")}, not "${prefillMath}".`);
  }
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
  // PoE knobs, checked before any file is read or GPU work starts.
  const gamma = int(raw.gamma ?? 4, "gamma", 1, MAX_GAMMA);
  const beta = numberOf(raw.beta ?? 1);
  if (!(beta > 0 && beta <= 1)) {
    fail(`--beta must be in (0, 1] (a draft is kept when its jury probability is >= beta * the top one), got ${beta}.`);
  }
  const temperature = numberOf(raw.temperature ?? 0);
  if (!(temperature >= 0 && Number.isFinite(temperature))) {
    fail(`--temperature must be a finite number >= 0 (0 drafts greedily), got ${temperature}.`);
  }
  const draftHead = int(raw["draft-head"] ?? 0, "draft-head", 0);

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
  const nHeads = int(raw.heads ?? (a.synthetic ? 5 : 1), "heads", 1, LOGITS_MAX_HEADS);
  const defaultDepth = nHeads > 1 ? 3 : (adapters.length ? config.nLayers : 0);
  const depth = int(raw["heads-depth"] ?? defaultDepth, "heads-depth", 0);
  if (depth > config.nLayers) fail(`--heads-depth ${depth} exceeds the model's ${config.nLayers} layers.`);
  if ((mode === "jury" || mode === "poe") && nHeads < 2) fail(`--mode ${mode} needs --heads 2 or more.`);
  if (draftHead >= nHeads) fail(`--draft-head ${draftHead} is not a head: there are ${nHeads} (0..${nHeads - 1}).`);
  for (const { head, dir } of headAdapters) {
    if (head >= nHeads) fail(`--head-adapter ${head}=${dir}: there are only ${nHeads} heads (0..${nHeads - 1}).`);
  }

  // Tokenizer, chat template and prompt: loaded, rendered and tokenized before any GPU work.
  let tokenizer: Tokenizer | undefined;
  const tokenizerDir = a.tokenizer ? String(a.tokenizer) : (a.weights ? String(a.weights) : undefined);
  let ids: number[];
  if (a.prompt !== undefined) {
    const prompt = await preparePrompt(tokenizerDir, String(a.prompt), { chat: Boolean(a.chat) || mode === "poe" });
    tokenizer = prompt.tokenizer;
    ids = prompt.ids;
  } else {
    ids = parseIds(String(a.ids));
    // A checkpoint's (or --tokenizer's) tokenizer prints the output as text and gives --stop-at-eos its eos.
    if (tokenizerDir !== undefined) tokenizer = await loadTokenizer(tokenizerDir);
  }
  const tooBig = ids.find((t) => t >= config.vocabSize);
  if (tooBig !== undefined) fail(`Token id ${tooBig} is outside the model's vocabulary of ${config.vocabSize}.`);

  // Weights: --adapter into every head, then each --head-adapter into its head.
  const gpu = await getGpu();
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
      prefillMath,
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
      beta,
      temperature,
      maxNewTokens: maxNew,
      draftHead,
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
