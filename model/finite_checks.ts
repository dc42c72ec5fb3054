/**
 * The finiteness checks of one model load. Every tensor, as it is uploaded, generated or merged, gets a GPU check
 * (kernels/weights/finite_check.ts) into its own slot of a flags buffer; `assertFinite` reads all slots back at once,
 * after the whole load (one sync point, not one per tensor), and throws a UserError naming the first tensor that holds
 * a NaN or an infinity and what to do about it. Without this, one NaN weight makes every logit NaN and every token 0.
 * @module
 */

import { UserError } from "../common/errors.ts";
import { CTL_SLOTS } from "../kernels/control/ctl.ts";
import type { BufferSlice, Gpu } from "../kernels/runtime.ts";
import { FINITE_SLOT_WORDS, finiteCheck, finiteCheckSlot } from "../kernels/weights/finite_check.ts";

/** Slots per flags buffer (a new one is added when they are used up). */
const SLOTS_PER_BUFFER = 1024;

/** What a message says about a checked tensor. */
export interface CheckedTensor {
  /** The tensor, as the user knows it: `tensor "model.layers.3.mlp.down_proj.weight" in /dir/model.safetensors`. */
  name: string;
  /** Its shape, to give the first bad element as [row, column]; a flat index without it. */
  shape?: readonly number[];
  /** What to do, after a semicolon: "re-download or re-export the checkpoint". */
  advice: string;
}

/** `index` of a row-major tensor of `shape` as "[i, j]". */
function multiIndex(index: number, shape?: readonly number[]): string {
  if (!shape || shape.length === 0) return `[${index}]`;
  const out: number[] = [];
  let rest = index;
  for (let d = shape.length - 1; d >= 0; d--) {
    out.unshift(d === 0 ? rest : rest % shape[d]);
    rest = Math.floor(rest / shape[d]);
  }
  return `[${out.join(", ")}]`;
}

/** The finiteness checks of one load: `check` each tensor once it is on the GPU, then `assertFinite` once. */
export class FiniteChecks {
  readonly #ctl: GPUBuffer;
  readonly #flags: GPUBuffer[] = [];
  readonly #tensors: CheckedTensor[] = [];

  constructor(readonly gpu: Gpu) {
    this.#ctl = gpu.buffer("finite check ctl", CTL_SLOTS * 4);
  }

  /** Tensors checked so far. */
  get count(): number {
    return this.#tensors.length;
  }

  /**
   * Submits the check of the tensor in `region` (bf16 packed or f32), which must already be written or queued: the
   * check runs after everything submitted before it, and sees nothing submitted after it.
   */
  check(region: BufferSlice, bf16: boolean, tensor: CheckedTensor): void {
    const slot = this.#tensors.length, index = slot % SLOTS_PER_BUFFER;
    if (index === 0) this.#flags.push(this.gpu.buffer("finite flags", SLOTS_PER_BUFFER * FINITE_SLOT_WORDS * 4));
    this.#tensors.push(tensor);
    const dispatch = finiteCheck(this.gpu, {
      ctl: this.#ctl,
      data: region.buffer,
      byteOffset: region.offset ?? 0,
      bytes: region.size,
      bf16,
      flags: this.#flags.at(-1)!,
      slot: index,
    });
    this.gpu.run([dispatch], "finite check");
  }

  /**
   * Reads every slot back (one sync point; it also waits for the load) and throws a UserError naming the first
   * tensor, in the order checked, that holds a NaN or an infinity.
   */
  async assertFinite(): Promise<void> {
    if (this.#flags.length === 0) return;
    const data = await this.gpu.readRegions(this.#flags.map((buffer) => ({ buffer })));
    for (const [slot, t] of this.#tensors.entries()) {
      const flags = new Uint32Array(data[Math.floor(slot / SLOTS_PER_BUFFER)]);
      const r = finiteCheckSlot(flags, slot % SLOTS_PER_BUFFER);
      if (r.count === 0) continue;
      const values = r.count === 1 ? "value" : "values";
      throw new UserError(
        `${t.name} holds ${r.count} NaN or infinite ${values} (the first at ${multiIndex(r.first!, t.shape)}); ` +
          `${t.advice}.`,
      );
    }
  }

  /** Frees the flags buffers. */
  destroy(): void {
    for (const b of [this.#ctl, ...this.#flags]) b.destroy();
  }
}
