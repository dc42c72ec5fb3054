/**
 * Tests of the argmax / Gumbel-max sampling kernel (`argmax.ts`): greedy ids with ties and padding, sampled ids
 * against the reference's scores, row positions, the two passes over chunks (ties across chunks, non-finite logits
 * in any chunk) and mutants.
 * @module
 */

import { argmax, ARGMAX_CHUNK, argmaxCombineKernel, argmaxKernel, argmaxReference } from "./argmax.ts";
import { CTL, CTL_SLOTS } from "../control/ctl.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, Rng } from "../testing/harness.ts";
import { PADDING } from "../testing/logits_check.ts";

// Sampling: the kernel's Gumbel scores differ from the f64 reference's by < 2e-5 (f32 z / T, WGSL's log with 2^-21
// absolute error near 1, see the kernel comment). A chosen id passes when its reference score is within 1e-4 of the
// reference's best, so the check only tolerates genuine near-ties; a wrong key or temperature moves scores by O(1).
const SAMPLE_TOL = 1e-4;

/** Random logits [rows, vp] with padding set to PADDING and, per row, an exact tie at the maximum. */
function makeLogits(rng: Rng, rows: number, vp: number, vocab: number, ties: boolean): Float32Array {
  const z = rng.normals(rows * vp, 2);
  for (let m = 0; m < rows; m++) {
    for (let v = vocab; v < vp; v++) z[m * vp + v] = PADDING;
    if (ties && vocab > 1) {
      // An exact tie at the maximum between two random ids (usually in different threads' strides).
      const a = rng.int(vocab), b = rng.int(vocab);
      z[m * vp + a] = z[m * vp + b] = 9;
    }
  }
  return z;
}

interface Case {
  rows: number;
  vp: number;
  vocab: number;
  temperature?: number;
  seed?: number;
  ties?: boolean;
  toSeq?: boolean;
  pos?: number;
  rowPosOffset?: number;
  workgroupSize?: number;
  /** Ids per workgroup of a first pass over chunks (0: one pass; default: the builder's choice). */
  chunk?: number;
  kernel?: Kernel;
  combine?: Kernel;
}

/** Runs one argmax case and checks ids (and values) against the reference. */
async function checkArgmax(gpu: Gpu, c: Case): Promise<Uint32Array> {
  const { rows, vp, vocab } = c;
  const rng = new Rng(rows * 7907 + vp * 31 + vocab + (c.seed ?? 0));
  const z = makeLogits(rng, rows, vp, vocab, c.ties ?? true);
  const pos = c.pos ?? 0, off = c.rowPosOffset ?? 0;
  const ctl = ctlBuffer(gpu, { POS: pos });
  const logits = gpu.upload("logits", z);
  const seqLen = pos + off + rows + 3;
  const seqInit = new Uint32Array(seqLen).fill(0xdeadbeef);
  const out = c.toSeq ? gpu.upload("seq", seqInit) : gpu.upload("ids", new Uint32Array(rows).fill(0xdeadbeef));
  const values = gpu.upload("values", new Float32Array(rows).fill(NaN));
  gpu.run(argmax(
    gpu,
    {
      ctl,
      logits,
      ...(c.toSeq ? { seq: out } : { ids: out }),
      values,
      rows,
      vp,
      vocab,
      temperature: c.temperature,
      seed: c.seed,
      rowPosOffset: off,
      workgroupSize: c.workgroupSize,
      chunk: c.chunk,
    },
    c.kernel,
    c.combine,
  ));
  const outData = await gpu.readU32(out);
  const gotValues = await gpu.readF32(values, rows);
  const gotCtl = await gpu.readU32(ctl, CTL_SLOTS);
  for (const b of [ctl, logits, out, values]) b.destroy();
  const what = `argmax ${JSON.stringify({ ...c, kernel: c.kernel?.name, combine: c.combine?.name })}`;
  if (gotCtl[CTL.NONFINITE] !== 0) throw new Error(`${what}: finite logits flagged at ${gotCtl[CTL.NONFINITE]}`);
  let ids = outData.slice(0, rows);
  if (c.toSeq) {
    ids = outData.slice(pos + off + 1, pos + off + 1 + rows);
    const expectSeq = Uint32Array.from(seqInit);
    expectSeq.set(ids, pos + off + 1);
    assertClose(outData.slice(0, seqLen), expectSeq, { atol: 0 }, `${what}: seq outside the written slots`);
  }
  const ref = argmaxReference(z, rows, vp, vocab, { temperature: c.temperature, seed: c.seed, firstPos: pos + off });
  if ((c.temperature ?? 0) === 0) {
    // Greedy: exact, ties to the lowest id.
    assertClose(ids, ref.ids, { atol: 0 }, `${what}: ids`);
  } else {
    for (let m = 0; m < rows; m++) {
      const s = ref.scores[m], best = s[ref.ids[m]];
      if (!(ids[m] < vocab && s[ids[m]] >= best - SAMPLE_TOL)) {
        throw new Error(`${what}: row ${m} chose ${ids[m]} (score ${s[ids[m]]}), reference ${ref.ids[m]} (${best})`);
      }
    }
  }
  // The value is the chosen id's logit, bit for bit.
  const chosen = Float32Array.from(ids, (id, m) => z[m * vp + id]);
  assertClose(gotValues, chosen, { atol: 0 }, `${what}: values`);
  return ids;
}

gpuTest("argmax matches the reference (greedy, ties to the lowest id, padding masked)", async (gpu) => {
  for (
    const [rows, vp, vocab] of [[1, 1, 1], [1, 37, 30], [3, 37, 30], [2, 1000, 997], [5, 1000, 1000], [7, 4099, 4097]]
  ) {
    await checkArgmax(gpu, { rows, vp, vocab });
  }
});

gpuTest("argmax at the OLMo-2 vocabulary (100352 padded, 100278 real)", async (gpu) => {
  await checkArgmax(gpu, { rows: 2, vp: 100352, vocab: 100278 });
  await checkArgmax(gpu, { rows: 1, vp: 100352, vocab: 100278, temperature: 0.8, seed: 5 });
});

gpuTest("argmax is correct for every workgroup size, including more threads than ids", async (gpu) => {
  for (const workgroupSize of [1, 2, 64, 256, 1024]) {
    await checkArgmax(gpu, { rows: 3, vp: 1000, vocab: 997, workgroupSize });
  }
  await checkArgmax(gpu, { rows: 2, vp: 37, vocab: 30, workgroupSize: 1024 });
});

gpuTest("argmax writes the next token into seq at ctl[POS] + rowPosOffset + m + 1 and nothing else", async (gpu) => {
  await checkArgmax(gpu, { rows: 1, vp: 37, vocab: 30, toSeq: true, pos: 6 });
  await checkArgmax(gpu, { rows: 4, vp: 1000, vocab: 997, toSeq: true, pos: 3, rowPosOffset: 2 });
  await checkArgmax(gpu, { rows: 3, vp: 37, vocab: 30, toSeq: true, pos: 9, temperature: 1.3, seed: 77 });
});

gpuTest("argmax sampling reproduces the reference's Gumbel-max choice", async (gpu) => {
  for (const [rows, vp, vocab, temperature, seed] of [[1, 1, 1, 1, 0], [9, 37, 30, 0.5, 1], [6, 1000, 997, 1.7, 3]]) {
    await checkArgmax(gpu, { rows, vp, vocab, temperature, seed, pos: 11 });
  }
  // Positions and seeds change the draw: the same logits at 9 positions do not all give one id.
  const ids = await checkArgmax(gpu, { rows: 9, vp: 8, vocab: 5, temperature: 5, seed: 2, ties: false });
  if (new Set(ids).size === 1) throw new Error(`sampling ignored the position: ids ${ids}`);
});

gpuTest("argmax samples follow softmax(z / T) over the real vocabulary", async (gpu) => {
  const rows = 4000, vp = 8, vocab = 6, temperature = 0.7;
  const row = [1, 0.5, 0, -0.5, 2, 0.3, PADDING, PADDING];
  const z = new Float32Array(rows * vp);
  for (let m = 0; m < rows; m++) z.set(row, m * vp);
  const ctl = ctlBuffer(gpu, { POS: 100 }), logits = gpu.upload("logits", z), ids = gpu.buffer("ids", rows * 4);
  gpu.run(argmax(gpu, { ctl, logits, ids, rows, vp, vocab, temperature, seed: 12345, workgroupSize: 8 }));
  const got = await gpu.readU32(ids, rows);
  for (const b of [ctl, logits, ids]) b.destroy();
  const w = row.slice(0, vocab).map((x) => Math.exp(x / temperature)), total = w.reduce((a, b) => a + b);
  const counts = new Array(vp).fill(0);
  for (const id of got) counts[id]++;
  for (let v = 0; v < vp; v++) {
    const p = v < vocab ? w[v] / total : 0;
    const sigma = Math.sqrt((p * (1 - p)) / rows);
    // 4.5 sigma per id: a correct sampler fails with probability < 1e-4 (and the seed is fixed).
    if (Math.abs(counts[v] / rows - p) > 4.5 * sigma) {
      throw new Error(`id ${v}: frequency ${counts[v] / rows}, expected ${p.toFixed(4)} +- ${sigma.toFixed(4)}`);
    }
  }
});

gpuTest("argmax gated by ACTIVE = 0 writes nothing", async (gpu) => {
  const ctl = ctlBuffer(gpu, { ACTIVE: 0 }), logits = gpu.upload("logits", new Float32Array(37).fill(1));
  const ids = gpu.upload("ids", new Uint32Array([7]));
  gpu.run(argmax(gpu, { ctl, logits, ids, rows: 1, vp: 37, vocab: 30, gated: true }));
  gpu.run(argmax(gpu, { ctl, logits, ids, rows: 1, vp: 37, vocab: 30, gated: true, chunk: 8 }));
  const got = await gpu.readU32(ids, 1);
  for (const b of [ctl, logits, ids]) b.destroy();
  if (got[0] !== 7) throw new Error(`gated argmax wrote ${got[0]}`);
});

/** A non-finite value planted in the logits: row, id, value. */
type Plant = [number, number, number];

interface NonFiniteCase {
  rows: number;
  vp: number;
  vocab: number;
  plants: Plant[];
  pos?: number;
  temperature?: number;
  /** Value of ctl[NONFINITE] before the dispatch (an earlier pick's flag, kept). */
  preset?: number;
  workgroupSize?: number;
  gated?: boolean;
  /** Every logit is this value (default: random normals). */
  fill?: number;
  chunk?: number;
  kernel?: Kernel;
  combine?: Kernel;
}

/**
 * Runs argmax on logits with `plants` and checks ctl[NONFINITE]: the preset when there is one, else 0 when no row is
 * flagged by the reference, else 1 + the position of a flagged row (which one is unspecified with several rows).
 */
async function checkNonFinite(gpu: Gpu, c: NonFiniteCase): Promise<void> {
  const { rows, vp, vocab } = c, pos = c.pos ?? 0;
  const rng = new Rng(rows * 131 + vp + c.plants.length);
  const z = c.fill === undefined ? makeLogits(rng, rows, vp, vocab, false) : new Float32Array(rows * vp).fill(c.fill);
  for (const [m, v, x] of c.plants) z[m * vp + v] = x;
  const ctl = ctlBuffer(gpu, { POS: pos, NONFINITE: c.preset ?? 0, ACTIVE: c.gated ? 0 : 1 });
  const logits = gpu.upload("logits", z), ids = gpu.buffer("ids", rows * 4);
  const o = { ctl, logits, ids, rows, vp, vocab, temperature: c.temperature, seed: 3, gated: c.gated };
  gpu.run(argmax(gpu, { ...o, workgroupSize: c.workgroupSize, chunk: c.chunk }, c.kernel, c.combine));
  const got = (await gpu.readU32(ctl, CTL_SLOTS))[CTL.NONFINITE];
  for (const b of [ctl, logits, ids]) b.destroy();
  const ref = argmaxReference(z, rows, vp, vocab, { temperature: c.temperature, seed: 3, firstPos: pos });
  const flagged = ref.nonFinite.flatMap((bad, m) => (bad ? [pos + m + 1] : []));
  const what = `argmax non-finite ${JSON.stringify({ ...c, kernel: c.kernel?.name, combine: c.combine?.name })}`;
  const ok = c.preset || c.gated ? got === (c.preset ?? 0) : flagged.length === 0 ? got === 0 : flagged.includes(got);
  if (!ok) throw new Error(`${what}: ctl[NONFINITE] = ${got}, want ${c.preset || c.gated ? c.preset ?? 0 : flagged}`);
}

gpuTest("argmax flags NaN and infinite logits at real ids in ctl[NONFINITE] (1 + the row's position)", async (gpu) => {
  const [vp, vocab] = [1000, 997];
  for (const workgroupSize of [1, 64, undefined]) {
    for (const x of [NaN, Infinity, -Infinity]) {
      await checkNonFinite(gpu, { rows: 1, vp, vocab, plants: [[0, 500, x]], pos: 5, workgroupSize });
      await checkNonFinite(gpu, { rows: 3, vp, vocab, plants: [[1, 0, x]], pos: 5, workgroupSize });
      await checkNonFinite(gpu, { rows: 3, vp, vocab, plants: [[2, vocab - 1, x]], pos: 9, workgroupSize });
    }
  }
  // Several rows flagged, sampling, a whole row of NaN, the OLMo-2 vocabulary.
  await checkNonFinite(gpu, { rows: 4, vp, vocab, plants: [[1, 7, NaN], [3, 900, Infinity]], pos: 2 });
  await checkNonFinite(gpu, { rows: 2, vp: 37, vocab: 30, plants: [[1, 3, NaN]], temperature: 0.7, pos: 4 });
  await checkNonFinite(gpu, { rows: 1, vp: 37, vocab: 30, plants: [], fill: NaN });
  await checkNonFinite(gpu, { rows: 1, vp: 100352, vocab: 100278, plants: [[0, 100277, -Infinity]], pos: 40 });
});

gpuTest("argmax flags a pick with no finite score, and nothing else", async (gpu) => {
  // Finite logits whose scores overflow f32 when divided by the temperature: nothing finite to choose.
  await checkNonFinite(gpu, { rows: 1, vp: 37, vocab: 30, plants: [[0, 4, 3e38]], temperature: 0.01, pos: 1 });
  // Not flagged: non-finite values at padding ids only, finite extremes, an earlier flag (kept), a gated-off pick.
  await checkNonFinite(gpu, { rows: 2, vp: 37, vocab: 30, plants: [[0, 30, NaN], [1, 36, Infinity]] });
  await checkNonFinite(gpu, { rows: 1, vp: 37, vocab: 30, plants: [[0, 2, 3.4e38], [0, 5, -3.4e38]] });
  await checkNonFinite(gpu, { rows: 2, vp: 37, vocab: 30, plants: [[0, 2, NaN]], preset: 42 });
  await checkNonFinite(gpu, { rows: 2, vp: 37, vocab: 30, plants: [[0, 2, NaN]], gated: true });
});

gpuTest("argmax rejects bad arguments with a clear error", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const bad = [
    { rows: 1, vp: 10, vocab: 11, ids: ctl },
    { rows: 0, vp: 10, vocab: 10, ids: ctl },
    { rows: 1, vp: 10, vocab: 10, ids: ctl, temperature: -1 },
    { rows: 1, vp: 10, vocab: 10 },
    { rows: 1, vp: 10, vocab: 10, ids: ctl, seq: ctl },
    { rows: 1, vp: 10, vocab: 10, ids: ctl, workgroupSize: 48 },
  ];
  for (const b of bad) {
    let threw = false;
    try {
      argmax(gpu, { ctl, logits: ctl, ...b });
    } catch {
      threw = true;
    }
    if (!threw) throw new Error(`argmax accepted bad arguments #${bad.indexOf(b)}`);
  }
  ctl.destroy();
  return Promise.resolve();
});

gpuTest("argmax non-finite checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["bad = bad || non_finite(z[u]);", "bad = non_finite(z[u]);"], // only each thread's last logit counts
    ["& 0x7f800000u) == 0x7f800000u;", "& 0x7fc00000u) == 0x7fc00000u;"], // NaN only: infinities missed
    ["if (bad) { atomicOr(&row_bad, 1u); }", "if (bad && t == 0u) { atomicOr(&row_bad, 1u); }"], // thread 0 only
    ["ctl[CTL_NONFINITE] = pos + 1u;", "ctl[CTL_NONFINITE] = pos;"], // position off by one (0 reads as finite)
    ["&& ctl[CTL_NONFINITE] == 0u", ""], // an earlier flag overwritten
    ["(bad || non_finite(best))", "(non_finite(best))"], // only the best score tested
  ];
  for (const [from, to] of cases) {
    const kernel = mutate(argmaxKernel, from, to);
    await assertCaught(async () => {
      await checkNonFinite(gpu, {
        rows: 3,
        vp: 1000,
        vocab: 997,
        plants: [[1, 500, -Infinity]],
        workgroupSize: 64,
        kernel,
      });
      await checkNonFinite(gpu, { rows: 1, vp: 37, vocab: 30, plants: [[0, 2, NaN]], pos: 0, kernel });
      await checkNonFinite(gpu, { rows: 2, vp: 37, vocab: 30, plants: [[0, 2, NaN]], preset: 42, kernel });
    }, `${from} -> ${to}`);
  }
});

gpuTest("argmax checks catch broken kernels", async (gpu) => {
  const cases: [string, string][][] = [
    [["(v == bv && i < bi)", "(v == bv && i > bi)"]], // ties to the highest id
    [["stride = WG / 2u", "stride = WG / 4u"]], // half the threads dropped from the reduction
    [["s * INV_TEMPERATURE + gumbel", "s + gumbel"]], // temperature ignored
    [["ROW_POS_OFFSET + m;", "ROW_POS_OFFSET;"]], // every row sampled and written at row 0's position
    [["let hi = select(VOCAB, min(VOCAB,", "let hi = select(VP, min(VP,"]], // padding not masked
  ];
  for (const edits of cases) {
    const kernel = edits.reduce((k, [from, to]) => mutate(k, from, to), argmaxKernel);
    await assertCaught(async () => {
      await checkArgmax(gpu, { rows: 3, vp: 1000, vocab: 997, kernel, workgroupSize: 64 });
      await checkArgmax(gpu, { rows: 3, vp: 37, vocab: 30, kernel, temperature: 3, seed: 4, toSeq: true, pos: 2 });
      await checkArgmax(gpu, { rows: 8, vp: 37, vocab: 30, kernel, temperature: 3, seed: 4, ties: false });
    }, edits.map(([f, t]) => `${f} -> ${t}`).join("; "));
  }
});

gpuTest(
  "argmax in two passes over chunks picks what one pass picks (ties across chunks, sampling, seq, values)",
  async (gpu) => {
    // Chunks of 1 id, odd sizes not dividing the vocabulary, one chunk larger than the row; threads fewer than a chunk.
    for (const chunk of [1, 7, 64, 333, 2000]) {
      await checkArgmax(gpu, { rows: 3, vp: 1000, vocab: 997, chunk, workgroupSize: 64 });
      await checkArgmax(gpu, { rows: 2, vp: 37, vocab: 30, chunk, temperature: 1.3, seed: 8, toSeq: true, pos: 4 });
    }
    await checkArgmax(gpu, { rows: 5, vp: 4099, vocab: 4097, chunk: 256, workgroupSize: 32, rowPosOffset: 1, pos: 2 });
    // The OLMo-2 vocabulary takes two passes by default (98 chunks), greedy and sampling.
    await checkArgmax(gpu, { rows: 2, vp: 100352, vocab: 100278 });
    await checkArgmax(gpu, { rows: 1, vp: 100352, vocab: 100278, temperature: 0.8, seed: 5 });
    const ctl = ctlBuffer(gpu);
    const labels = (vocab: number, chunk?: number) =>
      argmax(gpu, { ctl, logits: ctl, ids: ctl, rows: 1, vp: vocab, vocab, chunk }).map((d) => d.label).join(",");
    if (labels(100278) !== "argmax,argmax_combine") throw new Error(`the OLMo-2 vocabulary ran ${labels(100278)}`);
    if (labels(4 * ARGMAX_CHUNK) !== "argmax") throw new Error(`a short row ran ${labels(4 * ARGMAX_CHUNK)}`);
    if (labels(100278, 0) !== "argmax") throw new Error("chunk: 0 did not give one pass");
    ctl.destroy();
  },
);

gpuTest("argmax in two passes flags a non-finite logit in any chunk, and nothing else", async (gpu) => {
  const [vp, vocab] = [1000, 997];
  for (const x of [NaN, Infinity, -Infinity]) {
    // in the first chunk, a middle one and the last (short) one; in a row that is not the first
    for (const id of [0, 500, vocab - 1]) {
      await checkNonFinite(gpu, { rows: 3, vp, vocab, plants: [[1, id, x]], pos: 5, chunk: 64, workgroupSize: 32 });
    }
  }
  await checkNonFinite(gpu, { rows: 2, vp: 37, vocab: 30, plants: [[0, 30, NaN], [1, 36, Infinity]], chunk: 8 });
  await checkNonFinite(gpu, { rows: 2, vp: 37, vocab: 30, plants: [[0, 2, NaN]], preset: 42, chunk: 8 });
  await checkNonFinite(gpu, { rows: 1, vp: 37, vocab: 30, plants: [[0, 4, 3e38]], temperature: 0.01, chunk: 8 });
});

gpuTest("argmax two-pass checks catch broken kernels", async (gpu) => {
  const combine = (from: string, to: string) => ({ combine: mutate(argmaxCombineKernel, from, to) });
  const first = (from: string, to: string) => ({ kernel: mutate(argmaxKernel, from, to) });
  const cases: [string, { kernel?: Kernel; combine?: Kernel }][] = [
    ["ties across chunks to the highest id", combine("(v == bv && i < bi)", "(v == bv && i > bi)")],
    ["chunks skipped", combine("c < chunks; c += WG", "c < chunks; c += 2u * WG")],
    ["row 0's chunks for every row", combine("best[m * chunks + c]", "best[c]")],
    [
      "a chunk's first id skipped",
      first("let lo = (flat % chunks) * CHUNK;", "let lo = (flat % chunks) * CHUNK + 1u;"),
    ],
    ["a chunk's non-finite flag lost", first("select(0u, 1u, row_is_bad)", "0u")],
    ["only the last chunk's flag kept", combine("bad = bad || r.z != 0u;", "bad = r.z != 0u;")],
  ];
  for (const [what, kernels] of cases) {
    await assertCaught(async () => {
      // 16 chunks of 64 over 2 rows with 4 threads: each thread combines several chunks
      await checkArgmax(gpu, { rows: 2, vp: 1000, vocab: 997, chunk: 64, workgroupSize: 4, ...kernels });
      await checkArgmax(gpu, { rows: 3, vp: 1000, vocab: 997, chunk: 64, temperature: 2, seed: 9, ...kernels });
      // ties: the same maximum at ids 5 (chunk 0) and 900 (chunk 14)
      await checkTie(gpu, kernels);
      for (const id of [0, 640, 996]) {
        // 4 threads: each combines 4 chunks, so a flag must survive the chunks after it
        const c = { rows: 2, vp: 1000, vocab: 997, chunk: 64, workgroupSize: 4 };
        await checkNonFinite(gpu, { ...c, plants: [[1, id, NaN]], ...kernels });
      }
    }, what);
  }
});

/** Two passes over a row whose maximum is tied at ids 5 and 900 (different chunks): the pick must be 5. */
async function checkTie(gpu: Gpu, kernels: { kernel?: Kernel; combine?: Kernel }): Promise<void> {
  const z = new Float32Array(1000).fill(-1);
  z[5] = z[900] = 3;
  const ctl = ctlBuffer(gpu), logits = gpu.upload("logits", z), ids = gpu.buffer("ids", 4);
  gpu.run(argmax(gpu, { ctl, logits, ids, rows: 1, vp: 1000, vocab: 997, chunk: 64 }, kernels.kernel, kernels.combine));
  const [got] = await gpu.readU32(ids, 1);
  for (const b of [ctl, logits, ids]) b.destroy();
  if (got !== 5) throw new Error(`a tie across chunks went to ${got}, not the lowest id 5`);
}
