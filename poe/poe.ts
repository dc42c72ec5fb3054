/**
 * The Product-of-Experts speculative decoder on a HydraTransformer (design.md section 4), resident on the GPU.
 *
 * One call (`generateWithCache`): chat template, tokenize, reset, prefill (trunk + every head, last token only; the
 * first token is the jury's argmax), then rounds until `maxNewTokens` tokens are out:
 *   1. draft: gamma single-token steps of trunk + draft head (argmax, or a sample at `temperature`), each step's trunk
 *      output saved for verification;
 *   2. verify: every verifier head once over the gamma saved trunk states (their K/V appended at those positions);
 *   3. accept: jury log p = log_softmax(sum_k log_softmax(z_k)); draft d is accepted when p(d) >= beta * max p; the
 *      first rejected draft is replaced by the jury's argmax (a resampled token) and the rest dropped;
 *   4. rollback: LEN (the committed length of every cache) moves to the accepted prefix.
 * Every kernel of a round is gated by ctl[ACTIVE] (cleared when the call has its tokens), so the CPU encodes rounds
 * blindly: a first batch, then, after one readback, as many rounds as could still be needed (one token per round at
 * worst), of which those after the end are no-ops on the GPU. At most 2 sync points per call. Non-finite logits in
 * any pick (draft, jury or acceptance) end the call with a UserError at the first readback (`Decoder.readResult`),
 * before any statistics.
 *
 * The first batch is sized by the acceptance seen so far: the rounds the previous call of this decoder needed per
 * token, scaled to this call (at least the fewest rounds that could finish, ceil((maxNewTokens - 1) / gamma), none of
 * which can be idle, and at most maxNewTokens - 1). With 2 syncs the second batch must cover the worst case, so its
 * no-op rounds are (tokens left) x (1 - 1 / tokens per round); only a first batch that nearly finishes the call keeps
 * them few. The first call of a decoder has no estimate and uses the fewest rounds. A call whose acceptance matches
 * the previous one finishes in the first batch: one sync, no no-op round. Either way the output is the same.
 * @module
 */

import { DECODE_MAX_ROWS } from "../kernels/attention/decode.ts";
import { CTL } from "../kernels/control/ctl.ts";
import { poeAccept } from "../kernels/control/poe_accept.ts";
import { ControlOp, controlStep } from "../kernels/control/step.ts";
import { MATVEC_MAX_ROWS } from "../kernels/matmul/matvec.ts";
import { type Dispatch, DispatchCache, encodePass, type Gpu } from "../kernels/runtime.ts";
import { UserError } from "../common/errors.ts";
import { numberChoiceFromEnv } from "../common/env.ts";
import { Decoder } from "../model/generate.ts";
import type { HeadPass, HydraTransformer } from "../model/hydra.ts";
import { applyChatTemplate, type CheckpointChatConfig } from "./chat_template.ts";
import type { Tokenizer } from "./tokenizer.ts";

/**
 * Most tokens a PoE round can draft: the round's rows go through the decode attention and the matvec in one pass, and
 * both kernels stop at 16 rows (`DECODE_MAX_ROWS`, `MATVEC_MAX_ROWS`). The control block counts acceptance for up to
 * `MAX_GAMMA` (24) positions, which is not the limit.
 */
export const POE_MAX_GAMMA = Math.min(DECODE_MAX_ROWS, MATVEC_MAX_ROWS);

/** The text a generation starts from: one user message `content`, in the checkpoint's chat format, then the turn of
 * the assistant. Template errors name `chat.source`. */
export function userPrompt(content: string, chat: CheckpointChatConfig): string {
  return applyChatTemplate([{ role: "user", content }], { ...chat, addGenerationPrompt: true });
}

/** The knobs of a PoE decoder. */
export interface PoeOptions {
  /** Drafted tokens per round (1..POE_MAX_GAMMA, and at most the model's maxLogitRows). */
  gamma: number;
  /** Leniency: draft d is accepted when p_jury(d) >= beta * max p_jury (0 < beta <= 1). */
  beta: number;
  /** 0 drafts greedily; > 0 samples drafts from softmax(z / T). */
  temperature: number;
  /** Tokens one call emits (EOS does not stop a call). */
  maxNewTokens: number;
  /** Index of the draft head; the other heads are the jury. */
  draftHead?: number;
  /** Seed of draft sampling. */
  seed?: number;
  /**
   * Record the round's last draft step's draft head beside the verification, in lock-step (`PoeRoundParts`): the same
   * tokens, a shorter round. Default: `HYDRA_POE_PIPELINE` (0 / 1), else on (H200, 7B, gamma 4: verification 2.70 ->
   * 2.59 ms a round, 164.5 -> 165.7 tok/s at spread 0; docs/PERF.md session U).
   */
  pipeline?: boolean;
}

/** `HYDRA_POE_PIPELINE=0|1` overrides `PoeOptions.pipeline`, so that the GPU can A/B it. */
export const POE_PIPELINE_ENV = "HYDRA_POE_PIPELINE";

/** What one call returns: the ids and the statistics of design.md section 4. */
export interface PoeCallResult {
  ids: number[];
  output_tokens: number;
  resampled_tokens: number;
  /** output_tokens - resampled_tokens (the prefill's token, the jury's own choice, counts as accepted). */
  accepted: number;
  rounds: number;
  /** Drafts accepted at each draft position 0..gamma-1, summed over rounds. */
  accepted_at: number[];
  /** CPU waits on the GPU during the call. */
  sync_points: number;
  /** Rounds encoded (including rounds that were no-ops on the GPU). */
  rounds_encoded: number;
  /** Rounds of the first batch (encoded before the first readback). */
  first_batch_rounds: number;
  /**
   * CPU milliseconds the call spent encoding and submitting its command buffers (prefill and rounds): when it nears
   * `wall_ms`, the GPU waits on the CPU and the call is CPU-bound.
   */
  encode_ms: number;
  wall_ms: number;
}

/**
 * The dispatch lists one round is made of, in order (all gated), for timing them one by one. Pipelined
 * (`PoeOptions.pipeline`), the last draft step is its trunk and save only, and `verify` starts with that step's draft
 * head, in lock-step with the verifier heads (which read their positions gamma - 1 rows before POS), then its pick and
 * POS += 1.
 */
export interface PoeRoundParts {
  /** POS = LEN: the round's opening control step. */
  start: Dispatch[];
  /** Draft step i < gamma: trunk, save of its output as trunk state i, draft head, pick, POS += 1. */
  draft: Dispatch[][];
  /** POS = LEN, every verifier head over the gamma saved trunk states, the jury's log-probs. */
  verify: Dispatch[];
  /** The jury's row argmax and the acceptance kernel (accept, resample, roll back, counters). */
  accept: Dispatch[];
  /** Whether the round is pipelined (the last draft head beside the verification). */
  pipelined: boolean;
  /** A whole draft step, as `draft` holds them unpipelined (what the cost model's draft_step_ms times). */
  draftStep: Dispatch[];
}

/** The PoE decoder. */
export class PoE {
  readonly gpu: Gpu;
  readonly decoder: Decoder;
  readonly draftHead: number;
  /** Verifier heads, in the order of their logits slots 1..N-1. */
  readonly verifiers: number[];
  /** The verifiers' logits slots (1..N-1; the draft head's is 0). */
  readonly #verifierSlots: number[];
  /** Whether rounds are pipelined (`PoeOptions.pipeline`). */
  readonly pipeline: boolean;
  /** The parts of one round (see PoeRoundParts). */
  readonly roundParts: PoeRoundParts;
  readonly #round: Dispatch[];
  readonly #prefill = new DispatchCache();
  /** Rounds and tokens after the prefill of the previous call (the acceptance seen so far), or null before it. */
  #last: { rounds: number; tokens: number } | null = null;

  constructor(
    readonly model: HydraTransformer,
    readonly options: PoeOptions,
    readonly tokenizer?: Tokenizer,
    readonly chat: CheckpointChatConfig = { specialTokens: {} },
  ) {
    this.gpu = model.gpu;
    const { gamma, beta, temperature } = options;
    if (!(Number.isInteger(gamma) && gamma >= 1 && gamma <= model.maxLogitRows)) {
      throw new UserError(`poe_gamma ${gamma} must be an integer in 1..${model.maxLogitRows}; change poe_gamma.`);
    }
    if (!(beta > 0 && beta <= 1)) throw new UserError(`poe_beta ${beta} must be in (0, 1]; change poe_beta.`);
    if (!(temperature >= 0)) throw new UserError(`poe_temperature ${temperature} must be >= 0; change it.`);
    if (model.nHeads < 2) throw new UserError("PoE needs at least 2 heads (a draft and a verifier); raise n_heads.");
    this.draftHead = options.draftHead ?? 0;
    if (!(this.draftHead >= 0 && this.draftHead < model.nHeads)) {
      throw new UserError(`The draft head ${this.draftHead} is not one of the ${model.nHeads} heads.`);
    }
    this.verifiers = Array.from({ length: model.nHeads }, (_, h) => h).filter((h) => h !== this.draftHead);
    this.#verifierSlots = this.verifiers.map((_, s) => s + 1);
    const pipelineEnv = numberChoiceFromEnv(POE_PIPELINE_ENV, [0, 1], "a switch");
    this.pipeline = pipelineEnv === undefined ? options.pipeline ?? true : pipelineEnv === 1;
    this.decoder = new Decoder(model);
    this.roundParts = this.#recordRound();
    const p = this.roundParts;
    this.#round = [...p.start, ...p.draft.flat(), ...p.verify, ...p.accept];
  }

  /** The dispatches of one round, in order (each costs a little GPU time even when gated off). */
  get round(): readonly Dispatch[] {
    return this.#round;
  }

  /** The dispatches of one round (all gated), by part. */
  #recordRound(): PoeRoundParts {
    const m = this.model, { gamma, beta, temperature, seed } = this.options, ctl = m.ctl, gated = true;
    const c = m.config;
    const pipelined = this.pipeline;
    // a draft step's draft head, then its pick of the next token and POS += 1
    const draftHead = m.head(this.draftHead, 1, { lastTokenOnly: true, slot: 0, gated });
    const pick = [
      ...this.decoder.argmax("single", 1, 0, { heads: [0], temperature, seed, gated }),
      controlStep(this.gpu, { ctl, op: ControlOp.NEXT_POS, gated }),
    ];
    const trunkOf = (i: number) => [...m.trunk(1, gated), m.saveTrunkState(i, gated)];
    const draft = Array.from(
      { length: gamma },
      (_, i) => pipelined && i === gamma - 1 ? trunkOf(i) : [...trunkOf(i), ...draftHead, ...pick],
    );
    const verifiers = (posBack: number): HeadPass[] =>
      this.verifiers.map((head, s) => ({
        head,
        rows: gamma,
        lastTokenOnly: false,
        input: "trunkStates",
        slot: this.#verifierSlots[s],
        posBack,
      }));
    // The verifier heads in lock-step (HydraTransformer.lockstep), at POS = LEN; pipelined, beside the last draft
    // step's draft head while POS is still that step's position: the verifiers' rows start gamma - 1 rows before it.
    const verify = pipelined
      ? [
        ...m.lockstep(
          [{ head: this.draftHead, rows: 1, lastTokenOnly: true, slot: 0 }, ...verifiers(gamma - 1)],
          gated,
        ),
        ...pick,
      ]
      : [controlStep(this.gpu, { ctl, op: ControlOp.POS_TO_LEN, gated }), ...m.lockstep(verifiers(0), gated)];
    const jury = this.decoder.combine("jury", gamma, { gated, heads: this.#verifierSlots });
    return {
      pipelined,
      draftStep: [...trunkOf(0), ...draftHead, ...pick],
      start: [controlStep(this.gpu, { ctl, op: ControlOp.POS_TO_LEN, gated })],
      draft,
      verify: [...verify, ...jury],
      accept: poeAccept(this.gpu, {
        ctl,
        logp: this.decoder.combined,
        seq: m.seq,
        gamma,
        vp: c.paddedVocab,
        vocab: c.vocabSize,
        beta,
        gated,
      }),
    };
  }

  /** Prefill of P prompt tokens: trunk + every head (last token only), the jury's pick, AFTER_PREFILL. */
  #prefillDispatches(P: number): Dispatch[] {
    const m = this.model;
    return this.#prefill.get(`${P}`, () => [
      ...m.trunk(P),
      // every head, in lock-step where the prompt is short enough (HydraShape.lockstepRows)
      ...m.heads([this.draftHead, ...this.verifiers], P, {
        lastTokenOnly: true,
        slots: [0, ...this.#verifierSlots],
      }),
      ...this.decoder.pick("jury", 1, P - 1, { heads: this.#verifierSlots }),
      controlStep(this.gpu, { ctl: m.ctl, op: ControlOp.AFTER_PREFILL, rows: P }),
    ]);
  }

  /** The prompt ids of `promptText` after the chat template (needs the tokenizer). */
  promptIds(promptText: string): number[] {
    if (!this.tokenizer) throw new Error("PoE.promptIds: this decoder was built without a tokenizer");
    return this.tokenizer.encode(userPrompt(promptText, this.chat));
  }

  /** `generate_with_cache`: one whole PoE call on `promptText` (chat template + tokenizer applied). */
  generateWithCache(promptText: string): Promise<PoeCallResult> {
    return this.generateIds(this.promptIds(promptText));
  }

  /** One whole PoE call on prompt ids (no template). */
  async generateIds(prompt: readonly number[]): Promise<PoeCallResult> {
    const t0 = performance.now();
    const syncBefore = this.gpu.syncPoints;
    const { gamma, maxNewTokens } = this.options;
    const dec = this.decoder;
    dec.setPrompt(prompt, maxNewTokens, gamma);
    const firstRounds = this.firstBatchRounds();
    const encodeStart = performance.now();
    const encoder = this.gpu.device.createCommandEncoder({ label: "poe prefill" });
    dec.encodeReset(encoder);
    encodePass(encoder, this.#prefillDispatches(prompt.length));
    this.gpu.device.queue.submit([encoder.finish()]);
    let encodeMs = performance.now() - encodeStart + this.#submitRounds(firstRounds);
    let result = await dec.readResult();
    let encoded = firstRounds;
    const left = result.ctl[CTL.MAX_OUT] - result.ctl[CTL.OUT];
    if (left > 0) {
      encodeMs += this.#submitRounds(left);
      encoded += left;
      result = await dec.readResult();
    }
    const ctl = result.ctl;
    const output = ctl[CTL.OUT], resampled = ctl[CTL.RESAMPLED];
    if (ctl[CTL.ROUNDS] > 0) this.#last = { rounds: ctl[CTL.ROUNDS], tokens: output - 1 };
    return {
      ids: result.ids,
      output_tokens: output,
      resampled_tokens: resampled,
      accepted: output - resampled,
      rounds: ctl[CTL.ROUNDS],
      accepted_at: Array.from(ctl.subarray(CTL.ACCEPTED_AT, CTL.ACCEPTED_AT + gamma)),
      sync_points: this.gpu.syncPoints - syncBefore,
      rounds_encoded: encoded,
      first_batch_rounds: firstRounds,
      encode_ms: encodeMs,
      wall_ms: performance.now() - t0,
    };
  }

  /**
   * Rounds of the next call's first batch: the previous call's rounds per token times the tokens this call needs
   * after its prefill (integer arithmetic: the same acceptance gives exactly the same rounds), clamped to the fewest
   * that could finish (ceil((maxNewTokens - 1) / gamma)) and the most that could be needed (maxNewTokens - 1).
   */
  firstBatchRounds(): number {
    const { gamma, maxNewTokens } = this.options;
    const need = maxNewTokens - 1, fewest = Math.ceil(need / gamma);
    if (!this.#last || this.#last.tokens === 0) return fewest;
    return Math.min(need, Math.max(fewest, Math.ceil(need * this.#last.rounds / this.#last.tokens)));
  }

  /**
   * Encodes and submits `n` rounds, each in its own command buffer so the GPU starts while the CPU encodes. Returns
   * the CPU milliseconds it took.
   */
  #submitRounds(n: number): number {
    const t0 = performance.now();
    for (let r = 0; r < n; r++) {
      const encoder = this.gpu.device.createCommandEncoder({ label: "poe round" });
      encodePass(encoder, this.#round);
      this.gpu.device.queue.submit([encoder.finish()]);
    }
    return performance.now() - t0;
  }

  /** `residual_forward` over the prompt with fresh KV (the PoE TTFT work): prefill of every head, jury pick. */
  encodePrefill(encoder: GPUCommandEncoder, prompt: readonly number[], pass?: GPUComputePassDescriptor): void {
    this.decoder.setPrompt(prompt, this.options.maxNewTokens, this.options.gamma);
    this.decoder.encodeReset(encoder);
    encodePass(encoder, this.#prefillDispatches(prompt.length), pass);
  }

  /** Encodes one round into its own pass (for timing). */
  encodeRound(encoder: GPUCommandEncoder, pass?: GPUComputePassDescriptor): void {
    encodePass(encoder, this.#round, pass);
  }

  /** Frees the decoder's buffers (not the model). */
  destroy(): void {
    this.decoder.destroy();
  }
}
