/**
 * Writers of the files the model loaders read, for tests only (no tool writes these files): safetensors files,
 * checkpoint directories (config.json + weights, sharded or not, HF or OLMo-core names), PEFT adapter directories, and
 * edited copies of existing ones (`copyWeightsDir`, e.g. to plant a NaN in one tensor).
 * @module
 */

import { join } from "@std/path";
import { f32ToBf16Bits } from "../../kernels/bf16.ts";
import { expectedTensors, type Naming, sourceName, type TensorSpec } from "../../model/checkpoint.ts";
import type { ModelConfig } from "../../model/config.ts";
import { type LoraAdapterConfig, type LoraModule, loraModuleName, projectionShape } from "../../model/lora.ts";
import { DTYPE_BYTES, type LoadableDtype, SafetensorsFile } from "../../model/safetensors.ts";

/** A tensor to write: F32 from a Float32Array; F16/BF16 from a Float32Array (rounded to nearest even) or raw bits. */
export interface TensorToWrite {
  dtype: LoadableDtype;
  shape: readonly number[];
  data: Float32Array | Uint16Array;
}

/** The little-endian bytes of `t` in its dtype. */
function tensorBytes(name: string, t: TensorToWrite): Uint8Array {
  const elements = t.shape.reduce((a, b) => a * b, 1);
  if (t.data.length !== elements) {
    throw new Error(`writeSafetensors: "${name}" has ${t.data.length} values for shape [${t.shape.join(", ")}]`);
  }
  let out: ArrayBufferView;
  if (t.data instanceof Uint16Array) {
    if (t.dtype === "F32") throw new Error(`writeSafetensors: "${name}" is F32 but was given 16-bit patterns`);
    out = t.data;
  } else if (t.dtype === "F32") {
    out = t.data;
  } else if (t.dtype === "F16") {
    out = new Float16Array(t.data);
  } else {
    const bits = new Uint16Array(elements);
    for (let i = 0; i < elements; i++) bits[i] = f32ToBf16Bits(t.data[i]);
    out = bits;
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Writes a safetensors file (tensors in the given order, contiguous; header padded with spaces to a multiple of 8
 * bytes as the reference writer does); each tensor is converted and written in turn.
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite> | Iterable<[string, TensorToWrite]>,
  metadata: Record<string, string> = { format: "pt" },
): Promise<void> {
  const entries = Symbol.iterator in tensors
    ? [...(tensors as Iterable<[string, TensorToWrite]>)]
    : Object.entries(tensors as Record<string, TensorToWrite>);
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of entries) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const length = new Uint8Array(8);
  new DataView(length.buffer).setBigUint64(0, BigInt(json.length), true);
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  await writeAll(file, length);
  await writeAll(file, json);
  for (const [name, t] of entries) await writeAll(file, tensorBytes(name, t));
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
}

/**
 * The Hugging Face config.json of `c` in the transformers 4 (`rope_theta`, `torch_dtype`) or 5 spelling, with
 * `vocab_size` = `vocabRows` (the embedding rows stored).
 */
export function hfConfigJson(
  c: ModelConfig,
  spelling: "transformers4" | "transformers5" = "transformers4",
  vocabRows = c.paddedVocab,
) {
  const common = {
    architectures: ["Olmo2ForCausalLM"],
    model_type: "olmo2",
    hidden_size: c.dModel,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    intermediate_size: c.ffnHidden,
    vocab_size: vocabRows,
    max_position_embeddings: c.maxContext,
    rms_norm_eps: c.rmsNormEps,
    attention_bias: false,
    hidden_act: "silu",
    tie_word_embeddings: c.tieEmbeddings,
  };
  return spelling === "transformers4"
    ? { ...common, rope_theta: c.ropeTheta, rope_scaling: null, torch_dtype: c.declaredDtype ?? "float32" }
    : { ...common, rope_parameters: { rope_theta: c.ropeTheta, rope_type: "default" }, dtype: "bfloat16" };
}

/** Options of {@link writeCheckpoint}. */
export interface WriteCheckpointOptions {
  naming?: Naming;
  /** Stored dtype of every tensor (default BF16). */
  dtype?: TensorToWrite["dtype"];
  /** Number of shard files; 1 writes model.safetensors, more write model-0000i-of-0000n.safetensors + index. */
  shards?: number;
  /** Rows stored for embed / lm_head, also written as config.json's `vocab_size` (default `paddedVocab`). */
  vocabRows?: number;
  /** config.json spelling. */
  spelling?: "transformers4" | "transformers5";
}

/**
 * Writes checkpoint directory `dir` for model `c` (config.json and weights), getting each tensor's values from
 * `values(spec, shape)` (shape as stored); each shard is held in memory while written.
 */
export async function writeCheckpoint(
  dir: string,
  c: ModelConfig,
  values: (spec: TensorSpec, shape: readonly number[]) => Float32Array,
  opts: WriteCheckpointOptions = {},
): Promise<void> {
  const naming = opts.naming ?? "hf", dtype = opts.dtype ?? "BF16", shards = opts.shards ?? 1;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    join(dir, "config.json"),
    JSON.stringify(hfConfigJson(c, opts.spelling, opts.vocabRows), null, 2),
  );
  const specs = expectedTensors(c).filter((s) => !(s.part === "lm_head" && c.tieEmbeddings));
  const shardName = (i: number) =>
    shards === 1
      ? "model.safetensors"
      : `model-${String(i + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`;
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  for (let s = 0; s < shards; s++) {
    const entries: [string, TensorToWrite][] = [];
    specs.forEach((spec, i) => {
      if (Math.floor((i * shards) / specs.length) !== s) return;
      const vocab = spec.part === "embed" || spec.part === "lm_head";
      const shape = vocab ? [opts.vocabRows ?? spec.shape[0], spec.shape[1]] : spec.shape;
      const name = sourceName(spec, naming);
      entries.push([name, { dtype, shape, data: values(spec, shape) }]);
      totalSize += shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
      weightMap[name] = shardName(s);
    });
    await writeSafetensors(join(dir, shardName(s)), entries);
  }
  if (shards > 1) {
    const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
    await Deno.writeTextFile(join(dir, "model.safetensors.index.json"), JSON.stringify(index, null, 2));
  }
}

/** One projection's factors, for {@link writeLoraAdapter}. */
export interface LoraFactors {
  layer: number;
  module: LoraModule;
  /** [rank, in]. */
  A: Float32Array;
  /** [out, rank]. */
  B: Float32Array;
  rank: number;
}

/**
 * Writes a PEFT adapter directory (adapter_config.json from `config`, adapter_model.safetensors with PEFT's key
 * names) for model `base`.
 */
export async function writeLoraAdapter(
  dir: string,
  base: ModelConfig,
  config: LoraAdapterConfig,
  factors: readonly LoraFactors[],
  dtype: TensorToWrite["dtype"] = "F32",
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const full = { peft_type: "LORA", task_type: "CAUSAL_LM", bias: "none", fan_in_fan_out: false, ...config };
  await Deno.writeTextFile(join(dir, "adapter_config.json"), JSON.stringify(full, null, 2));
  const entries: [string, TensorToWrite][] = [];
  for (const f of factors) {
    const [outF, inF] = projectionShape(base, f.module);
    const prefix = `base_model.model.${loraModuleName(f.layer, f.module)}`;
    entries.push([`${prefix}.lora_A.weight`, { dtype, shape: [f.rank, inF], data: f.A }]);
    entries.push([`${prefix}.lora_B.weight`, { dtype, shape: [outF, f.rank], data: f.B }]);
  }
  await writeSafetensors(join(dir, "adapter_model.safetensors"), entries);
}

/** Values of a tensor as `copySafetensors` hands them to its editor: F32 as numbers, F16 / BF16 as raw bit patterns. */
export type TensorValues = Float32Array | Uint16Array;

/**
 * Copies safetensors file `src` to `dst`, every tensor in the same order, dtype and shape, after `edit` (if given)
 * changed its values in place.
 */
export async function copySafetensors(
  src: string,
  dst: string,
  edit?: (name: string, values: TensorValues, shape: readonly number[]) => void,
): Promise<void> {
  const file = await SafetensorsFile.open(src);
  try {
    const entries: [string, TensorToWrite][] = [];
    for (const name of file.names()) {
      const { dtype, shape } = file.info(name);
      const bytes = await file.readBytes(name);
      const values = dtype === "F32" ? new Float32Array(bytes.buffer) : new Uint16Array(bytes.buffer);
      edit?.(name, values, shape);
      entries.push([name, { dtype: dtype as LoadableDtype, shape, data: values }]);
    }
    await writeSafetensors(dst, entries);
  } finally {
    file.close();
  }
}

/**
 * Copies the files of a checkpoint or adapter directory `src` (not its subdirectories) into `dst`, the safetensors
 * files through `copySafetensors` with `edit`.
 */
export async function copyWeightsDir(
  src: string,
  dst: string,
  edit?: (name: string, values: TensorValues, shape: readonly number[]) => void,
): Promise<void> {
  await Deno.mkdir(dst, { recursive: true });
  for await (const e of Deno.readDir(src)) {
    if (!e.isFile) continue;
    if (e.name.endsWith(".safetensors")) await copySafetensors(join(src, e.name), join(dst, e.name), edit);
    else await Deno.copyFile(join(src, e.name), join(dst, e.name));
  }
}
