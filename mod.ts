/**
 * Public API of the OLMo-2 / Hydra / PoE inference benchmark suite.
 * @module
 */

export * from "./kernels/runtime.ts";
export { PassTimer } from "./kernels/timing.ts";
export * from "./kernels/bf16.ts";
export { CTL, CTL_SLOTS, MAX_GAMMA } from "./kernels/control/ctl.ts";
export * from "./kernels/norm/rmsnorm.ts";
export * from "./kernels/matmul/matvec.ts";
