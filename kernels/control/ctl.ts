/**
 * The control block: a small u32 GPU buffer per generating sequence that holds every data-dependent value of a
 * generation, so the CPU can encode whole generations without reading anything back.
 *
 * Conventions: `seq` (a u32 buffer of token ids by position) holds the sequence; positions < LEN have their K/V in
 * every cache; seq[LEN] is the last emitted token, not yet processed. A pass over M rows processes positions
 * POS .. POS+M-1, reading their ids from seq.
 * @module
 */

/** Slot indices of the control block, in u32 words. */
export const CTL = {
  /** Position of row 0 of the rows being processed. */
  POS: 0,
  /** Committed length: K/V valid for positions < LEN in every cache. */
  LEN: 1,
  /** 1 while the current PoE round has work to do; kernels built with GATED exit when it is 0. */
  ACTIVE: 2,
  /** Tokens emitted by this call so far. */
  OUT: 3,
  /** Tokens this call must emit. */
  MAX_OUT: 4,
  /** Rounds run (PoE). */
  ROUNDS: 5,
  /** Resampled tokens (jury argmax emitted in place of a rejected draft). */
  RESAMPLED: 6,
  /** Prompt length of the current call. */
  PROMPT: 7,
  /**
   * 0 while every pick saw finite logits; else 1 + the position of a logits row whose real ids (< vocab) held a NaN or
   * an infinity, or whose pick had no finite score to choose (set by the argmax kernel, which every pick ends in; the
   * first such row in dispatch order, any of them when one dispatch has several).
   */
  NONFINITE: 8,
  /** First of MAX_GAMMA counters: ACCEPTED_AT + i counts drafts accepted at draft position i. */
  ACCEPTED_AT: 9,
} as const;

/** Largest gamma the control block has counters for. */
export const MAX_GAMMA = 24;

/** Words in the control block. */
export const CTL_SLOTS = CTL.ACCEPTED_AT + MAX_GAMMA;

/** The position of the logits row that `ctl[NONFINITE]` records (see there), or null when every pick was finite. */
export function nonFinitePosition(ctl: Uint32Array): number | null {
  return ctl[CTL.NONFINITE] === 0 ? null : ctl[CTL.NONFINITE] - 1;
}
