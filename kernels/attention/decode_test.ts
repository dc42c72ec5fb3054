/**
 * Tests of the decode attention kernels (`decode.ts`: per-chunk partials and their merge) against the CPU
 * reference: one row at every cache length, 3 and 16 rows, the 4096 context, tuning knobs, garbage past the valid keys,
 * gating, shape checks and mutants.
 * @module
 */

import {
  attentionDecode,
  type AttentionDecodeArgs,
  attentionDecodeKernel,
  type AttentionDecodeKernels,
  attentionMergeKernel,
  createAttentionDecodeScratch,
} from "./decode.ts";
import type { Gpu } from "../runtime.ts";
import { assertCaught, ctlBuffer, gpuTest, mutate } from "../testing/harness.ts";
import { assertRejected, type AttentionCase, checkAttention } from "../testing/attention_cases.ts";

interface DecodeKnobs {
  gated?: boolean;
  chunk?: number;
  keyLanes?: number;
  tile?: number;
  workgroupSize?: number;
  mergeWorkgroupSize?: number;
  kernels?: AttentionDecodeKernels;
}

/** Decode attention of case `c` (rows at positions len - rows ..) against the reference. */
function checkDecode(gpu: Gpu, c: AttentionCase, knobs: DecodeKnobs = {}, untouched = false) {
  const { kernels, ...tuning } = knobs;
  const shape = { rows: c.rows, nHeads: c.nHeads, headDim: c.headDim, maxPos: c.maxPos, chunk: tuning.chunk };
  const scratch = createAttentionDecodeScratch(gpu, shape);
  return checkAttention(
    gpu,
    c,
    (b) => attentionDecode(gpu, { ...b, ...tuning, ...shape, scratch }, kernels),
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

gpuTest("attention decode handles small head dims", async (gpu) => {
  for (const [rows, length, headDim] of [[1, 1, 8], [3, 33, 8], [16, 1029, 16], [5, 70, 32]]) {
    await checkDecode(gpu, decodeCase(rows, length, 3, headDim, 1100));
  }
});

gpuTest("attention decode at the 4096-position context limit", async (gpu) => {
  await checkDecode(gpu, decodeCase(2, 1029, 2, 128, 4096));
  await checkDecode(gpu, decodeCase(4, 4096, 1, 128, 4096));
});

gpuTest("attention decode single-dispatch path (one chunk covers the cache)", async (gpu) => {
  for (const [rows, length] of [[1, 1], [3, 40], [16, 300]]) {
    await checkDecode(gpu, decodeCase(rows, length, 3, 64, 300), { chunk: 300, tile: 32 });
  }
});

gpuTest("attention decode stays finite on sharp and huge scores", async (gpu) => {
  // scores of std 30 (one key dominates) and of order 1e3 (exp would overflow without the running max)
  for (const qStd of [30, 1000]) await checkDecode(gpu, { ...decodeCase(3, 200, 2, 64, 256), qStd });
});

gpuTest("attention decode tuning knobs keep it correct", async (gpu) => {
  const knobs: DecodeKnobs[] = [
    { chunk: 32, tile: 32, workgroupSize: 64 },
    { chunk: 256, tile: 32, workgroupSize: 128, mergeWorkgroupSize: 8 },
    { chunk: 128, tile: 64, workgroupSize: 256 },
    { chunk: 96, tile: 16, workgroupSize: 32, mergeWorkgroupSize: 64 },
    { chunk: 64, tile: 64, keyLanes: 16 },
    { chunk: 64, tile: 64, keyLanes: 8 },
  ];
  for (const k of knobs) {
    await checkDecode(gpu, decodeCase(3, 517, 2, 128, 1024), k);
    await checkDecode(gpu, decodeCase(1, 97, 1, 64, 1024), k);
  }
});

gpuTest("attention decode built gated runs only while ctl[ACTIVE] is set", async (gpu) => {
  for (const chunk of [64, 512]) {
    await checkDecode(gpu, { ...decodeCase(3, 300, 2, 64, 512), active: 1 }, { gated: true, chunk });
    await checkDecode(gpu, { ...decodeCase(3, 300, 2, 64, 512), active: 0 }, { gated: true, chunk }, true);
  }
});

gpuTest("attention decode rejects shapes it cannot handle", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const base = { ctl, q: ctl, kCache: ctl, vCache: ctl, out: ctl, scratch: ctl, nHeads: 2, maxPos: 256 };
  const bad: [AttentionDecodeArgs, string][] = [
    [{ ...base, rows: 17, headDim: 64 }, "17 query rows"],
    [{ ...base, rows: 1, headDim: 96 }, "head_dim 96"],
    [{ ...base, rows: 1, headDim: 64, tile: 12 }, "tile of 12 keys"],
    [{ ...base, rows: 3, headDim: 128, keyLanes: 4 }, "4 threads per key"],
    [{ ...base, rows: 16, headDim: 64, tile: 256, chunk: 256, maxPos: 1024 }, "workgroup memory"],
    [{ ...base, rows: 1, headDim: 64 }, "scratch buffer must hold"],
  ];
  try {
    assertRejected(bad.map(([args, says]) => [() => attentionDecode(gpu, args), says]));
  } finally {
    ctl.destroy();
  }
  return Promise.resolve();
});

gpuTest("attention decode checks catch broken kernels", async (gpu) => {
  const decode = (from: string, to: string) => ({
    partial: mutate(attentionDecodeKernel, from, to),
    merge: attentionMergeKernel,
  });
  const merge = (from: string, to: string) => ({
    partial: attentionDecodeKernel,
    merge: mutate(attentionMergeKernel, from, to),
  });
  const cases: [string, AttentionDecodeKernels][] = [
    [
      "causal limit off by one",
      decode("tile_first + j <= min(first_pos + r", "tile_first + j <= min(first_pos + r + 1u"),
    ],
    ["wrong scale", decode("q[m * row4 + key_col + v * KEY_LANES] * SCALE", "q[m * row4 + key_col + v * KEY_LANES]")],
    ["no running-max rescale", decode("acc[m] *= alpha[m];", "")],
    ["last chunk dropped", merge("let chunks = p / CHUNK + 1u;", "let chunks = max(p / CHUNK, 1u);")],
  ];
  for (const [what, kernels] of cases) {
    await assertCaught(async () => {
      await checkDecode(gpu, decodeCase(3, 300, 2, 64, 512), { chunk: 128, tile: 32, kernels });
      await checkDecode(gpu, decodeCase(2, 300, 1, 64, 512), { chunk: 512, tile: 32, kernels });
    }, what);
  }
});
