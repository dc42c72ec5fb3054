/**
 * Tests of the head-combining kernels (`combine.ts`): the mean over heads and the jury's summed log-probs against
 * the references, padding masked to -inf, and mutants.
 * @module
 */

import { combineJury, combineJuryReference, combineMean, combineMeanKernel, combineMeanReference } from "./combine.ts";
import { logSoftmaxKernel, logSoftmaxScratchBytes } from "./log_softmax.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, ctlBuffer, gpuTest, mutate, poisoned, Rng } from "../testing/harness.ts";
import { assertMaskedRows, LOGP_TOL, PADDING } from "../testing/logits_check.ts";

// Mean of <= 8 f32 logits of magnitude <= ~15, summed in order in f32 vs f64: a few ulp of 15 per addition (< 1e-5
// for 8 heads); 2e-5 leaves a 2x margin, and a missing head or a wrong stride moves the mean by O(0.1).
const MEAN_TOL = { atol: 2e-5 };

/** Random head-major logits [heads, rows, vp], padding ids set to PADDING. */
function headLogits(heads: number, rows: number, vp: number, vocab: number): Float32Array {
  const rng = new Rng(heads * 100_003 + rows * 7919 + vp * 13 + vocab);
  const z = rng.normals(heads * rows * vp, 3);
  for (let r = 0; r < heads * rows; r++) z.fill(PADDING, r * vp + vocab, (r + 1) * vp);
  return z;
}

/** Runs the mean over heads and compares it with the reference. */
async function checkMean(gpu: Gpu, heads: number, rows: number, vp: number, vocab: number, kernel?: Kernel) {
  const z = headLogits(heads, rows, vp, vocab);
  const ctl = ctlBuffer(gpu), logits = gpu.upload("logits", z), out = poisoned(gpu, rows * vp);
  gpu.run([combineMean(gpu, { ctl, logits, out, heads, rows, vp, vocab }, kernel)]);
  const got = await gpu.readF32(out, rows * vp);
  for (const b of [ctl, logits, out]) b.destroy();
  const want = combineMeanReference(z, heads, rows, vp, vocab);
  assertMaskedRows(got, want, rows, vp, vocab, MEAN_TOL, `combineMean heads=${heads} rows=${rows} vp=${vp}`);
}

/** Runs the jury and compares it with the reference's literal definition. */
async function checkJury(gpu: Gpu, heads: number, rows: number, vp: number, vocab: number, kernel?: Kernel) {
  const z = headLogits(heads, rows, vp, vocab);
  const ctl = ctlBuffer(gpu), logits = gpu.upload("logits", z), out = poisoned(gpu, rows * vp);
  const workgroupSize = vp > 5000 ? 256 : 16; // several chunks a row at the small sizes too
  const partials = gpu.buffer("partials", logSoftmaxScratchBytes(rows, vp, workgroupSize));
  gpu.run(combineJury(gpu, { ctl, logits, out, partials, heads, rows, vp, vocab, workgroupSize }, kernel));
  const got = await gpu.readF32(out, rows * vp);
  for (const b of [ctl, logits, out, partials]) b.destroy();
  const want = combineJuryReference(z, heads, rows, vp, vocab);
  assertMaskedRows(got, want, rows, vp, vocab, LOGP_TOL, `combineJury heads=${heads} rows=${rows} vp=${vp}`);
}

gpuTest("combineMean averages 1..8 heads at awkward sizes, padding -inf", async (gpu) => {
  for (
    const [heads, rows, vp, vocab] of [[1, 1, 1, 1], [2, 1, 37, 30], [3, 5, 37, 30], [8, 2, 1000, 997], [
      5,
      3,
      1001,
      1001,
    ]]
  ) {
    await checkMean(gpu, heads, rows, vp, vocab);
  }
  await checkMean(gpu, 4, 2, 100352, 100278);
});

gpuTest("combineJury equals log_softmax(sum of per-head log_softmax) for 1..8 heads", async (gpu) => {
  for (
    const [heads, rows, vp, vocab] of [[1, 1, 1, 1], [1, 2, 37, 30], [2, 1, 37, 30], [4, 5, 1000, 997], [
      8,
      3,
      1000,
      997,
    ]]
  ) {
    await checkJury(gpu, heads, rows, vp, vocab);
  }
  await checkJury(gpu, 4, 2, 100352, 100278);
});

gpuTest("combine rejects bad head counts with a clear error", (gpu) => {
  const ctl = ctlBuffer(gpu);
  let thrown = 0;
  for (const heads of [0, 9, 1.5]) {
    const a = { ctl, logits: ctl, out: ctl, heads, rows: 1, vp: 4, vocab: 4 };
    for (const build of [() => combineMean(gpu, a), () => combineJury(gpu, a)]) {
      try {
        build();
      } catch {
        thrown++;
      }
    }
  }
  ctl.destroy();
  if (thrown !== 6) throw new Error(`combine accepted ${6 - thrown} bad head counts`);
  return Promise.resolve();
});

gpuTest("combine checks catch broken kernels", async (gpu) => {
  const meanCases: [string, string][] = [
    ["s += z[h * M * VP + e]", "s += z[h * VP + e]"], // heads assumed row-interleaved
    ["h < HEADS; h++) { s += z", "h + 1u < HEADS; h++) { s += z"], // last head dropped
    ["if (e % VP >= VOCAB) {", "if (e >= M * VOCAB) {"], // padding mask by flat index
  ];
  for (const [from, to] of meanCases) {
    const kernel = mutate(combineMeanKernel, from, to);
    await assertCaught(async () => {
      await checkMean(gpu, 3, 5, 37, 30, kernel);
      await checkMean(gpu, 2, 2, 1000, 997, kernel);
    }, `mean: ${from} -> ${to}`);
  }
  const juryCases: [string, string][] = [
    ["h < HEADS; h++) { s[u] += z", "h + 1u < HEADS; h++) { s[u] += z"], // last verifier head dropped
    ["s[u] += z[(h * M + m) * VP + v]", "s[u] += z[(m * HEADS + h) * VP + v]"], // row-major heads
  ];
  for (const [from, to] of juryCases) {
    const kernel = mutate(logSoftmaxKernel, from, to);
    await assertCaught(async () => {
      await checkJury(gpu, 4, 3, 1000, 997, kernel);
      await checkJury(gpu, 2, 2, 37, 30, kernel);
    }, `jury: ${from} -> ${to}`);
  }
});
