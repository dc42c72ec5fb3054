/**
 * bf16 weights in blocks: a copy of a row-major [rows, K] bf16 matrix rearranged into blocks of PACK_ROWS rows by
 * PACK_K k, block (rows / PACK_ROWS, k / PACK_K) at ((r / PACK_ROWS) * (K / PACK_K) + k / PACK_K) * PACK_ROWS * PACK_K,
 * row-major inside (each block 2 KB contiguous). The tensor-core GEMM's `packedWeights` variant (`gemm_tensor.ts`)
 * reads such a copy: a k step of its tile then reads whole blocks, where the row-major matrix gives it one 128-byte
 * segment per weight row, rows K * 2 bytes apart. The values are copied bit for bit.
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";

/** Rows of a block. */
export const PACK_ROWS = 16;
/** k (bf16 values) of a block row: 128 bytes. */
export const PACK_K = 64;

/** Invocations per workgroup; each moves one vec4<u32> (8 bf16). */
const WG = 256;

/** The WGSL kernel. */
export const packWeightsKernel: Kernel = {
  name: "pack_weights",
  source: /* wgsl */ `
// dst = src [ROWS, K] bf16 in blocks of ${PACK_ROWS} rows x ${PACK_K} k (module comment), one vec4 (8 bf16) an invocation:
// dst item d is block b = d / BLOCK (row block b / KB, k block b % KB), its row q / ${PACK_K / 8}, its 8 values q % ${
    PACK_K / 8
  }.
// bindings: 0 ctl (gate only) · 1 src [ROWS, K / 8] vec4<u32> · 2 dst [ROWS * K / 8] vec4<u32>, read_write
override ROWS: u32;
override K: u32;
const WG: u32 = ${WG}u;
const BLOCK: u32 = ${(PACK_ROWS * PACK_K) / 8}u; // vec4 a block
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let d = flat_workgroup(wid, nwg) * WG + t;
  if (d >= ROWS * (K / 8u)) { return; }
  let kb_count = K / ${PACK_K}u;
  let b = d / BLOCK;
  let q = d % BLOCK;
  let row = (b / kb_count) * ${PACK_ROWS}u + q / ${PACK_K / 8}u;
  dst[d] = src[row * (K / 8u) + (b % kb_count) * ${PACK_K / 8}u + q % ${PACK_K / 8}u];
}
`,
};

/** Throws unless `rows` x `k` can be packed: rows a positive multiple of PACK_ROWS, k of PACK_K. */
function checkShape(rows: number, k: number): void {
  if (!(Number.isInteger(rows) && rows > 0 && rows % PACK_ROWS === 0)) {
    throw new Error(`packWeights: ${rows} rows is not a positive multiple of ${PACK_ROWS}`);
  }
  if (!(Number.isInteger(k) && k > 0 && k % PACK_K === 0)) {
    throw new Error(`packWeights: K = ${k} is not a positive multiple of ${PACK_K}`);
  }
}

/** Records the packing of the bf16 matrix `src` [rows, k] into `dst` (the same size). */
export function packWeights(
  gpu: Gpu,
  a: {
    ctl: GPUBuffer;
    src: GPUBuffer | BufferSlice;
    dst: GPUBuffer | BufferSlice;
    rows: number;
    k: number;
    gated?: boolean;
  },
  kernel: Kernel = packWeightsKernel,
): Dispatch {
  checkShape(a.rows, a.k);
  return gpu.dispatch(
    kernel,
    { ROWS: a.rows, K: a.k, GATED: a.gated ?? false },
    [a.ctl, a.src, a.dst],
    Math.ceil((a.rows * a.k) / 8 / WG),
  );
}

/** CPU reference: the u32 words (bf16 pairs) of a row-major [rows, k] matrix, packed as the kernel packs them. */
export function packWeightsReference(words: Uint32Array, rows: number, k: number): Uint32Array {
  checkShape(rows, k);
  const out = new Uint32Array(words.length);
  const rowWords = k / 2, blockRowWords = PACK_K / 2;
  let d = 0;
  for (let rb = 0; rb < rows / PACK_ROWS; rb++) {
    for (let kb = 0; kb < k / PACK_K; kb++) {
      for (let r = 0; r < PACK_ROWS; r++) {
        const from = (rb * PACK_ROWS + r) * rowWords + kb * blockRowWords;
        out.set(words.subarray(from, from + blockRowWords), d);
        d += blockRowWords;
      }
    }
  }
  return out;
}
