/**
 * PoE of a run at every gamma and every spread: for each gamma whole calls (`benchmarkPoe`), then the step costs of
 * that decoder (poe_costs.ts) and its cost model (poe_model.ts); for each further spread of poe_spread_sweep the
 * synthetic ensemble is rebuilt (the previous one freed first) and measured the same way.
 * @module
 */

import type { HydraTransformer } from "../model/hydra.ts";
import type { CheckpointChatConfig } from "../poe/chat_template.ts";
import type { Tokenizer } from "../poe/tokenizer.ts";
import { type BenchConfig, poeGammas, poeSpreads } from "./config.ts";
import { benchmarkPoe, type Budgets, buildPoe, type Progress } from "./configurations.ts";
import { measurePoeStepCosts } from "./poe_costs.ts";
import { poeCostModel } from "./poe_model.ts";
import type { PoeGammaResult, PoeSpreadResult } from "./results_types.ts";

/** What every PoE measurement of a run shares. */
export interface PoeSweep {
  c: BenchConfig;
  /** The chat-templated, tokenized poe_prompt. */
  promptIds: readonly number[];
  budgets: Budgets;
  /** The configuration's PoE TTFT median (the cost model's prefill). */
  prefillMs: number;
  /** `measureSyncMs` of the run. */
  syncMs: number;
  tokenizer?: Tokenizer;
  chat?: CheckpointChatConfig;
  progress: Progress;
}

/** The PoE decoder options of a run at `gamma`. */
export function poeOptionsOf(c: BenchConfig, gamma: number): Parameters<typeof buildPoe>[1] {
  return { gamma, beta: c.poe_beta, temperature: c.poe_temperature, maxNewTokens: c.poe_max_new_tokens, seed: c.seed };
}

/** PoE on `model` at every gamma of the run, ascending; `label` prefixes the log lines (e.g. "spread 0, "). */
export async function measurePoeGammas(model: HydraTransformer, s: PoeSweep, label = ""): Promise<PoeGammaResult[]> {
  const { c } = s;
  const out: PoeGammaResult[] = [];
  for (const gamma of poeGammas(c)) {
    const poe = buildPoe(model, poeOptionsOf(c, gamma), s.tokenizer, s.chat);
    try {
      const r = await benchmarkPoe(poe, s.promptIds, s.budgets);
      const costs = await measurePoeStepCosts(poe, s.promptIds, { prefill_ms: s.prefillMs, sync_ms: s.syncMs });
      const m = poeCostModel(costs, r);
      out.push({ ...r, cost_model: m });
      s.progress(
        `${label}gamma ${gamma}: ${r.median_ms.toFixed(1)} ms/call (wall), ${
          r.avg_rounds_per_call.toFixed(1)
        } rounds, resample rate ${r.resample_rate.toFixed(2)}, effective ${
          r.effective_tps.toFixed(1)
        } tok/s, user-visible ${r.user_visible_tps.toFixed(1)} tok/s, ${r.sync_points_per_call} syncs/call${
          r.encode_ms_per_call === undefined ? "" : `, CPU encode ${r.encode_ms_per_call.toFixed(1)} ms/call`
        }`,
      );
      s.progress(
        `${label}gamma ${gamma} model: round ${m.round_ms.toFixed(2)} ms (${gamma} x draft ${
          m.draft_step_ms.toFixed(2)
        } + verify ${m.verify_ms.toFixed(2)} + accept ${m.accept_ms.toFixed(2)}), sync ${
          m.sync_ms.toFixed(1)
        } ms; predicted ${m.predicted_ms.toFixed(1)} ms/call, measured/predicted ${
          m.measured_over_predicted.toFixed(2)
        }; no-op rounds ${r.noop_rounds_per_call.toFixed(1)}/call (cold call ${r.noop_rounds_cold_call}), ${
          (100 * m.noop_fraction).toFixed(1)
        }% of a call; ceiling ${m.ceiling_tps.toFixed(1)} tok/s at acceptance 1`,
      );
    } finally {
      poe.destroy();
    }
  }
  return out;
}

/**
 * PoE at the spreads of poe_spread_sweep other than synthetic_spread, ascending: `build(spread)` makes each synthetic
 * ensemble after the previous one is freed. Empty when there are none.
 */
export async function measurePoeSpreads(
  build: (spread: number) => Promise<HydraTransformer>,
  s: PoeSweep,
): Promise<PoeSpreadResult[]> {
  const out: PoeSpreadResult[] = [];
  for (const spread of poeSpreads(s.c).slice(1)) {
    const model = await build(spread);
    try {
      out.push({ spread, gammas: await measurePoeGammas(model, s, `spread ${spread}, `) });
    } finally {
      model.destroy();
    }
  }
  return out;
}
