/**
 * One entry point for a bf16 linear layer y = x W^T (optionally with the SwiGLU epilogue): the matvec for up to
 * MATVEC_MAX_ROWS input rows (decode, speculative verification), the tiled GEMM above (prefill). Model code calls
 * `linear` and never chooses; every path reads the same weight layout and computes the same function
 * (`matvecReference`).
 *
 * Choices measured on an H100 at the 7B prefill shapes (M = 128, docs/PERF.md): the default 64x64 GEMM tile, or 64x32
 * (twice the workgroups) for N <= 4096; SwiGLU as a plain GEMM over the 2N gate/up rows into `scratch` followed by the
 * `swiglu` pass (2.3x faster than the GEMM's two-accumulator epilogue).
 */

import type { BufferSlice, Dispatch, Gpu } from "../runtime.ts";
import { gemm, type GemmTiles } from "./gemm.ts";
import { Epilogue, matvec, MATVEC_MAX_ROWS, type MatvecArgs } from "./matvec.ts";
import { swiglu } from "./swiglu.ts";

/** Arguments of `linear`: the matvec's, plus the GEMM's tile knobs (each kernel reads only its own knobs). */
export type LinearArgs = MatvecArgs & GemmTiles & {
  /** f32 [rows, 2N]: needed for SWIGLU above MATVEC_MAX_ROWS rows (the gate/up product before the activation). */
  scratch?: GPUBuffer | BufferSlice;
};

/** GEMM tiles for an N-column product when the caller gave none. */
function gemmTiles(a: LinearArgs): GemmTiles {
  const given = a.tileK ?? a.threadsM ?? a.threadsN ?? a.blockM ?? a.blockN ?? a.pipeline;
  return given === undefined && a.n <= 4096 ? { threadsN: 8 } : {};
}

/** Records the dispatches of a linear layer (load time): matvec for rows <= MATVEC_MAX_ROWS, GEMM above. */
export function linear(gpu: Gpu, a: LinearArgs): Dispatch[] {
  if (a.rows <= MATVEC_MAX_ROWS) return [matvec(gpu, a)];
  if (a.epilogue !== Epilogue.SWIGLU) return [gemm(gpu, { ...gemmTiles(a), ...a })];
  if (!a.scratch) throw new Error(`linear: SwiGLU over ${a.rows} rows needs a [rows, 2N] scratch buffer`);
  return [
    gemm(gpu, { ...a, ...gemmTiles({ ...a, n: 2 * a.n }), epilogue: Epilogue.PLAIN, n: 2 * a.n, y: a.scratch }),
    swiglu(gpu, { ctl: a.ctl, h: a.scratch, y: a.y, rows: a.rows, n: a.n, gated: a.gated }),
  ];
}
