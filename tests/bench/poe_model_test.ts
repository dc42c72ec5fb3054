/**
 * The PoE cost model's arithmetic on fake step costs and counters (bench/poe_model.ts), the acceptance rate and the
 * no-op round counts (bench/metrics.ts). What the validator makes of these fields: schema_test.ts.
 */

import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { poeNoopCounts } from "../../bench/metrics.ts";
import {
  acceptanceRate,
  acceptanceRateOf,
  ceilingRounds,
  expectedTokensPerRound,
  modelTpsAt,
  poeCostModel,
  ratioAtChainEfficiency,
} from "../../bench/poe_model.ts";

const COSTS = { prefill_ms: 50, draft_step_ms: 8, verify_ms: 6, accept_ms: 1, noop_round_ms: 3, sync_ms: 11 };

Deno.test("the cost model predicts a call from its step costs, rounds, no-op rounds and syncs", () => {
  const m = poeCostModel(COSTS, {
    gamma: 4,
    median_ms: 1500,
    avg_rounds_per_call: 30,
    avg_output_tokens_per_call: 128,
    sync_points_per_call: 2,
    noop_rounds_per_call: 5,
    dispatches_per_round: 1500,
  });
  assertEquals(m.round_ms, 4 * 8 + 6 + 1); // 39
  assertEquals(m.predicted_ms, 50 + 30 * 39 + 5 * 3 + 2 * 11); // 1257
  assertAlmostEquals(m.measured_over_predicted, 1500 / 1257, 1e-12);
  assertEquals(m.gated_dispatch_us, 2); // 3 ms over 1500 dispatches
  assertEquals(m.noop_fraction, 15 / 1500);
  assertEquals(m.ceiling_rounds, 32); // ceil(127 / 4): the prefill emits the first token, a full round 4
  assertEquals(m.ceiling_ms, 50 + 32 * 39 + 11);
  assertAlmostEquals(m.ceiling_tps, 1000 * 128 / 1309, 1e-12);
  assertEquals({ ...m, ...COSTS }, m, "the step costs are stored as given");
});

Deno.test("ceiling rounds, acceptance rate and the geometric model", () => {
  assertEquals(ceilingRounds(128, 1), 127);
  assertEquals(ceilingRounds(128, 8), 16);
  assertEquals(ceilingRounds(8, 3), 3);
  assertEquals(ceilingRounds(1, 4), 0);
  // 2 calls of 10 tokens, 4 resampled: 18 tokens came from rounds, 14 of them accepted drafts
  assertAlmostEquals(acceptanceRate(20, 4, 2), 14 / 18, 1e-12);
  assertEquals(acceptanceRate(20, 0, 2), 1);
  assertEquals(acceptanceRate(2, 0, 2), 0); // no round emitted anything
  // older runs: the same figure from the stored averages (resample_rate = 4 / 20, 10 tokens per call)
  assertAlmostEquals(acceptanceRateOf({ resample_rate: 0.2, avg_output_tokens_per_call: 10 }), 14 / 18, 1e-12);
  assertEquals(acceptanceRateOf({ acceptance_rate: 0.5, resample_rate: 0.2, avg_output_tokens_per_call: 10 }), 0.5);
  assertEquals(expectedTokensPerRound(1, 5), 5);
  assertEquals(expectedTokensPerRound(0, 5), 1);
  assertAlmostEquals(expectedTokensPerRound(0.5, 3), 1.75, 1e-12);
  const m = poeCostModel(COSTS, {
    gamma: 4,
    median_ms: 1000,
    avg_rounds_per_call: 40,
    avg_output_tokens_per_call: 128,
    sync_points_per_call: 1,
    noop_rounds_per_call: 0,
    dispatches_per_round: 100,
  });
  assertAlmostEquals(modelTpsAt(m, 4, 128, 1), m.ceiling_tps, 1e-9);
  assertAlmostEquals(modelTpsAt(m, 4, 128, 0), 1000 * 128 / (50 + 127 * 39 + 11), 1e-9);
  assert(modelTpsAt(m, 4, 128, 0.5) < modelTpsAt(m, 4, 128, 0.8), "more acceptance, more tokens/s");
});

Deno.test("no-op rounds: encoded minus run, per timed call, in dispatches; and the cold call's", () => {
  const call = (rounds: number, encoded: number) => ({
    output_tokens: 8,
    resampled_tokens: 1,
    rounds,
    accepted_at: [1],
    sync_points: 1,
    rounds_encoded: encoded,
  });
  assertEquals(poeNoopCounts([call(5, 5), call(5, 7)], call(5, 9), 100), {
    dispatches_per_round: 100,
    noop_rounds_per_call: 1,
    noop_dispatches_per_call: 100,
    noop_rounds_cold_call: 4,
  });
  assertThrows(() => poeNoopCounts([call(5, 4)], call(5, 5), 100), Error, "encoded 4 rounds for 5");
  assertThrows(() => poeNoopCounts([], call(5, 5), 100), Error, "no call counters");
});

Deno.test("the ratio at a chain efficiency: at the measured one it is the cost model's; the heads keep their time", () => {
  // 2 heads of 1 GB each on a 9 GB trunk: baseline 10 GB, naive 11 GB; copy 1000 GB/s (1e9 bytes a ms)
  const x = {
    copy_gbps: 1000,
    baseline_bytes: 10e9,
    naive_bytes: 11e9,
    n_heads: 2,
    naive_step_ms: 18 + 1.5, // the trunk at the chain's measured 50% (9 GB in 18 ms), the heads 1.5 ms
    costs: { draft_step_ms: 20, verify_ms: 3, accept_ms: 0.5, prefill_ms: 40, sync_ms: 10 },
    gamma: 4,
    rounds: 8,
    output_tokens: 33,
  };
  const at = ratioAtChainEfficiency(x, 0.5);
  assertAlmostEquals(at.measured_chain_efficiency, 0.5, 1e-12);
  assertAlmostEquals(at.naive_ms, 19.5, 1e-9);
  const call = 40 + 10 + 8 * (4 * 20 + 3 + 0.5); // the cost model's prediction at acceptance 1
  assertAlmostEquals(at.call_ms, call, 1e-9);
  assertAlmostEquals(at.ratio, (33 / call) * 19.5, 1e-12);
  // at 100%: draft 10 ms, trunk 9 ms, the heads' 1.5 ms unchanged
  const full = ratioAtChainEfficiency(x, 1);
  assertAlmostEquals(full.naive_ms, 10.5, 1e-9);
  assertAlmostEquals(full.call_ms, 50 + 8 * (40 + 3.5), 1e-9);
  assertAlmostEquals(full.ratio, (33 / full.call_ms) * 10.5, 1e-12);
  // the verify pass and the sync replaced
  assertAlmostEquals(ratioAtChainEfficiency(x, 1, { verifyMs: 1, syncMs: 0 }).call_ms, 40 + 8 * (40 + 1.5), 1e-9);
});
