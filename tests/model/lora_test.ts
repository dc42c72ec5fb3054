import { assertEquals } from "@std/assert";
import { join } from "@std/path";
import { roundBf16Array } from "../../kernels/bf16.ts";
import {
  loadLoraAdapter,
  type LoraAdapterConfig,
  loraDeltaDense,
  type LoraModule,
  loraModuleName,
  peftPatternKey,
  projectionShape,
} from "../../model/lora.ts";
import { Rng } from "../../kernels/testing/harness.ts";
import { assertUserError, MICRO, seedOf, withTempDir } from "./util.ts";
import { type LoraFactors, writeLoraAdapter, writeSafetensors } from "./writers.ts";

/** Random factors of rank `rank` for `module` of `layer` in the MICRO model. */
function factors(layer: number, module: LoraModule, rank: number): LoraFactors {
  const [outF, inF] = projectionShape(MICRO, module);
  const rng = new Rng(seedOf(`${layer}.${module}.${rank}`));
  return { layer, module, rank, A: rng.normals(rank * inF), B: rng.normals(outF * rank) };
}

/** Factors for every (layer, module) pair. */
function all(modules: LoraModule[], rank: number, layers = [0, 1]): LoraFactors[] {
  return layers.flatMap((l) => modules.map((m) => factors(l, m, rank)));
}

Deno.test("a PEFT adapter loads as ordered deltas with scale alpha / r, factors exact", async () => {
  await withTempDir(async (dir) => {
    const written = all(["down", "q", "v"], 4).reverse(); // file order differs from the output order
    await writeLoraAdapter(
      dir,
      MICRO,
      { r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj", "down_proj"] },
      written,
    );
    const { deltas } = await loadLoraAdapter(dir, MICRO);
    assertEquals(deltas.map((d) => `${d.layer}.${d.module}`), ["0.q", "0.v", "0.down", "1.q", "1.v", "1.down"]);
    for (const d of deltas) {
      const w = written.find((f) => f.layer === d.layer && f.module === d.module)!;
      assertEquals([d.A, d.B, d.rank, d.scale], [w.A, w.B, 4, 2]);
      assertEquals([d.outFeatures, d.inFeatures], projectionShape(MICRO, d.module));
    }
    assertEquals(deltas[2].inFeatures, MICRO.ffnHidden); // down: [d, F]
  });
});

Deno.test("BF16 adapter weights widen exactly to f32", async () => {
  await withTempDir(async (dir) => {
    const f = factors(1, "gate", 2);
    await writeLoraAdapter(
      dir,
      MICRO,
      { r: 2, lora_alpha: 2, target_modules: ["gate_proj"], layers_to_transform: [1] },
      [f],
      "BF16",
    );
    const [d] = (await loadLoraAdapter(dir, MICRO)).deltas;
    assertEquals([d.A, d.B, d.scale], [roundBf16Array(f.A), roundBf16Array(f.B), 1]);
  });
});

Deno.test("use_rslora scales by alpha / sqrt(r); rank_pattern and alpha_pattern override per module", async () => {
  await withTempDir(async (dir) => {
    const config: LoraAdapterConfig = {
      r: 4,
      lora_alpha: 16,
      use_rslora: true,
      target_modules: ["q_proj", "k_proj", "down_proj"],
      // PEFT: first key whose `(.*\.)?(KEY)$` matches the module name wins; a full name matches itself.
      rank_pattern: { "model.layers.1.mlp.down_proj": 2, k_proj: 8 },
      alpha_pattern: { "layers\\.0\\.self_attn\\.q_proj": 9 },
    };
    const written = [
      factors(0, "q", 4),
      factors(0, "k", 8),
      factors(0, "down", 4),
      factors(1, "q", 4),
      factors(1, "k", 8),
      factors(1, "down", 2),
    ];
    await writeLoraAdapter(dir, MICRO, config, written);
    const got = (await loadLoraAdapter(dir, MICRO)).deltas.map((d) => [`${d.layer}.${d.module}`, d.rank, d.scale]);
    assertEquals(got, [
      ["0.q", 4, 9 / 2],
      ["0.k", 8, 16 / Math.sqrt(8)],
      ["0.down", 4, 16 / 2],
      ["1.q", 4, 16 / 2],
      ["1.k", 8, 16 / Math.sqrt(8)],
      ["1.down", 2, 16 / Math.sqrt(2)],
    ]);
  });
});

Deno.test("module names are PEFT's, and peftPatternKey matches PEFT's get_pattern_key", () => {
  const q0 = loraModuleName(0, "q");
  assertEquals(["q", "k", "v", "o", "gate", "up", "down"].map((m) => loraModuleName(2, m as LoraModule)), [
    "model.layers.2.self_attn.q_proj",
    "model.layers.2.self_attn.k_proj",
    "model.layers.2.self_attn.v_proj",
    "model.layers.2.self_attn.o_proj",
    "model.layers.2.mlp.gate_proj",
    "model.layers.2.mlp.up_proj",
    "model.layers.2.mlp.down_proj",
  ]);
  assertEquals(peftPatternKey(["q_proj"], q0), "q_proj");
  assertEquals(peftPatternKey(["proj"], q0), undefined); // a key matches whole dotted components only
  assertEquals(peftPatternKey(["_proj"], q0), undefined);
  assertEquals(peftPatternKey([q0], q0), q0);
  assertEquals(peftPatternKey(["k_proj", "self_attn.q_proj", "q_proj"], q0), "self_attn.q_proj"); // first match wins
  assertEquals(peftPatternKey([".*\\.0\\.self_attn\\..*"], q0), ".*\\.0\\.self_attn\\..*");
  assertEquals(peftPatternKey(["layers.1.self_attn.q_proj"], q0), undefined);
});

Deno.test("target_modules as a regex, all-linear, layers_to_transform and exclude_modules select like PEFT", async () => {
  await withTempDir(async (root) => {
    const cases: [LoraAdapterConfig, LoraFactors[]][] = [
      [{ target_modules: ".*\\.1\\.mlp\\.(up|gate)_proj" }, all(["gate", "up"], 8, [1])],
      [{ target_modules: "all-linear" }, all(["q", "k", "v", "o", "gate", "up", "down"], 8)],
      [{ target_modules: ["o_proj"], layers_to_transform: 0 }, all(["o"], 8, [0])],
      [{ target_modules: ["o_proj", "up_proj"], exclude_modules: ["model.layers.0.mlp.up_proj"] }, [
        ...all(["o"], 8),
        factors(1, "up", 8),
      ]],
    ];
    for (const [i, [config, written]] of cases.entries()) {
      const dir = join(root, `a${i}`);
      await writeLoraAdapter(dir, MICRO, config, written); // r, lora_alpha: PEFT defaults 8, 8
      const got = (await loadLoraAdapter(dir, MICRO)).deltas;
      assertEquals(got.length, written.length, JSON.stringify(config));
      for (const d of got) assertEquals(d.scale, 1);
    }
  });
});

Deno.test("loraDeltaDense is scale * B @ A", () => {
  const d = {
    layer: 0,
    module: "q" as const,
    A: new Float32Array([1, 2]), // [r=1, in=2]
    B: new Float32Array([3, 4]), // [out=2, r=1]
    rank: 1,
    inFeatures: 2,
    outFeatures: 2,
    scale: 0.5,
  };
  assertEquals(loraDeltaDense(d), new Float32Array([1.5, 3, 2, 4]));
});

Deno.test("bad adapters are refused with one sentence naming the file and the module, layer or key", async () => {
  await withTempDir(async (root) => {
    let n = 0;
    const base: LoraAdapterConfig = { r: 4, lora_alpha: 8, target_modules: ["q_proj"] };
    /** Writes an adapter and returns [dir, config path, weights path]. */
    const make = async (config: LoraAdapterConfig, written = all(["q"], 4)) => {
      const dir = join(root, `a${n++}`);
      await writeLoraAdapter(dir, MICRO, config, written);
      return [dir, join(dir, "adapter_config.json"), join(dir, "adapter_model.safetensors")];
    };
    let [dir, cfg, weights] = await make({ ...base, use_dora: true });
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [cfg, "use_dora", "DoRA"]);

    [dir, cfg] = await make({ ...base, fan_in_fan_out: true });
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [cfg, "fan_in_fan_out"]);

    [dir, cfg] = await make({ ...base, peft_type: "IA3" });
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [cfg, "peft_type", "IA3"]);

    [dir, cfg] = await make({ ...base, bias: "lora_only" });
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [cfg, "bias"]);

    [dir, cfg] = await make({ ...base, modules_to_save: ["lm_head"] });
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [cfg, "modules_to_save", "lm_head"]);

    [dir, cfg] = await make({ ...base, target_modules: ["q_proj", "c_attn"] });
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [cfg, "target_modules", "c_attn", "not a module"]);

    [dir, cfg] = await make({ ...base, target_modules: ["q_norm"] }, []);
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [
      cfg,
      "target_modules",
      "model.layers.0.self_attn.q_norm",
    ]);

    [dir, cfg] = await make({ ...base, target_modules: ["q_proj"], layers_to_transform: [1, 5] });
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [cfg, "layers_to_transform", "layer 5", "0..1"]);

    [dir, cfg] = await make({ ...base, rank_pattern: { "q_proj(": 2 } });
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [cfg, "rank_pattern", "q_proj("]);

    [dir, cfg] = await make({ ...base, r: 0 });
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [cfg, "r is 0"]);

    // weights for a layer the base model does not have
    [dir, cfg, weights] = await make({ ...base, target_modules: ["q_proj"] }, [...all(["q"], 4), factors(2, "q", 4)]);
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [weights, "model.layers.2.self_attn.q_proj", "layer 2"]);

    // weights for a module OLMo-2 does not have, or one this suite cannot merge
    for (const module of ["model.layers.0.self_attn.qkv_proj", "lm_head", "model.layers.0.self_attn.q_norm"]) {
      [dir, cfg, weights] = await make({ ...base, target_modules: null }, []);
      await writeSafetensors(weights, {
        [`base_model.model.${module}.lora_A.weight`]: { dtype: "F32", shape: [4, 128], data: new Float32Array(512) },
      });
      await assertUserError(() => loadLoraAdapter(dir, MICRO), [weights, module]);
    }

    // DoRA magnitude vectors or embedding LoRA are not A/B weights
    [dir, cfg, weights] = await make({ ...base, target_modules: null }, []);
    const magnitude = "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector";
    await writeSafetensors(weights, { [magnitude]: { dtype: "F32", shape: [128], data: new Float32Array(128) } });
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [weights, magnitude]);

    // rank of the tensors differs from r
    [dir, cfg, weights] = await make(base, all(["q"], 2));
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [
      weights,
      "model.layers.0.self_attn.q_proj.lora_A.weight",
      "[2, 128]",
      "[4, 128]",
    ]);

    // a targeted module without weights, and weights of an untargeted module
    [dir, cfg, weights] = await make(base, [factors(0, "q", 4)]);
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [cfg, weights, "model.layers.1.self_attn.q_proj"]);
    [dir, cfg, weights] = await make(base, [...all(["q"], 4), factors(0, "v", 4)]);
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [
      weights,
      "model.layers.0.self_attn.v_proj",
      "target_modules",
    ]);

    // lora_A without lora_B
    [dir, cfg, weights] = await make({ ...base, target_modules: null }, []);
    await writeSafetensors(weights, {
      "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": {
        dtype: "F32",
        shape: [4, 128],
        data: new Float32Array(512),
      },
    });
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [weights, "lora_B", "model.layers.0.self_attn.q_proj"]);

    // missing files, bad JSON
    [dir, cfg, weights] = await make(base);
    await Deno.remove(weights);
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [weights, "missing"]);
    await Deno.remove(cfg);
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [cfg, "missing"]);
    await Deno.writeTextFile(cfg, "{r: 4");
    await assertUserError(() => loadLoraAdapter(dir, MICRO), [cfg, "not valid JSON"]);
  });
});
