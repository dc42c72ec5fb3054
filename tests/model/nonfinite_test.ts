/**
 * NaN and infinity detection, end to end on the CPU adapter: a NaN or an infinity in a checkpoint tensor, a norm
 * weight, the embedding, a LoRA factor, a merged weight or generated weights is a UserError at load naming the tensor
 * (its file and first bad element); weights that load finite but give non-finite logits end a generation (greedy,
 * naive, jury, PoE) with a UserError at the readback it already makes; `deno task generate` exits 2 with one line.
 * The broken checkpoints are edited copies of the HF fixture (tests/model/writers.ts).
 */

import { assert, assertEquals } from "@std/assert";
import { fromFileUrl, join } from "@std/path";
import { f32ToBf16Bits } from "../../kernels/bf16.ts";
import { CTL, nonFinitePosition } from "../../kernels/control/ctl.ts";
import { gpuTest } from "../../kernels/testing/harness.ts";
import type { Gpu } from "../../kernels/runtime.ts";
import { PRESETS } from "../../model/config.ts";
import { loadEnsemble } from "../../model/ensemble.ts";
import { Decoder } from "../../model/generate.ts";
import { HydraTransformer } from "../../model/hydra.ts";
import {
  allocateWeights,
  assertWeightsFinite,
  destroyWeights,
  fillRandomWeights,
  fillSyntheticEnsemble,
} from "../../model/weights.ts";
import { PoE } from "../../poe/poe.ts";
import { assertUserError, withTempDir } from "./util.ts";
import { copyWeightsDir, type TensorValues } from "./writers.ts";

const FIXTURE = fromFileUrl(new URL("../fixtures/olmo2_tiny", import.meta.url));
const ROOT = fromFileUrl(new URL("../..", import.meta.url));
const NAN16 = 0x7fc0, INF16 = 0x7f80, NEG_INF16 = 0xff80;
const PROMPT = [5, 17, 42, 99];

/** A value to plant: the tensor's element at `index` becomes `value` (a bf16 bit pattern, or an f32 for F32 data). */
type Plant = { index: readonly number[]; value: number };

/** An editor for `copyWeightsDir` that plants values in tensor `name` (or fills it with `fill`). */
function planting(name: string, plants: readonly Plant[], fill?: number) {
  return (n: string, values: TensorValues, shape: readonly number[]) => {
    if (n !== name) return;
    if (fill !== undefined) values.fill(fill);
    for (const { index, value } of plants) {
      const flat = index.reduce((acc, i, d) => acc * shape[d] + i, 0);
      values[flat] = value;
    }
  };
}

/** Loads checkpoint `dir` through `loadEnsemble`, as the bench and the tools do (`adapters` into head 0), and frees it. */
async function loadCheckpoint(gpu: Gpu, dir: string, o: { nHeads?: number; depth?: number; adapters?: string[] } = {}) {
  const w = await loadEnsemble(gpu, {
    config: PRESETS.tiny,
    nHeads: o.nHeads ?? 1,
    headsDepth: o.depth ?? 0,
    weights: { kind: "checkpoint", base: dir, heads: o.adapters ? [o.adapters] : [] },
  });
  destroyWeights(w);
}

gpuTest(
  "a NaN in one checkpoint weight stops the load with one sentence naming tensor, file and element",
  async (gpu) => {
    await withTempDir(async (dir) => {
      await copyWeightsDir(
        FIXTURE,
        dir,
        planting("model.layers.3.mlp.down_proj.weight", [{ index: [5, 17], value: NAN16 }]),
      );
      const msg = await assertUserError(
        () => loadCheckpoint(gpu, dir),
        [
          'tensor "model.layers.3.mlp.down_proj.weight"',
          join(dir, "model.safetensors"),
          "holds 1 NaN or infinite value (the first at [5, 17])",
          "re-download or re-export the checkpoint",
        ],
      );
      assert(!msg.includes("layers.3.mlp.up_proj"), msg);
    });
  },
);

gpuTest("a NaN norm weight and infinite embeddings are named at load (trunk and head blocks)", async (gpu) => {
  await withTempDir(async (dir) => {
    const norm = "model.layers.1.post_feedforward_layernorm.weight";
    await copyWeightsDir(FIXTURE, dir, planting(norm, [{ index: [40], value: NAN16 }]));
    // Layer 1 is in the trunk of a plain model and in every head's blocks of a Hydra with 3-block heads.
    for (const [heads, depth] of [[1, 0], [2, 3]]) {
      await assertUserError(
        () => loadCheckpoint(gpu, dir, { nHeads: heads, depth }),
        [`tensor "${norm}"`, "holds 1 NaN or infinite value (the first at [40])"],
      );
    }
  });
  await withTempDir(async (dir) => {
    await copyWeightsDir(
      FIXTURE,
      dir,
      planting("model.embed_tokens.weight", [{ index: [9, 3], value: NEG_INF16 }, { index: [7, 0], value: INF16 }]),
    );
    await assertUserError(
      () => loadCheckpoint(gpu, dir),
      ['tensor "model.embed_tokens.weight"', "holds 2 NaN or infinite values (the first at [7, 0])"],
    );
  });
});

gpuTest(
  "a NaN in a LoRA adapter names the adapter's tensor; a merge that overflows bf16 names the weight",
  async (gpu) => {
    await withTempDir(async (dir) => {
      const key = "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight";
      const adapter = join(dir, "adapter");
      await copyWeightsDir(join(FIXTURE, "adapter_0"), adapter, planting(key, [{ index: [100, 2], value: NaN }]));
      await assertUserError(
        () => loadCheckpoint(gpu, FIXTURE, { depth: 2, adapters: [adapter] }),
        [
          `tensor "${key}"`,
          join(adapter, "adapter_model.safetensors"),
          "(the first at [100, 2])",
          "re-export it or leave it out",
        ],
      );
    });
    await withTempDir(async (dir) => {
      // Finite factors whose product overflows: every element of B @ A is 8 * 3e38.
      const prefix = "base_model.model.model.layers.3.self_attn.q_proj";
      const adapter = join(dir, "adapter");
      await copyWeightsDir(join(FIXTURE, "adapter_0"), adapter, (name, values, shape) => {
        planting(`${prefix}.lora_A.weight`, [], 1)(name, values, shape);
        planting(`${prefix}.lora_B.weight`, [], 3e38)(name, values, shape);
      });
      await assertUserError(
        () => loadCheckpoint(gpu, FIXTURE, { depth: 2, adapters: [adapter] }),
        [
          `model.layers.3.self_attn.q_proj.weight of head 0 after merging ${adapter}`,
          "holds 16384 NaN or infinite values (the first at [0, 0])",
          "the merge overflows bf16",
        ],
      );
    });
  },
);

gpuTest("generated weights made non-finite on the GPU are named by buffer", async (gpu) => {
  const tiny = PRESETS.tiny;
  // Synthetic deltas of std 5e39 * 0.02 = 1e38: some elements overflow bf16 in the merge, only in the heads' blocks.
  const w = allocateWeights(gpu, tiny, 3, 2);
  try {
    await assertUserError(
      () => fillSyntheticEnsemble(gpu, w, { seed: 3, rank: 64, relativeStd: 5e39 }),
      ['the weight buffer "head0.0.qkv"', "NaN or infinite values"],
    );
    // Random weights check finite; a NaN written over one of them afterwards is found by the same check.
    await fillRandomWeights(gpu, w, 7);
    gpu.write(w.trunk[1].down, new Uint32Array([0x3f80_0000 | NAN16]), 4 * 1000);
    await assertUserError(
      () => assertWeightsFinite(gpu, w),
      ['the weight buffer "trunk.1.down"', "holds 1 NaN or infinite value (the first at [2000])"],
    );
  } finally {
    destroyWeights(w);
  }
});

gpuTest("non-finite logits end greedy, naive, jury and PoE generation with a UserError, not tokens 0", async (gpu) => {
  const tiny = PRESETS.tiny;
  const w = allocateWeights(gpu, tiny, 3, 2);
  await fillSyntheticEnsemble(gpu, w, { seed: 11, rank: 8, std: 1 / Math.sqrt(tiny.dModel) });
  // Head 2's final norm weight becomes NaN on the GPU after the load: heads 0 and 1 stay finite.
  gpu.write(w.heads[2].norm, new Float32Array([NaN]), 4 * 5);
  const model = new HydraTransformer(gpu, w, { maxPos: 40, maxRows: 8, maxLogitRows: 3 });
  const decoder = new Decoder(model);
  try {
    const ok = await decoder.generate(PROMPT, 6, "single");
    assertEquals(ok.ids.length, 6);
    assertEquals(nonFinitePosition(ok.ctl), null);
    const want = [`at position ${PROMPT.length - 1}`, `the prompt has ${PROMPT.length} tokens`, "synthetic weights"];
    await assertUserError(() => decoder.generate(PROMPT, 6, "naive"), want);
    await assertUserError(() => decoder.generate(PROMPT, 6, "jury", { withPromptLogits: true }), want);
    // A later clean call starts with a fresh flag.
    assertEquals((await decoder.generate(PROMPT, 3, "single")).ctl[CTL.NONFINITE], 0);
    const poe = new PoE(model, { gamma: 3, beta: 1, temperature: 0, maxNewTokens: 8 });
    try {
      await assertUserError(() => poe.generateIds(PROMPT), want);
    } finally {
      poe.destroy();
    }
  } finally {
    decoder.destroy();
    model.destroy();
  }
});

/**
 * Runs tools/generate.ts as a process: its exit code and what it printed. `DENO_FLAGS` (as for tools/reference_run.sh,
 * e.g. `--node-modules-dir=manual` on the offline GPU machine, whose node_modules is staged by hand) go to its
 * `deno run`, so the child does not try to download packages the machine cannot reach.
 */
async function generateProcess(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const flags = (Deno.env.get("DENO_FLAGS") ?? "").split(/\s+/).filter(Boolean);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, "-A", join(ROOT, "tools/generate.ts"), ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

gpuTest("deno task generate exits 2 with one line on broken weights and on non-finite logits", async () => {
  await withTempDir(async (dir) => {
    const nan = join(dir, "nan"), huge = join(dir, "huge");
    await copyWeightsDir(
      FIXTURE,
      nan,
      planting("model.layers.0.self_attn.v_proj.weight", [{ index: [1, 2], value: NAN16 }]),
    );
    // The final norm at 3e38 is finite (bf16 holds up to 3.39e38), but the normed state times it is not.
    await copyWeightsDir(FIXTURE, huge, planting("model.norm.weight", [], f32ToBf16Bits(3e38)));
    const cases: [string, string[], string, string][] = [
      [nan, [], 'error: tensor "model.layers.0.self_attn.v_proj.weight"', "re-export the checkpoint."],
      [
        huge,
        ["--json", "--logits"],
        `error: Non-finite logits (NaN or infinity) at position ${PROMPT.length - 1}`,
        "check the weights/adapters.",
      ],
    ];
    for (const [weights, extra, start, end] of cases) {
      const r = await generateProcess(["--weights", weights, "--ids", PROMPT.join(","), ...extra]);
      assertEquals(r.code, 2, `${weights}: exit ${r.code}; stderr ${r.stderr}`);
      assertEquals(r.stdout, "", `${weights}: printed ${r.stdout}`);
      assertEquals(r.stderr.split("\n").length, 1, r.stderr);
      assert(r.stderr.startsWith(start) && r.stderr.endsWith(end), r.stderr);
    }
  });
});
