import { CTL } from "../../kernels/control/ctl.ts";
import { PRESETS } from "../../model/config.ts";
import { Decoder, type PickMode } from "../../model/generate.ts";
import { type ForwardOptions, HydraTransformer, PREFILL_TAIL_ENV } from "../../model/hydra.ts";
import type { KvDtype } from "../../kernels/attention/kv_cache.ts";
import { argmaxOf, type CpuModel, logSoftmaxOf, readTower, referenceLogits } from "../../model/reference.ts";
import { allocateWeights, fillRandomWeights } from "../../model/weights.ts";
import type { Gpu } from "../../kernels/runtime.ts";
import { tensorGemmUnsupported } from "../../kernels/matmul/gemm_tensor.ts";
import { PREFILL_GEMM_ENV, type PrefillMath, SPLIT_K_ENV } from "../../kernels/matmul/linear.ts";
import { assertClose, dawnGpuTest, gpuTest, Rng } from "../../kernels/testing/harness.ts";
import { PREFILL_ATTENTION_ENV } from "../../kernels/attention/prefill_tensor.ts";

const tiny = PRESETS.tiny;

/** Random weights of a tiny Hydra; std 1/sqrt(d) gives logits of unit scale, so greedy picks are not rounding noise. */
async function tinyWeights(gpu: Gpu, nHeads: number, headsDepth: number, seed: number) {
  const w = allocateWeights(gpu, tiny, nHeads, headsDepth);
  await fillRandomWeights(gpu, w, seed, 1 / Math.sqrt(tiny.dModel));
  return w;
}

/** The reference's next-token scores of `mode` for the last position of `ids` (f64). */
function referenceScores(towers: CpuModel[], ids: number[], mode: PickMode, kvDtype: KvDtype): Float64Array {
  const last = (m: CpuModel) => referenceLogits(m, ids, kvDtype).at(-1)!;
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

async function buildTiny(
  gpu: Gpu,
  nHeads: number,
  headsDepth: number,
  seed: number,
  kvDtype: KvDtype,
  prefillMath: PrefillMath = "f32",
) {
  const w = await tinyWeights(gpu, nHeads, headsDepth, seed);
  const model = new HydraTransformer(gpu, w, { maxPos: 64, maxRows: 24, maxLogitRows: 4, kvDtype, prefillMath });
  const towers: CpuModel[] = [];
  for (let h = 0; h < nHeads; h++) towers.push(await readTower(gpu, w, h));
  return { model, towers, decoder: new Decoder(model) };
}

// GPU f32 (bf16 weights) vs CPU f64 on the same weights over 4 blocks: differences are f32 rounding, ~1e-5 relative.
const LOGIT_TOL = { atol: 2e-3, rtol: 2e-3 };
// Where the prefill takes the tensor-core GEMM (Dawn), every product rounds its inputs to f16 (2^-11 relative,
// ARCHITECTURE.md "Tensor-core prefill GEMM"): on the H200 the last prompt position's logits were off by up to
// 3.4e-3 after 4 blocks and lm_head. 1e-2 is three times that; the greedy tokens must still match exactly.
const TENSOR_PREFILL_LOGIT_TOL = { atol: 1e-2, rtol: 1e-2 };

// With prefill_math f16 (Deno's f16-multiply GEMM) every prefill product rounds x to f16 and sums f16 partials of 8
// k (ARCHITECTURE.md "f16-multiply prefill GEMM (Deno)"): on lavapipe the last prompt position's logits were off by up
// to 8.3e-3 (single head, logits of unit scale) and the jury's log-probabilities by 1.3e-2 (within 1e-2 + 1e-2 of
// their magnitude); flushK 4 and 16 gave the same spread (8.8e-3 / 1.6e-2, 1.6e-2 / 1.0e-2), so rounding x to f16
// decides it, as for the tensor GEMM. Its tolerance; the greedy tokens must still match exactly.
const F16_PREFILL_LOGIT_TOL = TENSOR_PREFILL_LOGIT_TOL;

/** The tolerance of the prompt logits: the f32 one, or the f16-input one where the prefill multiplies in f16. */
function promptLogitTol(gpu: Gpu, prefillMath: PrefillMath) {
  const forced = Deno.env.get(PREFILL_GEMM_ENV);
  const tensor = tensorGemmUnsupported(gpu) === null && forced !== "fma" && forced !== "fma16";
  if (tensor) return TENSOR_PREFILL_LOGIT_TOL;
  return prefillMath === "f16" || forced === "fma16" ? F16_PREFILL_LOGIT_TOL : LOGIT_TOL;
}

const CASES: readonly (readonly [PickMode, number, number, KvDtype, PrefillMath])[] = [
  ["single", 1, 0, "bf16", "f32"],
  ["single", 3, 2, "bf16", "f32"],
  ["naive", 3, 2, "bf16", "f32"],
  ["jury", 3, 2, "bf16", "f32"],
  ["single", 1, 0, "f32", "f32"],
  ["jury", 3, 2, "f32", "f32"],
  // The f16-multiply prefill GEMM (prefill_math f16): the 20-token prompt takes it, the decode steps the matvec.
  ["single", 1, 0, "bf16", "f16"],
  ["jury", 3, 2, "bf16", "f16"],
];
for (const [mode, nHeads, depth, kvDtype, prefillMath] of CASES) {
  const name = `tiny ${mode} greedy decode (${nHeads} heads x ${depth} blocks, ${kvDtype} KV${
    prefillMath === "f16" ? ", prefill_math f16" : ""
  }) matches the f64 reference`;
  gpuTest(name, async (gpu) => {
    const { model, towers, decoder } = await buildTiny(gpu, nHeads, depth, 7 + nHeads + depth, kvDtype, prefillMath);
    try {
      const rng = new Rng(99);
      // 20 prompt tokens: the prefill takes the tiled GEMM and the prefill attention; the steps the decode paths.
      const prompt = Array.from({ length: 20 }, () => rng.int(tiny.vocabSize));
      const n = 6;
      const got = await decoder.generate(prompt, n, mode, { withPromptLogits: true });
      const want = referenceScores(towers, prompt, mode, kvDtype);
      const report = assertClose(
        got.promptLogits!.subarray(0, tiny.vocabSize),
        want,
        promptLogitTol(gpu, prefillMath),
        `${mode} last prompt position`,
      );
      if (prefillMath === "f16") console.log(`  prompt logits max abs err ${report.maxAbs.toExponential(2)}`);
      const ids = [...prompt];
      for (let i = 0; i < n; i++) ids.push(argmaxOf(referenceScores(towers, ids, mode, kvDtype), tiny.vocabSize));
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

gpuTest(
  "fused and unfused passes of 1..6 rows match the f64 reference (trunk, heads, PoE-style verification)",
  async (gpu) => {
    const [nHeads, depth] = [2, 2];
    const w = await tinyWeights(gpu, nHeads, depth, 31);
    const towers = [await readTower(gpu, w, 0), await readTower(gpu, w, 1)];
    const rng = new Rng(5);
    const ids = Array.from({ length: 12 }, () => rng.int(tiny.vocabSize));
    const want = towers.map((t) => referenceLogits(t, ids, "bf16"));
    // (no L2 prefetch: the dispatch counts below are the fusions')
    const shape = { maxPos: 64, maxRows: 24, maxLogitRows: 6, prefetch: 0 };
    const fused = new HydraTransformer(gpu, w, { ...shape, fuse: { attention: true, postNorm: true, maxRows: 16 } });
    // The attention's QK-norm statistics from the QKV matvec's partial sums (with and without the post-norm prologue)
    const stats = new HydraTransformer(gpu, w, {
      ...shape,
      fuse: { attention: true, postNorm: true, qkStats: true, maxRows: 16 },
    });
    const statsOnly = new HydraTransformer(gpu, w, {
      ...shape,
      fuse: { attention: true, postNorm: false, qkStats: true, maxRows: 16 },
    });
    const plain = new HydraTransformer(gpu, w, { ...shape, fuse: false });
    const models = [[fused, "fused"], [stats, "fused with QK stats"], [statsOnly, "QK stats, no post-norm"], [
      plain,
      "unfused",
    ]] as const;
    try {
      // A fused block records 3 dispatches fewer: QK-norm + RoPE and both post-norms run inside their neighbours.
      const saved = plain.trunk(1).length - fused.trunk(1).length;
      const blocks = tiny.nLayers - depth;
      if (saved !== 3 * blocks - 1) throw new Error(`the fused trunk saves ${saved} dispatches, not ${3 * blocks - 1}`);
      if (stats.trunk(1).length !== fused.trunk(1).length) throw new Error("the QK statistics added dispatches");
      const names = stats.trunk(1).map((d) => d.label).join(" ");
      if (!/matvec_bf16_\S*_qks/.test(names) || !names.includes("attention_decode_qks")) {
        throw new Error(`the QK-stats trunk runs ${names}`);
      }
      for (const [model, what] of models) {
        gpu.write(model.seq, Uint32Array.from(ids));
        // Passes of 6, 1, 3 and 2 rows from position 0: new keys in every pass, seen by the later rows of the pass.
        let pos = 0;
        for (const rows of [6, 1, 3, 2]) {
          runPass(gpu, model, pos, rows, { heads: [0, 1], lastTokenOnly: false });
          for (let h = 0; h < nHeads; h++) {
            const s = model.logitsSlice(h, rows), vp = tiny.paddedVocab;
            const got = new Float32Array(await gpu.read(s.buffer, s.offset, s.size));
            for (let m = 0; m < rows; m++) {
              const row = got.subarray(m * vp, m * vp + tiny.vocabSize);
              assertClose(
                row,
                want[h][pos + m].subarray(0, tiny.vocabSize),
                LOGIT_TOL,
                `${what} head ${h} pos ${pos + m}`,
              );
            }
          }
          pos += rows;
        }
      }
    } finally {
      for (const model of [fused, stats, statsOnly]) model.destroy(true);
      plain.destroy();
    }
  },
);

/** Runs `model`'s forward pass over `rows` rows from position `pos` (the control block set to it, ACTIVE). */
function runPass(gpu: Gpu, model: HydraTransformer, pos: number, rows: number, o: ForwardOptions): void {
  const ctl = new Uint32Array(model.ctl.size / 4);
  ctl[CTL.POS] = pos;
  ctl[CTL.ACTIVE] = 1;
  gpu.write(model.ctl, ctl);
  gpu.run(model.residualForward(rows, o));
}

/**
 * A prefill of 20 rows of `ids` on `model`, then 3 decode steps, which read the last blocks' K/V of every prompt row;
 * after each pass, each head's logits of its last row (the vocabulary's), with that row's position.
 */
async function prefillThenDecode(
  gpu: Gpu,
  model: HydraTransformer,
  ids: number[],
  heads: number[],
): Promise<{ rows: number; at: number; head: number; logits: Float32Array }[]> {
  gpu.write(model.seq, Uint32Array.from(ids));
  const out = [];
  let pos = 0;
  for (const rows of [20, 1, 1, 1]) {
    runPass(gpu, model, pos, rows, { heads, lastTokenOnly: true });
    for (const head of heads) {
      const s = model.logitsSlice(head, 1);
      const logits = new Float32Array(await gpu.read(s.buffer, s.offset, s.size)).subarray(0, tiny.vocabSize);
      out.push({ rows, at: pos + rows - 1, head, logits });
    }
    pos += rows;
  }
  return out;
}

/**
 * The logits of passes of `passes` rows from position 0 over `ids` (each head's slice; the last row only above
 * maxLogitRows), for each of two models built on the same weights, compared bit for bit: `a` records them differently
 * (lock-step heads, prefetches), so equal logits mean the recording changed no arithmetic.
 */
async function assertSameLogits(
  gpu: Gpu,
  [a, b]: readonly [HydraTransformer, HydraTransformer],
  ids: readonly number[],
  passes: readonly number[],
  heads: readonly number[],
): Promise<void> {
  const logits: Float32Array[][] = [];
  for (const model of [a, b]) {
    gpu.write(model.seq, Uint32Array.from(ids));
    const got: Float32Array[] = [];
    let pos = 0;
    for (const rows of passes) {
      const lastTokenOnly = rows > model.maxLogitRows;
      runPass(gpu, model, pos, rows, { heads, lastTokenOnly });
      for (const h of heads) {
        const s = model.logitsSlice(h, lastTokenOnly ? 1 : rows);
        got.push(new Float32Array(await gpu.read(s.buffer, s.offset, s.size)));
      }
      pos += rows;
    }
    logits.push(got);
  }
  logits[0].forEach((l, i) => assertClose(l, logits[1][i], { atol: 0, rtol: 0 }, `logits slice ${i}`));
}

gpuTest(
  "a prefill's post-norms and QK-norm that sum the split-K partials and write the f16 rows give the same logits, bit for bit",
  async (gpu) => {
    // every GEMM split 2 ways, so that the o and down products leave their partials to the post-norms and the qkv
    // product its to qk_norm_rope
    Deno.env.set(SPLIT_K_ENV, "2");
    const [nHeads, depth] = [2, 1];
    const w = await tinyWeights(gpu, nHeads, depth, 43);
    // every block whole (no last-row tail, whose products are matvecs): the counts below are the fusions'
    const shape = { maxPos: 64, maxRows: 24, maxLogitRows: 4, overlapHeads: false, prefillTail: false };
    const fused = new HydraTransformer(gpu, w, shape);
    const apart = new HydraTransformer(gpu, w, { ...shape, fuse: { prefillNorm: false } });
    try {
      const labels = (m: HydraTransformer) =>
        m.residualForward(20, { heads: [0, 1], lastTokenOnly: true }).map((d) => d.label);
      const count = (ls: string[], re: RegExp) => ls.filter((l) => re.test(l)).length;
      const [f, a] = [labels(fused), labels(apart)];
      // the trunk's blocks and each head's: o's and down's reductions in the norms after them, qkv's in qk_norm_rope
      const blocks = tiny.nLayers - depth + nHeads * depth;
      if (count(a, /^split_k_reduce/) - count(f, /^split_k_reduce/) !== 3 * blocks) {
        throw new Error(`split_k_reduce: ${count(f, /^split_k_reduce/)} fused, ${count(a, /^split_k_reduce/)} apart`);
      }
      if (count(f, /^rmsnorm(_from)?_sk/) !== 2 * blocks) throw new Error(`fused norms: ${f.join(" ")}`);
      if (count(f, /^qk_norm_rope_sk/) !== blocks || count(a, /^qk_norm_rope_sk/) !== 0) {
        throw new Error(`fused QK-norms: ${f.join(" ")}`);
      }
      // where the products take the tensor-core GEMM (Dawn), the norms write the f16 rows its pre-pass wrote
      const halfNorms = count(f, /^rmsnorm\w*_half/), prePasses = (ls: string[]) => count(ls, /^row_scale_half/);
      if ((halfNorms > 0) !== (prePasses(a) > 0) || prePasses(a) - prePasses(f) !== halfNorms) {
        throw new Error(`f16 rows: ${halfNorms} norms, pre-passes ${prePasses(f)} fused, ${prePasses(a)} apart`);
      }
      console.log(`  ${halfNorms} of ${2 * blocks} post-norms write the f16 rows`);
      const rng = new Rng(12);
      const ids = Array.from({ length: 24 }, () => rng.int(tiny.vocabSize));
      await assertSameLogits(gpu, [fused, apart], ids, [20, 1, 3], [0, 1]);
    } finally {
      Deno.env.delete(SPLIT_K_ENV);
      fused.destroy(true);
      apart.destroy();
    }
  },
);

gpuTest("heads in lock-step give the same logits, bit for bit, as one head after the other", async (gpu) => {
  const [nHeads, depth] = [3, 2];
  const w = await tinyWeights(gpu, nHeads, depth, 41);
  const shape = { maxPos: 64, maxRows: 24, maxLogitRows: 4 };
  const lockstep = new HydraTransformer(gpu, w, shape);
  const sequential = new HydraTransformer(gpu, w, { ...shape, overlapHeads: false });
  const rng = new Rng(8);
  const ids = Array.from({ length: 16 }, () => rng.int(tiny.vocabSize));
  try {
    const barriers = (m: HydraTransformer, rows: number) =>
      m.residualForward(rows, { heads: [0, 1, 2], lastTokenOnly: rows > 4 }).filter((d) =>
        d.label.startsWith("read_barrier")
      ).length;
    // a barrier after every op but the lm_head: 8 a block unfused (qkv, QK-norm + RoPE, attention, o, norm, gate_up,
    // down, norm; the tiny cache takes one split, so no merge), 7 fused (at 1 row), then the final norm's
    if (barriers(lockstep, 4) !== 8 * depth + 1) throw new Error(`${barriers(lockstep, 4)} read barriers at 4 rows`);
    if (barriers(lockstep, 1) !== 7 * depth + 1) throw new Error(`${barriers(lockstep, 1)} read barriers at 1 row`);
    if (barriers(sequential, 4) !== 0) throw new Error("overlapHeads false still records read barriers");
    // 8 rows: the prefill path (lock-step: LOCKSTEP_DEFAULT_ROWS is above maxRows here), then decode-sized passes
    await assertSameLogits(gpu, [lockstep, sequential], ids, [8, 1, 4, 3], [0, 1, 2]);
    // prefills of up to 24 rows (maxRows, under LOCKSTEP_DEFAULT_ROWS) in lock-step as well, 20 rows taking the GEMM and
    // the prefill attention; lockstepRows 4 (the logit rows) keeps them one head after the other
    const decodeOnly = new HydraTransformer(gpu, w, { ...shape, lockstepRows: 4 });
    try {
      if (lockstep.lockstepRows !== 24) throw new Error(`lockstepRows ${lockstep.lockstepRows}, not maxRows 24`);
      if (barriers(lockstep, 20) === 0 || barriers(decodeOnly, 20) !== 0) throw new Error("lockstepRows not applied");
      await assertSameLogits(gpu, [lockstep, sequential], [...ids, ...ids], [20, 1, 3], [0, 1, 2]);
      await assertSameLogits(gpu, [decodeOnly, sequential], [...ids, ...ids], [20, 1, 3], [0, 1, 2]);
    } finally {
      decodeOnly.destroy(true);
    }
  } finally {
    lockstep.destroy(true);
    sequential.destroy();
  }
});

gpuTest(
  "the L2 prefetch beside latency-bound dispatches changes no logit and only decode passes get it",
  async (gpu) => {
    const [nHeads, depth] = [2, 2];
    const w = await tinyWeights(gpu, nHeads, depth, 43);
    const shape = { maxPos: 64, maxRows: 24, maxLogitRows: 4, overlapHeads: false };
    const withPrefetch = new HydraTransformer(gpu, w, { ...shape, prefetch: 4096 });
    const without = new HydraTransformer(gpu, w, { ...shape, prefetch: 0 });
    const rng = new Rng(9);
    const ids = Array.from({ length: 32 }, () => rng.int(tiny.vocabSize));
    const prefetches = (m: HydraTransformer, rows: number) =>
      m.residualForward(rows, { heads: [0, 1], lastTokenOnly: rows > 4 }).filter((d) => d.label === "prefetch").length;
    try {
      // per block: beside the attention (one dispatch in the tiny cache) and both post-norms, but the last block of a
      // run (trunk, each head) has no next qkv to prefetch
      const runs = 1 + nHeads, blocks = tiny.nLayers - depth + nHeads * depth;
      if (prefetches(withPrefetch, 1) !== 3 * blocks - runs) {
        throw new Error(`${prefetches(withPrefetch, 1)} prefetches in a decode step, not ${3 * blocks - runs}`);
      }
      if (prefetches(withPrefetch, 20) !== 0) throw new Error("a prefill pass (the GEMM's rows) prefetches");
      if (prefetches(without, 1) !== 0) throw new Error("prefetch 0 still prefetches");
      await assertSameLogits(gpu, [withPrefetch, without], ids, [20, 1, 4], [0, 1]);
    } finally {
      withPrefetch.destroy(true);
      without.destroy();
    }
  },
);

gpuTest(
  "a prefill that reads its last row alone runs each tower's last block past the K/V append for that row only: the same logits, and the decode after it",
  async (gpu) => {
    const ids = Array.from({ length: 23 }, (_, i) => (i * 7) % 50);
    const shape = { maxPos: 64, maxRows: 20, maxLogitRows: 4 };
    // [heads, blocks each, heads in lock-step]: a plain OLMo-2 (the trunk's last block), a Hydra's heads both ways
    const cases: [number, number, boolean][] = [[1, 0, true], [2, 2, true], [2, 2, false]];
    for (const [nHeads, depth, overlapHeads] of cases) {
      const w = await tinyWeights(gpu, nHeads, depth, 47 + depth);
      const heads = Array.from({ length: nHeads }, (_, h) => h);
      const want: Float64Array[][] = [];
      for (const h of heads) want.push(referenceLogits(await readTower(gpu, w, h), ids, "bf16"));
      const tail = new HydraTransformer(gpu, w, { ...shape, overlapHeads });
      const whole = new HydraTransformer(gpu, w, { ...shape, overlapHeads, prefillTail: false });
      const what = `${nHeads} heads x ${depth} blocks${overlapHeads ? "" : ", one after the other"}`;
      const gemms = (m: HydraTransformer, rows: number) =>
        m.residualForward(rows, { heads, lastTokenOnly: true }).filter((d) => d.label.startsWith("gemm")).length;
      try {
        // each tower's last block runs o, gate_up and down as matvecs over one row: the trunk's when the heads have no
        // blocks, else each head's; its QKV stays a GEMM over every row
        if (gemms(whole, 20) - gemms(tail, 20) !== 3 * nHeads) {
          throw new Error(`${what}: the tail pass runs ${gemms(tail, 20)} GEMMs, the whole one ${gemms(whole, 20)}`);
        }
        // not where every row's logits are read
        const every = (m: HydraTransformer) => m.residualForward(4, { heads, lastTokenOnly: false }).length;
        if (every(tail) !== every(whole)) throw new Error(`${what}: a pass reading every row ran the tail`);
        // a prefill of 20 rows, then 3 decode steps that read the last blocks' K/V of every prompt row
        for (const model of [tail, whole]) {
          for (const { rows, at, head, logits } of await prefillThenDecode(gpu, model, ids, heads)) {
            const pass = `${what}, ${model === tail ? "tail" : "whole"}, head ${head}, pass of ${rows} at ${at}`;
            assertClose(logits, want[head][at].subarray(0, tiny.vocabSize), promptLogitTol(gpu, "f32"), pass);
          }
        }
      } finally {
        tail.destroy(true);
        whole.destroy();
      }
    }
    // HYDRA_PREFILL_TAIL=0 turns it off
    Deno.env.set(PREFILL_TAIL_ENV, "0");
    try {
      const w = await tinyWeights(gpu, 1, 0, 47);
      const byEnv = new HydraTransformer(gpu, w, shape); // prefillTail unset: the default (on), which the variable overrides
      const whole = new HydraTransformer(gpu, w, { ...shape, prefillTail: false });
      const n = (m: HydraTransformer) => m.residualForward(20, { heads: [0], lastTokenOnly: true }).length;
      if (n(byEnv) !== n(whole)) throw new Error(`${PREFILL_TAIL_ENV}=0 still runs the tail`);
      byEnv.destroy(true);
      whole.destroy();
    } finally {
      Deno.env.delete(PREFILL_TAIL_ENV);
    }
  },
);

/** A GPU test of the tensor-core prefill (Dawn with subgroup matrices), or where it cannot run, an ignored one. */
const tensorTest = await dawnGpuTest(tensorGemmUnsupported);

tensorTest(
  "a prefill whose attention writes o's input as f16 rows gives the logits of the row-scale pre-passes, and the decode after it",
  async (gpu) => {
    const ids = Array.from({ length: 23 }, (_, i) => (i * 11) % 50);
    const shape = { maxPos: 64, maxRows: 20, maxLogitRows: 4, prefillTail: false };
    Deno.env.set(PREFILL_ATTENTION_ENV, "tensor"); // the tiny model's heads are too few for `auto` to take it
    try {
      for (const [nHeads, depth] of [[1, 0], [2, 2]]) {
        const w = await tinyWeights(gpu, nHeads, depth, 59 + depth);
        const heads = Array.from({ length: nHeads }, (_, h) => h);
        const want: Float64Array[][] = [];
        for (const h of heads) want.push(referenceLogits(await readTower(gpu, w, h), ids, "bf16"));
        // heads one after the other: lock-step lanes keep their pre-passes (their ops interleave, the f16 rows' buffers
        // are shared)
        const half = new HydraTransformer(gpu, w, { ...shape, overlapHeads: false, prefillAttentionRows: true });
        const apart = new HydraTransformer(gpu, w, { ...shape, overlapHeads: false, prefillAttentionRows: false });
        const what = `${nHeads} heads x ${depth} blocks`;
        const prePasses = (m: HydraTransformer) =>
          m.residualForward(20, { heads, lastTokenOnly: true }).filter((d) => d.label.startsWith("row_scale")).length;
        try {
          // one pre-pass a block fewer (o's), in every tower
          const blocks = w.trunk.length + w.heads.reduce((n, head) => n + head.blocks.length, 0);
          if (prePasses(apart) - prePasses(half) !== blocks) {
            throw new Error(`${what}: ${prePasses(half)} row-scale pre-passes, ${prePasses(apart)} without`);
          }
          const logits: Float32Array[] = [];
          for (const model of [half, apart]) {
            for (const { rows, at, head, logits: got } of await prefillThenDecode(gpu, model, ids, heads)) {
              const pass = `${what}, ${model === half ? "on" : "pre-passes"}, head ${head}, pass of ${rows} at ${at}`;
              assertClose(got, want[head][at].subarray(0, tiny.vocabSize), TENSOR_PREFILL_LOGIT_TOL, pass);
              logits.push(got);
            }
          }
          // the same products, o's input rounded to f16 at another scale (the bound's exponent, not its row maximum's):
          // far inside the reference's tolerance
          const n = logits.length / 2;
          for (let i = 0; i < n; i++) {
            assertClose(logits[i], logits[n + i], { atol: 1e-3, rtol: 1e-3 }, `${what} #${i}`);
          }
        } finally {
          half.destroy(true);
          apart.destroy();
        }
      }
    } finally {
      Deno.env.delete(PREFILL_ATTENTION_ENV);
    }
  },
);
