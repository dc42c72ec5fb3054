import { assertEquals } from "@std/assert";
import { join } from "@std/path";
import { packBf16, roundBf16Array } from "../../kernels/bf16.ts";
import type { ModelConfig } from "../../model/config.ts";
import { Checkpoint, expectedTensors, type LoadedTensor, sourceName, type TensorSpec } from "../../model/checkpoint.ts";
import { SafetensorsFile } from "../../model/safetensors.ts";
import { assertUserError, MICRO, valuesOf, withTempDir } from "./util.ts";
import { type TensorToWrite, writeCheckpoint, writeSafetensors } from "./writers.ts";

/** What a read of `spec` must return when the checkpoint stores `valuesOf` in `dtype` with `rows` vocabulary rows. */
function expected(spec: TensorSpec, dtype: string, rows: number): Uint32Array | Float32Array {
  const vocab = spec.part === "embed" || spec.part === "lm_head";
  const shape = vocab ? [rows, spec.shape[1]] : spec.shape;
  const stored = valuesOf(spec, shape);
  const values = dtype === "F32" ? stored : roundBf16Array(stored);
  if (spec.format === "f32") return values;
  const padded = new Float32Array(spec.shape.reduce((a, b) => a * b, 1));
  padded.set(values); // rows past the stored ones are zero
  return packBf16(padded, spec.shape[spec.shape.length - 1]);
}

async function loadAll(ckpt: Checkpoint): Promise<LoadedTensor[]> {
  const out: LoadedTensor[] = [];
  for await (const t of ckpt.load()) out.push(t);
  return out;
}

/** Rewrites a BF16 safetensors file through `edit` (name -> tensor entries). */
async function rewrite(path: string, edit: (entries: [string, TensorToWrite][]) => [string, TensorToWrite][]) {
  const f = await SafetensorsFile.open(path);
  const entries: [string, TensorToWrite][] = [];
  for (const [name, info] of f.tensors) {
    const bytes = await f.readBytes(name);
    entries.push([name, { dtype: "BF16", shape: info.shape, data: new Uint16Array(bytes.buffer) }]);
  }
  f.close();
  await writeSafetensors(path, edit(entries));
}

/** Rewrites the header of a safetensors file through `edit`, keeping the data. */
async function patchHeader(path: string, edit: (header: Record<string, unknown>) => void) {
  const bytes = await Deno.readFile(path);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  edit(header);
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + bytes.length - 8 - n);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(bytes.subarray(8 + n), 8 + json.length);
  await Deno.writeFile(path, out);
}

const bf16 = (shape: number[]): TensorToWrite => ({
  dtype: "BF16",
  shape,
  data: new Uint16Array(shape.reduce((a, b) => a * b, 1)),
});

Deno.test("tensor names follow the HF / OLMo-core table of olmo2.md", () => {
  // Written out literally (not derived from the module's table), so a swapped entry such as w1/w3 fails here.
  const table: [TensorSpec["part"], string, string][] = [
    ["embed", "model.embed_tokens.weight", "embeddings.weight"],
    ["q", "model.layers.3.self_attn.q_proj.weight", "blocks.3.attention.w_q.weight"],
    ["k", "model.layers.3.self_attn.k_proj.weight", "blocks.3.attention.w_k.weight"],
    ["v", "model.layers.3.self_attn.v_proj.weight", "blocks.3.attention.w_v.weight"],
    ["o", "model.layers.3.self_attn.o_proj.weight", "blocks.3.attention.w_out.weight"],
    ["q_norm", "model.layers.3.self_attn.q_norm.weight", "blocks.3.attention.q_norm.weight"],
    ["k_norm", "model.layers.3.self_attn.k_norm.weight", "blocks.3.attention.k_norm.weight"],
    ["attn_norm", "model.layers.3.post_attention_layernorm.weight", "blocks.3.attention_norm.weight"],
    ["gate", "model.layers.3.mlp.gate_proj.weight", "blocks.3.feed_forward.w1.weight"],
    ["up", "model.layers.3.mlp.up_proj.weight", "blocks.3.feed_forward.w3.weight"],
    ["down", "model.layers.3.mlp.down_proj.weight", "blocks.3.feed_forward.w2.weight"],
    ["ff_norm", "model.layers.3.post_feedforward_layernorm.weight", "blocks.3.feed_forward_norm.weight"],
    ["norm", "model.norm.weight", "lm_head.norm.weight"],
    ["lm_head", "lm_head.weight", "lm_head.w_out.weight"],
  ];
  for (const [part, hf, core] of table) {
    const layer = ["embed", "norm", "lm_head"].includes(part) ? null : 3;
    assertEquals([sourceName({ part, layer }, "hf"), sourceName({ part, layer }, "olmo-core")], [hf, core]);
  }
  const shapes = Object.fromEntries(expectedTensors(MICRO).map((s) => [s.name, s.shape]));
  assertEquals([shapes["layers.1.gate"], shapes["layers.1.down"], shapes["layers.1.q_norm"]], [[64, 128], [128, 64], [
    128,
  ]]);
});

Deno.test("a single-file HF checkpoint loads every tensor in order, bit-exact, vocabulary rows padded", async () => {
  await withTempDir(async (dir) => {
    await writeCheckpoint(dir, MICRO, valuesOf, { vocabRows: MICRO.vocabSize });
    const ckpt = await Checkpoint.open(dir);
    assertEquals(ckpt.naming, "hf");
    assertEquals(ckpt.config, { ...MICRO, name: dir, declaredDtype: "float32" });
    const specs = expectedTensors(MICRO);
    assertEquals(specs.length, 3 + 11 * MICRO.nLayers);
    const loaded = await loadAll(ckpt);
    assertEquals(loaded.map((t) => t.tensor.name), specs.map((s) => s.name));
    assertEquals(loaded[1].tensor.sourceName, "model.layers.0.self_attn.q_proj.weight");
    for (const t of loaded) {
      assertEquals(t.format, t.tensor.format);
      assertEquals(t.data, expected(t.tensor, "BF16", MICRO.vocabSize), t.tensor.name);
    }
    assertEquals(ckpt.get("embed").storedShape, [MICRO.vocabSize, MICRO.dModel]);
    assertEquals((await ckpt.readMatrix("lm_head")).length, (MICRO.paddedVocab * MICRO.dModel) / 2);
    assertEquals(ckpt.ignored, []);
    ckpt.close();
  });
});

Deno.test("a sharded OLMo-core F32 checkpoint in the transformers 5 spelling loads the same tensors", async () => {
  await withTempDir(async (dir) => {
    await writeCheckpoint(dir, MICRO, valuesOf, {
      naming: "olmo-core",
      dtype: "F32",
      shards: 3,
      spelling: "transformers5",
    });
    const index = JSON.parse(await Deno.readTextFile(join(dir, "model.safetensors.index.json")));
    assertEquals(new Set(Object.values(index.weight_map)).size, 3);
    const ckpt = await Checkpoint.open(dir);
    assertEquals(ckpt.naming, "olmo-core");
    assertEquals(ckpt.get("layers.1.down").sourceName, "blocks.1.feed_forward.w2.weight");
    assertEquals(new Set(ckpt.tensors.map((t) => t.file)).size, 3);
    for (const t of await loadAll(ckpt)) {
      assertEquals(t.data, expected(t.tensor, "F32", MICRO.paddedVocab), t.tensor.name);
    }
    ckpt.close();
  });
});

Deno.test("the tokenizer's vocabulary comes from tokenizer.json, and tied embeddings serve lm_head", async () => {
  await withTempDir(async (dir) => {
    const tied: ModelConfig = { ...MICRO, tieEmbeddings: true };
    await writeCheckpoint(dir, tied, valuesOf);
    const vocab = Object.fromEntries(Array.from({ length: 90 }, (_, i) => [`t${i}`, i]));
    await Deno.writeTextFile(
      join(dir, "tokenizer.json"),
      JSON.stringify({ model: { type: "BPE", vocab }, added_tokens: [{ id: 96, content: "<|eos|>" }] }),
    );
    const ckpt = await Checkpoint.open(dir);
    assertEquals(ckpt.config.vocabSize, 97);
    assertEquals(ckpt.config.tieEmbeddings, true);
    assertEquals(ckpt.get("lm_head").sourceName, "model.embed_tokens.weight");
    assertEquals(await ckpt.readMatrix("lm_head"), await ckpt.readMatrix("embed"));
    ckpt.close();
  });
});

Deno.test("an explicit config is checked against the tensors, and harmless extras are listed as ignored", async () => {
  await withTempDir(async (dir) => {
    await writeCheckpoint(dir, MICRO, valuesOf);
    await rewrite(join(dir, "model.safetensors"), (e) => [...e, ["model.rotary_emb.inv_freq", bf16([32])]]);
    const ckpt = await Checkpoint.open(dir, { config: MICRO });
    assertEquals(ckpt.ignored, ["model.rotary_emb.inv_freq"]);
    ckpt.close();
    await assertUserError(() => Checkpoint.open(dir, { config: { ...MICRO, ffnHidden: 128 } }), [
      join(dir, "model.safetensors"),
      "model.layers.0.mlp.gate_proj.weight",
      "[64, 128]",
      "[128, 128]",
      'the "micro" config',
    ]);
  });
});

Deno.test("broken checkpoint directories are refused with one sentence naming the file", async () => {
  await withTempDir(async (root) => {
    let n = 0;
    /** A fresh valid checkpoint to break. */
    const make = async (opts: Parameters<typeof writeCheckpoint>[3] = {}, config = MICRO) => {
      const dir = join(root, `c${n++}`);
      await writeCheckpoint(dir, config, valuesOf, opts);
      return dir;
    };
    const single = (dir: string) => join(dir, "model.safetensors");
    const name = (part: TensorSpec["part"], layer = 0) =>
      sourceName({ part, layer: ["embed", "norm", "lm_head"].includes(part) ? null : layer }, "hf");

    await assertUserError(() => Checkpoint.open(join(root, "absent")), [join(root, "absent"), "does not exist"]);

    let dir = await make();
    await Deno.remove(join(dir, "config.json"));
    await assertUserError(() => Checkpoint.open(dir), [join(dir, "config.json"), "missing"]);

    dir = await make();
    await Deno.writeTextFile(join(dir, "config.json"), "{ hidden_size: 128");
    await assertUserError(() => Checkpoint.open(dir), [join(dir, "config.json"), "not valid JSON"]);

    dir = await make();
    const cfg = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ ...cfg, num_hidden_layers: -2 }));
    await assertUserError(() => Checkpoint.open(dir), [join(dir, "config.json"), "num_hidden_layers"]);

    dir = await make();
    await Deno.remove(single(dir));
    await assertUserError(() => Checkpoint.open(dir), [dir, "model.safetensors.index.json"]);

    dir = await make();
    const bytes = await Deno.readFile(single(dir));
    await Deno.writeFile(single(dir), bytes.subarray(0, bytes.length - 100));
    await assertUserError(() => Checkpoint.open(dir), [single(dir), "truncated"]);

    dir = await make({ shards: 2 });
    const shard2 = join(dir, "model-00002-of-00002.safetensors");
    await Deno.remove(shard2);
    await assertUserError(() => Checkpoint.open(dir), [shard2, "missing", "index.json"]);

    dir = await make({ shards: 2 });
    const index = join(dir, "model.safetensors.index.json");
    const idx = JSON.parse(await Deno.readTextFile(index));
    idx.weight_map[name("embed")] = "model-00002-of-00002.safetensors";
    await Deno.writeTextFile(index, JSON.stringify(idx));
    await assertUserError(() => Checkpoint.open(dir), [index, name("embed"), "model-00002-of-00002.safetensors"]);

    dir = await make({ shards: 2 });
    idx.weight_map[name("embed")] = "../elsewhere.safetensors";
    await Deno.writeTextFile(join(dir, "model.safetensors.index.json"), JSON.stringify(idx));
    await assertUserError(() => Checkpoint.open(dir), ["model.safetensors.index.json", "../elsewhere.safetensors"]);

    dir = await make();
    await rewrite(single(dir), (e) => e.filter(([k]) => k !== name("k_norm", 1)));
    await assertUserError(() => Checkpoint.open(dir), [
      single(dir),
      name("k_norm", 1),
      "layers.1.k_norm",
      "config.json",
    ]);

    dir = await make();
    await rewrite(single(dir), (e) => e.map(([k, t]) => [k, k === name("o", 1) ? bf16([128, 64]) : t]));
    await assertUserError(() => Checkpoint.open(dir), [single(dir), name("o", 1), "[128, 64]", "[128, 128]"]);

    dir = await make({ vocabRows: MICRO.vocabSize - 1 }); // fewer rows than token ids
    await assertUserError(() => Checkpoint.open(dir, { config: MICRO }), [
      single(dir),
      name("embed"),
      "[99, 128]",
      "[100..128, 128]",
    ]);
    await assertUserError(() => Checkpoint.open(dir, { vocabSize: 100 }), [join(dir, "config.json"), "vocab_size 99"]);

    dir = await make({ vocabRows: MICRO.paddedVocab + 128 }); // more rows than the config's vocab_size
    await assertUserError(() => Checkpoint.open(dir, { config: MICRO }), [single(dir), name("embed"), "[256, 128]"]);

    dir = await make({}, { ...MICRO, nLayers: 3 }); // weights of 3 layers, config of 2
    const cfg3 = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ ...cfg3, num_hidden_layers: 2 }));
    await assertUserError(() => Checkpoint.open(dir), [single(dir), "model.layers.2.", "layer 2", "2 layers"]);

    dir = await make();
    await rewrite(single(dir), (e) => [...e, ["model.layers.0.self_attn.q_proj.bias", bf16([128])]]);
    await assertUserError(() => Checkpoint.open(dir), [single(dir), "q_proj.bias", "bias"]);

    dir = await make();
    await rewrite(single(dir), (e) => [...e, ["model.layers.1.input_layernorm.weight", bf16([128])]]);
    await assertUserError(() => Checkpoint.open(dir), [single(dir), "input_layernorm", "not part of an OLMo-2 block"]);

    dir = await make();
    await rewrite(single(dir), (e) => [...e, ["blocks.0.attention.w_q.weight", bf16([128, 128])]]);
    await assertUserError(() => Checkpoint.open(dir), [single(dir), "mixes"]);

    dir = await make();
    await rewrite(single(dir), (e) => e.map(([k, t]) => [k.replace(/^model\.|^lm_head/, "x."), t]));
    await assertUserError(() => Checkpoint.open(dir), [single(dir), "has neither"]);

    dir = await make();
    await patchHeader(single(dir), (h) => {
      (h[name("q_norm")] as { dtype: string }).dtype = "I16"; // same element size as BF16, so the header stays valid
    });
    await assertUserError(() => Checkpoint.open(dir), [single(dir), name("q_norm"), "I16"]);
  });
});
