/**
 * One entry point for a bf16 linear layer y = x W^T (optionally with the SwiGLU epilogue): the matvec for up to
 * MATVEC_MAX_ROWS input rows (decode, speculative verification), the tiled GEMM above (prefill). Model code calls
 * `linear` and never chooses; both kernels read the same weight layout and compute the same function
 * (`matvecReference`).
 *
 * GEMM tiles, measured on an H100 at the 7B prefill shapes (M = 128, docs/PERF.md): the default 64x64 tile, or 64x32
 * (twice the workgroups) for N <= 4096, 7% faster there (o, down). A plain GEMM over the 2N gate/up rows followed by
 * a separate SwiGLU pass was measured too and was 8% slower than the GEMM's SwiGLU epilogue, so there is none.
 * @module
 */

import type { Dispatch, Gpu } from "../runtime.ts";
import { gemm, type GemmTiles } from "./gemm.ts";
import { matvec, MATVEC_MAX_ROWS, type MatvecArgs } from "./matvec.ts";

/** Arguments of `linear`: the matvec's, plus the GEMM's tile knobs (each kernel reads only its own knobs). */
export type LinearArgs = MatvecArgs & GemmTiles;

/** GEMM tiles for an N-column product when the caller gave none. */
function gemmTiles(a: LinearArgs): GemmTiles {
  const given = a.tileK ?? a.threadsM ?? a.threadsN ?? a.blockM ?? a.blockN ?? a.pipeline;
  return given === undefined && a.n <= 4096 ? { threadsN: 8 } : {};
}

/** Records the dispatch of a linear layer (load time): matvec for rows <= MATVEC_MAX_ROWS, GEMM above. */
export function linear(gpu: Gpu, a: LinearArgs): Dispatch {
  if (a.rows > MATVEC_MAX_ROWS && a.postNorm) throw new Error("linear: the GEMM has no post-norm prologue");
  return a.rows <= MATVEC_MAX_ROWS ? matvec(gpu, a) : gemm(gpu, { ...gemmTiles(a), ...a });
}
