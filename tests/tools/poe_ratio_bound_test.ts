/**
 * tools/poe_ratio_bound.ts on a committed 7B run: at the chain efficiency the run measured, the bound is the run's own
 * cost-model ceiling over hydra_naive's decode rate, and a run without PoE is one sentence.
 */

import { assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { readRun } from "../../bench/run_folder.ts";
import { ratioAtChainEfficiency } from "../../bench/poe_model.ts";
import { chainRatioInputs } from "../../tools/poe_ratio_bound.ts";
import { UserError } from "../../common/errors.ts";

const RUN = new URL("../../results/2026-11-30_run15", import.meta.url).pathname;

Deno.test("the ratio bound at the measured chain is the run's PoE ceiling over hydra_naive's tokens/s", async () => {
  const doc = await readRun(RUN);
  const x = chainRatioInputs(doc, 0, 4);
  const r = ratioAtChainEfficiency(x, ratioAtChainEfficiency(x, 1).measured_chain_efficiency);
  const g = doc.configurations.hydra_poe!.poe_spreads!.find((s) => s.spread === 0)!.gammas.find((v) => v.gamma === 4)!;
  assertEquals(g.avg_rounds_per_call, g.cost_model!.ceiling_rounds); // spread 0: every draft accepted
  assertAlmostEquals(r.ratio, g.cost_model!.ceiling_tps / doc.configurations.hydra_naive!.decode!.tokens_per_s!, 1e-9);
  assertAlmostEquals(r.naive_ms, doc.configurations.hydra_naive!.decode!.median_ms, 1e-9);
  assertThrows(() => chainRatioInputs(doc, 0, 3), UserError, "gamma 3");
});
