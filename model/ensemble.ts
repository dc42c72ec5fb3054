/**
 * `loadEnsemble`: the weights of a HydraTransformer from a spec: random (generated on the GPU), the synthetic LoRA
 * ensemble, or a checkpoint with per-head PEFT adapter lists (design.md section 7).
 * @module
 */

import type { Gpu } from "../kernels/runtime.ts";
import { Checkpoint } from "./checkpoint.ts";
import type { ModelConfig } from "./config.ts";
import { loadLoraAdapter } from "./lora.ts";
import {
  allocateWeights,
  destroyWeights,
  fillRandomWeights,
  fillSyntheticEnsemble,
  type HydraWeights,
  loadCheckpointWeights,
} from "./weights.ts";

/** Where a Hydra's weights come from. */
export type EnsembleWeights =
  | { kind: "random"; seed: number }
  /** `spread` multiplies the heads' random deltas (default 1; 0 = identical heads). */
  | { kind: "synthetic"; seed: number; spread?: number }
  /** `heads[h]`: the adapter directories merged, in order, into head h's blocks (fewer lists than heads: none). */
  | { kind: "checkpoint"; base: string; heads: readonly (readonly string[])[] };

/** What to build: the model's shape (a checkpoint's own config.json replaces `config`) and the weights. */
export interface EnsembleSpec {
  config: ModelConfig;
  nHeads: number;
  headsDepth: number;
  weights: EnsembleWeights;
}

/** Allocates and fills the weights of `spec` on the GPU; frees them again if anything fails. */
export async function loadEnsemble(
  gpu: Gpu,
  spec: EnsembleSpec,
  progress?: (message: string) => void,
): Promise<HydraWeights> {
  let config = spec.config;
  let ckpt: Checkpoint | null = null;
  if (spec.weights.kind === "checkpoint") {
    ckpt = await Checkpoint.open(spec.weights.base);
    config = ckpt.config;
  }
  const w = await gpu.scoped(
    `allocating the weights of ${spec.nHeads} head(s) of ${spec.headsDepth} blocks on the ${config.name} model`,
    () => allocateWeights(gpu, config, spec.nHeads, spec.headsDepth),
  );
  try {
    if (spec.weights.kind === "random") await fillRandomWeights(gpu, w, spec.weights.seed);
    else if (spec.weights.kind === "synthetic") {
      await fillSyntheticEnsemble(gpu, w, { seed: spec.weights.seed, spread: spec.weights.spread });
    } else {
      const adapters = [];
      for (const list of spec.weights.heads) {
        const loaded = [];
        for (const dir of list) loaded.push(await loadLoraAdapter(dir, config));
        adapters.push(loaded);
      }
      await loadCheckpointWeights(gpu, w, ckpt!, adapters, (done, total) => {
        if (done % 50 === 0 || done === total) progress?.(`loaded ${done}/${total} tensors`);
      });
    }
    return w;
  } catch (e) {
    destroyWeights(w);
    throw e;
  } finally {
    ckpt?.close();
  }
}
