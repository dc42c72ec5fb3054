/**
 * Tests of the tensor-core prefill attention (`prefill_tensor.ts`) against the CPU reference under TENSOR_PREFILL_TOL:
 * awkward row counts and positions, garbage past the valid keys, bf16 and f32 caches, 1, 2, 4 and 8 subgroups, head_dim
 * 128 and 64, sharp scores, the gate and mutants. They need Dawn with subgroup matrices (HYDRA_WEBGPU=dawn on an
 * NVIDIA GPU); elsewhere they are registered as ignored, the reason in their names. Everywhere: every kernel compiles
 * under Tint (Dawn's null backend), the knob HYDRA_PREFILL_ATTENTION and the shape checks.
 * @module
 */

import { assertEquals } from "@std/assert";
import {
  attentionPrefillTensor,
  attentionPrefillTensorKernelFor,
  PREFILL_ATTENTION_ENV,
  PREFILL_TENSOR_SUBGROUPS,
  prefillAttentionFor,
  prefillAttentionKernel,
  prefillTensorUnsupported,
  prefillTensorWorkgroupBytes,
  TENSOR_PREFILL_MIN_ROWS,
  TENSOR_PREFILL_TOL,
} from "./prefill_tensor.ts";
import { UserError } from "../../common/errors.ts";
import { tensorSubgroupSize } from "../matmul/gemm_tensor.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, dawnGpuTest, gpuTest, mutate } from "../testing/harness.ts";
import { type AttentionCase, checkAttention } from "../testing/attention_cases.ts";
import { assertTintCompiles } from "../testing/tint.ts";

/** A GPU test of the tensor-core prefill attention, or where it cannot run, an ignored test that says why. */
const tensorTest = await dawnGpuTest(prefillTensorUnsupported);

/** The tensor-core prefill attention of case `c` against the reference. */
function check(gpu: Gpu, c: AttentionCase, o: { subgroups?: number; kernel?: Kernel; gated?: boolean } = {}) {
  return checkAttention(
    gpu,
    c,
    (b) => [
      attentionPrefillTensor(
        gpu,
        { ...b, rows: c.rows, nHeads: c.nHeads, headDim: c.headDim, kvDtype: c.kvDtype, gated: o.gated },
        { subgroups: o.subgroups },
        o.kernel,
      ),
    ],
    `attentionPrefillTensor ${JSON.stringify({ subgroups: o.subgroups })}`,
    o.gated === true && c.active === 0,
    TENSOR_PREFILL_TOL,
  );
}

/** `rows` prompt rows after a cache prefix of `pos` rows, in caches with a few rows of garbage after them. */
function prefillCase(rows: number, pos: number, nHeads: number, headDim: number): AttentionCase {
  return { rows, pos, nHeads, headDim, maxPos: pos + rows + 5, garbage: rows % 2 ? "nan" : "huge" };
}

tensorTest("tensor prefill attention matches the reference at awkward rows and positions", async (gpu) => {
  for (const rows of [1, 17, 64, 130]) {
    for (const pos of [0, 17, 250]) {
      await check(gpu, prefillCase(rows, pos, 2, 128));
      await check(gpu, { ...prefillCase(rows, pos, 1, 64), kvDtype: "bf16" });
    }
  }
});

tensorTest("tensor prefill attention of a 7B layer (32 heads of 128) at 128 and 1,000 tokens", async (gpu) => {
  await check(gpu, { ...prefillCase(128, 0, 32, 128), kvDtype: "bf16" });
  await check(gpu, { ...prefillCase(1000, 37, 4, 128), kvDtype: "bf16" });
});

tensorTest("tensor prefill attention with 1, 2, 4 and 8 subgroups a workgroup", async (gpu) => {
  for (const subgroups of [1, 2, 4, 8]) {
    await check(gpu, prefillCase(37, 9, 2, 128), { subgroups });
    await check(gpu, { ...prefillCase(300, 0, 2, 128), kvDtype: "bf16" }, { subgroups }); // rows of 3 workgroups
  }
});

tensorTest("tensor prefill attention stays finite on sharp and huge scores", async (gpu) => {
  // scores of std 30 (one key dominates) and of order 1e3 (exp2 would overflow without the row max)
  for (const qStd of [30, 1000]) await check(gpu, { ...prefillCase(40, 9, 2, 64), qStd });
});

tensorTest("tensor prefill attention built gated runs only while ctl[ACTIVE] is set", async (gpu) => {
  await check(gpu, { ...prefillCase(20, 3, 1, 64), active: 0 }, { gated: true });
  await check(gpu, { ...prefillCase(20, 3, 1, 64), active: 1 }, { gated: true });
});

tensorTest("tensor prefill attention checks catch broken kernels", async (gpu) => {
  const kernel = attentionPrefillTensorKernelFor({ headDim: 64, subgroupSize: tensorSubgroupSize(gpu) });
  // 33 rows at positions 0 and 17, head_dim 64: short rows see few keys, so one key more or less is far outside the
  // tolerance.
  const run = async (k: Kernel) => {
    for (const pos of [17, 0]) await check(gpu, prefillCase(33, pos, 2, 64), { kernel: k });
  };
  await run(kernel);
  const broken: [string, string, string][] = [
    [
      "causal limit off by one (pass 2)",
      "exp2(ss[r * SS + sub + LPR * i] - m) * inv_l, key <= pos",
      "exp2(ss[r * SS + sub + LPR * i] - m) * inv_l, key < pos",
    ],
    [
      "last key tile skipped",
      "k0 <= last_key; k0 += BK) {\n    stage_tile(t, k0, last_key, col0, false);\n    stage_tile(t, k0, last_key, col0, true);",
      "k0 + BK <= last_key; k0 += BK) {\n    stage_tile(t, k0, last_key, col0, false);\n    stage_tile(t, k0, last_key, col0, true);",
    ],
    ["queries not scaled", "* (SCALE * LOG2E)", "* LOG2E"],
    ["the row sum not rescaled", "l = l * exp2(m - mn) + sum;", "l = l + sum;"],
    ["second key block of P V dropped", "sm * PS + 16u, PS)", "sm * PS + 0u, PS)"],
    ["K rows past the last key read", "if (key <= last_key) {", "if (true) {"],
  ];
  for (const [what, from, to] of broken) await assertCaught(() => run(mutate(kernel, from, to)), what);
});

Deno.test({
  name: "tensor prefill attention kernels compile under Dawn's WGSL compiler (its null backend), a broken one fails",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const kernels = [
      attentionPrefillTensorKernelFor({ headDim: 128 }, "bf16"),
      attentionPrefillTensorKernelFor({ headDim: 128, subgroups: 2 }, "f32"),
      attentionPrefillTensorKernelFor({ headDim: 128, subgroups: 4 }, "bf16"),
      attentionPrefillTensorKernelFor({ headDim: 64, subgroups: 1, subgroupSize: 64 }, "bf16"),
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

Deno.test("tensor prefill attention: workgroup memory, and the shapes it refuses", () => {
  assertEquals(prefillTensorWorkgroupBytes({ headDim: 128, subgroups: 4 }), 31744); // K, V 2 x 8,704 + S 9,216 + P 5,120
  // the default, 8 subgroups: S and P for 128 rows, within the 48 KiB WebGPU guarantees a device may grant
  assertEquals(prefillTensorWorkgroupBytes({ headDim: 128 }), 17408 + 18432 + 10240);
  // an explicit undefined keeps the defaults (attentionPrefillTensor passes its tiles' subgroups, maybe undefined)
  assertEquals(prefillTensorWorkgroupBytes({ headDim: 128, subgroups: undefined, subgroupSize: undefined }), 46080);
  assertEquals(
    attentionPrefillTensorKernelFor({ headDim: 128, subgroups: undefined }).name,
    attentionPrefillTensorKernelFor({ headDim: 128, subgroups: PREFILL_TENSOR_SUBGROUPS, subgroupSize: 32 }).name,
  );
  for (const bad of [{ headDim: 24 }, { headDim: 128, subgroups: 3 }, { headDim: 128, subgroupSize: 8 }]) {
    let threw = false;
    try {
      attentionPrefillTensorKernelFor(bad);
    } catch {
      threw = true;
    }
    if (!threw) throw new Error(`generated ${JSON.stringify(bad)}`);
  }
});

gpuTest(
  "HYDRA_PREFILL_ATTENTION picks the prefill attention, auto by default, with one sentence on bad values",
  (gpu) => {
    const before = Deno.env.get(PREFILL_ATTENTION_ENV);
    try {
      Deno.env.delete(PREFILL_ATTENTION_ENV);
      assertEquals(prefillAttentionFor(gpu), "auto");
      const tensorRuns = prefillTensorUnsupported(gpu) === null;
      assertEquals(
        [
          prefillAttentionKernel(gpu, TENSOR_PREFILL_MIN_ROWS - 1),
          prefillAttentionKernel(gpu, TENSOR_PREFILL_MIN_ROWS),
        ],
        ["fma", tensorRuns ? "tensor" : "fma"],
      );
      Deno.env.set(PREFILL_ATTENTION_ENV, "fma");
      assertEquals(prefillAttentionFor(gpu), "fma");
      assertEquals(prefillAttentionKernel(gpu, 4 * TENSOR_PREFILL_MIN_ROWS), "fma"); // forced, whatever the rows
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
