/**
 * The whole model against HF transformers: tests/fixtures/olmo2_tiny was made by tools/make_fixture.py (a 4-layer
 * OLMo-2 with bf16 weights, random norms and three PEFT adapters; reference logits and greedy continuations computed
 * in f32 by transformers 5.17 / torch 2.11). Loaded through the checkpoint and adapter readers, run on the GPU.
 */

import { fromFileUrl } from "@std/path";
import { Checkpoint } from "../../model/checkpoint.ts";
import { Decoder, type PickMode } from "../../model/generate.ts";
import { HydraTransformer } from "../../model/hydra.ts";
import { KV_DTYPES, type KvDtype } from "../../kernels/attention/kv_cache.ts";
import { loadLoraAdapter } from "../../model/lora.ts";
import { allocateWeights, loadCheckpointWeights } from "../../model/weights.ts";
import type { Gpu } from "../../kernels/runtime.ts";
import { PoE } from "../../poe/poe.ts";
import { assertClose, gpuTest } from "../../kernels/testing/harness.ts";
import { tensorGemmUnsupported } from "../../kernels/matmul/gemm_tensor.ts";

const DIR = fromFileUrl(new URL("../fixtures/olmo2_tiny", import.meta.url));

interface Expect {
  last_logits?: number[];
  last_logprobs?: number[];
  greedy: number[];
  min_top2_gap: number;
}
interface Case {
  prompt: number[];
  base: Expect;
  adapters: Expect[];
  jury: Expect;
  naive: Expect;
}
const REF: { n_new: number; heads_depth: number; cases: Case[] } = JSON.parse(
  await Deno.readTextFile(`${DIR}/reference.json`),
);

// The design's bar is ~1e-2 on logits of unit scale; this test holds the model to 1e-4. Both sides compute in f32 on
// the same bf16 weights, so the differences are summation order (measured: at most 6.3e-6 over every case) and, for
// merged adapters, bf16 rounding ties of W + s * B @ A that the GPU's f32 rank sum could break the other way (one
// bf16 ulp on rare elements, ~1e-5 on a logit). A wrong norm, RoPE or merge scale moves logits by 1e-2 to 1.
const TOL = { atol: 1e-4 };
// With the default bf16 K/V cache the GPU keeps 8 significant bits of every cached K and V element where HF keeps f32
// (2^-9 relative rounding each), which moves the last logits by up to 1.15e-2 on this fixture and the jury's
// log-probabilities (magnitude ~10, a sum over heads) by up to 2.1e-2, 3.4e-3 relative (measured, every case);
// design.md section 3 asks for about 1e-2 on logits of unit scale and greedy agreement, which the tests below hold.
const TOL_BF16_KV = { atol: 2e-2, rtol: 4e-3 };
const BF16_KV_GREEDY_STEPS = 16;
// Where the prefill multiplies in f16 (the tensor-core GEMM on Dawn; ARCHITECTURE.md "Tensor-core prefill GEMM"), the
// prompt's K/V and last logits carry the f16 rounding of x (2^-11 relative per element): measured on the H200 with
// Dawn and the f32 cache, the last logits within 1.5e-3 of HF's (the 1e-4 above failed there). design.md's bar holds:
// 1e-2 on logits of unit scale and the same 16 greedy steps as the bf16 cache (past them, HF's near-ties).
const TOL_F16_PREFILL = { atol: 1e-2 };

/**
 * A Hydra on the fixture: `adapters[h]` merged into head h's `REF.heads_depth` blocks (none: the plain model), with
 * K/V caches of `kvDtype`.
 */
async function load(gpu: Gpu, adapters: string[][] | null, kvDtype: KvDtype = "f32") {
  const ckpt = await Checkpoint.open(DIR);
  const nHeads = adapters?.length ?? 1, depth = adapters ? REF.heads_depth : 0;
  const w = allocateWeights(gpu, ckpt.config, nHeads, depth);
  const loaded = [];
  for (const list of adapters ?? []) {
    const l = [];
    for (const a of list) l.push(await loadLoraAdapter(`${DIR}/${a}`, ckpt.config));
    loaded.push(l);
  }
  await loadCheckpointWeights(gpu, w, ckpt, loaded);
  ckpt.close();
  return new HydraTransformer(gpu, w, { maxPos: 64, maxRows: 40, maxLogitRows: 5, kvDtype });
}

async function check(model: HydraTransformer, mode: PickMode, expect: (c: Case) => Expect, what: string) {
  const decoder = new Decoder(model);
  try {
    let worst = 0;
    for (const [i, c] of REF.cases.entries()) {
      const e = expect(c);
      const got = await decoder.generate(c.prompt, REF.n_new, mode, { withPromptLogits: true });
      const want = e.last_logits ?? e.last_logprobs!;
      const f16Prefill = tensorGemmUnsupported(model.gpu) === null; // linear's automatic choice there
      const tol = model.kvDtype === "bf16" ? TOL_BF16_KV : f16Prefill ? TOL_F16_PREFILL : TOL;
      const r = assertClose(got.promptLogits!.subarray(0, want.length), want, tol, `${what} case ${i} last logits`);
      worst = Math.max(worst, r.maxAbs);
      // bf16 K/V: design.md's bar, 16 identical greedy steps; past them a near-tie of HF's (the fixture's smallest
      // top-2 gap is 1.4e-3, below the bf16 cache's 8e-3 on logits) may go the other way (measured: the jury's case 0
      // at step 21). f32 K/V: all of them.
      const steps = model.kvDtype === "bf16" || f16Prefill ? BF16_KV_GREEDY_STEPS : e.greedy.length;
      if (JSON.stringify(got.ids.slice(0, steps)) !== JSON.stringify(e.greedy.slice(0, steps))) {
        throw new Error(
          `${what} case ${i}: greedy ${got.ids} differs from HF's ${e.greedy} (min top-2 gap ${e.min_top2_gap})`,
        );
      }
    }
    console.log(
      `${what}: ${REF.cases.length} prompts x ${REF.n_new} greedy tokens identical; max |logit - HF| ${
        worst.toExponential(2)
      }`,
    );
  } finally {
    decoder.destroy();
  }
}

for (const kvDtype of KV_DTYPES) {
  gpuTest(
    `OLMo-2 from an HF checkpoint matches transformers: logits and 24 greedy tokens (${kvDtype} KV)`,
    async (gpu) => {
      const model = await load(gpu, null, kvDtype);
      try {
        await check(model, "single", (c) => c.base, "base");
      } finally {
        model.destroy();
      }
    },
  );
}

for (const kvDtype of KV_DTYPES) {
  gpuTest(`each PEFT adapter merged on the GPU matches transformers with it merged (${kvDtype} KV)`, async (gpu) => {
    for (let a = 0; a < 3; a++) {
      const model = await load(gpu, [[`adapter_${a}`]], kvDtype);
      try {
        await check(model, "single", (c) => c.adapters[a], `adapter_${a}`);
      } finally {
        model.destroy();
      }
    }
  });
}

for (const kvDtype of KV_DTYPES) {
  gpuTest(
    `a Hydra with the adapters as heads: naive mean and PoE jury match transformers (${kvDtype} KV)`,
    async (gpu) => {
      const model = await load(gpu, [["adapter_0"], ["adapter_1"], ["adapter_2"]], kvDtype);
      try {
        await check(model, "naive", (c) => c.naive, "naive mean of 3 heads");
        await check(model, "jury", (c) => c.jury, "jury of heads 1, 2");
      } finally {
        model.destroy();
      }
    },
  );
}

for (const kvDtype of KV_DTYPES) {
  gpuTest(
    `PoE on the HF fixture (adapters as heads) emits the jury's greedy tokens for gamma 1, 2, 3, 5 (${kvDtype} KV)`,
    async (gpu) => {
      const model = await load(gpu, [["adapter_0"], ["adapter_1"], ["adapter_2"]], kvDtype);
      try {
        let rejected = 0;
        const jury = new Decoder(model);
        for (const gamma of [1, 2, 3, 5]) {
          const poe = new PoE(model, { gamma, beta: 1, temperature: 0, maxNewTokens: REF.n_new });
          for (const [i, c] of REF.cases.entries()) {
            const r = await poe.generateIds(c.prompt);
            // PoE must equal the jury's greedy decoding of the same model: HF's with f32 K/V (checked to agree above),
            // this model's own with bf16 K/V (whose greedy may leave HF's at a near-tie past step 16, see check()).
            const want = kvDtype === "f32" ? c.jury.greedy : (await jury.generate(c.prompt, REF.n_new, "jury")).ids;
            if (JSON.stringify(r.ids) !== JSON.stringify(want)) {
              throw new Error(`gamma ${gamma} case ${i}: PoE ${r.ids} vs jury greedy ${want}`);
            }
            rejected += r.resampled_tokens;
          }
          poe.destroy();
        }
        console.log(
          `PoE = jury greedy (${kvDtype} KV) for 4 gammas x ${REF.cases.length} prompts; ${rejected} drafts rejected on the way`,
        );
        if (rejected === 0) throw new Error("no draft was rejected: rollback was not exercised");
        jury.destroy();
      } finally {
        model.destroy();
      }
    },
  );
}
