/**
 * One entry point for a bf16 linear layer y = x W^T (optionally with the SwiGLU epilogue): the matvec for up to
 * MATVEC_MAX_ROWS input rows (decode, speculative verification); above, the prefill GEMM: the tensor-core one
 * (`gemm_tensor.ts`, after its row-scale pre-pass) on a device that can run it (Dawn with subgroup matrices), else the
 * tiled GEMM (`gemm.ts`) in f32, or with `prefillMath: "f16"` (the bench's `prefill_math` knob) its f16-multiply
 * variant after the same pre-pass. Model code calls `linear` and never chooses; every kernel reads the same weight
 * layout and computes the same function (`matvecReference`), the tensor-core and f16 ones with f16 inputs
 * (ARCHITECTURE.md, "Tensor-core prefill GEMM (Dawn)" and "f16-multiply prefill GEMM (Deno)").
 *
 * Precedence: `HYDRA_PREFILL_GEMM=fma|fma16|tensor` (or the `prefillGemm` argument) forces one for A/B measurements;
 * else the tensor-core GEMM wherever it can run, whatever `prefillMath` says (it multiplies f16 already, at tensor-core
 * speed); else `prefillMath` picks fma (f32, the default) or fma16. Forcing `tensor`, or asking for f16 on a device
 * without `shader-f16`, is a UserError that says why.
 *
 * GEMM tiles, measured on an H100 at the 7B prefill shapes (M = 128, docs/PERF.md): the default 64x64 tile, or 64x32
 * (twice the workgroups) for N <= 4096, 7% faster there (o, down). A plain GEMM over the 2N gate/up rows followed by
 * a separate SwiGLU pass was measured too and was 8% slower than the GEMM's SwiGLU epilogue, so there is none.
 * @module
 */

import { UserError } from "../../common/errors.ts";
import type { Dispatch, Gpu } from "../runtime.ts";
import { gemm, type GemmTiles } from "./gemm.ts";
import {
  checkTensorShape,
  gemmTensor,
  gemmTensorWorkgroupBytes,
  tensorGemmUnsupported,
  type TensorTiles,
} from "./gemm_tensor.ts";
import { Epilogue, matvec, MATVEC_MAX_ROWS, type MatvecArgs } from "./matvec.ts";
import { rowScale } from "./row_scale.ts";

/**
 * The prefill GEMMs: `fma` (gemm.ts, f32 arithmetic), `fma16` (gemm.ts with math "f16": f16 products, f32 partial
 * sums) and `tensor` (gemm_tensor.ts, f16 subgroup matrices).
 */
export const PREFILL_GEMMS = ["fma", "fma16", "tensor"] as const;
/** One of PREFILL_GEMMS. */
export type PrefillGemm = typeof PREFILL_GEMMS[number];

/** The environment variable that forces the prefill GEMM (A/B measurements); unset: automatic. */
export const PREFILL_GEMM_ENV = "HYDRA_PREFILL_GEMM";

/** The prefill GEMM's arithmetic where no tensor cores run it (`prefill_math`): f32 FMA, or f16 products. */
export const PREFILL_MATHS = ["f32", "f16"] as const;
/** One of PREFILL_MATHS. */
export type PrefillMath = typeof PREFILL_MATHS[number];

/** Arguments of `linear`: the matvec's, plus each GEMM's tile knobs (each kernel reads only its own knobs). */
export type LinearArgs = MatvecArgs & Omit<GemmTiles, "math"> & TensorTiles & {
  /** Forces the prefill GEMM (default: HYDRA_PREFILL_GEMM, else automatic). */
  prefillGemm?: PrefillGemm;
  /** The automatic choice where the tensor-core GEMM cannot run: fma (f32, default) or fma16 (f16). */
  prefillMath?: PrefillMath;
};

/** GEMM tiles for an N-column product when the caller gave none. */
function gemmTiles(a: LinearArgs): GemmTiles {
  const given = a.tileK ?? a.threadsM ?? a.threadsN ?? a.blockM ?? a.blockN ?? a.pipeline ?? a.flushK;
  return given === undefined && a.n <= 4096 ? { threadsN: 8 } : {};
}

/**
 * Tensor-core tiles when the caller gave none: the default tile with the k step measured fastest for the epilogue, or
 * a smaller step where that one's workgroup memory exceeds the device's or K is not a multiple of it. Measured on the
 * H200 with Dawn (2026-11-30, `tools/bench_kernels.ts --gemm`, docs/PERF.md): plain products are fastest at k steps of
 * 64 (7B down 437 -> 240 us and o 115 -> 82 us at M = 128; at M = 2048 down 2.67 -> 2.29 ms, o 926 -> 844 us; qkv
 * equal), SwiGLU at 32 (its k-64 tile needs 31.7 KB of workgroup memory: gate_up at M = 2048 3.67 -> 6.78 ms). Null
 * when no tiles fit the shape (then the automatic choice is the f32 GEMM).
 */
function tensorTiles(gpu: Gpu, a: LinearArgs): TensorTiles | null {
  const given: TensorTiles = {
    subgroupsM: a.subgroupsM,
    subgroupsN: a.subgroupsN,
    fragsM: a.fragsM,
    fragsN: a.fragsN,
    stepK: a.stepK,
  };
  const epilogue = a.epilogue ?? Epilogue.PLAIN;
  const steps = epilogue === Epilogue.SWIGLU ? [32, 16] : [64, 32, 16];
  const candidates: TensorTiles[] = a.stepK === undefined ? steps.map((stepK) => ({ ...given, stepK })) : [given];
  return candidates.find((t) => {
    try {
      checkTensorShape({ ...a, stepK: t.stepK });
      return gemmTensorWorkgroupBytes(t, epilogue) <= gpu.device.limits.maxComputeWorkgroupStorageSize;
    } catch {
      return false;
    }
  }) ?? null;
}

/**
 * The prefill GEMM `linear` uses on `gpu` for `a`: forced by the argument or HYDRA_PREFILL_GEMM, else the tensor-core
 * one where it runs, else the one `a.prefillMath` asks for (module comment: precedence).
 */
export function prefillGemmFor(gpu: Gpu, a: LinearArgs): PrefillGemm {
  const forced = a.prefillGemm ?? (Deno.env.get(PREFILL_GEMM_ENV) || undefined);
  if (forced !== undefined && !(PREFILL_GEMMS as readonly string[]).includes(forced)) {
    throw new UserError(
      `${PREFILL_GEMM_ENV}=${forced} is not a prefill GEMM: set it to ${PREFILL_GEMMS.join(", ")}, or unset it.`,
    );
  }
  const f16Missing = (what: string) =>
    new UserError(
      `${what} needs the f16-multiply GEMM, which cannot run here (the device lacks shader-f16); ` +
        `use prefill_math f32 (--prefill-math f32) and unset ${PREFILL_GEMM_ENV}.`,
    );
  if (forced === "fma") return "fma";
  if (forced === "fma16") {
    if (!gpu.has("shader-f16")) throw f16Missing(`${PREFILL_GEMM_ENV}=fma16`);
    return "fma16";
  }
  const unsupported = tensorGemmUnsupported(gpu);
  if (forced === "tensor" && unsupported) {
    throw new UserError(
      `${PREFILL_GEMM_ENV}=tensor needs the tensor-core GEMM, which cannot run here (${unsupported}); run on Dawn ` +
        `(HYDRA_WEBGPU=dawn) on a GPU with subgroup matrices, or unset ${PREFILL_GEMM_ENV}.`,
    );
  }
  if (forced === "tensor") return "tensor";
  if (unsupported === null && tensorTiles(gpu, a) !== null) return "tensor";
  if ((a.prefillMath ?? "f32") === "f32") return "fma";
  if (!gpu.has("shader-f16")) throw f16Missing("prefill_math f16");
  return "fma16";
}

/** The i32 row-exponent scratch of the f16 GEMMs' pre-pass, shared by every linear layer of `gpu` (see below). */
const exponentScratch = new WeakMap<Gpu, { buffer: GPUBuffer; rows: number }>();

/**
 * A buffer of at least `rows` i32. One buffer serves every layer: its pre-pass and GEMM are consecutive dispatches
 * of one queue, and WebGPU orders dispatches, so the next layer's pre-pass cannot overwrite exponents still in use. A
 * larger request replaces the shared buffer; dispatches recorded earlier keep the one they were bound to.
 */
function exponentsFor(gpu: Gpu, rows: number): GPUBuffer {
  const have = exponentScratch.get(gpu);
  if (have && have.rows >= rows) return have.buffer;
  const buffer = gpu.buffer("gemm_tensor row exponents", rows * 4);
  exponentScratch.set(gpu, { buffer, rows });
  return buffer;
}

/**
 * Records the dispatches of a linear layer (load time): the matvec for rows <= MATVEC_MAX_ROWS; above, the
 * tensor-core GEMM or the f16-multiply GEMM after their row-scale pre-pass, or the f32 GEMM (`prefillGemmFor`).
 */
export function linear(gpu: Gpu, a: LinearArgs): Dispatch[] {
  if (a.rows <= MATVEC_MAX_ROWS) return [matvec(gpu, a)];
  if (a.postNorm) throw new Error("linear: the GEMMs have no post-norm prologue");
  if (a.qkStats) throw new Error("linear: the GEMMs write no QK statistics");
  const which = prefillGemmFor(gpu, a);
  if (which === "fma") return [gemm(gpu, { ...gemmTiles(a), ...a, math: "f32" })];
  const exponents = exponentsFor(gpu, a.rows);
  const scale = rowScale(gpu, { ctl: a.ctl, x: a.x, exponents, rows: a.rows, k: a.k, gated: a.gated });
  if (which === "fma16") return [scale, gemm(gpu, { ...gemmTiles(a), ...a, math: "f16", exponents })];
  const tiles = tensorTiles(gpu, a) ?? {}; // forced with no fitting tiles: gemmTensor says what is wrong
  return [scale, gemmTensor(gpu, { ...a, ...tiles, exponents })];
}
