import { assertEquals } from "@std/assert";
import {
  configFromHf,
  type ModelConfig,
  olmo2FfnHidden,
  parameterCount,
  presetConfig,
  PRESETS,
  validateConfig,
  weightBytes,
} from "../../model/config.ts";
import { assertUserError } from "./util.ts";

/** The config.json published with allenai/OLMo-2-0425-1B (transformers 4 spelling). */
const OLMO2_1B_HF = {
  architectures: ["Olmo2ForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  eos_token_id: 100257,
  hidden_act: "silu",
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 4096,
  model_type: "olmo2",
  num_attention_heads: 16,
  num_hidden_layers: 16,
  num_key_value_heads: 16,
  pad_token_id: 100277,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 500000,
  tie_word_embeddings: false,
  torch_dtype: "float32",
  transformers_version: "4.48.0",
  use_cache: true,
  vocab_size: 100352,
};

/** The same config as transformers 5 writes it. */
function transformers5(json: Record<string, unknown>): Record<string, unknown> {
  const { rope_theta, rope_scaling: _s, torch_dtype: _d, ...rest } = json;
  return { ...rest, rope_parameters: { rope_theta, rope_type: "default" }, dtype: "bfloat16" };
}

const FILE = "/ckpt/config.json";

Deno.test("presets have the parameter counts of OLMo-core olmo2_1B_v2 and olmo2_7B", () => {
  assertEquals(parameterCount(PRESETS["1b"]), 1_484_916_736);
  assertEquals(parameterCount(PRESETS["7b"]), 7_298_617_344);
  assertEquals(PRESETS["1b"].ffnHidden, 8192);
  assertEquals(PRESETS["7b"].ffnHidden, 11008);
  assertEquals(olmo2FfnHidden(4096), 11008);
  for (const p of Object.values(PRESETS)) validateConfig({ ...p });
});

Deno.test("weight bytes: matrices as bf16, the 4 norms per layer and the final norm as f32", () => {
  const norms = 16 * 4 * 2048 + 2048;
  assertEquals(weightBytes(PRESETS["1b"]), 2 * (1_484_916_736 - norms) + 4 * norms);
});

Deno.test("tied embeddings count the embedding once", () => {
  const tied = { ...PRESETS["1b"], tieEmbeddings: true };
  assertEquals(parameterCount(PRESETS["1b"]) - parameterCount(tied), 100352 * 2048);
});

Deno.test("configFromHf reads the published OLMo-2 1B config.json into the 1b preset", () => {
  const c = configFromHf(OLMO2_1B_HF, FILE, { vocabSize: 100278, name: "1b" });
  assertEquals(c, { ...PRESETS["1b"], declaredDtype: "float32" });
});

Deno.test("configFromHf reads the transformers 5 spelling (rope_parameters, dtype) the same way", () => {
  const c = configFromHf(transformers5(OLMO2_1B_HF), FILE, { vocabSize: 100278, name: "1b" });
  assertEquals(c, { ...PRESETS["1b"], declaredDtype: "bfloat16" });
});

Deno.test("configFromHf defaults: head_dim = hidden / heads, kv heads = heads, vocabulary = vocab_size padded", () => {
  const { num_key_value_heads: _k, ...noKv } = OLMO2_1B_HF;
  const c = configFromHf({ ...noKv, vocab_size: 100278 }, FILE);
  assertEquals([c.headDim, c.nKvHeads, c.vocabSize, c.paddedVocab, c.name], [128, 16, 100278, 100352, FILE]);
  assertEquals(configFromHf({ ...OLMO2_1B_HF, head_dim: 128 }, FILE).headDim, 128);
  assertEquals(configFromHf({ ...OLMO2_1B_HF, tie_word_embeddings: true }, FILE).tieEmbeddings, true);
});

Deno.test("configFromHf rejects what the suite cannot run, naming the file and the key in one sentence", async () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ ...OLMO2_1B_HF, num_key_value_heads: 4 }, "num_key_value_heads"],
    [{ ...OLMO2_1B_HF, attention_bias: true }, "attention_bias"],
    [{ ...OLMO2_1B_HF, mlp_bias: true }, "mlp_bias"],
    [{ ...OLMO2_1B_HF, rope_scaling: { rope_type: "linear", factor: 2 } }, "rope_scaling"],
    [{ ...transformers5(OLMO2_1B_HF), rope_parameters: { rope_theta: 5e5, rope_type: "yarn" } }, "rope_type"],
    [{ ...OLMO2_1B_HF, model_type: "llama" }, "model_type"],
    [{ ...OLMO2_1B_HF, hidden_act: "gelu" }, "hidden_act"],
    [{ ...OLMO2_1B_HF, rms_norm_eps: undefined }, "rms_norm_eps"],
    [{ ...OLMO2_1B_HF, rope_theta: undefined }, "rope_theta"],
    [{ ...OLMO2_1B_HF, hidden_size: "2048" }, "hidden_size"],
    [{ ...OLMO2_1B_HF, num_attention_heads: 15 }, "hidden_size"],
    [{ ...OLMO2_1B_HF, head_dim: 96, hidden_size: 1536 }, "head_dim"],
    [{ ...OLMO2_1B_HF, head_dim: 64 }, "head_dim"],
    [{ ...OLMO2_1B_HF, num_hidden_layers: 0 }, "num_hidden_layers"],
    [{ ...OLMO2_1B_HF, intermediate_size: 8190 }, "intermediate_size"],
    [{ ...OLMO2_1B_HF, rms_norm_eps: 0 }, "rms_norm_eps"],
    [{ ...OLMO2_1B_HF, tie_word_embeddings: "yes" }, "tie_word_embeddings"],
    [{ model: { d_model: 2048, n_layers: 16 } }, "OLMo-core"],
  ];
  for (const [json, key] of cases) await assertUserError(() => configFromHf(json, FILE), [FILE, key]);
  await assertUserError(() => configFromHf([1, 2], FILE), [FILE]);
  await assertUserError(() => configFromHf(OLMO2_1B_HF, FILE, { vocabSize: 200000 }), [FILE, "vocab_size"]);
});

Deno.test("validateConfig rejects invalid values, naming where the config came from", async () => {
  const base = presetConfig("tiny");
  const cases: [Partial<ModelConfig>, string][] = [
    [{ nLayers: 0 }, "nLayers"],
    [{ dModel: 128.5 }, "dModel"],
    [{ ffnHidden: 250 }, "ffnHidden"],
    [{ nKvHeads: 1 }, "nKvHeads"],
    [{ headDim: 32, nHeads: 4, nKvHeads: 4 }, "headDim"],
    [{ nHeads: 4, nKvHeads: 4 }, "nHeads"],
    [{ vocabSize: 600 }, "vocabSize"],
    [{ paddedVocab: 500, vocabSize: 400 }, "paddedVocab"],
    [{ ropeTheta: NaN }, "ropeTheta"],
    [{ rmsNormEps: -1e-6 }, "rmsNormEps"],
    [{ maxContext: -1 }, "maxContext"],
  ];
  for (const [change, key] of cases) {
    await assertUserError(() => validateConfig({ ...base, ...change }, "config.json knob model"), [
      "config.json knob model",
      key,
    ]);
  }
  await assertUserError(() => presetConfig("13b"), ["size", "13b", "tiny, 1b, 7b"]);
});
