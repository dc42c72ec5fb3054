/**
 * Tests of the control-block step kernel (`step.ts`): every slot after each operation against the reference,
 * exactly, and mutants.
 * @module
 */

import { CTL, CTL_SLOTS } from "./ctl.ts";
import { ControlOp, controlStep, controlStepKernel, controlStepReference } from "./step.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, gpuTest, mutate, Rng } from "../testing/harness.ts";

/** Runs `op` on a random control block and checks every slot against the reference (exact: integer updates). */
async function checkStep(
  gpu: Gpu,
  op: number,
  opts: { rows?: number; gated?: boolean; active?: number; kernel?: Kernel; nearEnd?: boolean } = {},
) {
  const rng = new Rng(op * 31 + (opts.rows ?? 1));
  const init = new Uint32Array(CTL_SLOTS);
  for (let i = 0; i < CTL_SLOTS; i++) init[i] = rng.int(1000);
  init[CTL.ACTIVE] = opts.active ?? 1;
  init[CTL.MAX_OUT] = opts.nearEnd ? init[CTL.OUT] + 1 : init[CTL.OUT] + 50;
  const ctl = gpu.upload("ctl", init);
  gpu.run([controlStep(gpu, { ctl, op, rows: opts.rows, gated: opts.gated }, opts.kernel)]);
  const got = await gpu.readU32(ctl, CTL_SLOTS);
  ctl.destroy();
  const want = controlStepReference(init, op, opts.rows, opts.gated);
  for (let i = 0; i < CTL_SLOTS; i++) {
    if (got[i] !== want[i]) {
      throw new Error(`control op ${op} ${JSON.stringify(opts)}: slot ${i} is ${got[i]}, want ${want[i]}`);
    }
  }
  return got;
}

gpuTest("control steps update the control block as specified", async (gpu) => {
  for (const op of Object.values(ControlOp)) {
    await checkStep(gpu, op, { rows: 7 });
    await checkStep(gpu, op, { rows: 1, nearEnd: true });
  }
  const after = await checkStep(gpu, ControlOp.ADVANCE, { nearEnd: true });
  if (after[CTL.ACTIVE] !== 0) throw new Error("ADVANCE to MAX_OUT must clear ACTIVE");
});

gpuTest("gated control steps do nothing while ACTIVE is 0", async (gpu) => {
  for (const op of Object.values(ControlOp)) await checkStep(gpu, op, { gated: true, active: 0, rows: 3 });
});

gpuTest("control step checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["ctl[CTL_LEN] = ctl[CTL_POS] + ROWS;", "ctl[CTL_LEN] = ctl[CTL_POS] + ROWS - 1u;"],
    ["select(0u, 1u, ctl[CTL_OUT] < ctl[CTL_MAX_OUT]);\n    }\n    case 1u", "1u;\n    }\n    case 1u"],
    ["case 1u: { ctl[CTL_POS] += 1u; }", "case 1u: { ctl[CTL_LEN] += 1u; }"],
  ];
  for (const [from, to] of cases) {
    const kernel = mutate(controlStepKernel, from, to);
    await assertCaught(async () => {
      for (const op of Object.values(ControlOp)) await checkStep(gpu, op, { rows: 5, kernel, nearEnd: true });
    }, `${from} -> ${to}`);
  }
});
