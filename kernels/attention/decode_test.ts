/**
 * Tests of the decode attention kernels against the f64 reference: every cache length class, 1..16 rows, small head
 * dims, the context limit, one and many splits, the subgroup and the workgroup-memory reductions, gating, rejected
 * shapes, and mutants that each check must catch.
 * @module
 */

import {
  attentionDecode,
  type AttentionDecodeArgs,
  attentionDecodeKernelFor,
  type AttentionDecodeKernels,
  attentionMergeKernel,
  createAttentionDecodeScratch,
} from "./decode.ts";
import { subgroupWidth } from "../reduce.ts";
import type { Gpu } from "../runtime.ts";
import { assertCaught, ctlBuffer, gpuTest, mutate } from "../testing/harness.ts";
import { assertRejected, type AttentionCase, checkAttention } from "../testing/attention_cases.ts";

interface DecodeKnobs {
  gated?: boolean;
  splits?: number;
  minKeys?: number;
  keyLanes?: number;
  workgroupSize?: number;
  mergeWorkgroupSize?: number;
  subgroups?: boolean;
  kernels?: AttentionDecodeKernels;
}

/** Decode attention of case `c` (rows at positions len - rows ..) against the reference. */
function checkDecode(gpu: Gpu, c: AttentionCase, knobs: DecodeKnobs = {}, untouched = false) {
  const { kernels, ...tuning } = knobs;
  const shape = { rows: c.rows, nHeads: c.nHeads, headDim: c.headDim, maxPos: c.maxPos, splits: tuning.splits };
  const scratch = createAttentionDecodeScratch(gpu, shape);
  return checkAttention(
    gpu,
    c,
    (b) => attentionDecode(gpu, { ...b, ...tuning, ...shape, scratch, kvDtype: c.kvDtype }, kernels),
    `attentionDecode ${JSON.stringify(tuning)}`,
    untouched,
  ).finally(() => scratch?.destroy());
}

/** The case of `rows` rows whose last row sees `length` keys. */
function decodeCase(rows: number, length: number, nHeads: number, headDim: number, maxPos = 2048): AttentionCase {
  return { rows, pos: length - rows, nHeads, headDim, maxPos, garbage: length % 2 ? "nan" : "huge" };
}

gpuTest("attention decode of one row matches the reference at every cache length", async (gpu) => {
  for (const length of [1, 7, 33, 1029, 2048]) {
    await checkDecode(gpu, decodeCase(1, length, 3, 128));
    await checkDecode(gpu, decodeCase(1, length, 1, 64));
  }
});

gpuTest("attention decode of 3 and 16 rows (speculative verification) matches the reference", async (gpu) => {
  for (const [rows, length, nHeads, headDim] of [[3, 7, 3, 128], [3, 1029, 1, 64], [16, 16, 1, 128], [16, 33, 3, 64]]) {
    await checkDecode(gpu, decodeCase(rows, length, nHeads, headDim));
  }
  for (const length of [1029, 2048]) await checkDecode(gpu, decodeCase(16, length, 3, 128));
});

gpuTest("attention decode reads bf16 caches", async (gpu) => {
  for (const [rows, length, nHeads, headDim] of [[1, 1, 3, 128], [1, 1029, 2, 128], [4, 300, 2, 64], [16, 70, 1, 8]]) {
    await checkDecode(gpu, { ...decodeCase(rows, length, nHeads, headDim), kvDtype: "bf16" });
  }
  await checkDecode(gpu, { ...decodeCase(3, 200, 2, 64, 256), kvDtype: "bf16" }, { splits: 1 });
});

gpuTest("attention decode handles small head dims", async (gpu) => {
  for (const [rows, length, headDim] of [[1, 1, 8], [3, 33, 8], [16, 1029, 16], [5, 70, 32]]) {
    await checkDecode(gpu, decodeCase(rows, length, 3, headDim, 1100));
  }
});

gpuTest("attention decode at the 4096-position context limit", async (gpu) => {
  await checkDecode(gpu, decodeCase(2, 1029, 2, 128, 4096));
  await checkDecode(gpu, decodeCase(4, 4096, 1, 128, 4096));
});

gpuTest("attention decode single-dispatch path (one split covers the cache)", async (gpu) => {
  for (const [rows, length] of [[1, 1], [3, 40], [16, 90]]) {
    await checkDecode(gpu, decodeCase(rows, length, 3, 64, 90), { splits: 1 });
  }
});

gpuTest("attention decode stays finite on sharp and huge scores", async (gpu) => {
  // scores of std 30 (one key dominates) and of order 1e3 (exp would overflow without the row max)
  for (const qStd of [30, 1000]) await checkDecode(gpu, { ...decodeCase(3, 200, 2, 64, 256), qStd });
});

gpuTest("attention decode tuning knobs keep it correct", async (gpu) => {
  const knobs: DecodeKnobs[] = [
    { splits: 3, minKeys: 1, workgroupSize: 64 },
    { splits: 40, minKeys: 7, workgroupSize: 128, mergeWorkgroupSize: 8 },
    { splits: 8, workgroupSize: 256 },
    { splits: 5, minKeys: 100, workgroupSize: 32, mergeWorkgroupSize: 64 },
    { keyLanes: 16, subgroups: false },
    { keyLanes: 8 },
  ];
  for (const k of knobs) {
    await checkDecode(gpu, decodeCase(3, 517, 2, 128, 1024), k);
    await checkDecode(gpu, decodeCase(1, 97, 1, 64, 1024), k);
  }
});

gpuTest("attention decode agrees with and without subgroup reductions", async (gpu) => {
  const modes = subgroupWidth(gpu) > 0 ? [false, true] : [false];
  for (const subgroups of modes) {
    for (const [rows, length, headDim] of [[1, 300, 128], [4, 77, 64], [16, 500, 32], [2, 2, 8]]) {
      await checkDecode(gpu, decodeCase(rows, length, 2, headDim, 600), { subgroups });
    }
  }
});

gpuTest("attention decode built gated runs only while ctl[ACTIVE] is set", async (gpu) => {
  for (const splits of [1, 9]) {
    await checkDecode(gpu, { ...decodeCase(3, 300, 2, 64, 512), active: 1 }, { gated: true, splits });
    await checkDecode(gpu, { ...decodeCase(3, 300, 2, 64, 512), active: 0 }, { gated: true, splits }, true);
  }
});

gpuTest("attention decode rejects shapes it cannot handle", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const base = { ctl, q: ctl, kCache: ctl, vCache: ctl, out: ctl, scratch: ctl, nHeads: 2, maxPos: 256 };
  const bad: [AttentionDecodeArgs, string][] = [
    [{ ...base, rows: 17, headDim: 64 }, "17 query rows"],
    [{ ...base, rows: 1, headDim: 96 }, "head_dim 96"],
    [{ ...base, rows: 3, headDim: 128, keyLanes: 4, subgroups: false }, "4 threads per key"],
    [{ ...base, rows: 16, headDim: 64, splits: 2, maxPos: 1024 }, "cannot cover 1024 cache rows"],
    [{ ...base, rows: 1, headDim: 64, minKeys: 0 }, "minKeys 0"],
    [{ ...base, rows: 1, headDim: 64, splits: 4 }, "scratch buffer must hold"],
  ];
  try {
    assertRejected(bad.map(([args, says]) => [() => attentionDecode(gpu, args), says]));
  } finally {
    ctl.destroy();
  }
  return Promise.resolve();
});

gpuTest("attention decode checks catch broken kernels", async (gpu) => {
  const subgroups = subgroupWidth(gpu) > 0;
  const decode = (from: string, to: string) => ({ partial: mutate(attentionDecodeKernelFor(subgroups), from, to) });
  const merge = (from: string, to: string) => ({ merge: mutate(attentionMergeKernel, from, to) });
  const cases: [string, AttentionDecodeKernels][] = [
    ["causal limit off by one", decode("k0 + j <= first_pos + m", "k0 + j <= first_pos + m + 1u")],
    ["wrong scale", decode("q[m * row4 + key_col + v * KEY_LANES] * SCALE", "q[m * row4 + key_col + v * KEY_LANES]")],
    [
      "fourth V row of an unrolled step weighted wrong",
      decode("scores[b + 3u * SLOTS] * v3", "scores[b + 2u * SLOTS] * v3"),
    ],
    ["split cut short", decode("let n = min(per, len - k0);", "let n = min(per, len - k0 - 1u);")],
    ["no max subtracted", decode("exp(scores[i] - mx)", "exp(scores[i] - mx * 0.5)")],
    [
      "a lane short in the reductions",
      subgroups
        ? decode("st < lanes; st *= 2u", "st < lanes / 2u; st *= 2u")
        : decode("var st = lanes / 2u; st > 0u", "var st = lanes / 4u; st > 0u"),
    ],
    ["last split dropped", merge("let splits = (len + per - 1u) / per;", "let splits = max(len / per, 1u);")],
  ];
  for (const [what, kernels] of cases) {
    await assertCaught(async () => {
      await checkDecode(gpu, decodeCase(3, 300, 2, 64, 512), { splits: 7, subgroups, kernels });
      await checkDecode(gpu, decodeCase(2, 300, 1, 64, 512), { splits: 1, subgroups, kernels });
    }, what);
  }
});
