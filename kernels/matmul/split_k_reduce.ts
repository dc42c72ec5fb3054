/**
 * The reduction of split-K GEMMs (`gemm.ts`, `gemm_tensor.ts` with `splitK` S > 1): y[m, n] = sum_s partials[s, m, n]
 * (PLAIN), or silu(sum_s gate) * (sum_s up) (SWIGLU, the partials' gate columns 0..N-1 and up columns N..2N-1), each
 * sum in split order 0, 1, .., S - 1 (deterministic: the same bits every run).
 *
 * Memory-bound and small next to the GEMM (S * M * NW * 4 bytes read: 6.3 MB for the 7B qkv at M = 128, S = 4), so it
 * is one thread per output, or per 4 outputs with 16-byte loads and stores where N is a multiple of 4.
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { Epilogue } from "./matvec.ts";
import { SPLIT_KS } from "./gemm.ts";

/**
 * WGSL `fn <name>(i: u32, stride: u32) -> <type>`: element i of `buffer`'s rows summed over its SPLIT_K partials,
 * `stride` elements apart, in split order: this reduction's additions (so the same bits), for the kernels that read a
 * product's partials in place of its reduction (rmsnorm.ts's and qk_norm_rope.ts's `splitK`; they declare the override
 * SPLIT_K).
 */
export function splitKSumWgsl(name: string, buffer: string, type: string): string {
  return `
// ${buffer} at element i of the rows: its SPLIT_K partials, stride elements apart, summed in split order (split_k_reduce.ts)
fn ${name}(i: u32, stride: u32) -> ${type} {
  var v = ${type}();
  for (var s = 0u; s < SPLIT_K; s++) { v += ${buffer}[s * stride + i]; }
  return v;
}
`;
}

/** Name prefix of the generated kernels (`split_k_reduce_<epilogue>_v<outputs per thread>`). */
export const SPLIT_K_REDUCE_KERNEL_NAME = "split_k_reduce";

/** Threads per workgroup. */
const WG = 256;

/** What `splitKReduceKernelFor` generates a kernel for. */
export interface SplitKReduceSpec {
  /** `Epilogue.PLAIN` (default) or `Epilogue.SWIGLU`. */
  epilogue?: number;
  /** Outputs per thread: 4 (vec4 loads and stores; N must be a multiple of 4) or 1 (default). */
  width?: 1 | 4;
}

/** Arguments of one reduction. */
export interface SplitKReduceArgs {
  /** Control block (binding 0; read only for the gate). */
  ctl: GPUBuffer;
  /** f32 [splitK, rows, NW]: the split GEMM's partial sums (NW = n, or 2n for SWIGLU: gate columns, then up). */
  partials: GPUBuffer | BufferSlice;
  /** f32 [rows, n]: the output. */
  y: GPUBuffer | BufferSlice;
  rows: number;
  n: number;
  /**
   * The first column of y the partials hold (default 0; a multiple of 4 where n is): they are then [splitK, rows, NW]
   * with NW = n - nBegin (2 (n - nBegin) for SWIGLU), and only y's columns nBegin.. are written (gemm.ts `columns`).
   */
  nBegin?: number;
  /** S: 1..8 (the GEMMs split 1, 2, 4 or 8 ways, SPLIT_KS; the reduction takes any S up to their largest). */
  splitK: number;
  /** `Epilogue.PLAIN` (default) or `Epilogue.SWIGLU`. */
  epilogue?: number;
  /** Build GATED (a no-op while the control block's ACTIVE is 0). */
  gated?: boolean;
}

function checkEpilogue(epilogue: number): void {
  if (epilogue !== Epilogue.PLAIN && epilogue !== Epilogue.SWIGLU) {
    throw new Error(`split_k_reduce: unknown epilogue ${epilogue}`);
  }
}

function kernelName(epilogue: number, width: number): string {
  return `${SPLIT_K_REDUCE_KERNEL_NAME}_${epilogue === Epilogue.SWIGLU ? "swiglu" : "plain"}_v${width}`;
}

/** The WGSL kernel for `spec`. */
export function splitKReduceKernelFor(spec: SplitKReduceSpec = {}): Kernel {
  const epilogue = spec.epilogue ?? Epilogue.PLAIN;
  checkEpilogue(epilogue);
  const width = spec.width ?? 1;
  if (width !== 1 && width !== 4) throw new Error(`split_k_reduce: width ${width} (1 or 4)`);
  const swiglu = epilogue === Epilogue.SWIGLU;
  const T = width === 4 ? "vec4<f32>" : "f32";
  const name = kernelName(epilogue, width);
  return {
    name,
    source: /* wgsl */ `
// ${name}: y[m, n] = ${
      swiglu ? "silu(sum_s gate[s, m, n]) * sum_s up[s, m, n]" : "sum_s partials[s, m, n]"
    }, s in order.
// bindings:
//   0 ctl [CTL_SLOTS] u32, read      control block (gate only)
//   1 p   [SPLIT_K, M, NW] f32       partial sums of the split GEMM over y's columns N_BEGIN..; NW = ${
      swiglu ? "2 (N - N_BEGIN) (gate\n//                                    columns, then up columns)" : "N - N_BEGIN"
    }
//   2 y   [M, N] f32, read_write     output (its columns N_BEGIN.. written)
// ${
      width === 4
        ? "4 outputs per thread (N and N_BEGIN multiples of 4), as vec4"
        : "1 output per thread"
    }; grid: flat (Gpu.grid).
override SPLIT_K: u32;
override M: u32;
override N: u32;
override N_BEGIN: u32 = 0u;
const WIDTH: u32 = ${width}u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> p: array<${T}>;
@group(0) @binding(2) var<storage, read_write> y: array<${T}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let cols = (N - N_BEGIN) / WIDTH; // items per partial row (of gate, or up)
  let i = flat_workgroup(wid, nwg) * ${WG}u + t;
  if (i >= M * cols) { return; }
  let m = i / cols;
  let c = i % cols;
  let row = ${swiglu ? "2u * cols" : "cols"}; // items per partial row
  var g = ${T}();${swiglu ? `\n  var u = ${T}();` : ""}
  for (var s = 0u; s < SPLIT_K; s++) {
    let at = (s * M + m) * row + c;
    g += p[at];${swiglu ? "\n    u += p[at + cols];" : ""}
  }
  y[m * (N / WIDTH) + N_BEGIN / WIDTH + c] = ${swiglu ? "g / (1.0 + exp(-g)) * u" : "g"};
}
`,
  };
}

/** Records the reduction (load time). Throws on arguments the kernel cannot handle. */
export function splitKReduce(gpu: Gpu, a: SplitKReduceArgs, kernel?: Kernel): Dispatch {
  const epilogue = a.epilogue ?? Epilogue.PLAIN;
  checkEpilogue(epilogue);
  const maxSplit = Math.max(...SPLIT_KS);
  if (!(Number.isInteger(a.splitK) && a.splitK >= 1 && a.splitK <= maxSplit)) {
    throw new Error(`split_k_reduce: splitK = ${a.splitK} (1..${maxSplit})`);
  }
  if (!(Number.isInteger(a.rows) && a.rows >= 1)) throw new Error(`split_k_reduce: ${a.rows} rows (at least 1)`);
  if (!(Number.isInteger(a.n) && a.n >= 1)) throw new Error(`split_k_reduce: N = ${a.n} (at least 1)`);
  const nBegin = a.nBegin ?? 0;
  if (!(Number.isInteger(nBegin) && nBegin >= 0 && nBegin < a.n)) {
    throw new Error(`split_k_reduce: nBegin = ${nBegin} (0..N - 1 = ${a.n - 1})`);
  }
  const width = a.n % 4 === 0 && nBegin % 4 === 0 ? 4 : 1;
  const name = kernelName(epilogue, width);
  if (kernel && !kernel.name.startsWith(name)) {
    throw new Error(`split_k_reduce: kernel ${kernel.name} was not generated for this epilogue and width (${name})`);
  }
  return gpu.dispatch(
    kernel ?? splitKReduceKernelFor({ epilogue, width }),
    { SPLIT_K: a.splitK, M: a.rows, N: a.n, N_BEGIN: nBegin, GATED: a.gated ?? false },
    [a.ctl, a.partials, a.y],
    Math.ceil((a.rows * (a.n - nBegin)) / width / WG),
  );
}

/**
 * CPU reference (f64 sums in split order), from partials [splitK, rows, NW] over columns nBegin.. of y (NW = n -
 * nBegin, twice that for SWIGLU); y's columns before nBegin are zero.
 */
export function splitKReduceReference(
  partials: Float32Array,
  splitK: number,
  rows: number,
  n: number,
  epilogue: number = Epilogue.PLAIN,
  nBegin = 0,
): Float32Array {
  const swiglu = epilogue === Epilogue.SWIGLU;
  const pn = n - nBegin;
  const nw = swiglu ? 2 * pn : pn;
  const y = new Float32Array(rows * n);
  for (let m = 0; m < rows; m++) {
    for (let j = 0; j < pn; j++) {
      let g = 0, u = 0;
      for (let s = 0; s < splitK; s++) {
        g += partials[(s * rows + m) * nw + j];
        if (swiglu) u += partials[(s * rows + m) * nw + pn + j];
      }
      y[m * n + nBegin + j] = swiglu ? g / (1 + Math.exp(-g)) * u : g;
    }
  }
  return y;
}
