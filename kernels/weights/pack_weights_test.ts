/**
 * Tests of the weight packing (`pack_weights.ts`): the CPU reference against the layout's formula, the kernel against
 * the reference at awkward sizes (one block, odd block counts, a grid that is not a multiple of the workgroup, the
 * 7B's down K = 11,008), the gate, shapes refused, and mutants.
 * @module
 */

import { assert, assertEquals, assertThrows } from "@std/assert";
import { PACK_K, PACK_ROWS, packWeights, packWeightsKernel, packWeightsReference } from "./pack_weights.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, ctlBuffer, gpuTest, mutate, Rng } from "../testing/harness.ts";

/** Distinct random words (bf16 pairs) of a [rows, k] matrix. */
function words(rows: number, k: number, seed: number): Uint32Array {
  const rng = new Rng(seed);
  return Uint32Array.from({ length: (rows * k) / 2 }, () => Math.floor(rng.next() * 2 ** 32) >>> 0);
}

/** The bf16 of (row, col) in a packed [rows, k] matrix, by the layout's formula (module comment of pack_weights.ts). */
function packedAt(packed: Uint32Array, k: number, row: number, col: number): number {
  const block = Math.floor(row / PACK_ROWS) * (k / PACK_K) + Math.floor(col / PACK_K);
  const i = block * PACK_ROWS * PACK_K + (row % PACK_ROWS) * PACK_K + (col % PACK_K);
  return (packed[i >> 1] >>> (16 * (i & 1))) & 0xffff;
}

Deno.test("pack weights: the reference puts every value where the layout says", () => {
  for (const [rows, k] of [[16, 64], [48, 192], [32, 11008]]) {
    const src = words(rows, k, rows + k);
    const packed = packWeightsReference(src, rows, k);
    for (let row = 0; row < rows; row++) {
      for (let col = 0; col < k; col++) {
        const i = row * k + col;
        const want = (src[i >> 1] >>> (16 * (i & 1))) & 0xffff;
        if (packedAt(packed, k, row, col) !== want) throw new Error(`${rows} x ${k}: (${row}, ${col}) misplaced`);
      }
    }
  }
});

Deno.test("pack weights: shapes that are not whole blocks are refused", () => {
  assertThrows(() => packWeightsReference(new Uint32Array(8 * 32), 8, 64), Error, "multiple of 16");
  assertThrows(() => packWeightsReference(new Uint32Array(16 * 48), 16, 96), Error, "multiple of 64");
});

/** Packs a random [rows, k] matrix on the GPU into a marked buffer; the words and the source. */
async function run(gpu: Gpu, rows: number, k: number, o: { gated?: boolean; active?: number; kernel?: Kernel } = {}) {
  const src = words(rows, k, 3 * rows + k);
  const ctl = ctlBuffer(gpu, { ACTIVE: o.active ?? 1 });
  const srcb = gpu.upload("weights", src);
  const dst = gpu.upload("packed", new Uint32Array(src.length + 4).fill(0xdeadbeef));
  gpu.run([packWeights(gpu, { ctl, src: srcb, dst, rows, k, gated: o.gated }, o.kernel)]);
  const got = await gpu.readU32(dst, src.length + 4);
  for (const b of [ctl, srcb, dst]) b.destroy();
  return { got, src };
}

function check(got: Uint32Array, src: Uint32Array, rows: number, k: number): void {
  const want = packWeightsReference(src, rows, k);
  const bad = want.findIndex((w, i) => got[i] !== w);
  assertEquals(bad, -1, `${rows} x ${k}: word ${bad} is ${got[bad]}, want ${want[bad]}`);
  assertEquals([...got.subarray(src.length)], new Array(4).fill(0xdeadbeef), "words past the end were written");
}

gpuTest("pack weights: the kernel matches the reference at awkward sizes", async (gpu) => {
  // one block; 3 x 3 blocks (9 x 128 vec4: not a multiple of the workgroup); 1 x 172 blocks (the 7B's down K)
  for (const [rows, k] of [[16, 64], [48, 192], [16, 11008]]) {
    const { got, src } = await run(gpu, rows, k);
    check(got, src, rows, k);
  }
});

gpuTest("pack weights: a gated-off dispatch writes nothing", async (gpu) => {
  const { got } = await run(gpu, 32, 128, { gated: true, active: 0 });
  assert(got.every((w) => w === 0xdeadbeef), "a gated-off packing wrote");
});

gpuTest("pack weights: the check catches a transposed block and a short grid (mutants)", async (gpu) => {
  const cases: [string, string, string][] = [
    ["q / 8u;", "q % 8u;", "rows and columns of a block swapped"],
    ["if (d >= ROWS * (K / 8u))", "if (d + 1u >= ROWS * (K / 8u))", "the last item skipped"],
  ];
  for (const [from, to, what] of cases) {
    const kernel = mutate(packWeightsKernel, from, to);
    await assertCaught(async () => {
      const { got, src } = await run(gpu, 48, 192, { kernel });
      check(got, src, 48, 192);
    }, what);
  }
});
