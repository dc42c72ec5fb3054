/**
 * The weights of a HydraTransformer on the GPU, and the three ways to fill them:
 *   - `fillRandomWeights`: random bf16 generated on the GPU (baseline / hydra_naive; a 7B in seconds);
 *   - `fillSyntheticEnsemble`: a random base whose head blocks are copies of the base's last blocks, each head with
 *     its own random low-rank delta merged in (the synthetic LoRA ensemble of design.md section 7);
 *   - `loadCheckpointWeights`: a safetensors checkpoint streamed one tensor at a time, plus per-head PEFT adapters
 *     merged on the GPU.
 * Each way ends in finiteness checks on the GPU (model/finite_checks.ts) read back once: a NaN or an infinity in any
 * tensor is a UserError naming it (its checkpoint or adapter tensor, or the generated buffer), not a model that emits
 * token 0 forever. Checking a generated model costs one scan of its weights (~6 ms for a 7B Hydra on an H100) and no
 * extra sync point (the readback replaces the wait for the fill); a checkpoint's checks are bandwidth-trivial next to
 * reading its files, plus one readback at the end of the load.
 *
 * Layout (ARCHITECTURE.md): per block, Q/K/V fused into one [3d, d] bf16 matrix, gate/up into one [2F, d], then o
 * [d, d] and down [d, F]; the QK-norm weights [2d] (q then k), the two sublayer norms [d], all f32. A head has its
 * blocks, final norm and lm_head; trunk and heads share nothing, and no tensor is kept twice (the base's last
 * `headsDepth` blocks exist only inside the heads).
 * @module
 */

import type { Checkpoint, LayerPart } from "./checkpoint.ts";
import type { ModelConfig } from "./config.ts";
import { type LoraAdapter, type LoraDelta, type LoraModule, loraModuleName } from "./lora.ts";
import { FiniteChecks } from "./finite_checks.ts";
import { join } from "@std/path";
import { CTL_SLOTS } from "../kernels/control/ctl.ts";
import { type BufferSlice, type Dispatch, type Gpu } from "../kernels/runtime.ts";
import { UserError } from "../common/errors.ts";
import { randomFillChunked } from "../kernels/weights/random.ts";
import { loraMerge } from "../kernels/weights/lora_merge.ts";

/** One transformer block's weights. */
export interface BlockWeights {
  /** bf16 [3d, d]: rows 0..d-1 = W_q, d..2d-1 = W_k, 2d..3d-1 = W_v. */
  qkv: GPUBuffer;
  /** bf16 [d, d]. */
  o: GPUBuffer;
  /** bf16 [2F, d]: rows 0..F-1 = gate (w1), F..2F-1 = up (w3). */
  gateUp: GPUBuffer;
  /** bf16 [d, F] (w2). */
  down: GPUBuffer;
  /** f32 [2d]: q_norm then k_norm (OLMo-2's QK-norm over the whole projection). */
  qkNorm: GPUBuffer;
  /** f32 [d]: the norm on the attention output (HF post_attention_layernorm). */
  attnNorm: GPUBuffer;
  /** f32 [d]: the norm on the MLP output (HF post_feedforward_layernorm). */
  ffNorm: GPUBuffer;
}

/** One head: its blocks, final norm and lm_head. */
export interface HeadWeights {
  blocks: BlockWeights[];
  /** f32 [d]. */
  norm: GPUBuffer;
  /** bf16 [paddedVocab, d]. */
  lmHead: GPUBuffer;
}

/** Where the weights came from, as results.json labels them. */
export type WeightsSource = "random" | "synthetic" | "checkpoint";

/** All weights of a HydraTransformer (a plain OLMo-2 is one head of depth 0). */
export interface HydraWeights {
  config: ModelConfig;
  /** bf16 [paddedVocab, d]. */
  embed: GPUBuffer;
  trunk: BlockWeights[];
  heads: HeadWeights[];
  source: WeightsSource;
}

/** Element counts of a block's buffers. */
function blockShapes(c: ModelConfig) {
  const d = c.dModel, f = c.ffnHidden;
  return { qkv: 3 * d * d, o: d * d, gateUp: 2 * f * d, down: d * f, qkNorm: 2 * d, attnNorm: d, ffNorm: d };
}

const BF16_PARTS = new Set(["qkv", "o", "gateUp", "down"]);

/** Allocates zeroed weights for `nHeads` heads of `headsDepth` blocks on a trunk of nLayers - headsDepth blocks. */
export function allocateWeights(gpu: Gpu, config: ModelConfig, nHeads: number, headsDepth: number): HydraWeights {
  if (headsDepth < 0 || headsDepth > config.nLayers) {
    throw new UserError(`heads_depth ${headsDepth} must be in 0..${config.nLayers} (the model's layers); lower it.`);
  }
  const shapes = blockShapes(config);
  const block = (label: string): BlockWeights => {
    const b: Record<string, GPUBuffer> = {};
    for (const [k, n] of Object.entries(shapes)) b[k] = gpu.buffer(`${label}.${k}`, n * (BF16_PARTS.has(k) ? 2 : 4));
    return b as unknown as BlockWeights;
  };
  const vocabBytes = config.paddedVocab * config.dModel * 2;
  return {
    config,
    embed: gpu.buffer("embed", vocabBytes),
    trunk: Array.from({ length: config.nLayers - headsDepth }, (_, i) => block(`trunk.${i}`)),
    heads: Array.from({ length: nHeads }, (_, h) => ({
      blocks: Array.from({ length: headsDepth }, (_, j) => block(`head${h}.${j}`)),
      norm: gpu.buffer(`head${h}.norm`, config.dModel * 4),
      lmHead: gpu.buffer(`head${h}.lm_head`, vocabBytes),
    })),
    source: "random",
  };
}

/** Every buffer of `w` with its element type (bf16 matrices, f32 norm weights). */
export function weightTensors(w: HydraWeights): { buffer: GPUBuffer; bf16: boolean }[] {
  const m = (buffer: GPUBuffer) => ({ buffer, bf16: true }), v = (buffer: GPUBuffer) => ({ buffer, bf16: false });
  const block = (
    b: BlockWeights,
  ) => [m(b.qkv), m(b.o), m(b.gateUp), m(b.down), v(b.qkNorm), v(b.attnNorm), v(b.ffNorm)];
  return [
    m(w.embed),
    ...w.trunk.flatMap(block),
    ...w.heads.flatMap((h) => [...h.blocks.flatMap(block), v(h.norm), m(h.lmHead)]),
  ];
}

/** Every buffer of `w`. */
export function weightBuffers(w: HydraWeights): GPUBuffer[] {
  return weightTensors(w).map((t) => t.buffer);
}

/** Bytes the weights occupy on the GPU. */
export function weightsBytes(w: HydraWeights): number {
  return weightBuffers(w).reduce((s, b) => s + b.size, 0);
}

/** Bytes of one block's weights. */
export function blockBytes(b: BlockWeights): number {
  return [b.qkv, b.o, b.gateUp, b.down, b.qkNorm, b.attnNorm, b.ffNorm].reduce((s, x) => s + x.size, 0);
}

/** Frees every weight buffer. */
export function destroyWeights(w: HydraWeights): void {
  for (const b of weightBuffers(w)) b.destroy();
}

/** The block layers of the base model that head blocks stand for: head block j is base layer nLayers - depth + j. */
export function baseLayerOfHeadBlock(config: ModelConfig, headsDepth: number, j: number): number {
  return config.nLayers - headsDepth + j;
}

/** Default std of random matrices (OLMo-2's init std); norms are 1. */
export const RANDOM_WEIGHT_STD = 0.02;

/**
 * What to do about a NaN or an infinity in generated weights: they come from finite parameters, so a kernel or the
 * driver is at fault (or parameters far beyond any real model's, as a test can set).
 */
const GENERATED_ADVICE = "the GPU generated it from finite parameters, so a fill or merge kernel or the GPU driver " +
  "is broken (or the parameters overflow bf16): update the driver and report it";

/**
 * Checks every buffer of `w` for NaN and infinite values on the GPU, one readback for all (which also waits for
 * everything submitted before); throws a UserError naming the first bad buffer with `advice`.
 */
export async function assertWeightsFinite(gpu: Gpu, w: HydraWeights, advice = GENERATED_ADVICE): Promise<void> {
  const checks = new FiniteChecks(gpu);
  try {
    for (const { buffer, bf16 } of weightTensors(w)) {
      checks.check({ buffer }, bf16, { name: `the weight buffer "${buffer.label}"`, advice });
    }
    await checks.assertFinite();
  } finally {
    checks.destroy();
  }
}

/**
 * Fills every weight with GPU-generated random values (matrices N(0, std^2)-ish, norms exactly 1) and checks them
 * (`assertWeightsFinite`, whose readback replaces the wait for the fill).
 */
export async function fillRandomWeights(gpu: Gpu, w: HydraWeights, seed: number, std = RANDOM_WEIGHT_STD) {
  await gpu.scoped("generating random weights", async () => {
    generateRandomWeights(gpu, w, seed, std);
    await assertWeightsFinite(gpu, w);
  });
  w.source = "random";
}

/** Submits the random fill of every weight of `w` (no wait). */
function generateRandomWeights(gpu: Gpu, w: HydraWeights, seed: number, std: number): void {
  const ctl = gpu.buffer("fill ctl", CTL_SLOTS * 4);
  let s = seed >>> 0;
  const nextSeed = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  const dispatches: Dispatch[] = [];
  for (const { buffer, bf16 } of weightTensors(w)) {
    const count = buffer.size / (bf16 ? 2 : 4);
    dispatches.push(
      ...randomFillChunked(gpu, {
        ctl,
        buffer,
        count,
        seed: nextSeed(),
        std: bf16 ? std : 0,
        mean: bf16 ? 0 : 1,
        bf16,
      }),
    );
  }
  for (let i = 0; i < dispatches.length; i += 64) gpu.run(dispatches.slice(i, i + 64), "random weights");
  ctl.destroy(); // after the submits that use it, as WebGPU allows
}

/** Options of the synthetic LoRA ensemble. */
export interface SyntheticEnsembleOptions {
  seed: number;
  /** LoRA rank of every head's delta on every projection of its blocks. */
  rank?: number;
  /** Std of each delta element relative to the base weights' std (how far the heads drift apart). */
  relativeStd?: number;
  /**
   * Multiplies every head's delta (the `synthetic_spread` knob): 1 = the ensemble above, 0 = identical heads (no
   * delta is generated or merged: each head is an exact copy of head 0's base blocks).
   */
  spread?: number;
  /** Std of the random base's matrices. */
  std?: number;
}

/**
 * The synthetic LoRA ensemble: random base (trunk, embedding) and head 0's blocks random as the base's last blocks;
 * every head's blocks start as copies of those, then get the head's own random delta s * B @ A on all seven
 * projections; each head's final norm and lm_head are copies of the base's. Ends with `assertWeightsFinite`.
 */
export async function fillSyntheticEnsemble(gpu: Gpu, w: HydraWeights, o: SyntheticEnsembleOptions) {
  const rank = o.rank ?? 16, std = o.std ?? RANDOM_WEIGHT_STD, spread = o.spread ?? 1;
  if (!(spread >= 0 && Number.isFinite(spread))) throw new Error(`fillSyntheticEnsemble: bad spread ${spread}`);
  const rel = (o.relativeStd ?? 0.25) * spread;
  const [first, ...rest] = w.heads;
  // Random base: only the trunk, the embedding and head 0 need generating; the other heads copy head 0.
  const tmp: HydraWeights = { ...w, heads: [first] };
  await gpu.scoped("generating random weights", async () => {
    generateRandomWeights(gpu, tmp, o.seed, std);
    await gpu.finish();
  });
  const encoder = gpu.device.createCommandEncoder({ label: "copy head 0" });
  const copy = (src: GPUBuffer, dst: GPUBuffer) => encoder.copyBufferToBuffer(src, 0, dst, 0, src.size);
  for (const h of rest) {
    first.blocks.forEach((b, j) => {
      for (const k of Object.keys(b) as (keyof BlockWeights)[]) copy(b[k], h.blocks[j][k]);
    });
    copy(first.norm, h.norm);
    copy(first.lmHead, h.lmHead);
  }
  gpu.device.queue.submit([encoder.finish()]);
  w.source = "synthetic";
  if (rel === 0) { // a zero delta would leave every weight as it is
    return await gpu.scoped("checking the synthetic weights", () => assertWeightsFinite(gpu, w));
  }
  // Deltas: A ~ N(0, 1/in), B ~ N(0, 1), scale chosen so each delta element has std rel * std.
  const c = w.config;
  const ctl = gpu.buffer("lora ctl", CTL_SLOTS * 4);
  let seed = (o.seed ^ 0x5bd1e995) >>> 0;
  for (const [h, head] of w.heads.entries()) {
    for (const [j, block] of head.blocks.entries()) {
      for (const module of ["q", "k", "v", "o", "gate", "up", "down"] as LoraModule[]) {
        const [out, inp] = moduleShape(c, module);
        const a = gpu.buffer(`lora A h${h}`, rank * inp * 4), b = gpu.buffer(`lora B h${h}`, out * rank * 4);
        const fills = [
          ...randomFillChunked(gpu, {
            ctl,
            buffer: a,
            count: rank * inp,
            seed: ++seed,
            std: 1 / Math.sqrt(inp),
            bf16: false,
          }),
          ...randomFillChunked(gpu, { ctl, buffer: b, count: out * rank, seed: ++seed, std: 1, bf16: false }),
        ];
        // (B @ A)[i, j] sums `rank` products of std 1/sqrt(in): std sqrt(rank / in); times scale -> rel * std.
        const scale = (rel * std) / Math.sqrt(rank / inp);
        gpu.run([
          ...fills,
          loraMerge(gpu, { ctl, a, b, weight: moduleRegion(c, block, module), n: out, k: inp, rank, scale }),
        ], `synthetic delta head ${h} block ${j} ${module}`);
        await gpu.finish();
        a.destroy();
        b.destroy();
      }
    }
  }
  ctl.destroy();
  await gpu.scoped("checking the synthetic weights", () => assertWeightsFinite(gpu, w));
}

/** [out, in] of a projection. */
function moduleShape(c: ModelConfig, m: LoraModule): [number, number] {
  const d = c.dModel, f = c.ffnHidden;
  return m === "gate" || m === "up" ? [f, d] : m === "down" ? [d, f] : [d, d];
}

/** The region of a block's buffers holding projection `m` (q/k/v inside qkv, gate/up inside gateUp). */
export function moduleRegion(c: ModelConfig, b: BlockWeights, m: LoraModule): BufferSlice {
  const d = c.dModel, f = c.ffnHidden;
  switch (m) {
    case "q":
    case "k":
    case "v": {
      const i = ["q", "k", "v"].indexOf(m);
      return { buffer: b.qkv, offset: i * d * d * 2, size: d * d * 2 };
    }
    case "gate":
    case "up":
      return { buffer: b.gateUp, offset: m === "gate" ? 0 : f * d * 2, size: f * d * 2 };
    case "o":
      return { buffer: b.o, offset: 0, size: d * d * 2 };
    case "down":
      return { buffer: b.down, offset: 0, size: d * f * 2 };
  }
}

/** The buffer region holding checkpoint part `part` of a block. */
function partRegion(c: ModelConfig, b: BlockWeights, part: LayerPart): BufferSlice {
  const d = c.dModel;
  switch (part) {
    case "q_norm":
      return { buffer: b.qkNorm, offset: 0, size: d * 4 };
    case "k_norm":
      return { buffer: b.qkNorm, offset: d * 4, size: d * 4 };
    case "attn_norm":
      return { buffer: b.attnNorm };
    case "ff_norm":
      return { buffer: b.ffNorm };
    default:
      return moduleRegion(c, b, part);
  }
}

/**
 * Streams a checkpoint into `w`, one tensor at a time: trunk blocks from the base's first layers, each head's blocks
 * from its last `headsDepth` layers (written once per head), each head's norm and lm_head from the base's; then merges
 * `adapters[h]` (in order) into head h's blocks. An adapter delta for a trunk layer is an error: heads own their
 * blocks, the trunk is shared.
 */
export async function loadCheckpointWeights(
  gpu: Gpu,
  w: HydraWeights,
  ckpt: Checkpoint,
  adapters: readonly (readonly LoraAdapter[])[] = [],
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  const c = w.config;
  const depth = w.heads[0]?.blocks.length ?? 0;
  const trunkLayers = c.nLayers - depth;
  const total = ckpt.tensors.length;
  let done = 0;
  const checks = new FiniteChecks(gpu);
  try {
    await gpu.scoped(`loading ${ckpt.dir}`, async () => {
      for await (const t of ckpt.load()) {
        const data = t.data;
        const targets: BufferSlice[] = [];
        const spec = t.tensor;
        if (spec.part === "embed") targets.push({ buffer: w.embed });
        else if (spec.part === "norm") targets.push(...w.heads.map((h) => ({ buffer: h.norm })));
        else if (spec.part === "lm_head") targets.push(...w.heads.map((h) => ({ buffer: h.lmHead })));
        else if (spec.layer !== null && spec.layer < trunkLayers) {
          targets.push(partRegion(c, w.trunk[spec.layer], spec.part));
        } else if (spec.layer !== null) {
          for (const h of w.heads) targets.push(partRegion(c, h.blocks[spec.layer - trunkLayers], spec.part));
        }
        for (const r of targets) {
          if (data.byteLength !== (r.size ?? r.buffer.size)) {
            throw new Error(
              `tensor ${spec.name}: ${data.byteLength} bytes for a ${r.size ?? r.buffer.size}-byte region`,
            );
          }
          gpu.write(r.buffer, data, r.offset ?? 0);
        }
        // One check per tensor read: its copies in the other heads hold the same bytes.
        if (targets.length > 0) {
          checks.check({ ...targets[0], size: data.byteLength }, t.format === "bf16", {
            name: `tensor "${spec.sourceName}" in ${spec.file}`,
            shape: spec.shape,
            advice: "the file is corrupt or was saved from a diverged run, so re-download or re-export the checkpoint",
          });
        }
        onProgress?.(++done, total);
      }
    });
    for (const [h, list] of adapters.entries()) {
      if (h >= w.heads.length) {
        throw new UserError(
          `${
            list[0]?.dir ?? "adapter"
          }: adapters were given for head ${h}, but the model has ${w.heads.length} heads; remove them or raise n_heads.`,
        );
      }
      for (const adapter of list) await mergeAdapter(gpu, w, h, adapter, checks);
    }
    await checks.assertFinite();
  } finally {
    checks.destroy();
  }
  w.source = "checkpoint";
}

/**
 * Merges one PEFT adapter into head `h`'s blocks (W += s * B @ A, rounded to bf16 on the GPU), checking lora_A, lora_B
 * and each merged weight for NaN and infinities: into `checks` (read back by the caller), or, without it, its own,
 * read back before returning.
 */
export async function mergeAdapter(
  gpu: Gpu,
  w: HydraWeights,
  h: number,
  adapter: LoraAdapter,
  checks?: FiniteChecks,
): Promise<void> {
  const c = w.config;
  const depth = w.heads[h].blocks.length;
  const trunkLayers = c.nLayers - depth;
  const ctl = gpu.buffer("lora ctl", CTL_SLOTS * 4);
  const own = checks ? null : new FiniteChecks(gpu);
  try {
    await gpu.scoped(`merging adapter ${adapter.dir} into head ${h}`, async () => {
      for (const delta of adapter.deltas) {
        const j = delta.layer - trunkLayers;
        if (j < 0) {
          throw new UserError(
            `${adapter.dir}: the adapter changes layer ${delta.layer}, which is in the shared trunk (layers 0..${
              trunkLayers - 1
            }); a head's adapter may only target its own ${depth} blocks (layers ${trunkLayers}..${c.nLayers - 1}).`,
          );
        }
        const region = moduleRegion(c, w.heads[h].blocks[j], delta.module);
        mergeDelta(gpu, ctl, region, delta, (checks ?? own)!, `of head ${h} after merging ${adapter.dir}`, adapter.dir);
      }
      await gpu.finish();
    });
    await own?.assertFinite();
  } finally {
    ctl.destroy();
    own?.destroy();
  }
}

/**
 * Merges one delta into `weight`, checking lora_A and lora_B as uploaded and the merged weight (`merged` says whose,
 * after what): a finite adapter can still overflow bf16 when its scale or values are far too large.
 */
function mergeDelta(
  gpu: Gpu,
  ctl: GPUBuffer,
  weight: BufferSlice,
  d: LoraDelta,
  checks: FiniteChecks,
  merged: string,
  dir: string,
): void {
  const a = gpu.upload("lora A", d.A), b = gpu.upload("lora B", d.B);
  const file = join(dir, "adapter_model.safetensors"), module = loraModuleName(d.layer, d.module);
  for (
    const [factor, buffer, data, shape] of [["A", a, d.A, [d.rank, d.inFeatures]], ["B", b, d.B, [
      d.outFeatures,
      d.rank,
    ]]] as const
  ) {
    checks.check({ buffer, size: data.byteLength }, false, {
      name: d.keys ? `tensor "${d.keys[factor]}" in ${file}` : `lora_${factor} of ${module} in ${file}`,
      shape,
      advice: "the adapter is corrupt or was saved from a diverged run, so re-export it or leave it out",
    });
  }
  gpu.run(
    [loraMerge(gpu, { ctl, a, b, weight, n: d.outFeatures, k: d.inFeatures, rank: d.rank, scale: d.scale })],
    "lora merge",
  );
  checks.check(weight, true, {
    name: `${module}.weight ${merged}`,
    shape: [d.outFeatures, d.inFeatures],
    advice: "the merge overflows bf16, so the adapter's scale (lora_alpha / r) or values are far too large; fix the " +
      "adapter",
  });
  a.destroy();
  b.destroy();
}
