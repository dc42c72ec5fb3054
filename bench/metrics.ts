/**
 * The derived metrics of design.md section 5, computed in one place from the harness's stats and the counters the
 * GPU keeps per call, so that results.json's numbers follow the formulas its readers were promised.
 * @module
 */

import type { DecodePosition, PoeGammaResult, TimedStats } from "./results_types.ts";
import { acceptanceRate } from "./poe_model.ts";

/** One decode position's entry: the stats plus tokens/s = 1000 / median_ms. */
export function decodePosition(position: number, stats: TimedStats): DecodePosition {
  if (!Number.isInteger(position) || position < 0) throw new Error(`decodePosition: bad position ${position}`);
  return { ...pickStats(stats), position, tokens_per_s: 1000 / stats.median_ms };
}

/** The counters of one PoE call, read from its control block at the end of the call. */
export interface PoeCallCounts {
  /** Tokens emitted (CTL.OUT). */
  output_tokens: number;
  /** Tokens that are the jury's argmax at a rejected draft (CTL.RESAMPLED). */
  resampled_tokens: number;
  /** Draft/verify rounds (CTL.ROUNDS). */
  rounds: number;
  /** Length gamma: drafts accepted at each draft position, summed over the call's rounds (CTL.ACCEPTED_AT + i). */
  accepted_at: number[];
  /** CPU waits on the GPU during the call. */
  sync_points: number;
  /** Rounds encoded, the gated-off ones after the call's end included (poe/poe.ts). */
  rounds_encoded?: number;
  /** CPU milliseconds spent encoding and submitting the call's command buffers (poe/poe.ts). */
  encode_ms?: number;
}

/**
 * PoE at one gamma from the harness's stats over whole calls and the counters of those calls (any number >= 1; the
 * averages are over them). accepted = output - resampled per call (design.md section 4); acceptance at draft
 * position i = accepted drafts at i / rounds.
 */
export function poeGammaResult(gamma: number, stats: TimedStats, calls: readonly PoeCallCounts[]): PoeGammaResult {
  if (calls.length === 0) throw new Error("poeGammaResult: no call counters");
  let output = 0, resampled = 0, rounds = 0, syncs = 0, encode = 0;
  const acceptedAt = new Array<number>(gamma).fill(0);
  for (const c of calls) {
    if (c.accepted_at.length !== gamma) {
      throw new Error(`poeGammaResult: a call has ${c.accepted_at.length} acceptance counters for gamma ${gamma}`);
    }
    if (c.resampled_tokens > c.output_tokens) throw new Error("poeGammaResult: more resampled than output tokens");
    output += c.output_tokens;
    resampled += c.resampled_tokens;
    rounds += c.rounds;
    syncs += c.sync_points;
    encode += c.encode_ms ?? NaN;
    c.accepted_at.forEach((a, i) => acceptedAt[i] += a);
  }
  const n = calls.length;
  const avgAccepted = (output - resampled) / n;
  const avgOutput = output / n;
  const { n: nCalls, ...s } = pickStats(stats);
  return {
    gamma,
    ...s,
    n_calls: nCalls,
    avg_accepted_tokens_per_call: avgAccepted,
    avg_output_tokens_per_call: avgOutput,
    avg_rounds_per_call: rounds / n,
    resample_rate: output > 0 ? resampled / output : 0,
    effective_tps: 1000 * avgAccepted / stats.median_ms,
    user_visible_tps: 1000 * avgOutput / stats.median_ms,
    acceptance_per_position: acceptedAt.map((a) => rounds > 0 ? a / rounds : 0),
    sync_points_per_call: syncs / n,
    acceptance_rate: acceptanceRate(output, resampled, n),
    ...(Number.isFinite(encode) ? { encode_ms_per_call: encode / n } : {}),
  };
}

/** The no-op round fields of a gamma result. */
export type PoeNoopCounts = Required<
  Pick<
    PoeGammaResult,
    "dispatches_per_round" | "noop_rounds_per_call" | "noop_dispatches_per_call" | "noop_rounds_cold_call"
  >
>;

/**
 * The no-op round counts of a gamma: the mean over the timed `calls` of rounds encoded but gated off, those in
 * dispatches, and the no-op rounds of `coldCall` (the decoder's first call, whose first batch had no estimate).
 */
export function poeNoopCounts(
  calls: readonly PoeCallCounts[],
  coldCall: PoeCallCounts,
  dispatchesPerRound: number,
): PoeNoopCounts {
  const noop = (c: PoeCallCounts) => {
    if (c.rounds_encoded === undefined || c.rounds_encoded < c.rounds) {
      throw new Error(`poeNoopCounts: a call encoded ${c.rounds_encoded} rounds for ${c.rounds} run`);
    }
    return c.rounds_encoded - c.rounds;
  };
  if (calls.length === 0) throw new Error("poeNoopCounts: no call counters");
  const perCall = calls.reduce((s, c) => s + noop(c), 0) / calls.length;
  return {
    dispatches_per_round: dispatchesPerRound,
    noop_rounds_per_call: perCall,
    noop_dispatches_per_call: perCall * dispatchesPerRound,
    noop_rounds_cold_call: noop(coldCall),
  };
}

/** Tokens/s of a step that only streams `weightBytesPerStep` at `copyBandwidthGBps` (GB/s, 1e9 bytes/s). */
export function rooflineTps(copyBandwidthGBps: number, weightBytesPerStep: number): number {
  if (!(weightBytesPerStep > 0)) throw new Error(`rooflineTps: weight bytes must be > 0, got ${weightBytesPerStep}`);
  return copyBandwidthGBps * 1e9 / weightBytesPerStep;
}

/** Only the TimedStats fields of `s` (drops the harness's estimate_ms / warmup_n and anything else). */
export function pickStats(s: TimedStats): TimedStats {
  return {
    median_ms: s.median_ms,
    mean_ms: s.mean_ms,
    p10_ms: s.p10_ms,
    p90_ms: s.p90_ms,
    min_ms: s.min_ms,
    max_ms: s.max_ms,
    raw_ms: s.raw_ms,
    filtered_ms: s.filtered_ms,
    n: s.n,
    clock: s.clock,
    ...(s.discarded_ms ? { discarded_ms: s.discarded_ms } : {}),
  };
}
