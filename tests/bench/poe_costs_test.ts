/**
 * The step costs of the PoE cost model on the tiny model (bench/poe_costs.ts): every part is timed, the sync costs
 * Deno's floor, and timing the parts leaves the decoder's next call as it would have been.
 */

import { gpuTest } from "../../kernels/testing/harness.ts";
import { PRESETS } from "../../model/config.ts";
import { buildHydraModel } from "../../bench/configurations.ts";
import { measurePoeStepCosts, measureSyncMs } from "../../bench/poe_costs.ts";
import { PoE } from "../../poe/poe.ts";

gpuTest(
  "PoE step costs on the tiny model: every part timed, and the next call unchanged by the timing",
  async (gpu) => {
    const model = await buildHydraModel(gpu, PRESETS.tiny, {
      nHeads: 3,
      headsDepth: 2,
      maxPos: 40,
      maxRows: 8,
      maxLogitRows: 3,
      weights: { kind: "synthetic", seed: 9 },
    });
    const poe = new PoE(model, { gamma: 3, beta: 1, temperature: 0, maxNewTokens: 10 });
    try {
      const prompt = [5, 17, 400, 2, 99, 31];
      const before = await poe.generateIds(prompt);
      const sync = await measureSyncMs(gpu, 3);
      // Deno waits for the queue, then sleeps ~10 ms, on every readback (design.md section 2)
      if (!(sync > 5 && sync < 1000)) throw new Error(`a readback took ${sync} ms`);
      const costs = await measurePoeStepCosts(poe, prompt, { prefill_ms: 1.5, sync_ms: sync });
      for (const [k, v] of Object.entries(costs)) {
        if (!(Number.isFinite(v) && v > 0)) throw new Error(`${k} = ${v}: ${JSON.stringify(costs)}`);
      }
      if (costs.prefill_ms !== 1.5 || costs.sync_ms !== sync) throw new Error("the given costs were not kept");
      const after = await poe.generateIds(prompt);
      if (after.ids.join() !== before.ids.join() || after.rounds !== before.rounds) {
        throw new Error(`after timing: ${JSON.stringify(after)}; before: ${JSON.stringify(before)}`);
      }
    } finally {
      poe.destroy();
      model.destroy();
    }
  },
);
