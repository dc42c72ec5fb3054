/**
 * Tests of the causal prefill attention kernel (`prefill.ts`) against the CPU reference: awkward row counts and
 * positions, garbage past the valid keys, bf16 and f32 caches, tile shapes and both reduction paths, the context
 * limit, gating, the default tiles, shape checks and mutants.
 * @module
 */

import {
  attentionPrefill,
  attentionPrefillKernelFor,
  planAttentionPrefill,
  PREFILL_TARGET_WORKGROUPS,
  type PrefillTiles,
} from "./prefill.ts";
import { WORKGROUP_BYTES } from "./shared.ts";
import { subgroupWidth } from "../reduce.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, ctlBuffer, gpuTest, mutate } from "../testing/harness.ts";
import { assertRejected, type AttentionCase, checkAttention } from "../testing/attention_cases.ts";

interface PrefillKnobs extends PrefillTiles {
  gated?: boolean;
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

/** The reduction paths this device runs: the tree always, subgroup shuffles where it has them. */
const paths = (gpu: Gpu) => subgroupWidth(gpu) > 0 ? [false, true] : [false];

gpuTest("attention prefill reads bf16 caches", async (gpu) => {
  for (const [rows, pos, headDim] of [[1, 0, 128], [37, 17, 128], [19, 0, 64], [130, 3, 128]]) {
    await checkPrefill(gpu, { ...prefillCase(rows, pos, 2, headDim), kvDtype: "bf16" });
  }
});

// Cases differing only in their position share a pipeline (positions are GPU data): each row count compiles one on
// the CPU adapter, a second or more, so the tests vary positions freely and row counts sparingly.

gpuTest("attention prefill matches the reference at head_dim 128 and 64", async (gpu) => {
  for (const rows of [1, 33, 130]) {
    for (const pos of [0, 17, 250]) {
      await checkPrefill(gpu, prefillCase(rows, pos, 2, 128));
      await checkPrefill(gpu, prefillCase(rows, pos, 1, 64));
    }
  }
});

gpuTest("attention prefill of a 7B layer (32 heads of 128) at 128 tokens, default tiles", async (gpu) => {
  await checkPrefill(gpu, { ...prefillCase(128, 0, 32, 128), kvDtype: "bf16" });
});

gpuTest("attention prefill handles small head dims and many heads", async (gpu) => {
  for (const [rows, pos, headDim] of [[1, 0, 8], [7, 3, 8], [33, 17, 16], [70, 0, 32]]) {
    await checkPrefill(gpu, prefillCase(rows, pos, 3, headDim));
  }
});

gpuTest("attention prefill up to the 4096-position context limit", async (gpu) => {
  await checkPrefill(gpu, { ...prefillCase(75, 2000, 1, 128), kvDtype: "bf16" });
  await checkPrefill(gpu, { ...prefillCase(197, 3899, 1, 128), maxPos: 4096 });
});

gpuTest("attention prefill stays finite on sharp and huge scores", async (gpu) => {
  // scores of std 30 (one key dominates) and of order 1e3 (exp would overflow without the running max)
  for (const qStd of [30, 1000]) {
    await checkPrefill(gpu, { ...prefillCase(40, 9, 2, 64), qStd });
    await checkPrefill(gpu, { ...prefillCase(21, 0, 1, 128), qStd }, { queryTile: 16, keyTile: 8 });
  }
});

gpuTest("attention prefill tile shapes keep it correct", async (gpu) => {
  // [tiles, the head dims they fit]
  const tiles: [PrefillTiles, number[]][] = [
    [{ queryTile: 16, keyTile: 8, workgroupSize: 64, keyLanes: 8 }, [128, 64]], // 2 rows x 1 key a thread
    [{ queryTile: 16, keyTile: 8, workgroupSize: 32, keyLanes: 4 }, [128, 64]], // one warp: 2 x 2 scores, 8 vec4
    [{ queryTile: 8, keyTile: 16, workgroupSize: 128, keyLanes: 16 }, [128, 64]], // the tree unless subgroups span 16
    [{ queryTile: 32, keyTile: 4, workgroupSize: 32, keyLanes: 4 }, [64]], // 4 rows a thread
    [{ queryTile: 4, keyTile: 32, workgroupSize: 32, keyLanes: 8 }, [64]], // 4 keys a lane
    [{ queryTile: 32, keyTile: 4, workgroupSize: 32, keyLanes: 1 }, [64]], // one lane a row: no reductions
    [{ queryTile: 32, keyTile: 4, workgroupSize: 128, keyLanes: 4 }, [64]], // fewer K/V vec4 than threads
  ];
  for (const [t, headDims] of tiles) {
    for (const headDim of headDims) {
      for (const pos of [0, 17]) await checkPrefill(gpu, prefillCase(37, pos, 2, headDim), t);
    }
  }
});

gpuTest("attention prefill agrees with and without subgroup reductions", async (gpu) => {
  for (const subgroups of paths(gpu)) {
    for (
      const [rows, pos, headDim, queryTile, keyTile] of [[33, 17, 128, 8, 16], [70, 0, 64, 16, 8], [9, 5, 8, 16, 8]]
    ) {
      const c = { ...prefillCase(rows, pos, 2, headDim), kvDtype: "bf16" as const };
      await checkPrefill(gpu, c, { subgroups, queryTile, keyTile });
    }
  }
});

gpuTest("attention prefill built gated runs only while ctl[ACTIVE] is set", async (gpu) => {
  await checkPrefill(gpu, { ...prefillCase(9, 17, 2, 64), active: 1 }, { gated: true });
  await checkPrefill(gpu, { ...prefillCase(9, 17, 2, 64), active: 0 }, { gated: true }, true);
});

gpuTest("attention prefill default tiles fill the GPU and fit the portable workgroup memory", (gpu) => {
  for (const rows of [128, 512, 2048, 4096]) {
    const p = planAttentionPrefill(gpu, { rows, nHeads: 32, headDim: 128 });
    const workgroups = 32 * Math.ceil(rows / p.queryTile);
    if (workgroups < PREFILL_TARGET_WORKGROUPS) throw new Error(`${rows} rows: ${workgroups} workgroups`);
    // The longer the prompt, the larger the query tile (fewer K/V reads per row) once the GPU is full.
    if (rows >= 512 && p.queryTile < 16) throw new Error(`${rows} rows: a query tile of ${p.queryTile}`);
  }
  for (const headDim of [8, 16, 32, 64, 128]) {
    for (const rows of [1, 20, 128, 2048]) planAttentionPrefill(gpu, { rows, nHeads: 2, headDim }); // throws if not
  }
  if (WORKGROUP_BYTES !== 16384) throw new Error("the portable limit changed: revisit the tiles");
  return Promise.resolve();
});

gpuTest("attention prefill rejects shapes it cannot handle", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const base = { ctl, q: ctl, kCache: ctl, vCache: ctl, out: ctl, nHeads: 2 };
  const other = attentionPrefillKernelFor(
    planAttentionPrefill(gpu, { rows: 64, nHeads: 2, headDim: 64, queryTile: 8 }),
  );
  const width = subgroupWidth(gpu);
  try {
    assertRejected([
      [() => attentionPrefill(gpu, { ...base, rows: 0, headDim: 64 }), "0 query rows"],
      [() => attentionPrefill(gpu, { ...base, rows: 4, headDim: 80 }), "head_dim 80"],
      [() => attentionPrefill(gpu, { ...base, rows: 4, headDim: 128, keyTile: 32 }), "workgroup memory"],
      [() => attentionPrefill(gpu, { ...base, rows: 4, headDim: 64, queryTile: 12 }), "12 rows is not a power"],
      [() => attentionPrefill(gpu, { ...base, rows: 4, headDim: 64, keyTile: 2 }), "key tile of 2 keys"],
      [() => attentionPrefill(gpu, { ...base, rows: 4, headDim: 32, keyLanes: 16 }), "16 key lanes"],
      [
        () => attentionPrefill(gpu, { ...base, rows: 4, headDim: 64, queryTile: 4, workgroupSize: 64, keyLanes: 8 }),
        "smaller than the 8 row groups",
      ],
      [
        () => attentionPrefill(gpu, { ...base, rows: 4, headDim: 128, queryTile: 32, workgroupSize: 32, keyLanes: 2 }),
        "output vec4",
      ],
      [() => attentionPrefill(gpu, { ...base, rows: 64, headDim: 64, queryTile: 16 }, other), "not generated for"],
      // subgroups asked for where the device has none, or narrower than the key lanes (none narrower than 32)
      ...(width < 32
        ? [[
          () =>
            attentionPrefill(gpu, {
              ...base,
              rows: 4,
              headDim: 128,
              keyLanes: Math.max(8, 2 * width),
              subgroups: true,
            }),
          "subgroups",
        ] as [() => unknown, string]]
        : []),
    ]);
  } finally {
    ctl.destroy();
  }
  return Promise.resolve();
});

gpuTest("attention prefill checks catch broken kernels", async (gpu) => {
  const tiles = { queryTile: 16, keyTile: 8, workgroupSize: 32, keyLanes: 4 };
  const kernelFor = (subgroups: boolean) =>
    attentionPrefillKernelFor(planAttentionPrefill(gpu, { rows: 1, nHeads: 1, headDim: 64, ...tiles, subgroups }));
  // 33 rows at two positions (one pipeline), head_dim 64, the tiles above.
  const check = async (subgroups: boolean, kernel: Kernel) => {
    for (const pos of [17, 0]) await checkPrefill(gpu, prefillCase(33, pos, 2, 64), { ...tiles, subgroups, kernel });
  };
  const sg = subgroupWidth(gpu) > 0; // the device's default path, for the mutants outside the reductions
  const broken: [boolean, string, string, string][] = [
    [sg, "causal limit off by one", "key <= pos", "key < pos"],
    [sg, "diagonal tile left unmasked", "k0 + BK - 1u > first_pos", "k0 > first_pos"],
    [sg, "no running-max rescale", "o0_1 *= a0;", ""],
    [sg, "last key tile skipped", "k0 <= last_key; k0 += BK", "k0 + BK <= last_key; k0 += BK"],
    [sg, "K/V rows past the last key read", "if (key <= last_key) {", "if (true) {"],
    [sg, "queries not scaled", "* SCALE; }", "; }"],
    [sg, "next K tile read at the current one", "load_kv(k0 + BK + sj0", "load_kv(k0 + sj0"],
    [sg, "fourth key of a P V step weighted wrong", "fma(vec4<f32>(pr0.w), w1", "fma(vec4<f32>(pr0.z), w1"],
    [false, "a lane short in the tree's row sums", "var st = lanes / 2u; st > 0u", "var st = lanes / 4u; st > 0u"],
  ];
  if (sg) {
    broken.push([true, "a lane short in the shuffled row sums", "st < lanes; st *= 2u", "st < lanes / 2u; st *= 2u"]);
  }
  for (const subgroups of paths(gpu)) await check(subgroups, kernelFor(subgroups)); // the unbroken kernels pass
  for (const [subgroups, what, from, to] of broken) {
    await assertCaught(() => check(subgroups, mutate(kernelFor(subgroups), from, to)), what);
  }
});
