/**
 * Tests of the embedding gather (`embedding.ts`): exact bf16 -> f32 rows at the control block's positions,
 * out-of-range ids, gating and mutants.
 * @module
 */

import { assertThrows } from "@std/assert";
import { packBf16, roundBf16Array } from "../bf16.ts";
import { embedding, embeddingKernel, embeddingReference } from "./embedding.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, poisoned, Rng } from "../testing/harness.ts";
import type { ErrorReport } from "../testing/harness.ts";

// A gather of bf16 values widened to f32 is exact (bf16 -> f32 is a shift), so the tolerance is zero.
const EXACT = { atol: 0 };

/** Runs one gather of `rows` rows at position `pos` from a `tableRows` x `dim` table and compares it. */
async function checkEmbedding(
  gpu: Gpu,
  rows: number,
  dim: number,
  opts: { pos?: number; tableRows?: number; seq?: Uint32Array; kernel?: Kernel; workgroupSize?: number } = {},
): Promise<ErrorReport> {
  const rng = new Rng(rows * 7717 + dim);
  const pos = opts.pos ?? 5;
  const tableRows = opts.tableRows ?? 37;
  const table = roundBf16Array(rng.normals(tableRows * dim));
  // Ids at the processed positions: random valid rows, plus the table's first and last row and out-of-range ids
  // (tableRows, 2^32 - 1) when there is room, which must give zeros. Positions before `pos` hold garbage ids.
  const seq = opts.seq ?? new Uint32Array(pos + rows + 3).map(() => rng.int(tableRows));
  if (!opts.seq) {
    const special = [0, tableRows - 1, tableRows, 0xffffffff];
    for (let i = 0; i < Math.min(rows, special.length) && rows > 2; i++) seq[pos + rows - 1 - i] = special[i];
    for (let i = 0; i < pos; i++) seq[i] = 0xffffffff - i;
  }
  const ctl = ctlBuffer(gpu, { POS: pos });
  // The buffer holds two rows of garbage after the table, so an id just past the table reads non-zero memory (robust
  // buffer access would otherwise return zeros and hide a missing range check).
  const stored = new Float32Array((tableRows + 2) * dim).fill(7.5);
  stored.set(table);
  const seqb = gpu.upload("seq", seq), tb = gpu.upload("table", packBf16(stored, dim)), x = poisoned(gpu, rows * dim);
  gpu.run([
    embedding(
      gpu,
      { ctl, seq: seqb, table: tb, x, rows, dim, tableRows, workgroupSize: opts.workgroupSize },
      opts.kernel,
    ),
  ]);
  const got = await gpu.readF32(x, rows * dim);
  for (const b of [ctl, seqb, tb, x]) b.destroy();
  const want = embeddingReference(table, seq, pos, rows, dim);
  return assertClose(got, want, EXACT, `embedding rows=${rows} dim=${dim} pos=${pos} tableRows=${tableRows}`);
}

gpuTest("embedding gathers the rows of the ids at ctl[POS].. at awkward sizes", async (gpu) => {
  for (const dim of [2, 6, 130, 2048]) {
    for (const rows of [1, 3, 17]) await checkEmbedding(gpu, rows, dim, { pos: 1 + (dim % 7) + rows });
  }
});

gpuTest("embedding with a small workgroup strides over a long row", async (gpu) => {
  await checkEmbedding(gpu, 3, 2048, { workgroupSize: 32 });
});

gpuTest("embedding writes zeros for ids outside the table and positions past the end of seq", async (gpu) => {
  // seq has 8 entries (a whole 32-byte buffer, so the binding ends where the data ends); rows 6..9 read positions
  // 6, 7 (ids 99 and 4, the first outside the table) and 8, 9 (past the end).
  const seq = new Uint32Array([1, 2, 3, 4, 5, 6, 99, 4]);
  await checkEmbedding(gpu, 4, 6, { pos: 6, tableRows: 7, seq });
});

gpuTest("embedding rejects an odd width", (gpu) => {
  const ctl = ctlBuffer(gpu);
  assertThrows(
    () => embedding(gpu, { ctl, seq: ctl, table: ctl, x: ctl, rows: 1, dim: 5, tableRows: 2 }),
    Error,
    "odd",
  );
  ctl.destroy();
  return Promise.resolve();
});

gpuTest("embedding checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["x[xb + j] = bf16x2(table[tb + j])", "x[xb + j] = bf16x2(table[tb + j]).yx"], // bf16 halves swapped
    ["let p = ctl[CTL_POS] + m;", "let p = m;"], // position ignored
    ["let tb = id * pairs;", "let tb = id * D;"], // wrong row stride
    ["if (id < ROWS) {", "if (true) {"], // no range check: an out-of-range id reads past the table
  ];
  for (const [from, to] of cases) {
    const kernel = mutate(embeddingKernel, from, to);
    await assertCaught(async () => {
      await checkEmbedding(gpu, 3, 6, { kernel });
      await checkEmbedding(gpu, 17, 130, { kernel });
    }, `${from} -> ${to}`);
  }
});
