/**
 * One entry point for a bf16 linear layer y = x W^T (optionally with the SwiGLU epilogue): the matvec for up to
 * MATVEC_MAX_ROWS input rows (decode, speculative verification), the tiled GEMM above (prefill). Model code calls
 * `linear` and never chooses; both kernels read the same weight layout and compute the same function
 * (`matvecReference`).
 */

import type { Dispatch, Gpu } from "../runtime.ts";
import { gemm, type GemmTiles } from "./gemm.ts";
import { matvec, MATVEC_MAX_ROWS, type MatvecArgs } from "./matvec.ts";

/** Arguments of `linear`: the matvec's, plus the GEMM's tile knobs (each kernel reads only its own knobs). */
export type LinearArgs = MatvecArgs & GemmTiles;

/** Records the dispatch of a linear layer (load time): matvec for rows <= MATVEC_MAX_ROWS, GEMM above. */
export function linear(gpu: Gpu, a: LinearArgs): Dispatch {
  return a.rows <= MATVEC_MAX_ROWS ? matvec(gpu, a) : gemm(gpu, a);
}
