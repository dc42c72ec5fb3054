/**
 * Tests of the row-wise log_softmax kernel (`log_softmax.ts`), plain and over summed heads, against the f64
 * reference at vocabulary sizes that split into uneven chunks, padding masked, and mutants.
 * @module
 */

import { logSoftmax, logSoftmaxKernel, logSoftmaxReference, logSoftmaxScratchBytes } from "./log_softmax.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, poisoned, Rng } from "../testing/harness.ts";
import { assertMaskedRows, LOGP_TOL, PADDING } from "../testing/logits_check.ts";

/** Runs one log_softmax case (HEADS summed matrices) and compares it with the f64 reference. */
async function checkLogSoftmax(
  gpu: Gpu,
  rows: number,
  vp: number,
  vocab: number,
  opts: { heads?: number; workgroupSize?: number; kernel?: Kernel } = {},
): Promise<void> {
  const heads = opts.heads ?? 1;
  const rng = new Rng(rows * 7919 + vp * 13 + vocab + heads);
  const z = rng.normals(heads * rows * vp, 3, 1);
  for (let r = 0; r < heads * rows; r++) z.fill(PADDING, r * vp + vocab, (r + 1) * vp);
  const ctl = ctlBuffer(gpu), logits = gpu.upload("logits", z), out = poisoned(gpu, rows * vp);
  const partials = gpu.buffer("partials", logSoftmaxScratchBytes(rows, vp, opts.workgroupSize));
  gpu.run(logSoftmax(gpu, { ctl, logits, out, partials, rows, vp, vocab, ...opts }, opts.kernel));
  const got = await gpu.readF32(out, rows * vp);
  for (const b of [ctl, logits, out, partials]) b.destroy();
  const want = logSoftmaxReference(z, rows, vp, vocab, heads);
  const what = `log_softmax rows=${rows} vp=${vp} vocab=${vocab} ${JSON.stringify(opts)}`;
  assertMaskedRows(got, want, rows, vp, vocab, LOGP_TOL, what);
}

gpuTest("log_softmax matches the reference at awkward sizes, padding -inf", async (gpu) => {
  for (
    const [rows, vp, vocab] of [[1, 1, 1], [1, 37, 30], [3, 37, 30], [2, 1000, 997], [3, 1025, 1025], [2, 5000, 4001]]
  ) {
    await checkLogSoftmax(gpu, rows, vp, vocab);
  }
});

gpuTest("log_softmax at the OLMo-2 vocabulary (100352 padded, 100278 real)", async (gpu) => {
  await checkLogSoftmax(gpu, 2, 100352, 100278);
});

gpuTest("log_softmax splits rows over many chunks and whole padding chunks", async (gpu) => {
  // workgroupSize 8 -> 32 ids a chunk: 32 chunks a row at vp 1000; vp 200 / vocab 97 leaves chunks of padding only.
  for (const workgroupSize of [1, 8, 64]) await checkLogSoftmax(gpu, 3, 1000, 997, { workgroupSize });
  await checkLogSoftmax(gpu, 2, 200, 97, { workgroupSize: 8 });
});

gpuTest("log_softmax of a sum of 2..8 head matrices", async (gpu) => {
  for (const heads of [2, 3, 8]) await checkLogSoftmax(gpu, 3, 1000, 997, { heads, workgroupSize: 32 });
});

gpuTest("log_softmax gated by ACTIVE = 0 writes nothing", async (gpu) => {
  const ctl = ctlBuffer(gpu, { ACTIVE: 0 }), logits = gpu.upload("logits", new Float32Array(37).fill(1));
  const out = gpu.upload("out", new Float32Array(37).fill(5));
  gpu.run(logSoftmax(gpu, { ctl, logits, out, rows: 1, vp: 37, vocab: 30, gated: true }));
  const got = await gpu.readF32(out, 37);
  for (const b of [ctl, logits, out]) b.destroy();
  assertClose(got, new Float32Array(37).fill(5), { atol: 0 }, "gated log_softmax");
});

gpuTest("log_softmax rejects bad arguments with a clear error", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const base = { ctl, logits: ctl, out: ctl, rows: 1, vp: 10, vocab: 10 };
  const bad = [{ vocab: 11 }, { rows: 0 }, { heads: 9 }, { heads: 0 }, { workgroupSize: 12 }, {
    partials: ctl,
    rows: 20,
  }];
  for (const b of bad) {
    let threw = false;
    try {
      logSoftmax(gpu, { ...base, ...b });
    } catch {
      threw = true;
    }
    if (!threw) throw new Error(`log_softmax accepted ${JSON.stringify(Object.keys(b))}`);
  }
  ctl.destroy();
  return Promise.resolve();
});

gpuTest("log_softmax checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["if (v < VOCAB) {\n        out[ob + v] = s[u];", "if (v < VP) {\n        out[ob + v] = s[u];"], // padding summed
    ["c < CHUNKS; c += WG", "c + 1u < CHUNKS; c += WG"], // last chunk left out of the normaliser
    ["p.y * exp(p.x - s[u]) + 1.0", "p.y + 1.0"], // online softmax without rescaling
    ["s[u] += z[(h * M + m) * VP + v]", "s[u] += z[(h + m) * VP + v]"], // heads laid out row-major
  ];
  for (const [from, to] of cases) {
    const kernel = mutate(logSoftmaxKernel, from, to);
    await assertCaught(async () => {
      await checkLogSoftmax(gpu, 3, 1000, 997, { kernel, workgroupSize: 16 });
      await checkLogSoftmax(gpu, 2, 37, 30, { kernel, heads: 3, workgroupSize: 4 });
    }, `${from} -> ${to}`);
  }
});
