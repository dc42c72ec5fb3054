/**
 * Tests of the tensor-core prefill attention (`prefill_tensor.ts`) against the CPU reference under TENSOR_PREFILL_TOL:
 * awkward row counts and positions, garbage past the valid keys, bf16 and f32 caches, 1, 2, 4 and 8 subgroups, one
 * pass and two, head_dim 128 and 64, sharp scores (one pass rescales), the gate and mutants. They need Dawn with
 * subgroup matrices (HYDRA_WEBGPU=dawn on an NVIDIA GPU); elsewhere they are registered as ignored, the reason in their
 * names. Everywhere: every kernel compiles under Tint (Dawn's null backend), the knob HYDRA_PREFILL_ATTENTION and the
 * shape checks.
 * @module
 */

import { assertEquals, assertThrows } from "@std/assert";
import { range } from "../codegen.ts";
import {
  attentionPrefillTensor,
  attentionPrefillTensorKernelFor,
  PREFILL_ATTENTION_ENV,
  PREFILL_TENSOR_SMALL_ROWS,
  PREFILL_TENSOR_SUBGROUPS,
  prefillAttentionFor,
  prefillAttentionKernel,
  prefillTensorSubgroupsFor,
  prefillTensorUnsupported,
  prefillTensorWorkgroupBytes,
  TENSOR_PREFILL_MIN_ROWS,
  TENSOR_PREFILL_TOL,
} from "./prefill_tensor.ts";
import { UserError } from "../../common/errors.ts";
import { tensorSubgroupSize } from "../matmul/gemm_tensor.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import {
  assertCaught,
  assertWorkgroupVariablesAligned,
  dawnGpuTest,
  gpuTest,
  mutate,
  workgroupVariables,
} from "../testing/harness.ts";
import { type AttentionCase, checkAttention } from "../testing/attention_cases.ts";
import { assertTintCompiles } from "../testing/tint.ts";
import { halfRowsBuffers, readHalfRows } from "../testing/half_rows.ts";

/** A GPU test of the tensor-core prefill attention, or where it cannot run, an ignored test that says why. */
const tensorTest = await dawnGpuTest(prefillTensorUnsupported);

/** The tensor-core prefill attention of case `c` against the reference. */
async function check(
  gpu: Gpu,
  c: AttentionCase,
  o: {
    subgroups?: number;
    passes?: number;
    stageEarly?: boolean;
    kernel?: Kernel;
    gated?: boolean;
    tol?: typeof TENSOR_PREFILL_TOL;
    /** The output as f16 rows scaled by the V bound (`halfRows`), read back with their exponents checked. */
    halfRows?: boolean;
  } = {},
) {
  const d = c.nHeads * c.headDim;
  const hr = o.halfRows ? halfRowsBuffers(gpu, c.rows, d) : undefined;
  const what = `attentionPrefillTensor ${
    JSON.stringify({
      subgroups: o.subgroups,
      passes: o.passes,
      stageEarly: o.stageEarly,
      halfRows: o.halfRows,
    })
  }`;
  let vmax: GPUBuffer | undefined;
  // each row's bound: the largest |v| of every key up to its tile's last (`halfRows`)
  let bounds: number[] = [];
  try {
    return await checkAttention(
      gpu,
      c,
      (b, { vCache }) => {
        if (hr) {
          const top = (p: number) => Math.max(...Array.from(vCache.subarray(p * d, (p + 1) * d), Math.abs));
          vmax = gpu.upload("vmax", new Float32Array(range(c.rows).map((m) => top(c.pos + m))));
          const spec = { headDim: c.headDim, subgroupSize: tensorSubgroupSize(gpu), passes: o.passes, halfRows: true };
          const limit = gpu.device.limits.maxComputeWorkgroupStorageSize;
          const bq = 16 * (o.subgroups ?? prefillTensorSubgroupsFor(spec, limit, c.rows));
          const keys = range(c.pos + c.rows).map(top);
          bounds = range(c.rows).map((m) =>
            Math.max(...keys.slice(0, c.pos + Math.min(c.rows, (Math.floor(m / bq) + 1) * bq)))
          );
        }
        return [
          attentionPrefillTensor(
            gpu,
            {
              ...b,
              rows: c.rows,
              nHeads: c.nHeads,
              headDim: c.headDim,
              kvDtype: c.kvDtype,
              gated: o.gated,
              halfRows: hr && { ...hr, vmax: vmax! },
            },
            { subgroups: o.subgroups, passes: o.passes, stageEarly: o.stageEarly },
            o.kernel,
          ),
        ];
      },
      what,
      o.gated === true && c.active === 0,
      o.tol ?? TENSOR_PREFILL_TOL,
      hr && (() => readHalfRows(gpu, hr, c.rows, d, bounds, what)),
    );
  } finally {
    hr?.destroy();
    vmax?.destroy();
  }
}

/**
 * The tolerance on scores of std 30: rounding q and k to f16 moves a score by about 2^-10 sum |q_i k_i|, a few
 * hundredths of a unit here, so the weights of the leading keys move by a few percent (measured: at most 2.6e-2 off on
 * outputs of order 1, one pass and two alike, session Z). A rescale skipped or misapplied is off by the output's own
 * size.
 */
const SHARP_TOL = { atol: 0.1, rtol: 0.1 };

/** `rows` prompt rows after a cache prefix of `pos` rows, in caches with a few rows of garbage after them. */
function prefillCase(rows: number, pos: number, nHeads: number, headDim: number): AttentionCase {
  return { rows, pos, nHeads, headDim, maxPos: pos + rows + 5, garbage: rows % 2 ? "nan" : "huge" };
}

tensorTest("tensor prefill attention matches the reference at awkward rows and positions", async (gpu) => {
  for (const rows of [1, 17, 64, 130]) {
    for (const pos of [0, 17, 250]) {
      // one pass staging the next tiles early (three barriers a key tile) and at the top (four), two passes
      for (const stageEarly of [true, false]) await check(gpu, prefillCase(rows, pos, 2, 128), { stageEarly });
      for (const passes of [1, 2]) {
        await check(gpu, { ...prefillCase(rows, pos, 1, 64), kvDtype: "bf16" }, { passes });
      }
    }
  }
});

tensorTest("tensor prefill attention of a 7B layer (32 heads of 128) at 128 and 1,000 tokens", async (gpu) => {
  await check(gpu, { ...prefillCase(128, 0, 32, 128), kvDtype: "bf16" });
  await check(gpu, { ...prefillCase(1000, 37, 4, 128), kvDtype: "bf16" });
});

tensorTest(
  "tensor prefill attention with 1, 2, 4 and 8 subgroups a workgroup, one and two passes, head_dim 48",
  async (gpu) => {
    for (const subgroups of [1, 2, 4, 8]) {
      for (const passes of [1, 2]) await check(gpu, prefillCase(137, 9, 2, 128), { subgroups, passes });
      await check(gpu, prefillCase(137, 9, 2, 128), { subgroups, stageEarly: !(subgroups % 2) });
    }
    await check(gpu, prefillCase(70, 5, 2, 48), { subgroups: 8, stageEarly: true });
    // head_dim 48: the epilogue's last round of output matrices holds one of them, not BK / 16; with 8 subgroups the
    // K / V tiles' 384 items do not fill the second slot of 256 invocations
    for (const [subgroups, passes] of [[2, 1], [2, 2], [8, 1], [8, 2]]) {
      await check(gpu, prefillCase(70, 5, 2, 48), { subgroups, passes });
    }
  },
);

tensorTest("tensor prefill attention stays finite on sharp and huge scores, rescaling in one pass", async (gpu) => {
  // scores of std 30 (one key dominates) and of order 1e3 (exp2 would overflow without the row max)
  for (const qStd of [30, 1000]) {
    for (const passes of [1, 2]) await check(gpu, { ...prefillCase(40, 9, 2, 64), qStd }, { passes });
  }
  // 140 rows of scores of std 30: a row's maximum rises by more than RESCALE_SLACK now and then, so one pass rescales
  for (const passes of [1, 2]) {
    await check(gpu, { ...prefillCase(140, 9, 2, 64), qStd: 30 }, { passes, tol: SHARP_TOL });
  }
  for (const stageEarly of [true, false]) {
    await check(gpu, { ...prefillCase(140, 9, 2, 64), qStd: 30 }, { stageEarly, tol: SHARP_TOL });
  }
});

tensorTest(
  "tensor prefill attention writes its output as f16 rows scaled by the V bound (HalfRows), from position 0 and past " +
    "it, and its checks catch broken kernels",
  async (gpu) => {
    for (const rows of [1, 17, 130]) {
      for (const passes of [1, 2]) {
        for (const pos of [0, 17]) {
          await check(gpu, { ...prefillCase(rows, pos, 2, 128), kvDtype: "bf16" }, { passes, halfRows: true });
        }
      }
    }
    // a 7B layer at 128 tokens as the model runs it; 3 matrices a head; head_dim 64, f32 cache
    await check(gpu, { ...prefillCase(128, 0, 32, 128), kvDtype: "bf16" }, { halfRows: true, subgroups: 4 });
    await check(gpu, prefillCase(70, 5, 2, 48), { subgroups: 8, halfRows: true });
    // large values: in this pass's rows (a later tile's bound is larger), and before it (only the cache holds them:
    // a bound from this pass's rows alone would overflow f16)
    const spikes: [number, number, number][] = [[40, 3, -3e4], [100, 70, 900]];
    await check(gpu, { ...prefillCase(130, 0, 2, 64), vSpikes: spikes }, { halfRows: true, subgroups: 4 });
    await check(gpu, { ...prefillCase(33, 17, 2, 64), vSpikes: [[2, 5, 3e4]] }, { halfRows: true, subgroups: 4 });
    const kernel = attentionPrefillTensorKernelFor({
      headDim: 64,
      subgroups: 4,
      subgroupSize: tensorSubgroupSize(gpu),
      halfRows: true,
    });
    const run = async (k: Kernel) => {
      await check(gpu, { ...prefillCase(70, 0, 2, 64), vSpikes: [[60, 1, 500]] }, {
        kernel: k,
        subgroups: 4,
        halfRows: true,
      });
      await check(gpu, { ...prefillCase(33, 17, 2, 64), vSpikes: [[2, 5, 3e4]] }, {
        kernel: k,
        subgroups: 4,
        halfRows: true,
      });
    };
    await run(kernel);
    for (
      const [from, to] of [
        [" * row_f); }", "); }"], // the values not scaled
        ["i < q0 + rows_valid; i += 128u", "i < q0 + 1u; i += 128u"], // this pass's later keys left out of the bound
        ["i < ctl[CTL_POS] * NH * HV;", "i < 0u;"], // the cache's keys before the pass left out
        ["if (wid.x == 0u && t < rows_valid)", "if (wid.x == 1u && t < rows_valid)"], // exponents from head 1 only: ok
        ["2u * col0 + 8u + ((lane", "2u * col0 + 0u + ((lane"], // a matrix stored over another
      ]
    ) {
      // (the fourth is no bug: any one head may store the exponents; it must pass)
      if (from.startsWith("if (wid.x")) await run(mutate(kernel, from, to));
      else await assertCaught(() => run(mutate(kernel, from, to)), `halfRows: ${from} -> ${to}`);
    }
  },
);

tensorTest("tensor prefill attention built gated runs only while ctl[ACTIVE] is set", async (gpu) => {
  await check(gpu, { ...prefillCase(20, 3, 1, 64), active: 0 }, { gated: true });
  await check(gpu, { ...prefillCase(20, 3, 1, 64), active: 1 }, { gated: true });
});

tensorTest("tensor prefill attention checks catch broken kernels, one pass and two", async (gpu) => {
  // 33 rows at positions 0 and 17, head_dim 64: short rows see few keys, so one key more or less is far outside the
  // tolerance; sharp scores (std 30, SHARP_TOL) make one pass rescale.
  // variant 1: one pass; 3: one pass, stageEarly; 2: two passes
  const run = async (k: Kernel, variant: number) => {
    const subgroups = PREFILL_TENSOR_SUBGROUPS, passes = variant === 2 ? 2 : 1, stageEarly = variant === 3;
    const o = { kernel: k, passes, subgroups, stageEarly };
    for (const pos of [17, 0]) await check(gpu, prefillCase(33, pos, 2, 64), o);
    await check(gpu, { ...prefillCase(100, 3, 2, 64), qStd: 30 }, { ...o, tol: SHARP_TOL });
  };
  const kernelOf = (variant: number) =>
    attentionPrefillTensorKernelFor({
      headDim: 64,
      subgroups: PREFILL_TENSOR_SUBGROUPS,
      subgroupSize: tensorSubgroupSize(gpu),
      passes: variant === 2 ? 2 : 1,
      stageEarly: variant === 3,
    });
  const shared: [string, string, string][] = [
    ["queries not scaled", "* (SCALE * LOG2E)", "* LOG2E"],
    ["second key block of P V dropped", "sm * PS + 16u, PS)", "sm * PS + 0u, PS)"],
    ["K rows past the last key read", "if (key <= last_key) {", "if (true) {"],
  ];
  const onePass: [string, string, string][] = [
    [
      "causal limit off by one",
      "exp2(ss[r * SS + sub + LPR * i] - mn), key <= pos",
      "exp2(ss[r * SS + sub + LPR * i] - mn), key < pos",
    ],
    ["last key tile skipped", "k0 <= last_key; k0 += BK", "k0 + BK <= last_key; k0 += BK"],
    ["the row sum not rescaled", "l = l * alpha + sum;", "l = l + sum;"],
    ["the output not rescaled", "ss[r * SS + sub * 8u + c] *= alpha;", "ss[r * SS + sub * 8u + c] *= 1.0;"],
    ["the rescale never flagged", "rescale_flag[0] = 1u;", "rescale_flag[0] = 0u;"],
    ["no slack: every rise taken", "let raise = tmax > m + SLACK;", "let raise = tmax > m + 64.0;"],
    ["the epilogue not over l", " * li[", " * 1.0 + 0.0 * li["],
  ];
  const broken: Record<number, [string, string, string][]> = {
    3: [
      ...shared,
      ...onePass,
      ["the next K tile's reads a tile behind", "rk0 = fetch_kv(k0 + 2u * BK + kj0", "rk0 = fetch_kv(k0 + BK + kj0"],
      ["the next V tile's reads a tile behind", "rv0 = fetch_kv(k0 + 2u * BK + kj0", "rv0 = fetch_kv(k0 + BK + kj0"],
      ["the first V tile's successor not read", "rv0 = fetch_kv(BK + kj0", "rv0 = fetch_kv(0u + kj0"],
    ],
    1: [
      ...shared,
      ...onePass,
      ["the next K tile's reads at this tile's keys", "rk0 = fetch_kv(k0 + BK + kj0", "rk0 = fetch_kv(k0 + kj0"],
    ],
    2: [
      ...shared,
      ["the next K tile's reads at this tile's keys", "rk0 = fetch_kv(k0 + BK + kj0", "rk0 = fetch_kv(k0 + kj0"],
      [
        "causal limit off by one (pass 2)",
        "exp2(ss[r * SS + sub + LPR * i] - m) * inv_l, key <= pos",
        "exp2(ss[r * SS + sub + LPR * i] - m) * inv_l, key < pos",
      ],
      ["last key tile skipped (pass 2)", "k0 <= last_key; k0 += BK) { // pass 2", "k0 + BK <= last_key; k0 += BK) {"],
      ["pass 2's first V tile not read", "rv0 = fetch_kv(0u + kj0", "rv0 = fetch_kv(BK + kj0"],
      ["the row sum not rescaled", "l = l * exp2(m - mn) + sum;", "l = l + sum;"],
    ],
  };
  for (const variant of [1, 3, 2]) {
    const kernel = kernelOf(variant);
    await run(kernel, variant);
    for (const [what, from, to] of broken[variant]) {
      await assertCaught(() => run(mutate(kernel, from, to), variant), `${what} (${kernel.name})`);
    }
  }
});

Deno.test({
  name: "tensor prefill attention kernels compile under Dawn's WGSL compiler (its null backend), a broken one fails",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const kernels = [
      attentionPrefillTensorKernelFor({ headDim: 128 }, "bf16"),
      attentionPrefillTensorKernelFor({ headDim: 128, subgroups: 8 }, "bf16"),
      attentionPrefillTensorKernelFor({ headDim: 128, subgroups: 8, stageEarly: true, halfRows: true }, "bf16"),
      attentionPrefillTensorKernelFor({ headDim: 48, subgroups: 8, stageEarly: true }, "f32"),
      attentionPrefillTensorKernelFor({ headDim: 128, subgroups: 2, passes: 2 }, "f32"),
      attentionPrefillTensorKernelFor({ headDim: 64, subgroups: 1, subgroupSize: 64 }, "bf16"),
      attentionPrefillTensorKernelFor({ headDim: 64, subgroups: 1, subgroupSize: 16, passes: 2 }, "bf16"),
      attentionPrefillTensorKernelFor({ headDim: 48, subgroups: 2 }, "bf16"),
      // 384 items a K / V tile over 256 invocations: the second slot guarded
      attentionPrefillTensorKernelFor({ headDim: 48, subgroups: 8 }, "bf16"),
      attentionPrefillTensorKernelFor({ headDim: 48, subgroups: 8, passes: 2 }, "f32"),
      attentionPrefillTensorKernelFor({ headDim: 128, subgroups: 4, halfRows: true }, "bf16"),
      attentionPrefillTensorKernelFor({ headDim: 128, subgroups: 8, halfRows: true }, "bf16"),
      attentionPrefillTensorKernelFor(
        { headDim: 48, subgroups: 2, passes: 2, halfRows: true, subgroupSize: 16 },
        "f32",
      ),
    ];
    const broken = mutate(
      kernels[0],
      "subgroupMatrixLoad<Left, row_major>(&ps",
      "subgroupMatrixLoad<Right, row_major>(&ps",
    );
    await assertTintCompiles(
      t,
      kernels,
      { NH: 32, M: 128, SCALE: 0.0884 },
      broken,
      "a kernel taking P as a right matrix",
    );
  },
});

Deno.test("tensor prefill attention: every workgroup variable a multiple of 16 bytes, summing to the bytes reported", () => {
  for (const passes of [1, 2]) {
    for (const subgroups of [1, 2, 4, 8]) {
      for (const [headDim, subgroupSize] of [[128, 32], [64, 16], [64, 64]]) {
        for (const halfRows of [false, true]) {
          const spec = { headDim, subgroups, subgroupSize, passes, halfRows };
          const kernel = attentionPrefillTensorKernelFor(spec, "bf16");
          assertWorkgroupVariablesAligned(kernel);
          const sum = workgroupVariables(kernel).reduce((a, [, bytes]) => a + bytes, 0);
          assertEquals(sum, prefillTensorWorkgroupBytes(spec), JSON.stringify(spec));
        }
      }
    }
  }
  // the check fails on the layout that broke one pass: the flag a lone u32
  const lone = mutate(
    attentionPrefillTensorKernelFor({ headDim: 128 }),
    "var<workgroup> rescale_flag: array<u32, 4>;",
    "var<workgroup> rescale_flag: u32;",
  );
  assertThrows(() => assertWorkgroupVariablesAligned(lone), "a lone u32 workgroup variable passed the alignment check");
});

Deno.test("tensor prefill attention: workgroup memory, and the shapes it refuses", () => {
  // K, V tiles 2 x 8,704 + S 9,216 + P 5,120, and with one pass 1 / l of 64 rows and the flag
  assertEquals(prefillTensorWorkgroupBytes({ headDim: 128, subgroups: 4, passes: 2 }), 31744);
  assertEquals(prefillTensorWorkgroupBytes({ headDim: 128, subgroups: 4 }), 31744 + 272);
  // the default, 8 subgroups: 46,608 bytes, under the H200's 49,152
  assertEquals(prefillTensorWorkgroupBytes({ headDim: 128 }), 17408 + 18432 + 10240 + 528);
  // an explicit undefined keeps the defaults (attentionPrefillTensor passes its tiles' knobs, maybe undefined)
  assertEquals(
    prefillTensorWorkgroupBytes({ headDim: 128, subgroups: undefined, subgroupSize: undefined, passes: undefined }),
    17408 + 18432 + 10240 + 528,
  );
  assertEquals(
    attentionPrefillTensorKernelFor({ headDim: 128, subgroups: undefined, passes: undefined }).name,
    attentionPrefillTensorKernelFor({ headDim: 128, subgroups: PREFILL_TENSOR_SUBGROUPS, subgroupSize: 32, passes: 1 })
      .name,
  );
  // the default where its workgroup memory fits, else the most subgroups that do (head_dim 256: 4 in 48 KiB)
  assertEquals(prefillTensorSubgroupsFor({ headDim: 128 }, 49152), PREFILL_TENSOR_SUBGROUPS);
  assertEquals(prefillTensorSubgroupsFor({ headDim: 256 }, 49152), 4);
  assertEquals(prefillTensorSubgroupsFor({ headDim: 256, passes: 2 }, 49152), 4);
  assertEquals(prefillTensorSubgroupsFor({ headDim: 128 }, 32000), 2); // 4 subgroups: 32,016 bytes
  assertEquals(prefillTensorSubgroupsFor({ headDim: 128 }, 1024), 1); // none fits: 1, which the dispatch then refuses
  // short prefills: PREFILL_TENSOR_SMALL_SUBGROUPS up to PREFILL_TENSOR_SMALL_ROWS rows
  assertEquals(prefillTensorSubgroupsFor({ headDim: 128 }, 49152, PREFILL_TENSOR_SMALL_ROWS), 4);
  assertEquals(prefillTensorSubgroupsFor({ headDim: 128 }, 49152, PREFILL_TENSOR_SMALL_ROWS + 1), 8);
  assertEquals(prefillTensorSubgroupsFor({ headDim: 128 }, 32000, 17), 2);
  const bads = [
    { headDim: 24 },
    { headDim: 128, subgroups: 3 },
    { headDim: 128, subgroupSize: 8 },
    { headDim: 128, passes: 3 },
  ];
  for (const bad of bads) assertThrows(() => attentionPrefillTensorKernelFor(bad), `generated ${JSON.stringify(bad)}`);
});

gpuTest(
  "HYDRA_PREFILL_ATTENTION picks the prefill attention, auto by default, with one sentence on bad values",
  (gpu) => {
    const before = Deno.env.get(PREFILL_ATTENTION_ENV);
    try {
      Deno.env.delete(PREFILL_ATTENTION_ENV);
      assertEquals(prefillAttentionFor(gpu), "auto");
      const tensorRuns = prefillTensorUnsupported(gpu) === null;
      const heads = (rows: number, nHeads: number) => prefillAttentionKernel(gpu, { rows, nHeads, headDim: 128 });
      // the 7B's 32 heads from TENSOR_PREFILL_MIN_ROWS rows (64 workgroups of 64 rows); the 1B's 16 only from 512 rows
      assertEquals(
        [heads(TENSOR_PREFILL_MIN_ROWS - 1, 32), heads(TENSOR_PREFILL_MIN_ROWS, 32), heads(2048, 32)],
        ["fma", tensorRuns ? "tensor" : "fma", tensorRuns ? "tensor" : "fma"],
      );
      assertEquals([heads(128, 16), heads(256, 16), heads(512, 16)], ["fma", "fma", tensorRuns ? "tensor" : "fma"]);
      Deno.env.set(PREFILL_ATTENTION_ENV, "fma");
      assertEquals(prefillAttentionFor(gpu), "fma");
      assertEquals(heads(4 * TENSOR_PREFILL_MIN_ROWS, 32), "fma"); // forced, whatever the rows
      const refused = (value: string) => {
        Deno.env.set(PREFILL_ATTENTION_ENV, value);
        try {
          prefillAttentionFor(gpu);
        } catch (e) {
          if (e instanceof UserError && e.message.includes(PREFILL_ATTENTION_ENV)) return true;
          throw e;
        }
        return false;
      };
      if (!refused("flash")) throw new Error("an unknown prefill attention was accepted");
      if (prefillTensorUnsupported(gpu) === null) {
        Deno.env.set(PREFILL_ATTENTION_ENV, "tensor");
        assertEquals(prefillAttentionFor(gpu), "tensor");
      } else if (!refused("tensor")) {
        throw new Error("the tensor prefill attention was accepted where it cannot run");
      }
    } finally {
      if (before === undefined) Deno.env.delete(PREFILL_ATTENTION_ENV);
      else Deno.env.set(PREFILL_ATTENTION_ENV, before);
    }
    return Promise.resolve();
  },
);
