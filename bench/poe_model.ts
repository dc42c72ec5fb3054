/**
 * The PoE cost model (ARCHITECTURE.md, "PoE cost model") and the acceptance arithmetic around it: pure functions of
 * stored numbers, so results.json, the validator and the report (this module is bundled into report.html with
 * charts.ts) compute every figure the same way.
 *
 * A call of N tokens = one prefill (it emits the first token) + rounds, each gamma draft steps, one verify pass and
 * the accept kernels, + the no-op rounds encoded after the call's end (gated off) + its sync points:
 *   predicted_ms = prefill + rounds * (gamma * draft_step + verify + accept) + noop_rounds * noop_round + syncs * sync
 * with the rounds, no-op rounds and syncs measured over the timed calls. A round that accepts every draft emits gamma
 * tokens (poe_accept.ts), so at acceptance 1 a call needs ceil((N - 1) / gamma) rounds, one sync and no no-op round.
 *
 * Acceptance as one number: under the geometric model each draft of a round is accepted with probability alpha,
 * independently, until the first rejection. Each round's emitted tokens are its accepted drafts plus one resampled
 * token at its first rejection, so the estimate of alpha (accepted / judged drafts) is 1 - resampled / (N - 1), and a
 * round is expected to emit E(alpha) = 1 + alpha + ... + alpha^(gamma - 1) tokens. The ceiling curve of the report is
 * the model at (N - 1) / E(alpha) rounds (at least the ceiling_rounds), one sync and no no-op round.
 * @module
 */

import type { PoeCostModel, PoeGammaResult, PoeStepCosts } from "./results_types.ts";

/** Rounds a call of `outputTokens` tokens needs when every draft is accepted (the prefill emits the first token). */
export function ceilingRounds(outputTokens: number, gamma: number): number {
  return Math.ceil(Math.max(0, outputTokens - 1) / gamma);
}

/**
 * Draft acceptance rate from totals over calls: 1 - resampled / (output - calls), i.e. accepted drafts / judged
 * drafts; 0 when no round emitted anything.
 */
export function acceptanceRate(outputTokens: number, resampledTokens: number, calls: number): number {
  const fromRounds = outputTokens - calls;
  return fromRounds > 0 ? 1 - resampledTokens / fromRounds : 0;
}

/** The stored acceptance rate of a gamma result, or (older runs) the same figure from its stored averages. */
export function acceptanceRateOf(
  g: Pick<PoeGammaResult, "acceptance_rate" | "resample_rate" | "avg_output_tokens_per_call">,
): number {
  if (g.acceptance_rate !== undefined) return g.acceptance_rate;
  // per call: resampled = resample_rate * avg_output, tokens emitted by rounds = avg_output - 1
  return acceptanceRate(g.avg_output_tokens_per_call, g.resample_rate * g.avg_output_tokens_per_call, 1);
}

/** Expected tokens one round emits when each draft is accepted with probability `alpha`: sum of alpha^i, i < gamma. */
export function expectedTokensPerRound(alpha: number, gamma: number): number {
  let sum = 0, term = 1;
  for (let i = 0; i < gamma; i++) {
    sum += term;
    term *= alpha;
  }
  return sum;
}

/** The counters of a gamma result the cost model reads (the no-op ones are absent in older runs). */
export type PoeModelCounts =
  & Pick<
    PoeGammaResult,
    "gamma" | "median_ms" | "avg_rounds_per_call" | "avg_output_tokens_per_call" | "sync_points_per_call"
  >
  & { noop_rounds_per_call: number; dispatches_per_round: number };

/** The cost model of one gamma from the measured step costs and the gamma's call counters. */
export function poeCostModel(costs: PoeStepCosts, g: PoeModelCounts): PoeCostModel {
  const round_ms = g.gamma * costs.draft_step_ms + costs.verify_ms + costs.accept_ms;
  const predicted_ms = costs.prefill_ms + g.avg_rounds_per_call * round_ms +
    g.noop_rounds_per_call * costs.noop_round_ms + g.sync_points_per_call * costs.sync_ms;
  const ceiling_rounds = ceilingRounds(g.avg_output_tokens_per_call, g.gamma);
  const ceiling_ms = costs.prefill_ms + ceiling_rounds * round_ms + costs.sync_ms;
  return {
    ...costs,
    round_ms,
    gated_dispatch_us: 1000 * costs.noop_round_ms / g.dispatches_per_round,
    predicted_ms,
    measured_over_predicted: g.median_ms / predicted_ms,
    noop_fraction: g.noop_rounds_per_call * costs.noop_round_ms / g.median_ms,
    ceiling_rounds,
    ceiling_ms,
    ceiling_tps: 1000 * g.avg_output_tokens_per_call / ceiling_ms,
  };
}

/**
 * User-visible tokens/s the cost model `m` predicts for calls of `outputTokens` tokens at acceptance rate `alpha`
 * (geometric model): (N - 1) / E(alpha) rounds, at least ceiling_rounds, one sync, no no-op round. At alpha = 1 it is
 * `m.ceiling_tps`.
 */
export function modelTpsAt(
  m: Pick<PoeCostModel, "prefill_ms" | "round_ms" | "sync_ms">,
  gamma: number,
  outputTokens: number,
  alpha: number,
): number {
  const rounds = Math.max(
    ceilingRounds(outputTokens, gamma),
    Math.max(0, outputTokens - 1) / expectedTokensPerRound(alpha, gamma),
  );
  return 1000 * outputTokens / (m.prefill_ms + rounds * m.round_ms + m.sync_ms);
}

/** The measured figures `ratioAtChainEfficiency` starts from (results.json: environment, baseline, hydra_naive, PoE). */
export interface ChainRatioInputs {
  /** Copy bandwidth, GB/s. */
  copy_gbps: number;
  /** Weight bytes one baseline step reads: a PoE draft step (trunk + one head). */
  baseline_bytes: number;
  /** Weight bytes one hydra_naive step reads (trunk + every head). */
  naive_bytes: number;
  /** Heads of the Hydra (hydra_naive runs them all, a PoE verification all but the draft head). */
  n_heads: number;
  /** hydra_naive's measured decode step, ms. */
  naive_step_ms: number;
  /** The gamma's cost model (its measured draft step, verify pass, accept, prefill and sync) and rounds per call. */
  costs: Pick<PoeCostModel, "draft_step_ms" | "verify_ms" | "accept_ms" | "prefill_ms" | "sync_ms">;
  gamma: number;
  rounds: number;
  output_tokens: number;
}

/**
 * PoE's user-visible tokens/s over hydra_naive's tokens/s (at the measured rounds) if every one-chain pass (a draft
 * step, and hydra_naive's trunk) streamed its weights at `chainEfficiency` of copy, all else as measured: hydra_naive's
 * heads, recorded in lock-step, keep their measured time, and `verifyMs` / `syncMs` replace the measured verify pass and
 * sync when given. The one-chain efficiency measured is baseline_bytes / (copy * draft_step). This is what bounds the
 * ratio (ARCHITECTURE.md, "What bounds PoE's ratio to hydra_naive"): improving the chain speeds hydra_naive's trunk too.
 */
export function ratioAtChainEfficiency(
  x: ChainRatioInputs,
  chainEfficiency: number,
  o: { verifyMs?: number; syncMs?: number } = {},
): {
  ratio: number;
  naive_ms: number;
  call_ms: number;
  measured_chain_efficiency: number;
  /** hydra_naive's heads' share of its step, ms, and the efficiency they stream at (lock-step). */
  heads_ms: number;
  heads_efficiency: number;
  /** Weight bytes of one head. */
  head_bytes: number;
} {
  const bytesPerMs = x.copy_gbps * 1e6;
  const head = (x.naive_bytes - x.baseline_bytes) / (x.n_heads - 1);
  const trunk = x.baseline_bytes - head;
  const measured = x.baseline_bytes / (bytesPerMs * x.costs.draft_step_ms);
  const headsMs = x.naive_step_ms - trunk / (bytesPerMs * measured); // hydra_naive's heads, as measured
  const naive_ms = trunk / (bytesPerMs * chainEfficiency) + headsMs;
  const draftMs = x.baseline_bytes / (bytesPerMs * chainEfficiency);
  const round = x.gamma * draftMs + (o.verifyMs ?? x.costs.verify_ms) + x.costs.accept_ms;
  const call_ms = x.costs.prefill_ms + (o.syncMs ?? x.costs.sync_ms) + x.rounds * round;
  return {
    ratio: (x.output_tokens / call_ms) / (1 / naive_ms),
    naive_ms,
    call_ms,
    measured_chain_efficiency: measured,
    heads_ms: headsMs,
    heads_efficiency: x.n_heads * head / (bytesPerMs * headsMs),
    head_bytes: head,
  };
}
