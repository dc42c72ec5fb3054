/**
 * Embedding gather: x[m, :] = f32(E[seq[ctl[POS] + m], :]) for the M rows being processed. The token ids come from the
 * sequence buffer at the positions the control block names, so a decode step needs no id from the CPU.
 *
 * One workgroup per row (a 2-D grid past 65535 rows); its threads stride over the row's D / 2 packed bf16 pairs.
 * An id >= ROWS (outside the table), or a position past the end of `seq`, gives a row of zeros: a bad id must not read
 * another tensor's memory, and zeros make the mistake visible downstream instead of silently plausible.
 * @module
 */

import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";

/** The WGSL kernel. */
export const embeddingKernel: Kernel = {
  name: "embedding_bf16",
  source: /* wgsl */ `
// bindings:
//   0 ctl   [CTL_SLOTS] u32, read          control block: ctl[CTL_POS] is the position of row 0
//   1 seq   [>= POS + M] u32, read         token ids by position
//   2 table [ROWS, D / 2] u32, read        bf16 embedding [ROWS, D] row-major, two per u32 (lower column in the
//                                          low half)
//   3 x     [M, D / 2] vec2<f32>, write    output rows, row-major [M, D] f32
// D must be even. An id >= ROWS, or a position >= arrayLength(seq), writes a row of zeros.
override D: u32;
override ROWS: u32;
override M: u32;
override WG: u32 = 256u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> seq: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<vec2<f32>>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let m = flat_workgroup(wid, nwg);
  if (m >= M) { return; }
  let pairs = D / 2u;
  let p = ctl[CTL_POS] + m;
  var id = ROWS;
  if (p < arrayLength(&seq)) { id = seq[p]; }
  let xb = m * pairs;
  if (id < ROWS) {
    let tb = id * pairs;
    for (var j = t; j < pairs; j += WG) { x[xb + j] = bf16x2(table[tb + j]); }
  } else {
    for (var j = t; j < pairs; j += WG) { x[xb + j] = vec2<f32>(0.0); }
  }
}
`,
};

/** Arguments of one embedding dispatch. */
export interface EmbeddingArgs {
  ctl: GPUBuffer;
  /** u32 token ids by position; ids at positions ctl[POS] .. ctl[POS] + rows - 1 are read. */
  seq: GPUBuffer | BufferSlice;
  /** bf16 table [tableRows, dim], packed two per u32. */
  table: GPUBuffer | BufferSlice;
  /** f32 output [rows, dim]. */
  x: GPUBuffer | BufferSlice;
  /** Rows gathered (positions processed). */
  rows: number;
  /** Embedding width (even). */
  dim: number;
  /** Rows in the table (vocabulary, padding included). */
  tableRows: number;
  gated?: boolean;
  workgroupSize?: number;
}

/** Records an embedding gather (load time). Throws on an odd width or no rows. */
export function embedding(gpu: Gpu, a: EmbeddingArgs, kernel: Kernel = embeddingKernel): Dispatch {
  if (a.dim % 2 !== 0) throw new Error(`embedding: width ${a.dim} is odd, but bf16 rows are packed two per u32`);
  if (a.rows < 1 || a.tableRows < 1) throw new Error(`embedding: ${a.rows} rows from a ${a.tableRows}-row table`);
  return gpu.dispatch(
    kernel,
    { D: a.dim, ROWS: a.tableRows, M: a.rows, WG: a.workgroupSize ?? 256, GATED: a.gated ?? false },
    [a.ctl, a.seq, a.table, a.x],
    a.rows,
  );
}

/**
 * CPU reference: rows `pos .. pos + rows - 1` of `seq` looked up in `table` (the bf16 values as f32, [tableRows, dim]);
 * an id outside the table, or a position past the end of `seq`, gives zeros.
 */
export function embeddingReference(
  table: Float32Array,
  seq: Uint32Array,
  pos: number,
  rows: number,
  dim: number,
): Float32Array {
  const tableRows = table.length / dim;
  const x = new Float32Array(rows * dim);
  for (let m = 0; m < rows; m++) {
    const p = pos + m;
    const id = p < seq.length ? seq[p] : tableRows;
    if (id < tableRows) x.set(table.subarray(id * dim, (id + 1) * dim), m * dim);
  }
  return x;
}
