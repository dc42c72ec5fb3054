import { PRESETS } from "../../model/config.ts";
import { Decoder, type PickMode } from "../../model/generate.ts";
import { HydraTransformer } from "../../model/hydra.ts";
import { argmaxOf, type CpuModel, logSoftmaxOf, readTower, referenceLogits } from "../../model/reference.ts";
import { allocateWeights, fillRandomWeights } from "../../model/weights.ts";
import type { Gpu } from "../../kernels/runtime.ts";
import { assertClose, gpuTest, Rng } from "../../kernels/testing/harness.ts";

const tiny = PRESETS.tiny;

/** The reference's next-token scores of `mode` for the last position of `ids` (f64). */
function referenceScores(towers: CpuModel[], ids: number[], mode: PickMode): Float64Array {
  const last = (m: CpuModel) => referenceLogits(m, ids).at(-1)!;
  const v = tiny.vocabSize;
  if (mode === "single") return last(towers[0]).slice(0, v);
  if (mode === "naive") {
    const all = towers.map(last);
    return Float64Array.from({ length: v }, (_, i) => all.reduce((s, l) => s + l[i], 0) / all.length);
  }
  const sum = new Float64Array(v);
  for (const t of towers.slice(1)) logSoftmaxOf(last(t), v).forEach((x, i) => (sum[i] += x));
  return logSoftmaxOf(sum, v);
}

async function buildTiny(gpu: Gpu, nHeads: number, headsDepth: number, seed: number) {
  const w = allocateWeights(gpu, tiny, nHeads, headsDepth);
  // std 1/sqrt(d) gives logits of unit scale, so greedy choices are not decided by rounding noise.
  await fillRandomWeights(gpu, w, seed, 1 / Math.sqrt(tiny.dModel));
  const model = new HydraTransformer(gpu, w, { maxPos: 64, maxRows: 24, maxLogitRows: 4 });
  const towers: CpuModel[] = [];
  for (let h = 0; h < nHeads; h++) towers.push(await readTower(gpu, w, h));
  return { model, towers, decoder: new Decoder(model) };
}

// GPU f32 (bf16 weights) vs CPU f64 on the same weights over 4 blocks: differences are f32 rounding, ~1e-5 relative.
const LOGIT_TOL = { atol: 2e-3, rtol: 2e-3 };

for (const [mode, nHeads, depth] of [["single", 1, 0], ["single", 3, 2], ["naive", 3, 2], ["jury", 3, 2]] as const) {
  gpuTest(`tiny ${mode} greedy decode (${nHeads} heads x ${depth} blocks) matches the f64 reference`, async (gpu) => {
    const { model, towers, decoder } = await buildTiny(gpu, nHeads, depth, 7 + nHeads + depth);
    try {
      const rng = new Rng(99);
      // 20 prompt tokens: the prefill takes the tiled GEMM and the prefill attention; the steps the decode paths.
      const prompt = Array.from({ length: 20 }, () => rng.int(tiny.vocabSize));
      const n = 6;
      const got = await decoder.generate(prompt, n, mode, { withPromptLogits: true });
      const want = referenceScores(towers, prompt, mode);
      assertClose(got.promptLogits!.subarray(0, tiny.vocabSize), want, LOGIT_TOL, `${mode} last prompt position`);
      const ids = [...prompt];
      for (let i = 0; i < n; i++) ids.push(argmaxOf(referenceScores(towers, ids, mode), tiny.vocabSize));
      const wantIds = ids.slice(prompt.length);
      if (JSON.stringify(got.ids) !== JSON.stringify(wantIds)) {
        throw new Error(`${mode}: generated ${got.ids}, reference ${wantIds}`);
      }
    } finally {
      decoder.destroy();
      model.destroy();
    }
  });
}
