/**
 * An OLMo-2 checkpoint directory on disk: `config.json` plus `model.safetensors` or a sharded
 * `model.safetensors.index.json`, with Hugging Face or OLMo-core tensor names (the table in olmo2.md). Opening one
 * validates every header, maps both namings to one canonical naming, and checks that every tensor the config needs
 * exists with the right shape and a loadable dtype, so a bad checkpoint fails before any GPU memory is used. Tensors
 * are then read one at a time, in load order, as packed bf16 (matrices) or f32 (norm weights).
 *
 * Canonical names: `embed`, `layers.{i}.{q,k,v,o,q_norm,k_norm,attn_norm,gate,up,down,ff_norm}`, `norm`, `lm_head`.
 *
 * Vocabulary rows: the embedding and lm_head may store any row count from the tokenizer's `vocabSize` up to
 * `paddedVocab`; reads return `paddedVocab` rows, the rows past the stored ones zero (masked from sampling anyway).
 * Tied embeddings (`tie_word_embeddings: true`) are served by reading the embedding for `lm_head` too.
 * Extra tensors: a bias, an unknown per-layer tensor (e.g. Llama's `input_layernorm`) or a layer past `nLayers` is an
 * error, since running without it would silently compute another model; anything else (e.g. a stored RoPE buffer)
 * is ignored and listed in {@link Checkpoint.ignored}.
 * @module
 */

import { basename, join } from "@std/path";
import { UserError } from "../common/errors.ts";
import { configFromHf, type ModelConfig, validateConfig } from "./config.ts";
import { SafetensorsFile } from "./safetensors.ts";

/** The tensors of one block, in load order. */
export type LayerPart =
  | "q"
  | "k"
  | "v"
  | "o"
  | "q_norm"
  | "k_norm"
  | "attn_norm"
  | "gate"
  | "up"
  | "down"
  | "ff_norm";

/** The 11 tensors of a block, in load order. */
export const LAYER_PARTS: readonly LayerPart[] = [
  "q",
  "k",
  "v",
  "o",
  "q_norm",
  "k_norm",
  "attn_norm",
  "gate",
  "up",
  "down",
  "ff_norm",
];

/** The naming conventions of checkpoint files. */
export type Naming = "hf" | "olmo-core";

const LAYER_NAMES: Readonly<Record<Naming, Readonly<Record<LayerPart, string>>>> = {
  hf: {
    q: "self_attn.q_proj",
    k: "self_attn.k_proj",
    v: "self_attn.v_proj",
    o: "self_attn.o_proj",
    q_norm: "self_attn.q_norm",
    k_norm: "self_attn.k_norm",
    attn_norm: "post_attention_layernorm",
    gate: "mlp.gate_proj",
    up: "mlp.up_proj",
    down: "mlp.down_proj",
    ff_norm: "post_feedforward_layernorm",
  },
  "olmo-core": {
    q: "attention.w_q",
    k: "attention.w_k",
    v: "attention.w_v",
    o: "attention.w_out",
    q_norm: "attention.q_norm",
    k_norm: "attention.k_norm",
    attn_norm: "attention_norm",
    gate: "feed_forward.w1",
    up: "feed_forward.w3",
    down: "feed_forward.w2",
    ff_norm: "feed_forward_norm",
  },
};

const GLOBAL_NAMES: Readonly<Record<Naming, Readonly<Record<"embed" | "norm" | "lm_head", string>>>> = {
  hf: { embed: "model.embed_tokens.weight", norm: "model.norm.weight", lm_head: "lm_head.weight" },
  "olmo-core": { embed: "embeddings.weight", norm: "lm_head.norm.weight", lm_head: "lm_head.w_out.weight" },
};

/** Prefix of per-layer tensor names, followed by the layer index and a dot. */
const LAYER_PREFIX: Readonly<Record<Naming, string>> = { hf: "model.layers.", "olmo-core": "blocks." };

/** One tensor the model needs. */
export interface TensorSpec {
  /** Canonical name (`layers.3.q`, `embed`, ...). */
  name: string;
  /** Block index, or null for `embed`, `norm`, `lm_head`. */
  layer: number | null;
  part: LayerPart | "embed" | "norm" | "lm_head";
  /** Shape as read: [out, in] for matrices, [d] for norms; embed and lm_head have `paddedVocab` rows. */
  shape: readonly number[];
  /** Matrices are read as packed bf16, norm weights as f32. */
  format: "bf16" | "f32";
}

/** The name of canonical tensor `spec` in checkpoint files of naming `naming`. */
export function sourceName(spec: Pick<TensorSpec, "layer" | "part">, naming: Naming): string {
  if (spec.layer === null) return GLOBAL_NAMES[naming][spec.part as "embed" | "norm" | "lm_head"];
  return `${LAYER_PREFIX[naming]}${spec.layer}.${LAYER_NAMES[naming][spec.part as LayerPart]}.weight`;
}

/** Every tensor of model `c`, in load order: embed, the blocks' 11 tensors each, norm, lm_head. */
export function expectedTensors(c: ModelConfig): TensorSpec[] {
  const d = c.dModel, f = c.ffnHidden;
  const layerShape: Record<LayerPart, number[]> = {
    q: [d, d],
    k: [d, d],
    v: [d, d],
    o: [d, d],
    q_norm: [d],
    k_norm: [d],
    attn_norm: [d],
    gate: [f, d],
    up: [f, d],
    down: [d, f],
    ff_norm: [d],
  };
  const specs: TensorSpec[] = [{
    name: "embed",
    layer: null,
    part: "embed",
    shape: [c.paddedVocab, d],
    format: "bf16",
  }];
  for (let i = 0; i < c.nLayers; i++) {
    for (const part of LAYER_PARTS) {
      const shape = layerShape[part];
      specs.push({ name: `layers.${i}.${part}`, layer: i, part, shape, format: shape.length === 2 ? "bf16" : "f32" });
    }
  }
  specs.push({ name: "norm", layer: null, part: "norm", shape: [d], format: "f32" });
  specs.push({ name: "lm_head", layer: null, part: "lm_head", shape: [c.paddedVocab, d], format: "bf16" });
  return specs;
}

/** A tensor of an opened checkpoint: what the model needs and where it is stored. */
export interface CheckpointTensor extends TensorSpec {
  /** Name in the file (for a tied lm_head, the embedding's). */
  sourceName: string;
  /** The safetensors file holding it. */
  file: string;
  /** Stored dtype (F32, F16 or BF16). */
  dtype: string;
  /** Stored shape (embed / lm_head may have fewer rows than `shape`). */
  storedShape: readonly number[];
}

/** Tensor data in the format its spec asks for. */
export type TensorData = { format: "bf16"; data: Uint32Array } | { format: "f32"; data: Float32Array };

/** One tensor read during {@link Checkpoint.load}. */
export type LoadedTensor = { tensor: CheckpointTensor } & TensorData;

/** Options of {@link Checkpoint.open}. */
export interface OpenOptions {
  /** Use this config instead of the directory's config.json (checked against the tensors all the same). */
  config?: ModelConfig;
  /** Token ids the tokenizer emits; default: counted from the directory's tokenizer.json, else config vocab_size. */
  vocabSize?: number;
}

function fail(message: string): never {
  throw new UserError(message);
}

async function readJson(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) fail(`${path} is missing; ${what}.`);
    fail(`${path} cannot be read (${(e as Error).name}); check its permissions.`);
  }
  try {
    return JSON.parse(text);
  } catch {
    fail(`${path} is not valid JSON; re-download or repair it.`);
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/**
 * The number of token ids a Hugging Face tokenizer.json can produce (largest id in its vocabulary or added tokens,
 * plus one); `file` names it in errors.
 */
export function countTokenizerIds(json: unknown, file: string): number {
  const j = json as { model?: { vocab?: unknown }; added_tokens?: unknown };
  const vocab = j?.model?.vocab;
  if (typeof vocab !== "object" || vocab === null || Array.isArray(vocab)) {
    fail(`${file} has no model.vocab object; it is not a Hugging Face BPE tokenizer.json, so replace it.`);
  }
  let max = -1;
  for (const id of Object.values(vocab as Record<string, unknown>)) {
    if (!Number.isSafeInteger(id)) fail(`${file} has a non-integer id in model.vocab; replace the file.`);
    max = Math.max(max, id as number);
  }
  for (const t of Array.isArray(j.added_tokens) ? j.added_tokens : []) {
    const id = (t as { id?: unknown })?.id;
    if (!Number.isSafeInteger(id)) fail(`${file} has an added token without an integer id; replace the file.`);
    max = Math.max(max, id as number);
  }
  return max + 1;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

const fmtShape = (s: readonly number[]) => `[${s.join(", ")}]`;

/** An opened checkpoint directory; read tensors with {@link Checkpoint.read} or {@link Checkpoint.load}. */
export class Checkpoint {
  private constructor(
    /** The directory. */
    readonly dir: string,
    /** The model config (from config.json unless given). */
    readonly config: ModelConfig,
    /** The naming the files use. */
    readonly naming: Naming,
    /** The tensors, in load order. */
    readonly tensors: readonly CheckpointTensor[],
    /** Stored tensors the model does not use (harmless ones only; see the module comment). */
    readonly ignored: readonly string[],
    private readonly files: ReadonlyMap<string, SafetensorsFile>,
  ) {
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  private readonly byName: ReadonlyMap<string, CheckpointTensor>;

  /** Opens and validates checkpoint directory `dir` (reads headers only). */
  static async open(dir: string, opts: OpenOptions = {}): Promise<Checkpoint> {
    let stat: Deno.FileInfo | null = null;
    try {
      stat = await Deno.stat(dir);
    } catch {
      stat = null;
    }
    if (!stat?.isDirectory) {
      fail(
        `checkpoint directory ${dir} ${stat ? "is not a directory" : "does not exist"}; set weights to a directory.`,
      );
    }
    const configPath = join(dir, "config.json");
    let config = opts.config;
    if (!config) {
      let vocabSize = opts.vocabSize;
      const tokenizerPath = join(dir, "tokenizer.json");
      if (vocabSize === undefined && await isFile(tokenizerPath)) {
        vocabSize = countTokenizerIds(await readJson(tokenizerPath, "restore it or remove it entirely"), tokenizerPath);
      }
      const json = await readJson(configPath, "a checkpoint directory needs the Hugging Face config.json");
      config = configFromHf(json, configPath, { vocabSize, name: dir });
    }
    const configName = opts.config ? `the "${config.name}" config` : configPath;
    if (opts.config) validateConfig(config, configName);
    const files = await openFiles(dir);
    try {
      const { tensors, naming, ignored } = matchTensors(config, configName, files);
      return new Checkpoint(dir, config, naming, tensors, ignored, files.byPath);
    } catch (e) {
      for (const f of files.byPath.values()) f.close();
      throw e;
    }
  }

  /** The tensor named `name` (canonical). */
  get(name: string): CheckpointTensor {
    const t = this.byName.get(name);
    if (!t) throw new Error(`Checkpoint: no tensor "${name}" (canonical names: embed, layers.N.q, ..., norm, lm_head)`);
    return t;
  }

  /** Reads tensor `name` in its spec's format (embed / lm_head padded to `paddedVocab` rows with zeros). */
  async read(name: string): Promise<TensorData> {
    const t = this.get(name);
    const file = this.files.get(t.file)!;
    const rows = t.part === "embed" || t.part === "lm_head" ? t.shape[0] : undefined;
    if (t.format === "bf16") return { format: "bf16", data: await file.readBf16(t.sourceName, { rows }) };
    return { format: "f32", data: await file.readF32(t.sourceName) };
  }

  /** Reads matrix `name` as packed bf16. */
  async readMatrix(name: string): Promise<Uint32Array> {
    const r = await this.read(name);
    if (r.format !== "bf16") throw new Error(`Checkpoint: "${name}" is a norm weight, read as f32`);
    return r.data;
  }

  /** Reads norm weight `name` as f32. */
  async readVector(name: string): Promise<Float32Array> {
    const r = await this.read(name);
    if (r.format !== "f32") throw new Error(`Checkpoint: "${name}" is a matrix, read as packed bf16`);
    return r.data;
  }

  /** Reads every tensor in load order, one at a time (only the yielded one is held by the reader). */
  async *load(): AsyncGenerator<LoadedTensor> {
    for (const tensor of this.tensors) yield { tensor, ...(await this.read(tensor.name)) };
  }

  /** Closes the files. */
  close(): void {
    for (const f of this.files.values()) f.close();
  }
}

/** The checkpoint's safetensors files, opened, and which file holds each stored tensor name. */
export interface OpenFiles {
  byPath: Map<string, SafetensorsFile>;
  location: Map<string, SafetensorsFile>;
  /** How the weights file(s) are named in messages. */
  describe: string;
}

async function openFiles(dir: string): Promise<OpenFiles> {
  const single = join(dir, "model.safetensors");
  const indexPath = join(dir, "model.safetensors.index.json");
  const byPath = new Map<string, SafetensorsFile>();
  const location = new Map<string, SafetensorsFile>();
  try {
    if (await isFile(single)) {
      const f = await SafetensorsFile.open(single);
      byPath.set(single, f);
      for (const name of f.tensors.keys()) location.set(name, f);
      return { byPath, location, describe: single };
    }
    if (!(await isFile(indexPath))) {
      fail(
        `${dir} has neither model.safetensors nor model.safetensors.index.json; point weights at a checkpoint ` +
          "directory with safetensors weights (convert .bin or .pt files with transformers' save_pretrained).",
      );
    }
    const index = await readJson(indexPath, "restore it") as { weight_map?: unknown };
    const map = index?.weight_map;
    if (typeof map !== "object" || map === null || Array.isArray(map)) {
      fail(`${indexPath} has no weight_map object; re-download it or the whole checkpoint.`);
    }
    const shardOf = new Map<string, string>();
    for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
      if (typeof shard !== "string" || shard !== basename(shard) || shard === "." || shard === "..") {
        fail(`${indexPath} maps "${name}" to ${JSON.stringify(shard)}, not a file name in the directory; repair it.`);
      }
      shardOf.set(name, shard);
    }
    for (const shard of new Set(shardOf.values())) {
      const path = join(dir, shard);
      if (!(await isFile(path))) {
        fail(`${path} is missing but ${indexPath} lists it as a shard; download the missing shard.`);
      }
      const f = await SafetensorsFile.open(path);
      byPath.set(path, f);
      for (const name of f.tensors.keys()) {
        const other = location.get(name);
        if (other) fail(`tensor "${name}" is in both ${other.path} and ${path}; remove the stale shard.`);
        location.set(name, f);
      }
    }
    for (const [name, shard] of shardOf) {
      const f = byPath.get(join(dir, shard))!;
      if (!f.tensors.has(name)) {
        fail(`${indexPath} says tensor "${name}" is in ${shard}, but that shard has no such tensor; re-download both.`);
      }
    }
    return { byPath, location, describe: indexPath };
  } catch (e) {
    for (const f of byPath.values()) f.close();
    throw e;
  }
}

const LOADABLE = new Set(["F32", "F16", "BF16"]);

/**
 * Maps the stored names to the canonical ones and checks presence, shapes, dtypes and extras: the checks
 * {@link Checkpoint.open} makes of the headers (exported so that headers held in memory can be checked the same way).
 */
export function matchTensors(
  config: ModelConfig,
  configName: string,
  files: OpenFiles,
): { tensors: CheckpointTensor[]; naming: Naming; ignored: string[] } {
  const stored = [...files.location.keys()];
  const looksLike = (n: Naming) =>
    files.location.has(GLOBAL_NAMES[n].embed) || stored.some((s) => s.startsWith(LAYER_PREFIX[n]));
  const hf = looksLike("hf"), core = looksLike("olmo-core");
  if (hf === core) {
    fail(
      `${files.describe} ${hf ? "mixes" : "has neither"} Hugging Face (model.layers.N...) ${hf ? "and" : "nor"} ` +
        "OLMo-core (blocks.N...) tensor names; this is not an OLMo-2 checkpoint this suite can read.",
    );
  }
  const naming: Naming = hf ? "hf" : "olmo-core";
  const tensors: CheckpointTensor[] = [];
  const used = new Set<string>();
  for (const spec of expectedTensors(config)) {
    const aliasEmbed = spec.part === "lm_head" && config.tieEmbeddings;
    const name = sourceName(aliasEmbed ? { layer: null, part: "embed" } : spec, naming);
    const file = files.location.get(name);
    if (!file) {
      fail(
        `${files.describe} has no tensor "${name}" (${spec.name}), which ${configName} needs; the checkpoint is ` +
          "incomplete or belongs to another model, so re-download it or fix the config.",
      );
    }
    const info = file.info(name);
    const vocabRows = spec.part === "embed" || spec.part === "lm_head";
    const shapeOk = vocabRows
      ? info.shape.length === 2 && info.shape[1] === spec.shape[1] && info.shape[0] >= config.vocabSize &&
        info.shape[0] <= spec.shape[0]
      : sameShape(info.shape, spec.shape);
    if (!shapeOk) {
      const want = !vocabRows
        ? fmtShape(spec.shape)
        : config.vocabSize === spec.shape[0]
        ? fmtShape(spec.shape)
        : `[${config.vocabSize}..${spec.shape[0]}, ${
          spec.shape[1]
        }] (rows from the tokenizer's ids to the padded rows)`;
      fail(
        `${file.path}: tensor "${name}" has shape ${fmtShape(info.shape)} but ${configName} needs ${want}; the ` +
          "weights and the config do not belong together, so fix the config or use matching weights.",
      );
    }
    if (!LOADABLE.has(info.dtype)) {
      fail(`${file.path}: tensor "${name}" is ${info.dtype}; store the weights as F32, F16 or BF16.`);
    }
    used.add(name);
    tensors.push({ ...spec, sourceName: name, file: file.path, dtype: info.dtype, storedShape: info.shape });
  }
  const ignored: string[] = [];
  const prefix = LAYER_PREFIX[naming];
  for (const name of stored) {
    if (used.has(name)) continue;
    if (config.tieEmbeddings && name === GLOBAL_NAMES[naming].lm_head) {
      ignored.push(name);
      continue;
    }
    const where = files.location.get(name)!.path;
    if (name.endsWith(".bias")) {
      fail(
        `${where}: tensor "${name}" is a bias, but OLMo-2 has none and this suite runs none; use bias-free weights.`,
      );
    }
    const layer = name.startsWith(prefix) ? Number(name.slice(prefix.length).split(".")[0]) : NaN;
    if (Number.isSafeInteger(layer) && layer >= config.nLayers) {
      fail(
        `${where}: tensor "${name}" belongs to layer ${layer}, but ${configName} has ${config.nLayers} layers; the ` +
          "weights and the config do not belong together.",
      );
    }
    if (Number.isSafeInteger(layer) && !name.endsWith("rotary_emb.inv_freq")) {
      fail(
        `${where}: tensor "${name}" is not part of an OLMo-2 block (is this a Llama or OLMo-1 checkpoint?); ` +
          "use an OLMo-2 checkpoint.",
      );
    }
    ignored.push(name);
  }
  return { tensors, naming, ignored };
}
