/**
 * Measures what the PoE cost model (bench/poe_model.ts) is made of: the GPU time of each part of a round (a draft
 * step, the verify pass, the accept kernels) and of a whole round gated off, with timestamp queries around replays of
 * the decoder's own recorded dispatch lists (kernels/timing.ts `timeDispatches`), and the wall time of one sync.
 *
 * Every replay starts from the control block a prefill of the benchmark's prompt leaves (copied back before each
 * replay, since the parts move POS, LEN and the counters), so each part runs at the position of a call's first round.
 * `roundStates` makes those control blocks; `deno task profile --config poe_verify` replays the verify part from them.
 * @module
 */

import { CTL } from "../kernels/control/ctl.ts";
import type { Dispatch, Gpu } from "../kernels/runtime.ts";
import { timeDispatches } from "../kernels/timing.ts";
import type { PoE } from "../poe/poe.ts";
import type { PoeStepCosts } from "./results_types.ts";

/** Replays per timed part; the median is kept (a replay of the 7B round is ~40 ms, of a draft step ~8 ms). */
export const COST_REPS = 9;

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median wall ms of `reps` readbacks of 16 bytes with nothing queued: Deno's fixed cost of one sync (~11 ms). */
export async function measureSyncMs(gpu: Gpu, reps = 5): Promise<number> {
  const buffer = gpu.buffer("sync probe", 16);
  await gpu.finish();
  const ms: number[] = [];
  try {
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      await gpu.read(buffer);
      ms.push(performance.now() - t0);
    }
  } finally {
    buffer.destroy();
  }
  return median(ms);
}

/**
 * The control blocks a round's parts are replayed from: `active`, the one a prefill of `promptIds` leaves (POS = LEN =
 * the prompt length, ACTIVE set while the call has tokens to emit, so the gated kernels run), and `off`, the same
 * gated off (the state after a call's end). `restore(state)` records the copy of one into the model's control block,
 * to put before every replay: the parts move POS, LEN and the counters. The prefill is queued, not awaited.
 */
export interface RoundStates {
  active: GPUBuffer;
  off: GPUBuffer;
  restore(state: GPUBuffer): (encoder: GPUCommandEncoder) => void;
  destroy(): void;
}

/** Prefills `promptIds` on `poe` (fresh caches) and keeps the control blocks of RoundStates. */
export function roundStates(poe: PoE, promptIds: readonly number[]): RoundStates {
  const gpu = poe.gpu, ctl = poe.model.ctl;
  const active = gpu.buffer("ctl after prefill", ctl.size), off = gpu.buffer("ctl gated off", ctl.size);
  try {
    const encoder = gpu.device.createCommandEncoder({ label: "poe round states: prefill" });
    poe.encodePrefill(encoder, promptIds);
    encoder.copyBufferToBuffer(ctl, 0, active, 0, ctl.size);
    encoder.copyBufferToBuffer(ctl, 0, off, 0, ctl.size);
    gpu.device.queue.submit([encoder.finish()]);
    gpu.write(off, Uint32Array.of(0), CTL.ACTIVE * 4); // the same state after the call's end
  } catch (e) {
    active.destroy();
    off.destroy();
    throw e;
  }
  return {
    active,
    off,
    restore: (state) => (e) => e.copyBufferToBuffer(state, 0, ctl, 0, ctl.size),
    destroy() {
      active.destroy();
      off.destroy();
    },
  };
}

/**
 * The step costs of `poe` on `promptIds` (prefill_ms and sync_ms are given: the configuration's PoE TTFT and
 * `measureSyncMs`). Runs a prefill, then times each part of a round COST_REPS times from the control block it left.
 */
export async function measurePoeStepCosts(
  poe: PoE,
  promptIds: readonly number[],
  given: Pick<PoeStepCosts, "prefill_ms" | "sync_ms">,
): Promise<PoeStepCosts> {
  const gpu = poe.gpu;
  const states = roundStates(poe, promptIds);
  try {
    const time = async (dispatches: readonly Dispatch[], state = states.active) =>
      median(await timeDispatches(gpu, dispatches, COST_REPS, states.restore(state)));
    const parts = poe.roundParts;
    await timeDispatches(gpu, poe.round, 2, states.restore(states.active)); // warm-up: the GPU at its clocks
    const draftStep = await time(parts.draftStep);
    return {
      prefill_ms: given.prefill_ms,
      draft_step_ms: draftStep,
      // pipelined, what verification adds to a round: the last draft step and the verify part together, less a step
      verify_ms: parts.pipelined
        ? await time([...parts.draft.at(-1)!, ...parts.verify]) - draftStep
        : await time(parts.verify),
      accept_ms: await time([...parts.start, ...parts.accept]),
      noop_round_ms: await time(poe.round, states.off),
      sync_ms: given.sync_ms,
    };
  } finally {
    states.destroy();
  }
}
