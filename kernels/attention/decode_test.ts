/**
 * Tests of the decode attention kernels against the f64 reference: every cache length class, 1..16 rows, small head
 * dims, the context limit, one and many splits, the subgroup and the workgroup-memory reductions, gating, rejected
 * shapes, and mutants that each check must catch; then the fused QK-norm + RoPE + K/V append variant, with its
 * statistics from qkv or from the QKV matvec's partial sums.
 * @module
 */

import {
  ATTENTION_TUNING_ENV,
  attentionDecode,
  type AttentionDecodeArgs,
  attentionDecodeFusedReference,
  attentionDecodeKernelFor,
  type AttentionDecodeKernels,
  type AttentionDecodeKernelSpec,
  attentionMergeKernel,
  createAttentionDecodeScratch,
} from "./decode.ts";
import { assertUserError } from "../../tests/model/util.ts";
import { subgroupWidth } from "../reduce.ts";
import type { Gpu } from "../runtime.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, poisoned, Rng } from "../testing/harness.ts";
import { assertRejected, ATTENTION_TOL, type AttentionCase, checkAttention } from "../testing/attention_cases.ts";
import type { KvDtype } from "./kv_cache.ts";
import { ropeTable } from "./qk_norm_rope.ts";
import { packBf16, roundBf16Array, unpackBf16 } from "../bf16.ts";
import { qkStatsReference } from "../matmul/matvec.ts";

interface DecodeKnobs {
  gated?: boolean;
  splits?: number;
  minKeys?: number;
  keyLanes?: number;
  workgroupSize?: number;
  mergeWorkgroupSize?: number;
  subgroups?: boolean;
  scoreUnroll?: number;
  pvUnroll?: number;
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
    (b) =>
      attentionDecode(gpu, { ...b, ...tuning, ...shape, scratch, kvDtype: c.kvDtype, posBack: c.posBack }, kernels),
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

gpuTest(
  "attention decode with posBack attends from ctl[POS] - posBack (split and single-dispatch paths)",
  async (gpu) => {
    // [rows, length, posBack, splits, maxPos]: the split path, then one split over a short cache
    const cases: [number, number, number, number | undefined, number][] = [
      [3, 40, 2, undefined, 2048],
      [4, 1029, 3, undefined, 2048],
      [2, 90, 7, 1, 100],
    ];
    for (const [rows, length, posBack, splits, maxPos] of cases) {
      await checkDecode(gpu, { ...decodeCase(rows, length, 2, 64, maxPos), posBack }, { splits });
    }
    // the mutant that ignores POS_BACK attends from the wrong positions
    const deaf = (spec: AttentionDecodeKernelSpec) =>
      mutate(attentionDecodeKernelFor(spec), "first_pos = ctl[CTL_POS] - POS_BACK", "first_pos = ctl[CTL_POS]");
    await assertCaught(
      () => checkDecode(gpu, { ...decodeCase(3, 40, 2, 64, 2048), posBack: 2 }, { kernels: { partial: deaf } }),
      "posBack ignored",
    );
    // the merge counts the splits that hold keys from ctl[POS] - posBack too: 200 rows back, 3 splits fewer
    await checkDecode(gpu, { ...decodeCase(2, 1029, 2, 64, 2048), posBack: 200 });
    // negative: rows ahead of ctl[POS] (a prefill's last row alone, model/hydra.ts), split and single-dispatch paths
    const ahead: [number, number, number, number | undefined, number][] = [
      [1, 128, -127, undefined, 2048],
      [1, 1029, -1000, undefined, 2048],
      [2, 90, -5, 1, 100],
    ];
    for (const [rows, length, posBack, splits, maxPos] of ahead) {
      await checkDecode(gpu, { ...decodeCase(rows, length, 2, 64, maxPos), posBack }, { splits });
    }
    await assertCaught(
      () => checkDecode(gpu, { ...decodeCase(1, 128, 2, 64, 2048), posBack: -127 }, { kernels: { partial: deaf } }),
      "a negative posBack ignored",
    );
  },
);

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
    { scoreUnroll: 2, pvUnroll: 8 },
    { scoreUnroll: 4, pvUnroll: 1, splits: 3, minKeys: 1, workgroupSize: 64 },
    { scoreUnroll: 4, pvUnroll: 2, keyLanes: 16, subgroups: false },
  ];
  for (const k of knobs) {
    await checkDecode(gpu, decodeCase(3, 517, 2, 128, 1024), k);
    await checkDecode(gpu, decodeCase(1, 97, 1, 64, 1024), k);
  }
});

gpuTest(
  "attention decode's unrolled passes: every unrolled key counts, and the unrolling knob is checked",
  async (gpu) => {
    const unrolled = { scoreUnroll: 4, pvUnroll: 8 };
    const mutants: [string, AttentionDecodeKernels][] = [
      ["third score pass of an unrolled step reads the first's keys", {
        partial: (spec) => mutate(attentionDecodeKernelFor(spec), "j0 + 2u * KEY_SLOTS + key_slot", "j0 + key_slot"),
      }],
      ["eighth V row of an unrolled step weighted wrong", {
        partial: (spec) =>
          mutate(attentionDecodeKernelFor(spec), "scores[0u * CAP + j + 7u * SLOTS] * v7", "scores[0u * CAP + j] * v7"),
      }],
    ];
    // 300 keys in 2 splits: each split's keys span several unrolled steps and end partway through one
    await checkDecode(gpu, decodeCase(3, 300, 2, 64, 512), { ...unrolled, splits: 2 });
    for (const [what, kernels] of mutants) {
      await assertCaught(
        () => checkDecode(gpu, decodeCase(3, 300, 2, 64, 512), { ...unrolled, splits: 2, kernels }),
        what,
      );
    }
    // the A/B variable: applied to every decode attention, and one sentence naming it when unusable
    const ctl = ctlBuffer(gpu);
    const a = {
      ctl,
      q: ctl,
      kCache: ctl,
      vCache: ctl,
      out: ctl,
      rows: 1,
      nHeads: 1,
      headDim: 64,
      maxPos: 64,
      splits: 1,
    };
    try {
      Deno.env.set(ATTENTION_TUNING_ENV, '{"pvUnroll":2,"keyLanes":4}');
      const label = attentionDecode(gpu, a)[0].label;
      if (!/_m1v4u1p2/.test(label)) throw new Error(`${ATTENTION_TUNING_ENV} not applied: ${label}`);
      await checkDecode(gpu, decodeCase(3, 300, 2, 64, 512));
      for (
        const [env, says] of [["3,4", "is not a JSON object"], ['{"bogus":1}', "is not a JSON object"], [
          '{"scoreUnroll":3}',
          "scoreUnroll 3",
        ]]
      ) {
        Deno.env.set(ATTENTION_TUNING_ENV, env);
        await assertUserError(() => attentionDecode(gpu, a), [ATTENTION_TUNING_ENV, says]);
      }
    } finally {
      Deno.env.delete(ATTENTION_TUNING_ENV);
      ctl.destroy();
    }
  },
);

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
  const decode = (from: string, to: string) => ({
    partial: (spec: AttentionDecodeKernelSpec) => mutate(attentionDecodeKernelFor(spec), from, to),
  });
  const merge = (from: string, to: string) => ({ merge: mutate(attentionMergeKernel, from, to) });
  const cases: [string, AttentionDecodeKernels][] = [
    ["causal limit off by one", decode("k0 + j <= first_pos + 0u", "k0 + j <= first_pos + 1u")],
    [
      "wrong scale",
      decode(
        "query4(0u, key_col + 0u * KEY_LANES, first_pos) * SCALE",
        "query4(0u, key_col + 0u * KEY_LANES, first_pos)",
      ),
    ],
    [
      "fourth V row of an unrolled step weighted wrong",
      decode("scores[0u * CAP + j + 3u * SLOTS] * v3", "scores[0u * CAP + j + 2u * SLOTS] * v3"),
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
    [
      "a group of splits left out of the total",
      merge("for (var g = 0u; g < groups; g++)", "for (var g = 1u; g < groups; g++)"),
    ],
    ["every other split of a group skipped", merge("s < splits; s += groups)", "s < splits; s += 2u * groups)")],
    [
      "the sums of exp of one group only",
      merge("total_sum += group_sum[g * HV + l];", "total_sum = group_sum[g * HV + l];"),
    ],
  ];
  for (const [what, kernels] of cases) {
    await assertCaught(async () => {
      await checkDecode(gpu, decodeCase(3, 300, 2, 64, 512), { splits: 7, subgroups, kernels });
      await checkDecode(gpu, decodeCase(2, 300, 1, 64, 512), { splits: 1, subgroups, kernels });
      // more splits than the merge's groups (64 threads / 16 vec4 columns = 4): each group adds several splits
      await checkDecode(gpu, decodeCase(1, 300, 2, 64, 512), {
        splits: 30,
        minKeys: 8,
        mergeWorkgroupSize: 64,
        subgroups,
        kernels,
      });
    }, what);
  }
});

/** A fused decode case: `rows` new rows at positions pos .. over caches of maxPos rows holding keys 0 .. pos - 1. */
interface FusedCase {
  rows: number;
  pos: number;
  nHeads: number;
  headDim: number;
  maxPos: number;
  kvDtype?: KvDtype;
  applyNorm?: boolean;
  /** The QK-norm statistics from partial sums by row groups of this many outputs (`qkNormRope.stats`). */
  statsGroupRows?: number;
}

/**
 * The fused dispatch(es) of case `c` against the composed reference: the output rows below maxPos, the appended cache
 * rows, and every other cache row bit for bit (rows past the valid keys hold NaN, read by no correct kernel; two
 * sentinel rows past maxPos catch a write beyond the cache).
 */
async function checkFused(gpu: Gpu, c: FusedCase, knobs: DecodeKnobs = {}): Promise<void> {
  const { kernels, ...tuning } = knobs;
  const d = c.nHeads * c.headDim, bf16 = c.kvDtype === "bf16", stored = c.maxPos + 2;
  const rng = new Rng(((c.rows * 131 + c.pos) * 7 + d) * 3 + c.maxPos + (bf16 ? 1 : 0));
  const qkv = rng.normals(c.rows * 3 * d, 2);
  const normWeights = rng.normals(2 * d, 0.5, 1);
  const table = ropeTable(c.maxPos, c.headDim, 500000);
  const caches = [0, 1].map(() => {
    const cache = new Float32Array(stored * d).fill(NaN);
    cache.set(rng.normals(Math.min(c.pos, c.maxPos) * d));
    cache.set(rng.normals(2 * d, 1, 7), c.maxPos * d);
    return bf16 ? roundBf16Array(cache) : cache;
  });
  const shape = { rows: c.rows, nHeads: c.nHeads, headDim: c.headDim, maxPos: c.maxPos, splits: tuning.splits };
  const scratch = createAttentionDecodeScratch(gpu, shape);
  // The partials as the QKV matvec writes them (f64 sums rounded to f32: matvec_test.ts checks the matvec's against
  // these), NaN in the slots it leaves alone, so that a kernel reading one of those fails.
  const partials = c.statsGroupRows === undefined
    ? undefined
    : gpu.upload("qk partials", qkStatsReference(qkv, c.rows, 3 * d, d, c.statsGroupRows));
  const b = {
    ctl: ctlBuffer(gpu, { POS: c.pos, ACTIVE: 1 }),
    qkv: gpu.upload("qkv", qkv),
    ...(partials ? { partials } : {}),
    normWeights: gpu.upload("norm_w", normWeights),
    ropeTable: gpu.upload("rope", table),
    kCache: gpu.upload("k", bf16 ? packBf16(caches[0]) : caches[0]),
    vCache: gpu.upload("v", bf16 ? packBf16(caches[1]) : caches[1]),
    out: poisoned(gpu, c.rows * d),
  };
  const what = `fused attention ${JSON.stringify({ ...c, ...tuning })}`;
  try {
    gpu.run(attentionDecode(gpu, {
      ...tuning,
      ...shape,
      ctl: b.ctl,
      kCache: b.kCache,
      vCache: b.vCache,
      out: b.out,
      scratch,
      kvDtype: c.kvDtype,
      qkNormRope: {
        qkv: b.qkv,
        normWeights: b.normWeights,
        ropeTable: b.ropeTable,
        applyNorm: c.applyNorm,
        stats: partials ? { partials, groupRows: c.statsGroupRows! } : undefined,
      },
    }, kernels));
    const read = async (buf: GPUBuffer) =>
      bf16 ? unpackBf16(await gpu.readU32(buf, (stored * d) / 2)) : await gpu.readF32(buf, stored * d);
    const got = {
      out: await gpu.readF32(b.out, c.rows * d),
      kCache: await read(b.kCache),
      vCache: await read(b.vCache),
    };
    const s = { ...c, dim: d, eps: 1e-6, applyNorm: c.applyNorm ?? true };
    const want = attentionDecodeFusedReference(qkv, normWeights, table, s, caches[0], caches[1], got);
    const first = Math.min(c.pos, c.maxPos) * d, end = Math.min(c.pos + c.rows, c.maxPos) * d;
    for (const [name, i] of [["k", 0], ["v", 1]] as const) {
      const g = got[`${name}Cache`];
      const untouched = [...g.keys()].find((j) => (j < first || j >= end) && !Object.is(g[j], caches[i][j]));
      if (untouched !== undefined) throw new Error(`${what}: ${name} cache element ${untouched} was written`);
      // bf16: kernel and reference round their own f32 / f64 results, possibly an ulp apart (2^-7 relative at most)
      const tol = bf16 && name === "k" ? { atol: 1e-5, rtol: 2 ** -7 } : { atol: 1e-5, rtol: 1e-5 };
      assertClose(g.subarray(first, end), want[`${name}Cache`].subarray(first, end), tol, `${what} ${name} cache`);
    }
    const valid = Math.max(0, Math.min(c.rows, c.maxPos - c.pos)) * d;
    // With partial sums the statistics are added in another order (f32 partials of f64 sums, then a strided f32 sum
    // and the workgroup reduction): their relative error is a few 2^-24, ~1e-6 after the inverse square root, a
    // relative error of the normed q and k that moves scores of a few units by ~1e-5 relative and outputs well
    // inside ATTENTION_TOL (rtol 1e-4); the cache rows' 1e-5 (bf16 k: one ulp) also hold.
    assertClose(got.out.subarray(0, valid), want.out.subarray(0, valid), ATTENTION_TOL, `${what} out`);
  } finally {
    for (const buf of Object.values(b)) buf.destroy();
    scratch?.destroy();
  }
}

gpuTest("fused QK-norm + RoPE + append: one row at awkward cache lengths, both cache types", async (gpu) => {
  for (const kvDtype of ["f32", "bf16"] as const) {
    for (const pos of [0, 6, 64, 300]) {
      await checkFused(gpu, { rows: 1, pos, nHeads: 3, headDim: 64, maxPos: 320, kvDtype });
    }
    await checkFused(gpu, { rows: 1, pos: 33, nHeads: 2, headDim: 8, maxPos: 40, kvDtype });
  }
});

gpuTest(
  "fused QK-norm + RoPE + append: several rows see each other's new keys, across split boundaries",
  async (gpu) => {
    for (
      const [rows, pos, splits, minKeys] of [[3, 5, 4, 2], [3, 63, 6, 4], [16, 100, 9, 7], [5, 0, 3, 1], [2, 7, 1, 64]]
    ) {
      for (const kvDtype of ["f32", "bf16"] as const) {
        await checkFused(gpu, { rows, pos, nHeads: 2, headDim: 32, maxPos: 140, kvDtype }, { splits, minKeys });
      }
    }
    await checkFused(gpu, { rows: 4, pos: 9, nHeads: 3, headDim: 128, maxPos: 64, applyNorm: false });
  },
);

gpuTest("fused QK-norm + RoPE + append: rows at positions >= maxPos write nothing", async (gpu) => {
  await checkFused(gpu, { rows: 3, pos: 38, nHeads: 2, headDim: 16, maxPos: 40 }, { splits: 3, minKeys: 4 });
  await checkFused(gpu, { rows: 1, pos: 40, nHeads: 1, headDim: 8, maxPos: 40 });
});

gpuTest("fused attention checks catch broken kernels", async (gpu) => {
  const kernel = (from: string, to: string) => ({
    partial: (spec: AttentionDecodeKernelSpec) => mutate(attentionDecodeKernelFor(spec), from, to),
  });
  const cases: [string, AttentionDecodeKernels][] = [
    ["k norm per head", kernel("row_sumsq(m, 1u, t), t) / width", "row_sumsq(m, 1u, t), t) / f32(HEAD_DIM)")],
    ["every q roped at row 0's position", kernel("col, first_pos + m, row_max[m]", "col, first_pos, row_max[m]")],
    ["rotate_half without the minus", kernel("x * cs - y * sn, c < hq", "x * cs + y * sn, c < hq")],
    [
      "V appended from k",
      kernel(
        "store_v4(key * row4 + col, value4(key, col, first_pos))",
        "store_v4(key * row4 + col, key4(key, col, first_pos))",
      ),
    ],
    [
      "last new row of a split skipped",
      kernel(
        "let fresh1 = max(k0 + n, first_pos) - first_pos;",
        "let fresh1 = max(k0 + n, first_pos + 1u) - first_pos - 1u;",
      ),
    ],
    ["no cache bound", kernel("let len = min(first_pos + M, MAX_POS);", "let len = first_pos + M;")],
  ];
  for (const [what, kernels] of cases) {
    await assertCaught(async () => {
      await checkFused(gpu, { rows: 3, pos: 30, nHeads: 2, headDim: 16, maxPos: 40 }, {
        splits: 5,
        minKeys: 4,
        kernels,
      });
      await checkFused(gpu, { rows: 3, pos: 38, nHeads: 1, headDim: 16, maxPos: 40 }, {
        splits: 3,
        minKeys: 4,
        kernels,
      });
    }, what);
  }
});

gpuTest(
  "fused attention with the QKV matvec's partial sums: rows 1..16, both cache types, across splits",
  async (gpu) => {
    // d = 64: 8-output groups (the 1-row matvec's) divide it; 12- and 20-output groups straddle q|k and k|v.
    for (const kvDtype of ["f32", "bf16"] as const) {
      for (const [pos, statsGroupRows] of [[0, 8], [64, 12], [130, 20]]) {
        await checkFused(gpu, { rows: 1, pos, nHeads: 2, headDim: 32, maxPos: 140, kvDtype, statsGroupRows });
      }
      for (const [rows, pos, splits, minKeys] of [[3, 63, 6, 4], [16, 100, 9, 7], [2, 7, 1, 64]]) {
        await checkFused(gpu, { rows, pos, nHeads: 2, headDim: 32, maxPos: 140, kvDtype, statsGroupRows: 12 }, {
          splits,
          minKeys,
        });
      }
    }
    await checkFused(gpu, { rows: 4, pos: 9, nHeads: 3, headDim: 128, maxPos: 64, statsGroupRows: 16 });
    await checkFused(gpu, { rows: 3, pos: 38, nHeads: 2, headDim: 16, maxPos: 40, statsGroupRows: 5 }, {
      splits: 3,
      minKeys: 4,
    });
  },
);

gpuTest("fused attention partial-sum checks catch broken kernels", async (gpu) => {
  const kernel = (from: string, to: string) => ({
    partial: (spec: AttentionDecodeKernelSpec) => mutate(attentionDecodeKernelFor(spec), from, to),
  });
  const cases: [string, AttentionDecodeKernels][] = [
    ["wrong partial index", kernel("qk_part[(2u * m + part) * groups + g]", "qk_part[(2u * m + part) * groups + g0]")],
    ["the last row group missing", kernel("g < g1; g += WG", "g + 1u < g1; g += WG")],
    [
      "k partials summed into q",
      kernel("qk_part[(2u * m + part) * groups + g]", "qk_part[(2u * m + 1u) * groups + g]"),
    ],
    [
      "k's first group (straddling q|k) missing",
      kernel("select(d / QK_GROUP_ROWS, 0u", "select(d / QK_GROUP_ROWS + 1u, 0u"),
    ],
  ];
  for (const [what, kernels] of cases) {
    await assertCaught(async () => {
      await checkFused(gpu, { rows: 3, pos: 30, nHeads: 2, headDim: 16, maxPos: 40, statsGroupRows: 12 }, {
        splits: 5,
        minKeys: 4,
        kernels,
      });
    }, what);
  }
});
