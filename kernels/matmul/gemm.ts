/**
 * Tiled matrix product with bf16 weights for prefill (more than MATVEC_MAX_ROWS input rows):
 * y[m, n] = sum_k x[m, k] * W[n, k], f32 in, f32 out, f32 accumulation. Same weight layout, epilogues and reference as
 * the matvec (`matvec.ts`); `linear.ts` picks between the two.
 *
 * Past a few rows the product is bound by arithmetic, not by reading the weights, so every staged value is reused
 * from workgroup memory: a workgroup owns a TILE_M x TILE_N tile of y; per step of TILE_K it stages the tile's x rows
 * and weight rows (unpacked to f32) in workgroup memory, then each thread accumulates a BLOCK_M x BLOCK_N register
 * block of outputs from 16-byte reads of the staged rows. With the SWIGLU epilogue a workgroup also stages the up rows
 * of its columns and each thread keeps a second block, so gate, up and the SiLU-multiply are one pass.
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { Epilogue, matvecReference } from "./matvec.ts";

/** Largest register block (outputs per thread along M, and along N) the kernel supports. */
export const GEMM_MAX_BLOCK = 8;

/** The WGSL kernel. */
export const gemmKernel: Kernel = {
  name: "gemm_bf16",
  source: /* wgsl */ `
// bindings:
//   0 ctl [CTL_SLOTS] u32, read      control block (gate only)
//   1 w   [NW, K / 8] vec4<u32>      bf16 weight, row-major [NW, K], two bf16 per u32 (lower k in the low half);
//                                    NW = N (PLAIN) or 2N (SWIGLU: rows 0..N-1 gate, N..2N-1 up)
//   2 x   [M, K / 4] vec4<f32>       input rows, row-major [M, K] f32
//   3 y   [M, N] f32, read_write     output rows, row-major
// K and TILE_K must be multiples of 8; M and N need not be multiples of the tile.
// Grid: ceil(M / TILE_M) * ceil(N / TILE_N) workgroups, flat (Gpu.grid); workgroup f owns rows
// m0 = (f % tiles_m) * TILE_M and columns n0 = (f / tiles_m) * TILE_N, so consecutive workgroups share a weight tile.
override K: u32;
override N: u32;
override M: u32;
override EPILOGUE: u32 = 0u;
override TILE_K: u32 = 16u;    // k staged per step
override THREADS_M: u32 = 16u; // workgroup = THREADS_N x THREADS_M threads
override THREADS_N: u32 = 16u;
override BLOCK_M: u32 = 4u;    // outputs per thread: BLOCK_M rows x BLOCK_N columns, each 1..MAX_BLOCK
override BLOCK_N: u32 = 4u;
const MAX_BLOCK: u32 = ${GEMM_MAX_BLOCK}u;
// Derived from the above (the builder never sets these).
override TILE_M: u32 = THREADS_M * BLOCK_M;
override TILE_N: u32 = THREADS_N * BLOCK_N;
override W_ROWS: u32 = TILE_N * (1u + EPILOGUE); // staged weight rows: the tile's gate rows, then its up rows
override STRIDE: u32 = TILE_K / 4u + 1u;         // vec4 per staged row (one of padding, see below)
override XS_LEN: u32 = TILE_M * STRIDE;
override WS_LEN: u32 = W_ROWS * STRIDE;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// Staged tiles, k-contiguous like the global rows: xs[r * STRIDE + c] = x[m0 + r, k0 + 4c .. k0 + 4c + 3];
// ws[r * STRIDE + c] = the same k of weight row n0 + r (r < TILE_N) or up row N + n0 + r - TILE_N (r >= TILE_N);
// zero past M, N or K. STRIDE is odd, so 8 consecutive rows start in 8 distinct groups of 4 banks: a warp's 16-byte
// reads of consecutive rows are conflict-free, and so are the 16-byte stores of the x tile.
var<workgroup> xs: array<vec4<f32>, XS_LEN>;
var<workgroup> ws: array<vec4<f32>, WS_LEN>;

fn bf16x4(a: u32, b: u32) -> vec4<f32> {
  return vec4<f32>(bf16_lo(a), bf16_hi(a), bf16_lo(b), bf16_hi(b));
}

// acc + dot(a, b) as a chain of fused multiply-adds.
fn fma4(a: vec4<f32>, b: vec4<f32>, acc: f32) -> f32 {
  return fma(a.w, b.w, fma(a.z, b.z, fma(a.y, b.y, fma(a.x, b.x, acc))));
}

// Thread (tx, ty) owns rows m0 + i * THREADS_M + ty and columns n0 + j * THREADS_N + tx (i < BLOCK_M, j < BLOCK_N):
// strided, so a warp reads consecutive staged weight rows and stores consecutive columns of y.
@compute @workgroup_size(THREADS_N, THREADS_M)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let tiles_m = (M + TILE_M - 1u) / TILE_M;
  let tile = flat_workgroup(wid, nwg);
  if (tile >= tiles_m * ((N + TILE_N - 1u) / TILE_N)) { return; }
  let m0 = (tile % tiles_m) * TILE_M;
  let n0 = (tile / tiles_m) * TILE_N;
  let tx = lid.x;
  let ty = lid.y;
  let threads = THREADS_M * THREADS_N;
  let k4 = K / 4u;
  let k8 = K / 8u;
  var acc: array<f32, MAX_BLOCK * MAX_BLOCK>;    // [i * MAX_BLOCK + j]: the plain (or gate) dot product
  var acc_up: array<f32, MAX_BLOCK * MAX_BLOCK>; // SWIGLU: the up dot product
  for (var k0 = 0u; k0 < K; k0 += TILE_K) {
    for (var i = t; i < TILE_M * (TILE_K / 4u); i += threads) {
      let r = i / (TILE_K / 4u);
      let c = i % (TILE_K / 4u);
      var v = vec4<f32>();
      if (m0 + r < M && k0 / 4u + c < k4) { v = x[(m0 + r) * k4 + k0 / 4u + c]; }
      xs[r * STRIDE + c] = v;
    }
    for (var i = t; i < W_ROWS * (TILE_K / 8u); i += threads) {
      let r = i / (TILE_K / 8u);
      let c = i % (TILE_K / 8u);
      let n = n0 + r % TILE_N;
      let row = select(n, n + N, r >= TILE_N);
      var p = vec4<u32>();
      if (n < N && k0 / 8u + c < k8) { p = w[row * k8 + k0 / 8u + c]; }
      ws[r * STRIDE + 2u * c] = bf16x4(p.x, p.y);
      ws[r * STRIDE + 2u * c + 1u] = bf16x4(p.z, p.w);
    }
    workgroupBarrier(); // tiles staged
    for (var kk = 0u; kk < TILE_K / 4u; kk++) {
      var wv: array<vec4<f32>, MAX_BLOCK>;
      var wu: array<vec4<f32>, MAX_BLOCK>;
      for (var j = 0u; j < BLOCK_N; j++) {
        wv[j] = ws[(j * THREADS_N + tx) * STRIDE + kk];
        if (EPILOGUE == 1u) { wu[j] = ws[(TILE_N + j * THREADS_N + tx) * STRIDE + kk]; }
      }
      for (var i = 0u; i < BLOCK_M; i++) {
        let a = xs[(i * THREADS_M + ty) * STRIDE + kk];
        for (var j = 0u; j < BLOCK_N; j++) {
          acc[i * MAX_BLOCK + j] = fma4(a, wv[j], acc[i * MAX_BLOCK + j]);
          if (EPILOGUE == 1u) { acc_up[i * MAX_BLOCK + j] = fma4(a, wu[j], acc_up[i * MAX_BLOCK + j]); }
        }
      }
    }
    workgroupBarrier(); // tiles consumed
  }
  for (var i = 0u; i < BLOCK_M; i++) {
    let m = m0 + i * THREADS_M + ty;
    for (var j = 0u; j < BLOCK_N; j++) {
      let n = n0 + j * THREADS_N + tx;
      if (m < M && n < N) {
        let g = acc[i * MAX_BLOCK + j];
        var out = g;
        if (EPILOGUE == 1u) { out = g / (1.0 + exp(-g)) * acc_up[i * MAX_BLOCK + j]; }
        y[m * N + n] = out;
      }
    }
  }
}
`,
};

/** Tile shape of the GEMM (tuning knobs). A workgroup computes a (threadsM * blockM) x (threadsN * blockN) tile. */
export interface GemmTiles {
  /** k staged in workgroup memory per step, a multiple of 8 (default 16). */
  tileK?: number;
  /** Threads of a workgroup along M (default 16). */
  threadsM?: number;
  /** Threads of a workgroup along N (default 16). */
  threadsN?: number;
  /** Output rows per thread, 1..GEMM_MAX_BLOCK (default 4). */
  blockM?: number;
  /** Output columns per thread, 1..GEMM_MAX_BLOCK (default 4). */
  blockN?: number;
}

/** The default tiles: 64 x 64 outputs per workgroup of 256 threads, 4 x 4 per thread, K staged 16 at a time. */
export const GEMM_DEFAULT_TILES: Required<GemmTiles> = { tileK: 16, threadsM: 16, threadsN: 16, blockM: 4, blockN: 4 };

/** Arguments of one GEMM dispatch (MatvecArgs' fields, with tile knobs in place of the matvec's). */
export interface GemmArgs extends GemmTiles {
  ctl: GPUBuffer;
  /** bf16 weight [N, K] (or [2N, K] for SWIGLU), packed. */
  weight: GPUBuffer | BufferSlice;
  /** f32 input [rows, K]. */
  x: GPUBuffer | BufferSlice;
  /** f32 output [rows, N]. */
  y: GPUBuffer | BufferSlice;
  rows: number;
  k: number;
  n: number;
  epilogue?: number;
  gated?: boolean;
}

/** Workgroup memory (bytes) the kernel uses with `tiles` and `epilogue`: the staged x and weight rows. */
export function gemmWorkgroupBytes(tiles: GemmTiles = {}, epilogue: number = Epilogue.PLAIN): number {
  const t = { ...GEMM_DEFAULT_TILES, ...definedTiles(tiles) };
  const stride = t.tileK / 4 + 1; // vec4 per staged row
  const weightRows = t.threadsN * t.blockN * (epilogue === Epilogue.SWIGLU ? 2 : 1);
  return 16 * stride * (t.threadsM * t.blockM + weightRows);
}

/** Records a GEMM dispatch (load time). Throws on shapes or tiles the kernel or the device cannot handle. */
export function gemm(gpu: Gpu, a: GemmArgs, kernel: Kernel = gemmKernel): Dispatch {
  const t = { ...GEMM_DEFAULT_TILES, ...definedTiles(a) };
  const epilogue = a.epilogue ?? Epilogue.PLAIN;
  const limits = gpu.device.limits;
  if (!(a.k > 0 && a.k % 8 === 0)) throw new Error(`gemm: K = ${a.k} is not a positive multiple of 8`);
  if (!(Number.isInteger(a.rows) && a.rows >= 1)) throw new Error(`gemm: ${a.rows} rows (at least 1)`);
  if (!(Number.isInteger(a.n) && a.n >= 1)) throw new Error(`gemm: N = ${a.n} (at least 1)`);
  if (epilogue !== Epilogue.PLAIN && epilogue !== Epilogue.SWIGLU) {
    throw new Error(`gemm: unknown epilogue ${epilogue}`);
  }
  if (!(t.tileK > 0 && t.tileK % 8 === 0)) throw new Error(`gemm: tileK = ${t.tileK} is not a positive multiple of 8`);
  for (
    const [name, v, max] of [
      ["blockM", t.blockM, GEMM_MAX_BLOCK],
      ["blockN", t.blockN, GEMM_MAX_BLOCK],
      ["threadsM", t.threadsM, limits.maxComputeWorkgroupSizeY],
      ["threadsN", t.threadsN, limits.maxComputeWorkgroupSizeX],
    ] as const
  ) {
    if (!(Number.isInteger(v) && v >= 1 && v <= max)) throw new Error(`gemm: ${name} = ${v} (1..${max})`);
  }
  if (t.threadsM * t.threadsN > limits.maxComputeInvocationsPerWorkgroup) {
    throw new Error(
      `gemm: a workgroup of ${t.threadsN} x ${t.threadsM} threads exceeds this device's ` +
        `${limits.maxComputeInvocationsPerWorkgroup} threads per workgroup`,
    );
  }
  const bytes = gemmWorkgroupBytes(t, epilogue);
  if (bytes > limits.maxComputeWorkgroupStorageSize) {
    throw new Error(
      `gemm: tiles ${JSON.stringify(t)} need ${bytes} bytes of workgroup memory, more than this device's ` +
        `${limits.maxComputeWorkgroupStorageSize}; use a smaller tileK, block or thread count`,
    );
  }
  const tiles = Math.ceil(a.rows / (t.threadsM * t.blockM)) * Math.ceil(a.n / (t.threadsN * t.blockN));
  return gpu.dispatch(
    kernel,
    {
      K: a.k,
      N: a.n,
      M: a.rows,
      EPILOGUE: epilogue,
      TILE_K: t.tileK,
      THREADS_M: t.threadsM,
      THREADS_N: t.threadsN,
      BLOCK_M: t.blockM,
      BLOCK_N: t.blockN,
      GATED: a.gated ?? false,
    },
    [a.ctl, a.weight, a.x, a.y],
    tiles,
  );
}

/** The tile knobs of `a` that are set (an explicit `undefined` keeps the default). */
function definedTiles(a: GemmTiles): GemmTiles {
  const out: GemmTiles = {};
  for (const key of Object.keys(GEMM_DEFAULT_TILES) as (keyof GemmTiles)[]) {
    if (a[key] !== undefined) out[key] = a[key];
  }
  return out;
}

/** CPU reference (f64 accumulation): the GEMM computes the same function as the matvec. */
export const gemmReference: typeof matvecReference = matvecReference;
