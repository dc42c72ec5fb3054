/**
 * PoE acceptance and KV-length rollback for one round, decided on the GPU.
 *
 * With L = ctl[LEN], the round drafted d_1..d_G at seq[L + 1 .. L + G], and the jury's log-probs `logp` [G, VP] hold
 * at row i (position L + i) the jury's distribution for the token at L + i + 1, i.e. the judgement of d_{i+1}:
 *   d_{i+1} is accepted  iff  d_{i+1} < VOCAB  and  logp[i, d_{i+1}] >= log(beta) + max_{x < VOCAB} logp[i, x]
 *     (p_jury(d) >= beta * max p_jury in log space, the sum in f32; beta = 1 accepts the jury's argmax, ties included);
 *   k = the length of the longest accepted prefix;
 *   k < G: seq[L + k + 1] = argmax_x logp[k, x] (lowest id on ties, a "resampled" token), the round yields k + 1 tokens;
 *   k = G: the round yields G tokens;
 *   emitted = min(yield, MAX_OUT - OUT)       (never more than the call still needs)
 *   LEN += emitted; POS = LEN; OUT += emitted; ROUNDS += 1; RESAMPLED += 1 if the resampled token was emitted;
 *   ACCEPTED_AT + i += 1 for i < min(k, emitted); ACTIVE = OUT < MAX_OUT.
 * Rolling LEN back to the accepted prefix is the KV rollback: every cache is valid below LEN, and the stale rows of
 * rejected drafts beyond it are overwritten by later rounds. seq[LEN] is the last emitted token, not yet processed.
 *
 * The acceptance test only compares logp[i, d] with the row maximum, so it is unchanged by adding a constant to a row:
 * unnormalised jury scores (phase 0 of log_softmax alone) give the same decisions.
 *
 * Two dispatches: the argmax kernel finds every row's maximum and argmax over its 100k ids in parallel (one workgroup
 * per row) into scratch, then one thread applies the rule above and updates ctl. Both are gated like every kernel;
 * the single-thread kernel has no barrier, so its gate may read the read_write control block.
 * @module
 */

import { argmax } from "../logits/argmax.ts";
import type { Dispatch, Gpu, Kernel } from "../runtime.ts";
import { CTL, MAX_GAMMA } from "./ctl.ts";

/** The WGSL kernel (one thread). */
export const poeAcceptKernel: Kernel = {
  name: "poe_accept",
  source: /* wgsl */ `
// bindings (one workgroup of one thread):
//   0 ctl     [CTL_SLOTS] u32, read_write  reads LEN, OUT, MAX_OUT; updates LEN, POS, OUT, ROUNDS, RESAMPLED,
//                                          ACCEPTED_AT + i, ACTIVE
//   1 logp    [G, VP] f32, read            jury log-probs, row-major; row i judges the draft at seq[LEN + i + 1]
//   2 seq     u32, read_write              token ids by position; drafts at LEN + 1 .. LEN + G
//   3 best_id [G] u32, read                per row of logp, the argmax over ids < VOCAB (ties: lowest id)
//   4 best_lp [G] f32, read                per row of logp, logp[i, best_id[i]] (the row maximum)
override G: u32;
override VP: u32;
override VOCAB: u32;
override LOG_BETA: f32 = 0.0; // log(beta) rounded to f32; 0 for beta = 1
@group(0) @binding(0) var<storage, read_write> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> logp: array<f32>;
@group(0) @binding(2) var<storage, read_write> seq: array<u32>;
@group(0) @binding(3) var<storage, read> best_id: array<u32>;
@group(0) @binding(4) var<storage, read> best_lp: array<f32>;

@compute @workgroup_size(1)
fn main() {
  if (gated_off()) { return; }
  let len = ctl[CTL_LEN];
  var k = 0u;
  for (; k < G; k++) {
    let d = seq[len + k + 1u];
    if (!(d < VOCAB && logp[k * VP + d] >= LOG_BETA + best_lp[k])) { break; }
  }
  var round_len = G;
  if (k < G) {
    seq[len + k + 1u] = best_id[k];
    round_len = k + 1u;
  }
  let out = ctl[CTL_OUT];
  let max_out = ctl[CTL_MAX_OUT];
  let emitted = min(round_len, select(0u, max_out - out, max_out > out));
  ctl[CTL_LEN] = len + emitted;
  ctl[CTL_POS] = len + emitted;
  ctl[CTL_OUT] = out + emitted;
  ctl[CTL_ROUNDS] += 1u;
  if (k < G && emitted == k + 1u) { ctl[CTL_RESAMPLED] += 1u; }
  for (var i = 0u; i < min(k, emitted); i++) { ctl[CTL_ACCEPTED_AT + i] += 1u; }
  ctl[CTL_ACTIVE] = select(0u, 1u, out + emitted < max_out);
}
`,
};

/** Arguments of one PoE acceptance. */
export interface PoeAcceptArgs {
  /** Control block (LEN, OUT, MAX_OUT read; see the module comment for what is updated). */
  ctl: GPUBuffer;
  /** f32 jury log-probs [gamma, vp] (or unnormalised jury scores: only differences within a row matter). */
  logp: GPUBuffer;
  /** u32 token sequence holding the drafts at ctl[LEN] + 1 .. ctl[LEN] + gamma. */
  seq: GPUBuffer;
  /** Drafted tokens per round (1..MAX_GAMMA). */
  gamma: number;
  /** Padded vocabulary: the row stride of `logp`. */
  vp: number;
  /** Real vocabulary: ids >= vocab are never the maximum and never accepted. */
  vocab: number;
  /** Leniency, 0 < beta <= 1: a draft is accepted when p_jury(d) >= beta * max p_jury. */
  beta: number;
  /** Scratch for the per-row argmax (u32 [gamma]) and maximum (f32 [gamma]); allocated here when absent. */
  bestIds?: GPUBuffer;
  bestLogp?: GPUBuffer;
  gated?: boolean;
}

/** Records the argmax pass and the acceptance dispatch of one PoE round (load time). */
export function poeAccept(gpu: Gpu, a: PoeAcceptArgs, kernel: Kernel = poeAcceptKernel): Dispatch[] {
  if (!(Number.isInteger(a.gamma) && a.gamma >= 1 && a.gamma <= MAX_GAMMA)) {
    throw new Error(`poeAccept: gamma must be an integer in 1..${MAX_GAMMA}, got ${a.gamma}`);
  }
  if (!(a.beta > 0 && a.beta <= 1)) throw new Error(`poeAccept: beta must be in (0, 1], got ${a.beta}`);
  if (!(a.vocab >= 1 && a.vocab <= a.vp)) throw new Error(`poeAccept: vocab ${a.vocab} must be in 1..vp (${a.vp})`);
  const bestIds = a.bestIds ?? gpu.buffer("poe best ids", a.gamma * 4);
  const bestLogp = a.bestLogp ?? gpu.buffer("poe best logp", a.gamma * 4);
  const gated = a.gated ?? false;
  return [
    ...argmax(gpu, {
      ctl: a.ctl,
      logits: a.logp,
      ids: bestIds,
      values: bestLogp,
      rows: a.gamma,
      vp: a.vp,
      vocab: a.vocab,
      gated,
    }),
    gpu.dispatch(
      kernel,
      { G: a.gamma, VP: a.vp, VOCAB: a.vocab, LOG_BETA: Math.fround(Math.log(a.beta)), GATED: gated },
      [a.ctl, a.logp, a.seq, bestIds, bestLogp],
      1,
    ),
  ];
}

/** The new sequence and control block of `poeAcceptReference`, and the accepted prefix length k. */
export interface PoeAcceptResult {
  seq: Uint32Array;
  ctl: Uint32Array;
  accepted: number;
}

/**
 * CPU reference of one round: returns copies of `seq` and `ctl` updated as the kernel does (with the same f32
 * threshold, so decisions match bit for bit). With `gated` and ctl[ACTIVE] == 0 nothing changes.
 */
export function poeAcceptReference(
  logp: Float32Array,
  vp: number,
  vocab: number,
  gamma: number,
  seqIn: Uint32Array,
  ctlIn: Uint32Array,
  beta: number,
  gated = false,
): PoeAcceptResult {
  const seq = Uint32Array.from(seqIn), ctl = Uint32Array.from(ctlIn);
  if (gated && ctl[CTL.ACTIVE] === 0) return { seq, ctl, accepted: 0 };
  const logBeta = Math.fround(Math.log(beta));
  const best = (i: number): number => {
    let b = 0;
    for (let x = 1; x < vocab; x++) if (logp[i * vp + x] > logp[i * vp + b]) b = x;
    return b;
  };
  const len = ctl[CTL.LEN];
  let k = 0;
  while (k < gamma) {
    const d = seq[len + k + 1];
    const threshold = Math.fround(logBeta + logp[k * vp + best(k)]);
    if (!(d < vocab && logp[k * vp + d] >= threshold)) break;
    k++;
  }
  let yieldCount = gamma;
  if (k < gamma) {
    seq[len + k + 1] = best(k);
    yieldCount = k + 1;
  }
  const out = ctl[CTL.OUT], maxOut = ctl[CTL.MAX_OUT];
  const emitted = Math.min(yieldCount, Math.max(0, maxOut - out));
  ctl[CTL.LEN] = len + emitted;
  ctl[CTL.POS] = len + emitted;
  ctl[CTL.OUT] = out + emitted;
  ctl[CTL.ROUNDS] += 1;
  if (k < gamma && emitted === k + 1) ctl[CTL.RESAMPLED] += 1;
  for (let i = 0; i < Math.min(k, emitted); i++) ctl[CTL.ACCEPTED_AT + i] += 1;
  ctl[CTL.ACTIVE] = out + emitted < maxOut ? 1 : 0;
  return { seq, ctl, accepted: k };
}
