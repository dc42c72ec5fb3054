/**
 * OLMo-2 model configurations: the `tiny` / `1b` / `7b` presets, a reader for a checkpoint's Hugging Face
 * `config.json` (both the transformers <= 4 and the transformers 5 spellings), and the validation every config passes
 * before anything is built from it. The facts come from `shared/docs/olmo2.md`.
 *
 * Vocabulary: `vocabSize` is the number of token ids the tokenizer can emit (logits at or above it are padding and
 * must be masked); `paddedVocab` is the number of embedding / lm_head rows the GPU holds, a multiple of
 * {@link VOCAB_PAD_MULTIPLE}. A checkpoint may store any row count between the two; the loader pads with zero rows.
 * @module
 */

import { UserError } from "../common/errors.ts";

/** Everything the suite needs to know about one OLMo-2 model's shape and numerics. */
export interface ModelConfig {
  /** Label used in results and messages ("tiny", "1b", "7b", or the checkpoint directory). */
  name: string;
  /** Residual stream width d. */
  dModel: number;
  /** Number of transformer blocks. */
  nLayers: number;
  /** Attention heads. */
  nHeads: number;
  /** Key/value heads; must equal `nHeads` (OLMo-2 is plain multi-head attention). */
  nKvHeads: number;
  /** Width of one head; `nHeads * headDim === dModel`. */
  headDim: number;
  /** SwiGLU hidden width F (gate and up are [F, d], down is [d, F]). */
  ffnHidden: number;
  /** Token ids the tokenizer can emit (100278 for dolma2); logits at or above it are masked. */
  vocabSize: number;
  /** Embedding and lm_head rows on the GPU (100352 for OLMo-2), a multiple of {@link VOCAB_PAD_MULTIPLE}. */
  paddedVocab: number;
  /** RoPE base. */
  ropeTheta: number;
  /** Epsilon of every RMSNorm (block norms, QK-norm, final norm). */
  rmsNormEps: number;
  /** Longest sequence (positions) the model was trained for. */
  maxContext: number;
  /** lm_head shares the embedding matrix (false for every OLMo-2; supported by reading the embedding twice). */
  tieEmbeddings: boolean;
  /** dtype declared by config.json (`torch_dtype` or `dtype`), informational: each tensor's header decides. */
  declaredDtype?: string;
}

/** Head widths the attention kernels are built for. */
export const SUPPORTED_HEAD_DIMS: readonly number[] = [64, 128];

/** Embedding rows are padded to a multiple of this (as OLMo-core pads 100278 to 100352). */
export const VOCAB_PAD_MULTIPLE = 128;

/** Matrix inner dimensions must be multiples of this: the bf16 kernels read weights 8 values (16 bytes) at a time. */
export const INNER_DIM_MULTIPLE = 8;

/** The dolma2 tokenizer's id count (cl100k_base 100256 + 22 added tokens). */
export const DOLMA2_VOCAB = 100278;

/** `x` rounded up to a multiple of `m`. */
export function roundUp(x: number, m: number): number {
  return Math.ceil(x / m) * m;
}

/**
 * OLMo-2's SwiGLU width rule: int(8d/3) times `multiplier` (1.5 for the 1B), rounded up to a multiple of 256.
 * Gives 8192 for the 1B and 11008 for the 7B.
 */
export function olmo2FfnHidden(dModel: number, multiplier = 1): number {
  return roundUp(Math.floor(Math.floor((8 * dModel) / 3) * multiplier), 256);
}

const OLMO2_COMMON = {
  ropeTheta: 500000,
  rmsNormEps: 1e-6,
  maxContext: 4096,
  tieEmbeddings: false,
  vocabSize: DOLMA2_VOCAB,
  paddedVocab: 100352,
} as const;

/** Preset names accepted by the `size` knob. */
export type PresetName = "tiny" | "1b" | "7b";

/**
 * The presets. `tiny` is for CPU-adapter tests: the real head width (64, one of the two the kernels support) with 2
 * heads, d 128, F 256, 4 layers (enough for a trunk plus 3-block Hydra heads), and a 500-token vocabulary padded to
 * 512 rows so masking of padding rows is exercised.
 */
export const PRESETS: Readonly<Record<PresetName, Readonly<ModelConfig>>> = {
  tiny: {
    name: "tiny",
    dModel: 128,
    nLayers: 4,
    nHeads: 2,
    nKvHeads: 2,
    headDim: 64,
    ffnHidden: 256,
    vocabSize: 500,
    paddedVocab: 512,
    ropeTheta: 500000,
    rmsNormEps: 1e-6,
    maxContext: 512,
    tieEmbeddings: false,
  },
  /** OLMo-core `olmo2_1B_v2` / HF allenai/OLMo-2-0425-1B: 1,484,916,736 parameters. */
  "1b": {
    name: "1b",
    dModel: 2048,
    nLayers: 16,
    nHeads: 16,
    nKvHeads: 16,
    headDim: 128,
    ffnHidden: olmo2FfnHidden(2048, 1.5),
    ...OLMO2_COMMON,
  },
  /** OLMo-core `olmo2_7B` / HF allenai/OLMo-2-1124-7B: 7,298,617,344 parameters. */
  "7b": {
    name: "7b",
    dModel: 4096,
    nLayers: 32,
    nHeads: 32,
    nKvHeads: 32,
    headDim: 128,
    ffnHidden: olmo2FfnHidden(4096),
    ...OLMO2_COMMON,
  },
};

/** A copy of preset `name`; `knob` names the setting it came from in the error for an unknown name. */
export function presetConfig(name: string, knob = "size"): ModelConfig {
  if (!Object.hasOwn(PRESETS, name)) {
    throw new UserError(
      `${knob} "${name}" is not a model size this suite knows; use one of ${Object.keys(PRESETS).join(", ")}.`,
    );
  }
  return { ...PRESETS[name as PresetName] };
}

/**
 * Parameters of the model as stored: embedding and lm_head over `paddedVocab` rows (lm_head not counted when tied),
 * per layer Q/K/V/O [d, d], gate/up [F, d], down [d, F] and four [d] norms (q_norm, k_norm, attention, feed-forward),
 * and the final norm.
 */
export function parameterCount(c: ModelConfig): number {
  const d = c.dModel, f = c.ffnHidden;
  const perLayer = 4 * d * d + 3 * d * f + 4 * d;
  return (c.tieEmbeddings ? 1 : 2) * c.paddedVocab * d + c.nLayers * perLayer + d;
}

/** Bytes of the weights on the GPU: matrices bf16 (2 bytes), norm weights f32 (4 bytes). */
export function weightBytes(c: ModelConfig): number {
  const d = c.dModel, f = c.ffnHidden;
  const matrices = (c.tieEmbeddings ? 1 : 2) * c.paddedVocab * d + c.nLayers * (4 * d * d + 3 * d * f);
  const norms = c.nLayers * 4 * d + d;
  return 2 * matrices + 4 * norms;
}

/** How the fields of a config are called where it came from (e.g. `hidden_size` in config.json), for messages. */
export type ConfigKeyNames = Partial<Record<keyof ModelConfig, string>>;

/** A config value as a message shows it (numbers as JS prints them, so NaN stays NaN). */
function show(v: unknown): string {
  return typeof v === "number" ? String(v) : JSON.stringify(v);
}

const INTEGER_FIELDS = [
  "dModel",
  "nLayers",
  "nHeads",
  "nKvHeads",
  "headDim",
  "ffnHidden",
  "vocabSize",
  "paddedVocab",
  "maxContext",
] as const;

/**
 * Checks that the suite can run `c` and returns it; otherwise throws one sentence naming `where` (a file or knob)
 * and the offending key (spelled as in `keyNames` when given) and saying what to change.
 */
export function validateConfig(c: ModelConfig, where = "the model config", keyNames: ConfigKeyNames = {}): ModelConfig {
  const key = (f: keyof ModelConfig) => keyNames[f] ?? f;
  const fail = (msg: string): never => {
    throw new UserError(`${where}: ${msg}.`);
  };
  for (const f of INTEGER_FIELDS) {
    const v = c[f];
    if (!Number.isSafeInteger(v) || v < 1) fail(`${key(f)} is ${show(v)}, but it must be a positive integer`);
  }
  if (c.nKvHeads !== c.nHeads) {
    fail(
      `${key("nKvHeads")} ${c.nKvHeads} differs from ${key("nHeads")} ${c.nHeads}, and this suite runs only plain ` +
        "multi-head attention as OLMo-2 uses (no grouped-query attention)",
    );
  }
  if (!SUPPORTED_HEAD_DIMS.includes(c.headDim)) {
    fail(
      `${key("headDim")} is ${c.headDim}, but the attention kernels support only ${SUPPORTED_HEAD_DIMS.join(" or ")}`,
    );
  }
  if (c.nHeads * c.headDim !== c.dModel) {
    fail(
      `${key("nHeads")} ${c.nHeads} times ${key("headDim")} ${c.headDim} is ${c.nHeads * c.headDim}, not ` +
        `${key("dModel")} ${c.dModel} as the [d, d] attention projections of OLMo-2 need`,
    );
  }
  for (const f of ["dModel", "ffnHidden"] as const) {
    if (c[f] % INNER_DIM_MULTIPLE !== 0) {
      fail(
        `${key(f)} ${c[f]} is not a multiple of ${INNER_DIM_MULTIPLE}, which the bf16 matrix kernels need ` +
          "(every OLMo-2 size is)",
      );
    }
  }
  if (c.paddedVocab % VOCAB_PAD_MULTIPLE !== 0) {
    fail(`${key("paddedVocab")} ${c.paddedVocab} is not a multiple of ${VOCAB_PAD_MULTIPLE}; pad the embedding rows`);
  }
  if (c.vocabSize > c.paddedVocab) {
    fail(
      `${key("vocabSize")} ${c.vocabSize} exceeds the ${c.paddedVocab} embedding rows (${key("paddedVocab")}), ` +
        "so some token ids would have no embedding",
    );
  }
  if (typeof c.ropeTheta !== "number" || !Number.isFinite(c.ropeTheta) || c.ropeTheta <= 1) {
    fail(`${key("ropeTheta")} is ${show(c.ropeTheta)}, but it must be a finite number above 1 (500000)`);
  }
  if (typeof c.rmsNormEps !== "number" || !(c.rmsNormEps > 0 && c.rmsNormEps < 1)) {
    fail(`${key("rmsNormEps")} is ${show(c.rmsNormEps)}, but it must be between 0 and 1 (OLMo-2: 1e-6)`);
  }
  if (typeof c.tieEmbeddings !== "boolean") {
    fail(`${key("tieEmbeddings")} is ${show(c.tieEmbeddings)}, but it must be true or false`);
  }
  return c;
}

/** config.json key names of the fields, for messages about a Hugging Face config. */
const HF_KEYS: ConfigKeyNames = {
  dModel: "hidden_size",
  nLayers: "num_hidden_layers",
  nHeads: "num_attention_heads",
  nKvHeads: "num_key_value_heads",
  headDim: "head_dim",
  ffnHidden: "intermediate_size",
  vocabSize: "the tokenizer's vocabulary",
  paddedVocab: "vocab_size rounded up",
  ropeTheta: "rope_theta",
  rmsNormEps: "rms_norm_eps",
  maxContext: "max_position_embeddings",
  tieEmbeddings: "tie_word_embeddings",
};

/** Options of {@link configFromHf}. */
export interface HfConfigOptions {
  /** Token ids the tokenizer emits (e.g. counted from the checkpoint's tokenizer.json); default: config vocab_size. */
  vocabSize?: number;
  /** Label of the config; default: `file`. */
  name?: string;
}

/**
 * Reads a Hugging Face OLMo-2 `config.json` (already parsed) into a validated {@link ModelConfig}. Accepts both
 * spellings (top-level `rope_theta` / `torch_dtype`, or transformers 5's `rope_parameters.rope_theta` / `dtype`);
 * `head_dim` defaults to hidden_size / num_attention_heads and `num_key_value_heads` to num_attention_heads, as in
 * transformers. Rejects, with one sentence naming `file` and the key, what this suite cannot run: another model type,
 * grouped-query attention, biases, RoPE scaling, another activation. `tie_word_embeddings: true` is supported.
 * `paddedVocab` is `vocab_size` rounded up to a multiple of {@link VOCAB_PAD_MULTIPLE}.
 */
export function configFromHf(json: unknown, file: string, opts: HfConfigOptions = {}): ModelConfig {
  const fail = (msg: string): never => {
    throw new UserError(`${file}: ${msg}.`);
  };
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return fail("the file is not a JSON object; it should be the Hugging Face config.json of an OLMo-2 checkpoint");
  }
  const j = json as Record<string, unknown>;
  const model = j.model as Record<string, unknown> | undefined;
  if (typeof model === "object" && model !== null && "d_model" in model) {
    fail(
      "this is an OLMo-core training config, not a Hugging Face config.json; convert the checkpoint to Hugging Face " +
        "format (OLMo-core's convert_checkpoint_to_hf) or add the Hugging Face config.json next to the weights",
    );
  }
  if (j.model_type !== undefined && j.model_type !== "olmo2") {
    fail(`model_type is ${JSON.stringify(j.model_type)}, but this suite runs only OLMo-2 ("olmo2") checkpoints`);
  }
  const num = (k: string, required: boolean, dflt?: unknown): number => {
    const v = j[k] ?? dflt;
    if (v === undefined || v === null) {
      if (required) fail(`the required key "${k}" is missing; add it (see the OLMo-2 values in shared/docs/olmo2.md)`);
      return NaN;
    }
    if (typeof v !== "number") fail(`"${k}" is ${JSON.stringify(v)}, but it must be a number`);
    return v as number;
  };
  const dModel = num("hidden_size", true);
  const nHeads = num("num_attention_heads", true);
  const nKvHeads = num("num_key_value_heads", false, nHeads);
  const headDimGiven = j.head_dim !== undefined && j.head_dim !== null;
  const headDim = headDimGiven ? num("head_dim", true) : dModel / nHeads;
  if (!headDimGiven && !Number.isSafeInteger(headDim)) {
    fail(`hidden_size ${dModel} is not divisible by num_attention_heads ${nHeads}; fix one of them`);
  }
  for (const k of ["attention_bias", "mlp_bias"]) {
    if (j[k] !== undefined && j[k] !== false) {
      fail(`"${k}" is ${JSON.stringify(j[k])}, but OLMo-2 has no biases and this suite runs none; set it to false`);
    }
  }
  if (j.hidden_act !== undefined && j.hidden_act !== "silu") {
    fail(`hidden_act is ${JSON.stringify(j.hidden_act)}, but OLMo-2's SwiGLU (and this suite) uses "silu"`);
  }
  const rope = rotary(j, fail);
  const tie = j.tie_word_embeddings ?? false;
  const declared = j.torch_dtype ?? j.dtype;
  const vocabRows = num("vocab_size", true);
  const vocabSize = opts.vocabSize ?? vocabRows;
  if (Number.isSafeInteger(vocabRows) && vocabSize > vocabRows) {
    fail(`vocab_size ${vocabRows} is smaller than the tokenizer's ${vocabSize} ids, so some ids have no embedding`);
  }
  const config: ModelConfig = {
    name: opts.name ?? file,
    dModel,
    nLayers: num("num_hidden_layers", true),
    nHeads,
    nKvHeads,
    headDim,
    ffnHidden: num("intermediate_size", true),
    vocabSize,
    paddedVocab: roundUp(vocabRows, VOCAB_PAD_MULTIPLE),
    ropeTheta: rope,
    rmsNormEps: num("rms_norm_eps", true),
    maxContext: num("max_position_embeddings", true),
    tieEmbeddings: tie as boolean,
  };
  if (typeof declared === "string") config.declaredDtype = declared;
  return validateConfig(config, file, HF_KEYS);
}

/** RoPE theta from either spelling; rejects any scaling. */
function rotary(j: Record<string, unknown>, fail: (msg: string) => never): number {
  const scaling = j.rope_scaling;
  if (scaling !== undefined && scaling !== null && ropeType(scaling) !== "default") {
    fail(`rope_scaling is ${JSON.stringify(scaling)}, but OLMo-2 uses plain RoPE and this suite implements no scaling`);
  }
  const params = j.rope_parameters;
  let theta: unknown = j.rope_theta;
  if (params !== undefined && params !== null) {
    if (typeof params !== "object" || Array.isArray(params)) fail("rope_parameters must be an object");
    const p = params as Record<string, unknown>;
    const type = ropeType(p) ?? "default";
    if (type !== "default") {
      fail(
        `rope_parameters.rope_type is ${JSON.stringify(type)}, but OLMo-2 uses plain RoPE ("default") and this ` +
          "suite implements no scaling",
      );
    }
    theta = p.rope_theta ?? theta;
  }
  if (theta === undefined || theta === null) {
    fail('neither "rope_theta" nor "rope_parameters.rope_theta" is present; add the RoPE base (OLMo-2: 500000)');
  }
  if (typeof theta !== "number") fail(`rope_theta is ${JSON.stringify(theta)}, but it must be a number`);
  return theta as number;
}

function ropeType(o: unknown): unknown {
  if (typeof o !== "object" || o === null) return o;
  const r = o as Record<string, unknown>;
  return r.rope_type ?? r.type;
}
