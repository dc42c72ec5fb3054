/**
 * Helpers the TypeScript generators of WGSL kernels share (the kernels that name each per-thread value as a register:
 * matvec, both GEMMs, decode and prefill attention).
 * @module
 */

/** 0, 1, .., n - 1: the indices a generator unrolls over (rows, vec4, unrolled passes). */
export const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
