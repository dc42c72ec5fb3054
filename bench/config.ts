/**
 * The benchmark's knobs (design.md section 6): one table of them (name, type and range, default, help), and the
 * loader that reads a run's values, with validation that names the knob and says what to do.
 *
 * Precedence: defaults < config.json < flags. Every key of config.json is also a flag, its name the key with dashes
 * (`rep_ms` -> `--rep-ms VALUE` or `--rep-ms=VALUE`; a negative number needs the `=` form); list knobs take
 * comma-separated values (`--poe-gamma-sweep 1,2,4`, `--configs baseline,hydra_poe`). The last occurrence of a flag
 * wins. On a software adapter the knobs the user left unset take smoke-test values ({@link SOFTWARE_DEFAULTS}), and
 * the relations between knobs are checked on the values a run will actually use ({@link checkConfig}).
 *
 * The default size is "7b": the headline number of the suite is OLMo-2 7B on a data-centre GPU, and `deno task bench`
 * with no flags should produce it. On a laptop or the CPU adapter pass `--size tiny` (or `--size 1b`).
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { dirname, resolve } from "@std/path";
import { closestString } from "@std/text/closest-string";
import { levenshteinDistance } from "@std/text/levenshtein-distance";
import { isDirectory } from "../common/files.ts";
import { UserError } from "../common/errors.ts";
import { KV_DTYPES, type KvDtype } from "../kernels/attention/kv_cache.ts";
import { PREFILL_MATHS, type PrefillMath } from "../kernels/matmul/linear.ts";
import { LOGITS_MAX_HEADS } from "../kernels/logits/log_softmax.ts";
import { WEBGPU_RUNTIMES, type WebgpuRuntime } from "../kernels/runtime.ts";
import { PEER_NAMES, type PeerName } from "./peers.ts";
import { type PresetName, PRESETS } from "../model/config.ts";
import { POE_MAX_GAMMA } from "../poe/poe.ts";

/** Model sizes the suite can build from random weights (the model presets, in --help's order). */
export const MODEL_SIZES = ["1b", "7b", "tiny"] as const satisfies readonly PresetName[];
/** One of MODEL_SIZES. */
export type ModelSize = typeof MODEL_SIZES[number];

/** Transformer blocks per size (the presets'), used to check `heads_depth`: the trunk must keep at least one block. */
export const SIZE_LAYERS: Readonly<Record<ModelSize, number>> = Object.freeze(
  Object.fromEntries(MODEL_SIZES.map((s) => [s, PRESETS[s].nLayers])) as Record<ModelSize, number>,
);

/** OLMo-2's context length (the 1B and 7B presets'): the longest any knob's length may be. */
export const CONTEXT_LENGTH = PRESETS["7b"].maxContext;

/** Context length per size (tiny: 512): no sequence (prompt + generated + drafted tokens) of a run may be longer. */
export const SIZE_CONTEXT: Readonly<Record<ModelSize, number>> = Object.freeze(
  Object.fromEntries(MODEL_SIZES.map((s) => [s, PRESETS[s].maxContext])) as Record<ModelSize, number>,
);

/** The timed configurations, in the order a run executes them. */
export const CONFIGURATION_NAMES = ["baseline", "hydra_naive", "hydra_poe"] as const;
/** One of CONFIGURATION_NAMES. */
export type ConfigurationName = typeof CONFIGURATION_NAMES[number];

/** Real weights: a base checkpoint directory and, per Hydra head, the PEFT adapter directories merged into it. */
export interface WeightPaths {
  /** Checkpoint directory (HF or OLMo-core names, sharded or not). */
  base: string;
  /** One list per head (length n_heads); head h's adapters are merged in order. An empty list = the base blocks. */
  heads: string[][];
}

/** Every knob of a run. Keys are config.json's (snake_case), so the object is written to results.json as is. */
export interface BenchConfig {
  size: ModelSize;
  prompt_length: number;
  /** Further prompt lengths whose TTFT is timed (baseline, hydra_naive); [] = prompt_length only. */
  prompt_lengths: number[];
  gen_length: number;
  step_interval: number;
  /** KV lengths at which a decode step is timed (baseline, hydra_naive); [] = off. */
  decode_contexts: number[];
  warmup_ms: number;
  rep_ms: number;
  n_heads: number;
  heads_depth: number;
  /** Element type of every K/V cache the bench builds. */
  kv_dtype: KvDtype;
  /** The prefill GEMM's arithmetic where no tensor-core GEMM runs (kernels/matmul/linear.ts). */
  prefill_math: PrefillMath;
  poe_gamma: number;
  poe_gamma_sweep: number[];
  poe_beta: number;
  poe_temperature: number;
  poe_max_new_tokens: number;
  poe_prompt: string;
  synthetic_spread: number;
  poe_spread_sweep: number[];
  weights: WeightPaths | null;
  configs: ConfigurationName[];
  /** WebGPU runtimes every configuration runs on, back to back in this order (kernels/runtime.ts). */
  webgpu: WebgpuRuntime[];
  /** PyTorch peers run after the configurations, on the same device ([] = none). */
  peers: PeerName[];
  seed: number;
  results_dir: string;
}

/**
 * Where a value came from, for error messages and results.json: a config file (its path), the command line, or the
 * smoke-test defaults of a software adapter.
 */
type Origin = { kind: "file"; path: string } | { kind: "flag" } | { kind: "software" };

/** How one knob's values are read from JSON and from flag text, and described in --help. */
interface Codec<T> {
  /** Placeholder of the flag's value in --help, e.g. "<int>". */
  readonly arg: string;
  /** The value of a config.json entry, or throws via `fail(expectation)`. */
  fromJson(value: unknown, fail: (expected: string) => never, origin: Origin): T;
  /** The value of a flag's text, or throws via `fail(expectation)`. */
  fromText(text: string, fail: (expected: string) => never, origin: Origin): T;
  /** The default as shown in --help. */
  show(value: T): string;
}

/** A row of the knob table: its type and range (the codec), its default, and what it means. */
interface Knob<K extends keyof BenchConfig> {
  readonly codec: Codec<BenchConfig[K]>;
  readonly default: BenchConfig[K];
  readonly help: string;
}

/** A whole number from `min` to `max`. */
function integer(min: number, max: number): Codec<number> {
  const expected = max === Infinity ? `a whole number >= ${min}` : `a whole number from ${min} to ${max}`;
  const check = (v: number, fail: (e: string) => never) => {
    if (!Number.isInteger(v) || v < min || v > max) fail(expected);
    return v;
  };
  return {
    arg: "<int>",
    fromJson: (v, fail) => typeof v === "number" ? check(v, fail) : fail(expected),
    fromText: (t, fail) => /^[+-]?\d+$/.test(t.trim()) ? check(Number(t), fail) : fail(expected),
    show: String,
  };
}

/** A finite number accepted by `ok`, described as `expected`. */
function real(expected: string, ok: (v: number) => boolean): Codec<number> {
  const check = (v: number, fail: (e: string) => never) => Number.isFinite(v) && ok(v) ? v : fail(expected);
  return {
    arg: "<number>",
    fromJson: (v, fail) => typeof v === "number" ? check(v, fail) : fail(expected),
    fromText: (t, fail) => t.trim() === "" ? fail(expected) : check(Number(t), fail),
    show: String,
  };
}

/** One of `values`. */
function oneOf<T extends string>(values: readonly T[]): Codec<T> {
  const expected = `one of ${values.map((v) => `"${v}"`).join(", ")}`;
  const check = (v: unknown, fail: (e: string) => never) => values.includes(v as T) ? v as T : fail(expected);
  return { arg: `<${values.join("|")}>`, fromJson: check, fromText: check, show: (v) => v };
}

/** Text that is not blank. */
const nonEmptyText: Codec<string> = {
  arg: "<text>",
  fromJson: (v, fail) => typeof v === "string" && v.trim() !== "" ? v : fail("a non-empty string"),
  fromText: (t, fail) => t.trim() !== "" ? t : fail("a non-empty string"),
  show: (v) => JSON.stringify(v),
};

/** A list without repeats whose items `item` reads; from a flag, comma-separated ("" is the empty list). */
function listOf<T>(item: Codec<T>, expected: string, allowEmpty: boolean): Codec<T[]> {
  const whole = `${allowEmpty ? "a list" : "a non-empty list"} of ${expected} without repeats`;
  const finish = (items: T[], fail: (e: string) => never) => {
    if (!allowEmpty && items.length === 0) fail(whole);
    if (new Set(items).size !== items.length) fail(whole);
    return items;
  };
  return {
    arg: item.arg.includes("|") ? "<name,...>" : `<${item.arg.slice(1, -1)},...>`,
    fromJson: (v, fail, origin) =>
      Array.isArray(v) ? finish(v.map((x) => item.fromJson(x, () => fail(whole), origin)), fail) : fail(whole),
    fromText: (t, fail, origin) => {
      const parts = t.trim() === "" ? [] : t.split(",").map((s) => s.trim());
      return finish(parts.map((s) => item.fromText(s, () => fail(whole), origin)), fail);
    },
    show: (v) => v.join(","),
  };
}

const WEIGHTS_EXPECTED = 'null (synthetic weights) or {"base": "<checkpoint dir>", "heads": [[<adapter dirs>], ...]}';

/**
 * `weights`: null, or base + per-head adapter lists. Relative paths are resolved against the config file's folder
 * (in config.json) or the working directory (on the command line). On the command line: `synthetic`, `null`, or the
 * JSON object.
 */
const weightsCodec: Codec<WeightPaths | null> = {
  arg: "<synthetic|json>",
  fromJson(v, fail, origin) {
    if (v === null) return null;
    if (typeof v !== "object" || Array.isArray(v)) fail(WEIGHTS_EXPECTED);
    const o = v as Record<string, unknown>;
    const extra = Object.keys(o).filter((k) => k !== "base" && k !== "heads");
    if (extra.length > 0) fail(`${WEIGHTS_EXPECTED} (unknown key "${extra[0]}")`);
    if (typeof o.base !== "string" || o.base.trim() === "") fail(`${WEIGHTS_EXPECTED} with a non-empty "base"`);
    const heads = o.heads;
    const isPathList = (l: unknown) => Array.isArray(l) && l.every((p) => typeof p === "string" && p.trim() !== "");
    if (!Array.isArray(heads) || !heads.every(isPathList)) {
      fail(`${WEIGHTS_EXPECTED} where "heads" holds one list of adapter directories per head`);
    }
    const root = origin.kind === "file" ? dirname(resolve(origin.path)) : Deno.cwd();
    return {
      base: resolve(root, o.base as string),
      heads: (heads as string[][]).map((list) => list.map((p) => resolve(root, p))),
    };
  },
  fromText(t, fail, origin) {
    const s = t.trim();
    if (s === "synthetic" || s === "null") return null;
    let parsed: unknown;
    try {
      parsed = JSON.parse(s);
    } catch {
      return fail(`"synthetic" or ${WEIGHTS_EXPECTED} as JSON`);
    }
    return this.fromJson(parsed, fail, origin);
  },
  show: (v) => v === null ? "synthetic" : JSON.stringify(v),
};

/** A row of the knob table. */
function knob<T>(codec: Codec<T>, dflt: T, help: string): { codec: Codec<T>; default: T; help: string } {
  return { codec, default: dflt, help };
}

const CONTEXT_INT = integer(1, CONTEXT_LENGTH - 1);
const GAMMA_INT = integer(1, POE_MAX_GAMMA);
const NON_NEGATIVE = real("a number >= 0", (v) => v >= 0);

/** The knob table: type and range (the codec), default, and meaning, in the order --help lists the knobs. */
const KNOBS: { readonly [K in keyof BenchConfig]: Knob<K> } = {
  size: knob(
    oneOf(MODEL_SIZES),
    "7b",
    'model size: OLMo-2 "1b" or "7b", or "tiny" (a few small blocks, for CPU adapters and smoke tests); ' +
      "with `weights` set, the checkpoint's config.json decides the shapes",
  ),
  prompt_length: knob(CONTEXT_INT, 128, "prompt tokens for TTFT and decode"),
  prompt_lengths: knob(
    listOf(CONTEXT_INT, `whole numbers from 1 to ${CONTEXT_LENGTH - 1}`, true),
    [],
    "further prompt lengths whose TTFT (and prefill tokens/s) baseline and hydra_naive time, besides prompt_length " +
      "(empty: prompt_length only)",
  ),
  gen_length: knob(CONTEXT_INT, 128, "tokens generated by the decode benchmark"),
  step_interval: knob(
    CONTEXT_INT,
    8,
    "decode latency is measured at every step_interval-th generated position (at most gen_length)",
  ),
  decode_contexts: knob(
    listOf(CONTEXT_INT, `whole numbers from 1 to ${CONTEXT_LENGTH - 1}`, true),
    [],
    "KV lengths (tokens already in the cache) at which baseline and hydra_naive also time one decode step, e.g. " +
      "128,1024,4095 (below the size's context; empty: off)",
  ),
  warmup_ms: knob(NON_NEGATIVE, 200, "warm-up time budget per measurement, in ms"),
  rep_ms: knob(
    real("a number > 0", (v) => v > 0),
    1000,
    "timed repetitions budget per measurement, in ms (at least one repetition always runs)",
  ),
  n_heads: knob(
    integer(1, LOGITS_MAX_HEADS),
    5,
    `Hydra heads (PoE: one draft head + n_heads - 1 verifiers, so at least 2 for hydra_poe; at most ` +
      `${LOGITS_MAX_HEADS}, the most logit matrices the mean and jury kernels combine)`,
  ),
  heads_depth: knob(
    integer(1, Infinity),
    3,
    "blocks per Hydra head, taken from the end of the model (below the model's layer count)",
  ),
  kv_dtype: knob(oneOf(KV_DTYPES), "bf16", "K/V cache element type of every model the bench builds (f32: exact)"),
  prefill_math: knob(
    oneOf(PREFILL_MATHS),
    "f32",
    "arithmetic of the prefill GEMM (prompts over 16 tokens) where no tensor-core GEMM runs: f32 FMA, or f16 " +
      "products summed into f32 every 8 k (needs shader-f16; error in ARCHITECTURE.md); Dawn's tensor-core GEMM, " +
      "where it runs, is used either way",
  ),
  poe_gamma: knob(
    GAMMA_INT,
    4,
    `tokens drafted per PoE round (1..${POE_MAX_GAMMA}: a round's drafts go through the decode attention and matvec ` +
      `kernels in one pass, and both take at most ${POE_MAX_GAMMA} rows)`,
  ),
  poe_gamma_sweep: knob(
    listOf(GAMMA_INT, `whole numbers from 1 to ${POE_MAX_GAMMA}`, true),
    [1, 2, 4, 8],
    "further gammas to time; PoE is timed at poe_gamma and every gamma listed here (empty: poe_gamma only)",
  ),
  poe_beta: knob(
    real("a number above 0 and at most 1", (v) => v > 0 && v <= 1),
    1,
    "PoE leniency: a draft is accepted when p_jury(draft) >= beta * max p_jury; 1 = the jury's argmax only",
  ),
  poe_temperature: knob(NON_NEGATIVE, 0, "draft sampling temperature; 0 = greedy argmax"),
  poe_max_new_tokens: knob(CONTEXT_INT, 128, "tokens emitted per PoE call"),
  poe_prompt: knob(
    nonEmptyText,
    "Explain in a few sentences why the sky is blue.",
    "user message of the PoE benchmark (chat template applied)",
  ),
  synthetic_spread: knob(
    NON_NEGATIVE,
    1,
    "scale of the synthetic ensemble's per-head random LoRA deltas (PoE on synthetic weights): 1 = the standard " +
      "ensemble, 0 = identical heads (every draft accepted at temperature 0 and beta 1)",
  ),
  poe_spread_sweep: knob(
    listOf(NON_NEGATIVE, "numbers >= 0", true),
    [],
    "further synthetic_spread values at which PoE is measured too, each on a rebuilt ensemble (empty: " +
      "synthetic_spread only)",
  ),
  weights: knob(
    weightsCodec,
    null,
    "null/synthetic = random weights (PoE: a synthetic LoRA ensemble, labelled so in results.json), or " +
      '{"base": DIR, "heads": [[ADAPTER_DIR, ...] per head]}',
  ),
  configs: knob(
    listOf(oneOf(CONFIGURATION_NAMES), CONFIGURATION_NAMES.join(", "), false),
    [...CONFIGURATION_NAMES],
    "configurations to time, from baseline, hydra_naive, hydra_poe (they always run in that order)",
  ),
  webgpu: knob(
    listOf(oneOf(WEBGPU_RUNTIMES), WEBGPU_RUNTIMES.join(", "), false),
    ["deno"],
    "WebGPU runtimes to time every configuration on, back to back in the order given: deno (Deno's built-in wgpu) " +
      "and dawn (Dawn through the npm package webgpu; needs a GPU driver, not a software adapter); results.json " +
      "records the runtime of every result",
  ),
  peers: knob(
    listOf(oneOf(PEER_NAMES), PEER_NAMES.join(", "), true),
    [],
    "PyTorch peers run after the configurations at the run's size on the same GPU, when python3 (or $HYDRA_PYTHON) " +
      "imports torch: torch (CUDA-graph decode), hf (HF transformers); their figures go to results.json",
  ),
  seed: knob(integer(0, 2 ** 32 - 1), 1234, "seed of the random weights and of PoE sampling"),
  results_dir: knob(nonEmptyText, "results", "folder that receives the run folders <YYYY-MM-DD>_runNN/"),
};

const KEYS = Object.keys(KNOBS) as (keyof BenchConfig)[];

/** The values `deno task bench` uses for a knob that neither config.json nor a flag sets (the table's defaults). */
export const DEFAULT_CONFIG: Readonly<BenchConfig> = Object.freeze(
  Object.fromEntries(KEYS.map((k) => {
    const value = KNOBS[k].default;
    return [k, Array.isArray(value) ? Object.freeze([...value]) : value];
  })) as unknown as BenchConfig,
);

/** The flag of a knob: `rep_ms` -> `--rep-ms`. */
export function flagName(key: string): string {
  return "--" + key.replaceAll("_", "-");
}

/** Where a knob's value came from, in words: `"rep_ms" in config.json` or `--rep-ms`. */
function describe(key: string, origin: Origin | "default"): string {
  if (origin === "default") return `the default of "${key}"`;
  if (origin.kind === "software") return `${key} (the software adapter's smoke-test default, as it was left unset)`;
  return origin.kind === "file" ? `"${key}" in ${origin.path}` : flagName(key);
}

/** What to do about a bad value, by origin. */
function remedy(key: string, origin: Origin | "default"): string {
  if (origin === "default") return "report this bug";
  if (origin.kind === "software") return `set ${flagName(key)}`;
  return origin.kind === "file" ? `edit ${origin.path}` : `change ${flagName(key)}`;
}

/** A value as an error message quotes it (at most 80 characters). */
function shown(value: unknown): string {
  const s = JSON.stringify(value) ?? String(value);
  return s.length > 80 ? s.slice(0, 77) + "..." : s;
}

/** The `fail` of a codec reading `value` of knob `key` from `origin`: throws a UserError naming both. */
function failer(key: string, origin: Origin, value: unknown): (expected: string) => never {
  return (expected) => {
    throw new UserError(
      `${describe(key, origin)} must be ${expected}, but it is ${shown(value)}; ${remedy(key, origin)}.`,
    );
  };
}

/** " (did you mean X?)" for the candidate closest to a mistyped `name`, or "" when none is close. */
function suggestion(name: string, candidates: readonly string[]): string {
  const best = closestString(name, [...candidates], { caseSensitive: true });
  return levenshteinDistance(name, best) <= Math.max(2, Math.floor(name.length / 3)) ? ` (did you mean ${best}?)` : "";
}

/** The flag that names the config file; it, --help and the SWITCHES are the flags that are not knobs. */
const CONFIG_FLAG = "--config";
/** The switches of a run that are no knob (no config.json key), with their --help text. */
const SWITCHES = {
  "no-wait": "when another benchmark holds this GPU, stop (exit 2) instead of waiting for it",
  "allow-concurrent": "run even while another benchmark holds this GPU (results.json records it; timings interfere)",
} as const;
/** Every flag, for "did you mean" hints. */
const ALL_FLAGS = [...KEYS.map(flagName), CONFIG_FLAG, "--help", ...Object.keys(SWITCHES).map((f) => `--${f}`)];
/** The value-taking flags as parse-args names them (without the dashes): the knobs' and "config". */
const VALUE_FLAGS = [...KEYS.map(flagName), CONFIG_FLAG].map((f) => f.slice(2));

/** argv through parse-args: every value as typed (a string), and the arguments that are no flag of ours. */
function parseArgv(argv: readonly string[]): { args: Record<string, unknown>; unexpected: string[] } {
  const unexpected: string[] = [];
  const args = parseArgs([...argv], {
    string: VALUE_FLAGS,
    boolean: ["help", ...Object.keys(SWITCHES)],
    alias: { h: "help" },
    unknown: (arg: string) => {
      unexpected.push(arg);
      return false;
    },
  }) as Record<string, unknown>;
  unexpected.push(...(args._ as unknown[]).map(String)); // what follows "--"
  return { args, unexpected };
}

/**
 * The knob flags of argv (the last occurrence of each) and the --config path. Throws UserError on a flag without a
 * value, an unknown flag and an argument that is not a flag.
 */
function commandLine(argv: readonly string[]): { flags: [keyof BenchConfig, string][]; configPath?: string } {
  const { args, unexpected } = parseArgv(argv);
  // parse-args gives "" to a value flag that is last or followed by another flag; "--seed=" is an empty value.
  const bare = VALUE_FLAGS.find((f) => args[f] === "" && argv.includes(`--${f}`));
  if (bare !== undefined) {
    throw new UserError(`The flag --${bare} needs a value (e.g. --${bare}=VALUE); run with --help for its meaning.`);
  }
  const first = unexpected[0];
  if (first !== undefined && !first.startsWith("--")) {
    throw new UserError(
      `Unexpected argument "${first}": knobs are set with flags such as --size 1b; run with --help to list them.`,
    );
  }
  if (first !== undefined) {
    const name = first.split("=")[0];
    throw new UserError(`Unknown flag ${name}${suggestion(name, ALL_FLAGS)}; run with --help to list the flags.`);
  }
  const { config, ...knobs } = Object.fromEntries(Object.entries(args).filter(([f]) => VALUE_FLAGS.includes(f)));
  const flags = Object.entries(knobs).map(([f, text]): [keyof BenchConfig, string] => [
    f.replaceAll("-", "_") as keyof BenchConfig,
    text as string,
  ]);
  return { flags, configPath: config as string | undefined };
}

/** True when argv asks for the help text (`--help` or `-h`). */
export function wantsHelp(argv: readonly string[]): boolean {
  return parseArgv(argv).args.help === true;
}

/** The switches of argv that are no knob: `--no-wait` and `--allow-concurrent`. */
export function runSwitches(argv: readonly string[]): { noWait: boolean; allowConcurrent: boolean } {
  const { args } = parseArgv(argv);
  return { noWait: args["no-wait"] === true, allowConcurrent: args["allow-concurrent"] === true };
}

/** The --help text: every flag with its value, default and meaning. */
export function helpText(): string {
  const lines = [
    "Usage: deno task bench [--config PATH] [--KNOB VALUE ...]",
    "",
    "Times the configured models on this GPU and writes results/<YYYY-MM-DD>_runNN/results.json.",
    "Every knob is read from config.json (default path: ./config.json) and can be overridden by its flag;",
    "list values are comma-separated (--poe-gamma-sweep 1,2,4). Defaults < config.json < flags.",
    ...wrap(
      "On a software adapter (llvmpipe, lavapipe, SwiftShader) the knobs set neither by a flag nor in the config " +
        "file (a value equal to the default counts as unset: the repository's config.json lists every default) take " +
        `smoke-test values: ${Object.entries(SOFTWARE_DEFAULTS).map(([k, v]) => `${k} ${v}`).join(", ")}.`,
      HELP_WIDTH,
    ),
    "",
    `  ${CONFIG_FLAG} <path>`,
    "        config file to read [default: config.json]",
    "  --help, -h",
    "        print this text and exit",
    ...Object.entries(SWITCHES).flatMap((
      [flag, help],
    ) => [`  --${flag}`, ...wrap(help, HELP_WIDTH - 8).map((l) => " ".repeat(8) + l)]),
  ];
  for (const key of KEYS) {
    const knob = KNOBS[key] as Knob<typeof key>;
    const def = (knob.codec.show as (v: unknown) => string)(knob.default);
    lines.push(`  ${flagName(key)} ${knob.codec.arg}`);
    for (const l of wrap(`${knob.help} [default: ${def}]`, HELP_WIDTH - 8)) lines.push(" ".repeat(8) + l);
  }
  return lines.join("\n");
}

/** Column at which --help wraps. */
const HELP_WIDTH = 100;

/** Splits `text` at spaces into lines of at most `width` characters (longer words stay whole). */
function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  if (line !== "") out.push(line);
  return out;
}

/**
 * Checks the relations between knobs that no single value can break, on the values a run uses (software-adapter
 * defaults included, each named as such). Throws UserError naming the knobs and the limits that hold.
 */
function checkRelations(c: BenchConfig, origins: Origins): void {
  const where = (k: keyof BenchConfig) => describe(k, origins[k]);
  const fix = (k: keyof BenchConfig) => remedy(k, origins[k]);
  /** `gen_length 32`, and ` (the software adapter's smoke-test default)` when that is where it came from. */
  const valued = (k: keyof BenchConfig) =>
    `${k} ${shown(c[k])}${origins[k] !== "default" && origins[k].kind === "software" ? SOFTWARE_NOTE : ""}`;
  const layers = SIZE_LAYERS[c.size];
  if (c.heads_depth >= layers) {
    const size = valued("size");
    throw new UserError(
      `${where("heads_depth")} is ${c.heads_depth}, but ${size} has ${layers} layers and the trunk needs at least ` +
        `one: ${fix("heads_depth")} to at most ${layers - 1}${alsoSet("size", origins)}.`,
    );
  }
  if (c.configs.includes("hydra_poe") && c.n_heads < 2) {
    throw new UserError(
      `${where("n_heads")} is ${c.n_heads}, but hydra_poe needs a draft head and at least one verifier head: ` +
        `${fix("n_heads")} to 2 or more, or leave hydra_poe out of "configs".`,
    );
  }
  if (c.step_interval > c.gen_length) {
    throw new UserError(
      `${where("step_interval")} is ${c.step_interval}, above ${valued("gen_length")}, so no position would be ` +
        `measured: ${fix("step_interval")} to at most ${c.gen_length}${alsoSet("gen_length", origins)}.`,
    );
  }
  const context = SIZE_CONTEXT[c.size];
  const decodes = c.configs.includes("baseline") || c.configs.includes("hydra_naive");
  if (decodes && c.prompt_length + c.gen_length > context) {
    throw new UserError(
      `prompt_length ${c.prompt_length} + ${valued("gen_length")} exceeds the ${context}-token context of ` +
        `${valued("size")}: ${fix("gen_length")} or ${fix("prompt_length")} so that they sum to at most ${context}.`,
    );
  }
  const gammaMax = Math.max(...poeGammas(c));
  if (c.configs.includes("hydra_poe") && c.poe_max_new_tokens + gammaMax >= context) {
    throw new UserError(
      `${valued("poe_max_new_tokens")} plus the largest gamma ${gammaMax} leaves no room for the prompt in the ` +
        `${context}-token context of ${valued("size")}: ${fix("poe_max_new_tokens")} to below ${context - gammaMax}.`,
    );
  }
  for (const key of ["prompt_lengths", "decode_contexts"] as const) {
    const longest = Math.max(0, ...c[key]);
    if (longest >= context) {
      throw new UserError(
        `${where(key)} holds ${longest}, but ${valued("size")} has a ${context}-token context and the step after ` +
          `${longest} tokens writes position ${longest}: ${fix(key)} to values of at most ${context - 1}.`,
      );
    }
  }
  if (c.weights && (c.synthetic_spread !== 1 || c.poe_spread_sweep.length > 0)) {
    const knob = c.synthetic_spread !== 1 ? "synthetic_spread" : "poe_spread_sweep";
    throw new UserError(
      `${where(knob)} scales the synthetic ensemble, but ${where("weights")} names a checkpoint: ${fix(knob)} ` +
        `(to ${c.synthetic_spread !== 1 ? "1" : "[]"}) or set weights to null.`,
    );
  }
  if (c.weights && c.weights.heads.length !== c.n_heads) {
    throw new UserError(
      `${where("weights")} lists adapters for ${c.weights.heads.length} heads but n_heads is ${c.n_heads}: give ` +
        `one list per head (an empty list for a head without adapters) or change n_heads.`,
    );
  }
}

/** Where each knob of a config came from. */
type Origins = Record<keyof BenchConfig, Origin | "default">;

/** How an error names a value that came from the software adapter's smoke-test defaults. */
const SOFTWARE_NOTE = " (the software adapter's smoke-test default)";

/** `, or set --size` when `key`'s value is a software-adapter default (the user may want the real one back). */
function alsoSet(key: keyof BenchConfig, origins: Origins): string {
  const o = origins[key];
  return o !== "default" && o.kind === "software" ? `, or set ${flagName(key)}` : "";
}

/** Where a knob of a run came from, as results.json records it. */
export type KnobSource = "default" | "config file" | "flag" | "software-adapter default";

/** A run's knobs, where each came from, and the config file that was read. */
export interface ResolvedConfig {
  readonly config: BenchConfig;
  readonly origins: Readonly<Origins>;
  /** The config file read (config.json, or the path of --config). */
  readonly file: string;
}

/** The source of every knob of `r`, for results.json. */
export function knobSources(r: ResolvedConfig): Record<keyof BenchConfig, KnobSource> {
  const source = (o: Origin | "default"): KnobSource =>
    o === "default"
      ? "default"
      : { file: "config file", flag: "flag", software: "software-adapter default" }[o.kind] as KnobSource;
  return Object.fromEntries(KEYS.map((k) => [k, source(r.origins[k])])) as Record<keyof BenchConfig, KnobSource>;
}

/**
 * The smoke-test values a software adapter (llvmpipe, lavapipe, SwiftShader) gives the knobs the user left unset, so
 * that `deno task bench` finishes in about two minutes there. Unset = set neither by a flag nor in the config file to
 * a value other than the built-in default (the repository's config.json lists every knob at its default).
 */
export const SOFTWARE_DEFAULTS: Readonly<Partial<BenchConfig>> = Object.freeze({
  size: "tiny",
  gen_length: 32,
  poe_max_new_tokens: 32,
  poe_gamma_sweep: [1, 2, 4],
  warmup_ms: 50,
  rep_ms: 200,
});

/** `r` with SOFTWARE_DEFAULTS applied to the knobs the user left unset (see there); their origin says so. */
export function withSoftwareDefaults(r: ResolvedConfig): ResolvedConfig {
  const config = structuredClone(r.config) as unknown as Record<string, unknown>;
  const origins: Origins = { ...r.origins };
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  for (const [k, value] of Object.entries(SOFTWARE_DEFAULTS) as [keyof BenchConfig, unknown][]) {
    const o = origins[k];
    const unset = o === "default" || (o.kind === "file" && same(config[k], DEFAULT_CONFIG[k]));
    if (unset && !same(config[k], value)) {
      config[k] = structuredClone(value);
      origins[k] = { kind: "software" };
    }
  }
  return { ...r, config: config as unknown as BenchConfig, origins };
}

/** Throws UserError when `obj` (the knobs read from `source`) has a key that is no knob. */
function checkKeys(obj: Record<string, unknown>, source: string): void {
  for (const k of Object.keys(obj)) {
    if (!KEYS.includes(k as keyof BenchConfig)) {
      throw new UserError(
        `${source} has an unknown key "${k}"${suggestion(k, KEYS)}; rename or remove it (--help lists the knobs).`,
      );
    }
  }
}

/** Sets knob `key` from `value` (JSON from a file, text from a flag), or throws UserError naming it and `origin`. */
function setKnob(
  out: Record<string, unknown>,
  origins: Origins,
  key: keyof BenchConfig,
  value: unknown,
  origin: Origin,
) {
  const codec = KNOBS[key].codec as Codec<unknown>, fail = failer(key, origin, value);
  out[key] = origin.kind === "file"
    ? codec.fromJson(value, fail, origin)
    : codec.fromText(value as string, fail, origin);
  origins[key] = origin;
}

/**
 * What a run recorded before a knob existed used, for results.json files that lack it: no sweeps, no peers, the
 * synthetic ensemble at spread 1, Deno's built-in WebGPU, and an f32 K/V cache (bf16 became the default one commit before kv_dtype was added, and no run was stored in between; the
 * reference runs under results/ are f32), and an f32 prefill GEMM (prefill_math; the tensor-core GEMM where it ran).
 */
const BEFORE_KNOB: Partial<BenchConfig> = {
  prompt_lengths: [],
  decode_contexts: [],
  kv_dtype: "f32",
  prefill_math: "f32",
  peers: [],
  synthetic_spread: 1,
  poe_spread_sweep: [],
  webgpu: ["deno"],
};

/** True for a knob that runs written before it existed lack (their results.json holds no value or source for it). */
export function addedLater(key: keyof BenchConfig): boolean {
  return key in BEFORE_KNOB;
}

/**
 * Checks a complete config object (e.g. the `config` block of a results.json) and returns it typed; throws
 * UserError naming the first bad knob. `source` names the file in the message.
 */
export function validateBenchConfig(value: unknown, source = "config"): BenchConfig {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UserError(`${source} must hold a JSON object of knobs; run the benchmark with --help to list them.`);
  }
  const obj = value as Record<string, unknown>;
  checkKeys(obj, source);
  const out: Record<string, unknown> = {};
  const origins = {} as Origins;
  for (const key of KEYS) {
    if (!(key in obj) && !(key in BEFORE_KNOB)) {
      throw new UserError(`${source} lacks the knob "${key}"; add it (the default is ${shown(DEFAULT_CONFIG[key])}).`);
    }
    setKnob(out, origins, key, key in obj ? obj[key] : BEFORE_KNOB[key], { kind: "file", path: source });
  }
  const config = out as unknown as BenchConfig;
  checkRelations(config, origins);
  return config;
}

/** The JSON object of config file `file`, or a UserError that says what to do. */
async function readConfigFile(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UserError(
        `The config file ${file} does not exist; create it (the repository's config.json is the template) or pass ` +
          `${CONFIG_FLAG} PATH.`,
      );
    }
    throw new UserError(`The config file ${file} could not be read (${(e as Error).message}); check its permissions.`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(`The config file ${file} is not valid JSON (${(e as Error).message}); fix its syntax.`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new UserError(
      `The config file ${file} must hold one JSON object of knobs, like the repository's config.json.`,
    );
  }
  return json as Record<string, unknown>;
}

/**
 * Reads `path` (a JSON object of knobs; missing keys take their defaults) and applies the flags of `argv` on top,
 * checking each value on its own; the relations between knobs are {@link checkConfig}'s. `--config PATH` in argv
 * replaces `path`; `--help` and the run switches are ignored here (see `wantsHelp`, `runSwitches`). Throws UserError,
 * naming the knob and where it was set, for a missing or malformed file, an unknown key or flag, and a value of the
 * wrong type or out of range.
 */
export async function readConfig(path: string, argv: readonly string[] = []): Promise<ResolvedConfig> {
  const { flags, configPath } = commandLine(argv);
  const file = configPath ?? path;
  const fromFile = await readConfigFile(file);
  checkKeys(fromFile, file);
  const out: Record<string, unknown> = structuredClone({ ...DEFAULT_CONFIG });
  const origins = Object.fromEntries(KEYS.map((k) => [k, "default"])) as Origins;
  for (const [k, v] of Object.entries(fromFile)) {
    setKnob(out, origins, k as keyof BenchConfig, v, { kind: "file", path: file });
  }
  for (const [k, text] of flags) setKnob(out, origins, k, text, { kind: "flag" });
  const config = out as unknown as BenchConfig;
  config.configs = CONFIGURATION_NAMES.filter((n) => config.configs.includes(n));
  return { config, origins, file };
}

/**
 * The config a run uses: `r`'s, once the knobs that contradict each other are ruled out and the directories of
 * `weights` are found. Throws UserError naming the knobs, where each was set, and the limits that hold.
 */
export async function checkConfig(r: ResolvedConfig): Promise<BenchConfig> {
  checkRelations(r.config, r.origins);
  await checkWeightPaths(r);
  return r.config;
}

/**
 * {@link readConfig}, then (on a `software` adapter) {@link withSoftwareDefaults}, then {@link checkConfig}: the
 * config of a run with these arguments.
 */
export async function loadConfig(
  path: string,
  argv: readonly string[] = [],
  { software = false }: { software?: boolean } = {},
): Promise<BenchConfig> {
  const read = await readConfig(path, argv);
  return await checkConfig(software ? withSoftwareDefaults(read) : read);
}

/** Checks that every directory named by `weights` exists (a typo is caught before minutes of GPU setup). */
export async function checkWeightPaths({ config: c, origins }: ResolvedConfig): Promise<void> {
  const where = describe("weights", origins.weights);
  if (!c.weights) return;
  const dirs = [c.weights.base, ...c.weights.heads.flat()];
  for (const dir of dirs) {
    if (!(await isDirectory(dir))) {
      throw new UserError(`${where} names the directory ${dir}, which does not exist; fix the path.`);
    }
  }
}

/** The gammas PoE is timed at: poe_gamma and every gamma of poe_gamma_sweep, ascending, each once. */
export function poeGammas(c: Pick<BenchConfig, "poe_gamma" | "poe_gamma_sweep">): number[] {
  return [...new Set([c.poe_gamma, ...c.poe_gamma_sweep])].sort((a, b) => a - b);
}

/** The spreads of the synthetic ensemble PoE is measured at: synthetic_spread first, then the other spreads of
 * poe_spread_sweep ascending. */
export function poeSpreads(c: Pick<BenchConfig, "synthetic_spread" | "poe_spread_sweep">): number[] {
  const others = c.poe_spread_sweep.filter((s) => s !== c.synthetic_spread).sort((a, b) => a - b);
  return [c.synthetic_spread, ...others];
}

/** Generated positions whose decode step is timed: 0, step_interval, 2 * step_interval, ... below gen_length. */
export function decodePositions(c: Pick<BenchConfig, "gen_length" | "step_interval">): number[] {
  const out: number[] = [];
  for (let p = 0; p < c.gen_length; p += c.step_interval) out.push(p);
  return out;
}

/** KV cache rows the baseline and hydra_naive decode benchmark needs: the prompt plus every generated token. */
export function decodeKvLength(c: Pick<BenchConfig, "prompt_length" | "gen_length">): number {
  return c.prompt_length + c.gen_length;
}

/**
 * KV cache rows a PoE call needs for a prompt of `promptTokens` (after the chat template): the prompt, the output,
 * and the drafts of a last round that overshoots poe_max_new_tokens (at most the largest gamma).
 */
export function poeKvLength(
  c: Pick<BenchConfig, "poe_gamma" | "poe_gamma_sweep" | "poe_max_new_tokens">,
  promptTokens: number,
): number {
  return promptTokens + c.poe_max_new_tokens + Math.max(...poeGammas(c));
}
