/**
 * Tests of the causal prefill attention kernel (`prefill.ts`) against the CPU reference: awkward row counts and
 * positions, garbage past the valid keys, gating, shape checks and mutants.
 * @module
 */

import { attentionPrefill, attentionPrefillKernelFor } from "./prefill.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, ctlBuffer, gpuTest, mutate } from "../testing/harness.ts";
import { assertRejected, type AttentionCase, checkAttention } from "../testing/attention_cases.ts";

interface PrefillKnobs {
  gated?: boolean;
  queryTile?: number;
  keyTile?: number;
  workgroupSize?: number;
  kernel?: Kernel;
}

/** Prefill attention of case `c` against the reference. */
function checkPrefill(gpu: Gpu, c: AttentionCase, knobs: PrefillKnobs = {}, untouched = false) {
  const { kernel, ...tuning } = knobs;
  return checkAttention(
    gpu,
    c,
    (b) => [
      attentionPrefill(
        gpu,
        { ...b, ...tuning, rows: c.rows, nHeads: c.nHeads, headDim: c.headDim, kvDtype: c.kvDtype },
        kernel,
      ),
    ],
    `attentionPrefill ${JSON.stringify(tuning)}`,
    untouched,
  );
}

/** `rows` prompt rows after a cache prefix of `pos` rows, in caches with a few rows of garbage after them. */
function prefillCase(rows: number, pos: number, nHeads: number, headDim: number): AttentionCase {
  return { rows, pos, nHeads, headDim, maxPos: pos + rows + 5, garbage: rows % 2 ? "nan" : "huge" };
}

gpuTest("attention prefill reads bf16 caches", async (gpu) => {
  for (const [rows, pos, headDim] of [[1, 0, 128], [37, 17, 128], [19, 0, 64]]) {
    await checkPrefill(gpu, { ...prefillCase(rows, pos, 2, headDim), kvDtype: "bf16" });
  }
});

gpuTest("attention prefill matches the reference at head_dim 128 and 64", async (gpu) => {
  for (const rows of [1, 5, 33, 130]) {
    for (const pos of [0, 17]) {
      await checkPrefill(gpu, prefillCase(rows, pos, 2, 128));
      await checkPrefill(gpu, prefillCase(rows, pos, 1, 64));
    }
  }
});

gpuTest("attention prefill handles small head dims and many heads", async (gpu) => {
  for (const [rows, pos, headDim] of [[1, 0, 8], [7, 3, 8], [33, 17, 16], [70, 0, 32]]) {
    await checkPrefill(gpu, prefillCase(rows, pos, 3, headDim));
  }
});

gpuTest("attention prefill stays finite on sharp and huge scores", async (gpu) => {
  for (const qStd of [30, 1000]) await checkPrefill(gpu, { ...prefillCase(40, 9, 2, 64), qStd });
});

gpuTest("attention prefill tuning knobs keep it correct", async (gpu) => {
  const knobs: PrefillKnobs[] = [
    { queryTile: 1, keyTile: 1, workgroupSize: 32 },
    { queryTile: 8, keyTile: 16, workgroupSize: 64 },
    { queryTile: 16, keyTile: 4, workgroupSize: 256 },
    { queryTile: 5, keyTile: 3, workgroupSize: 128 },
  ];
  for (const k of knobs) {
    await checkPrefill(gpu, prefillCase(37, 17, 2, 128), k);
    await checkPrefill(gpu, prefillCase(19, 0, 1, 64), k);
  }
});

gpuTest("attention prefill built gated runs only while ctl[ACTIVE] is set", async (gpu) => {
  await checkPrefill(gpu, { ...prefillCase(9, 17, 2, 64), active: 1 }, { gated: true });
  await checkPrefill(gpu, { ...prefillCase(9, 17, 2, 64), active: 0 }, { gated: true }, true);
});

gpuTest("attention prefill rejects shapes it cannot handle", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const base = { ctl, q: ctl, kCache: ctl, vCache: ctl, out: ctl, nHeads: 2 };
  try {
    assertRejected([
      [() => attentionPrefill(gpu, { ...base, rows: 0, headDim: 64 }), "0 query rows"],
      [() => attentionPrefill(gpu, { ...base, rows: 4, headDim: 80 }), "head_dim 80"],
      [() => attentionPrefill(gpu, { ...base, rows: 4, headDim: 128, keyTile: 32 }), "workgroup memory"],
      [
        () => attentionPrefill(gpu, { ...base, rows: 64, headDim: 128, workgroupSize: 32, queryTile: 16 }),
        "rows per thread",
      ],
    ]);
  } finally {
    ctl.destroy();
  }
  return Promise.resolve();
});

gpuTest("attention prefill checks catch broken kernels", async (gpu) => {
  const cases: [string, string, string][] = [
    ["causal limit off by one", "tile_first + j <= min(first_pos + r", "tile_first + j < min(first_pos + r"],
    ["no running-max rescale", "if (r < BQ) { acc[i] *= alpha[r]; }", ""],
    ["last key tile skipped", "k0 <= last_key; k0 += BK", "k0 + BK <= last_key; k0 += BK"],
    ["K/V rows past the last key read", "if (key <= last_key) {\n      if (values)", "if (true) {\n      if (values)"],
  ];
  for (const [what, from, to] of cases) {
    const kernel = mutate(attentionPrefillKernelFor(), from, to);
    await assertCaught(async () => {
      await checkPrefill(gpu, prefillCase(33, 17, 2, 64), { kernel });
      await checkPrefill(gpu, prefillCase(5, 0, 1, 128), { kernel });
    }, what);
  }
});
