/**
 * The control-block updates between the steps of a generation, one thread on the GPU so the CPU never needs to know
 * a position (see ctl.ts for the slots):
 *   ADVANCE        after a greedy step wrote seq[POS + 1]: LEN += 1, POS = LEN, OUT += 1, ACTIVE = OUT < MAX_OUT
 *   NEXT_POS       after a draft step wrote seq[POS + 1]: POS += 1 (LEN stays: drafts are not committed)
 *   POS_TO_LEN     POS = LEN (start of a PoE round and of its verification)
 *   AFTER_PREFILL  after a prefill of ROWS positions from POS that wrote seq[POS + ROWS]:
 *                  LEN = POS + ROWS, POS = LEN, OUT += 1, ACTIVE = OUT < MAX_OUT
 * @module
 */

import type { Dispatch, Gpu, Kernel } from "../runtime.ts";

/** The operations of `controlStep`. */
export const ControlOp = { ADVANCE: 0, NEXT_POS: 1, POS_TO_LEN: 2, AFTER_PREFILL: 3 } as const;

/** The WGSL kernel. */
export const controlStepKernel: Kernel = {
  name: "control_step",
  source: /* wgsl */ `
// bindings: 0 ctl [CTL_SLOTS] u32, read_write (one thread; no barrier, so the gate may read the writable block)
override OP: u32;
override ROWS: u32 = 1u;
@group(0) @binding(0) var<storage, read_write> ctl: array<u32>;

@compute @workgroup_size(1)
fn main() {
  if (gated_off()) { return; }
  switch OP {
    case 0u: { // ADVANCE
      ctl[CTL_LEN] += 1u;
      ctl[CTL_POS] = ctl[CTL_LEN];
      ctl[CTL_OUT] += 1u;
      ctl[CTL_ACTIVE] = select(0u, 1u, ctl[CTL_OUT] < ctl[CTL_MAX_OUT]);
    }
    case 1u: { ctl[CTL_POS] += 1u; } // NEXT_POS
    case 2u: { ctl[CTL_POS] = ctl[CTL_LEN]; } // POS_TO_LEN
    case 3u: { // AFTER_PREFILL
      ctl[CTL_LEN] = ctl[CTL_POS] + ROWS;
      ctl[CTL_POS] = ctl[CTL_LEN];
      ctl[CTL_OUT] += 1u;
      ctl[CTL_ACTIVE] = select(0u, 1u, ctl[CTL_OUT] < ctl[CTL_MAX_OUT]);
    }
    default: {}
  }
}
`,
};

/** Records one control-block update (load time). `rows` is the prefill length for AFTER_PREFILL. */
export function controlStep(
  gpu: Gpu,
  a: { ctl: GPUBuffer; op: number; rows?: number; gated?: boolean },
  kernel: Kernel = controlStepKernel,
): Dispatch {
  return gpu.dispatch(kernel, { OP: a.op, ROWS: a.rows ?? 1, GATED: a.gated ?? false }, [a.ctl], 1);
}

/** CPU reference: the control block after `op` (a new array). */
export function controlStepReference(ctl: Uint32Array, op: number, rows = 1, gated = false): Uint32Array {
  const c = Uint32Array.from(ctl);
  const [POS, LEN, ACTIVE, OUT, MAX_OUT] = [0, 1, 2, 3, 4];
  if (gated && c[ACTIVE] === 0) return c;
  if (op === ControlOp.ADVANCE) {
    c[LEN] += 1;
    c[POS] = c[LEN];
    c[OUT] += 1;
    c[ACTIVE] = c[OUT] < c[MAX_OUT] ? 1 : 0;
  } else if (op === ControlOp.NEXT_POS) {
    c[POS] += 1;
  } else if (op === ControlOp.POS_TO_LEN) {
    c[POS] = c[LEN];
  } else if (op === ControlOp.AFTER_PREFILL) {
    c[LEN] = c[POS] + rows;
    c[POS] = c[LEN];
    c[OUT] += 1;
    c[ACTIVE] = c[OUT] < c[MAX_OUT] ? 1 : 0;
  }
  return c;
}
