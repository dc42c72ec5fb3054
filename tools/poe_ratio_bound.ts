/**
 * What bounds PoE's ratio to hydra_naive (ARCHITECTURE.md, "What bounds PoE's ratio to hydra_naive"), from a run's
 * results.json: PoE's user-visible tokens/s over hydra_naive's, at the gamma's measured rounds (spread 0: every draft
 * accepted), if the one-chain passes (a draft step, hydra_naive's trunk) streamed their weights at a given share of
 * copy, everything else as measured
 * (`ratioAtChainEfficiency`, bench/poe_model.ts). Columns: as measured; with the verify pass as efficient as
 * hydra_naive's heads in lock-step; with a sync of `--sync-ms` (default 0.044 ms, Dawn's mapAsync round trip on the
 * H200) instead of the measured one; both.
 *
 *   deno run -A tools/poe_ratio_bound.ts results/2026-11-30_run15 [--spread 0] [--gamma 4] [--sync-ms 0.044]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { type ChainRatioInputs, ratioAtChainEfficiency } from "../bench/poe_model.ts";
import type { ResultsDocument } from "../bench/results_types.ts";
import { readRun } from "../bench/run_folder.ts";
import { UserError } from "../common/errors.ts";

const USAGE = "Usage: deno run -A tools/poe_ratio_bound.ts RUN_DIR [--spread 0] [--gamma 4] [--sync-ms 0.044]";

/** The measured figures of `doc` that `ratioAtChainEfficiency` needs, at `spread` and `gamma`. */
export function chainRatioInputs(doc: ResultsDocument, spread: number, gamma: number): ChainRatioInputs {
  const naive = doc.configurations["hydra_naive"], poe = doc.configurations["hydra_poe"];
  const roof = doc.environment.roofline;
  if (naive?.decode?.median_ms === undefined || !poe || !roof.baseline || !roof.hydra_naive) {
    throw new UserError("The run has no hydra_naive decode, hydra_poe or baseline roofline; use a full 7B or 1B run.");
  }
  const atSpread = spread === doc.config.synthetic_spread
    ? poe.poe
    : (poe.poe_spreads ?? []).find((s) => s.spread === spread)?.gammas;
  const g = atSpread?.find((x) => x.gamma === gamma);
  if (!g?.cost_model) throw new UserError(`The run has no PoE cost model at spread ${spread} and gamma ${gamma}.`);
  return {
    copy_gbps: doc.environment.copy_bandwidth_gbps,
    baseline_bytes: roof.baseline.weight_bytes_per_step,
    naive_bytes: roof.hydra_naive.weight_bytes_per_step,
    n_heads: doc.config.n_heads,
    naive_step_ms: naive.decode.median_ms,
    costs: g.cost_model,
    gamma,
    rounds: g.avg_rounds_per_call,
    output_tokens: g.avg_output_tokens_per_call,
  };
}

if (import.meta.main) {
  const a = parseArgs(Deno.args, { string: ["spread", "gamma", "sync-ms"] });
  try {
    if (a._.length !== 1) throw new UserError(`Pass one run folder. ${USAGE}`);
    const doc = await readRun(String(a._[0]));
    const [spread, gamma, syncMs] = [Number(a.spread ?? 0), Number(a.gamma ?? 4), Number(a["sync-ms"] ?? 0.044)];
    const x = chainRatioInputs(doc, spread, gamma);
    const at = ratioAtChainEfficiency(x, 1);
    const verifyLockstep = (x.n_heads - 1) * at.head_bytes / (x.copy_gbps * 1e6 * at.heads_efficiency);
    const pct = (v: number) => `${(100 * v).toFixed(0)}%`;
    console.log(
      `${doc.run}: spread ${spread}, gamma ${gamma}; one chain measured at ${pct(at.measured_chain_efficiency)} of ` +
        `copy, hydra_naive's heads in lock-step at ${pct(at.heads_efficiency)}, verify pass ${
          x.costs.verify_ms.toFixed(2)
        } ms (${verifyLockstep.toFixed(2)} ms at the heads' efficiency), sync ${x.costs.sync_ms.toFixed(2)} ms`,
    );
    console.log(
      `\n| chain | hydra_naive step | as measured | verify ${
        verifyLockstep.toFixed(2)
      } ms | sync ${syncMs} ms | both |`,
    );
    console.log("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const e of [at.measured_chain_efficiency, 0.75, 0.8, 0.85, 0.9, 0.95, 1]) {
      const r = [{}, { verifyMs: verifyLockstep }, { syncMs }, { verifyMs: verifyLockstep, syncMs }].map((o) =>
        ratioAtChainEfficiency(x, e, o)
      );
      console.log(
        `| ${pct(e)} | ${r[0].naive_ms.toFixed(3)} ms | ${r.map((v) => `${v.ratio.toFixed(3)}x`).join(" | ")} |`,
      );
    }
  } catch (e) {
    if (!(e instanceof UserError || e instanceof Deno.errors.NotFound)) throw e;
    console.error(`error: ${e.message}`);
    Deno.exit(2);
  }
}
