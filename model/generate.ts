/**
 * Generation programs on a HydraTransformer, recorded once and replayed: reset, prefill and greedy steps, each ending
 * in a GPU-side pick of the next token and a control-block update. A whole generation is encoded and submitted
 * without waiting; the CPU reads the sequence back once at the end.
 *
 * Every pick ends in the argmax kernel, which records non-finite logits in ctl[NONFINITE]; the readback that returns
 * the ids checks it (`assertFiniteLogits`), so a generation from broken weights is an error, never tokens [0, 0, ...].
 *
 * Pick modes (which distribution the next token is the argmax of):
 *   single  head 0's logits (a plain OLMo-2, or one Hydra head)
 *   naive   the mean of every head's logits (`forward_and_sample` of the naive Hydra)
 *   jury    log_softmax(sum over the verifier heads 1..N-1 of log_softmax(logits)) (the PoE jury, greedily)
 * @module
 */

import { CTL, nonFinitePosition } from "../kernels/control/ctl.ts";
import { ControlOp, controlStep } from "../kernels/control/step.ts";
import { argmax } from "../kernels/logits/argmax.ts";
import { combineJury, combineMean } from "../kernels/logits/combine.ts";
import { logSoftmaxScratchBytes } from "../kernels/logits/log_softmax.ts";
import { type Dispatch, DispatchCache, encodePass, type Gpu } from "../kernels/runtime.ts";
import { UserError } from "../common/errors.ts";
import type { HydraTransformer } from "./hydra.ts";
import type { WeightsSource } from "./weights.ts";

/** Which distribution a step's token is picked from. */
export type PickMode = "single" | "naive" | "jury";

/** The heads a pick mode needs run. */
export function headsFor(model: HydraTransformer, mode: PickMode): number[] {
  const all = Array.from({ length: model.nHeads }, (_, h) => h);
  if (mode === "single") return [0];
  if (mode === "naive") return all;
  if (model.nHeads < 2) {
    throw new UserError("The jury needs at least 2 heads (one draft, one verifier); raise n_heads.");
  }
  return all.slice(1);
}

/** Options of a pick (`Decoder.combine`, `Decoder.argmax`). */
export interface PickOptions {
  /** Build the kernels gated by ctl[ACTIVE] (PoE rounds). */
  gated?: boolean;
  /** 0 (default) picks the argmax; above, a sample from softmax(logits / temperature). */
  temperature?: number;
  /** Seed of sampling. */
  seed?: number;
  /** The logits slots the pick reads (consecutive); default: those of `headsFor(mode)`. */
  heads?: readonly number[];
}

/**
 * Throws a UserError when the control block `ctl`, read back after a generation, records non-finite logits
 * (ctl[NONFINITE]): the run's tokens are garbage and none of its figures may count. `source` (where the weights came
 * from, all checked finite at load) and `promptLength` go into the message.
 */
export function assertFiniteLogits(ctl: Uint32Array, source: WeightsSource, promptLength: number): void {
  const p = nonFinitePosition(ctl);
  if (p === null) return;
  const where = `Non-finite logits (NaN or infinity) at position ${p} (the prompt has ${promptLength} tokens)`;
  throw new UserError(
    source === "checkpoint"
      ? `${where}, although every weight loaded finite: weights or adapters this large overflow the forward pass, so ` +
        "check the weights/adapters."
      : `${where} from ${source} weights that loaded finite: a kernel or the GPU driver is broken, so report it with ` +
        "the GPU and driver.",
  );
}

/** What a finished generation returns. */
export interface GenerationResult {
  /** The generated ids (after the prompt). */
  ids: number[];
  /** The control block at the end. */
  ctl: Uint32Array;
}

/** Records and runs generation programs for one model. */
export class Decoder {
  readonly gpu: Gpu;
  /** Initial control block of the current prompt (copied into ctl by `encodeReset`). */
  readonly ctlInit: GPUBuffer;
  /** Prompt ids (copied into seq by `encodeReset`). */
  readonly seqInit: GPUBuffer;
  /** Combined logits of a pick (mean, or jury log-probs), f32 [maxLogitRows, paddedVocab]. */
  readonly combined: GPUBuffer;
  readonly #partials: GPUBuffer;
  readonly #cache = new DispatchCache();
  #promptLength = 0;

  constructor(readonly model: HydraTransformer) {
    this.gpu = model.gpu;
    const vp = model.config.paddedVocab, rows = model.maxLogitRows;
    this.ctlInit = this.gpu.buffer("ctl init", model.ctl.size);
    this.seqInit = this.gpu.buffer("seq init", model.seq.size);
    this.combined = this.gpu.buffer("combined logits", rows * vp * 4);
    this.#partials = this.gpu.buffer("log_softmax partials", logSoftmaxScratchBytes(rows, vp));
  }

  /** Prompt length set by `setPrompt`. */
  get promptLength(): number {
    return this.#promptLength;
  }

  /**
   * Sets the prompt and the number of tokens a call must emit (queued writes; no sync). Checks that the prompt, the
   * generation and `slack` extra positions (PoE drafts) fit the model's KV cache.
   */
  setPrompt(ids: readonly number[], maxNewTokens: number, slack = 0): void {
    const m = this.model;
    if (ids.length < 1) throw new UserError("The prompt is empty; give at least one token.");
    if (ids.length > m.maxRows) {
      throw new UserError(
        `The prompt has ${ids.length} tokens but the model was built for ${m.maxRows}; raise prompt_length.`,
      );
    }
    if (ids.length + maxNewTokens + slack > m.maxPos) {
      throw new UserError(
        `A prompt of ${ids.length} tokens plus ${maxNewTokens} new tokens (+${slack} draft positions) exceeds the KV cache of ${m.maxPos}; shorten them.`,
      );
    }
    const bad = ids.find((t) => !(Number.isInteger(t) && t >= 0 && t < m.config.vocabSize));
    if (bad !== undefined) {
      throw new UserError(`Token id ${bad} is not in the vocabulary 0..${m.config.vocabSize - 1}.`);
    }
    const ctl = new Uint32Array(m.ctl.size / 4);
    ctl[CTL.ACTIVE] = 1;
    ctl[CTL.MAX_OUT] = maxNewTokens;
    ctl[CTL.PROMPT] = ids.length;
    this.gpu.write(this.ctlInit, ctl);
    this.gpu.write(this.seqInit, Uint32Array.from(ids));
    this.#promptLength = ids.length;
  }

  /** Records the reset of a call: fresh control block and prompt (K/V beyond LEN = 0 are never read). */
  encodeReset(encoder: GPUCommandEncoder): void {
    encoder.copyBufferToBuffer(this.ctlInit, 0, this.model.ctl, 0, this.ctlInit.size);
    encoder.copyBufferToBuffer(this.seqInit, 0, this.model.seq, 0, this.#promptLength * 4);
  }

  /**
   * The combination a pick of `mode` reads from `rows` logit rows: nothing for single (it reads its head's logits),
   * the mean of the heads' logits (naive) or the jury's log-probs (jury) into `combined`.
   */
  combine(mode: PickMode, rows: number, o: Pick<PickOptions, "gated" | "heads"> = {}): Dispatch[] {
    if (mode === "single") return [];
    const m = this.model, c = m.config, heads = o.heads ?? headsFor(m, mode);
    const first = heads[0];
    if (heads.some((h, i) => h !== first + i)) throw new Error("combine: heads must be consecutive");
    const args = {
      ctl: m.ctl,
      logits: m.logitsSlices(first, heads.length, rows),
      out: this.combined,
      heads: heads.length,
      rows,
      vp: c.paddedVocab,
      vocab: c.vocabSize,
      gated: o.gated ?? false,
    };
    return mode === "naive"
      ? [combineMean(this.gpu, args)]
      : combineJury(this.gpu, { ...args, partials: this.#partials });
  }

  /**
   * The argmax (at `temperature` > 0: a sample) of each of `rows` rows, row m at position POS + rowPosOffset + m, into
   * seq[POS + rowPosOffset + m + 1]: of the logits of slot `heads[0]` for single, else of `combined`.
   */
  argmax(mode: PickMode, rows: number, rowPosOffset: number, o: PickOptions = {}): Dispatch[] {
    const m = this.model, c = m.config;
    return argmax(this.gpu, {
      ctl: m.ctl,
      logits: mode === "single" ? m.logitsSlice((o.heads ?? [0])[0], rows) : this.combined,
      seq: m.seq,
      rows,
      vp: c.paddedVocab,
      vocab: c.vocabSize,
      rowPosOffset,
      temperature: o.temperature,
      seed: o.seed,
      gated: o.gated ?? false,
    });
  }

  /** The pick of the next token: `combine`, then `argmax`. */
  pick(mode: PickMode, rows: number, rowPosOffset: number, o: PickOptions = {}): Dispatch[] {
    return [...this.combine(mode, rows, o), ...this.argmax(mode, rows, rowPosOffset, o)];
  }

  /** Prefill of the prompt (rows from POS = 0), the pick of the first new token, and AFTER_PREFILL. */
  prefill(mode: PickMode, heads: readonly number[] = headsFor(this.model, mode)): Dispatch[] {
    const P = this.#promptLength;
    return this.#cache.get(`prefill ${P} ${mode} ${heads}`, () => [
      ...this.model.residualForward(P, { heads, lastTokenOnly: true }),
      ...this.pick(mode, 1, P - 1),
      controlStep(this.gpu, { ctl: this.model.ctl, op: ControlOp.AFTER_PREFILL, rows: P }),
    ]);
  }

  /** One greedy decode step at POS = LEN: forward one row, pick, ADVANCE. */
  step(mode: PickMode): Dispatch[] {
    return this.#cache.get(`step ${mode}`, () => {
      const heads = headsFor(this.model, mode);
      return [
        ...this.model.residualForward(1, { heads, lastTokenOnly: true }),
        ...this.pick(mode, 1, 0),
        controlStep(this.gpu, { ctl: this.model.ctl, op: ControlOp.ADVANCE }),
      ];
    });
  }

  /**
   * Greedy generation of `maxNewTokens` tokens after `prompt`, all encoded and submitted at once; one sync point at
   * the end (two with `withPromptLogits`, which also returns the last prompt position's logits of the picked heads).
   */
  async generate(
    prompt: readonly number[],
    maxNewTokens: number,
    mode: PickMode,
    o: { withPromptLogits?: boolean } = {},
  ): Promise<GenerationResult & { promptLogits?: Float32Array }> {
    this.setPrompt(prompt, maxNewTokens);
    const encoder = this.gpu.device.createCommandEncoder({ label: `generate ${mode}` });
    this.encodeReset(encoder);
    encodePass(encoder, this.prefill(mode));
    let promptLogits: Float32Array | undefined;
    if (o.withPromptLogits) {
      this.gpu.device.queue.submit([encoder.finish()]);
      promptLogits = await this.readPickedLogits(mode);
      return { ...(await this.#continue(maxNewTokens, mode)), promptLogits };
    }
    return await this.#continue(maxNewTokens, mode, encoder);
  }

  /** The logits (single: head 0; naive: the mean; jury: log-probs) of the last pick, f32 [paddedVocab]. */
  async readPickedLogits(mode: PickMode): Promise<Float32Array> {
    const vp = this.model.config.paddedVocab;
    if (mode === "single") {
      const s = this.model.logitsSlice(0, 1);
      return new Float32Array((await this.gpu.readRegions([s]))[0]);
    }
    return await this.gpu.readF32(this.combined, vp);
  }

  async #continue(maxNewTokens: number, mode: PickMode, encoder?: GPUCommandEncoder): Promise<GenerationResult> {
    encoder ??= this.gpu.device.createCommandEncoder({ label: `generate ${mode}` });
    const step = this.step(mode);
    // One pass per step, submitted every 8 steps so the GPU starts while the CPU encodes; nothing waits between them.
    for (let i = 1; i < maxNewTokens; i++) {
      encodePass(encoder, step);
      if (i % 8 === 0) {
        this.gpu.device.queue.submit([encoder.finish()]);
        encoder = this.gpu.device.createCommandEncoder({ label: `generate ${mode}` });
      }
    }
    this.gpu.device.queue.submit([encoder.finish()]);
    return await this.readResult();
  }

  /**
   * Reads the control block and the generated ids (one sync point); throws a UserError when a pick saw non-finite
   * logits (`assertFiniteLogits`).
   */
  async readResult(): Promise<GenerationResult> {
    const m = this.model, P = this.#promptLength;
    const [ctlBytes, seqBytes] = await this.gpu.readRegions([{ buffer: m.ctl }, { buffer: m.seq }]);
    const ctl = new Uint32Array(ctlBytes);
    assertFiniteLogits(ctl, m.weights.source, P);
    const seq = new Uint32Array(seqBytes);
    return { ids: Array.from(seq.subarray(P + 0, P + ctl[CTL.OUT])), ctl };
  }

  /** Frees the decoder's buffers (not the model's). */
  destroy(): void {
    for (const b of [this.ctlInit, this.seqInit, this.combined, this.#partials]) b.destroy();
    this.#cache.clear();
  }
}
