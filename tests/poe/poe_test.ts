import { PRESETS } from "../../model/config.ts";
import { Decoder } from "../../model/generate.ts";
import { HydraTransformer } from "../../model/hydra.ts";
import { type CpuModel, logSoftmaxOf, readTower, referenceLogits } from "../../model/reference.ts";
import { allocateWeights, fillSyntheticEnsemble } from "../../model/weights.ts";
import { encodePass, type Gpu } from "../../kernels/runtime.ts";
import { PoE, POE_PIPELINE_ENV, type PoeCallResult } from "../../poe/poe.ts";
import { gpuTest, Rng } from "../../kernels/testing/harness.ts";

const tiny = PRESETS.tiny;
const N_HEADS = 4, DEPTH = 2, NEW = 12;

async function buildEnsemble(gpu: Gpu, relativeStd: number, spread = 1) {
  const w = allocateWeights(gpu, tiny, N_HEADS, DEPTH);
  await fillSyntheticEnsemble(gpu, w, { seed: 5, rank: 8, relativeStd, std: 1 / Math.sqrt(tiny.dModel), spread });
  const model = new HydraTransformer(gpu, w, { maxPos: 96, maxRows: 24, maxLogitRows: 5 });
  const towers: CpuModel[] = [];
  for (let h = 0; h < N_HEADS; h++) towers.push(await readTower(gpu, w, h));
  return { model, towers };
}

/** Gap between the jury's two best log-probs after `ids` (f64 reference): small gaps may legitimately flip. */
function juryGap(towers: CpuModel[], ids: number[]): number {
  const sum = new Float64Array(tiny.vocabSize);
  for (const t of towers.slice(1)) {
    logSoftmaxOf(referenceLogits(t, ids).at(-1)!, tiny.vocabSize).forEach((x, i) => (sum[i] += x));
  }
  const sorted = Array.from(logSoftmaxOf(sum, tiny.vocabSize)).sort((a, b) => b - a);
  return sorted[0] - sorted[1];
}

/** Tie margin: the GPU's f32 jury may order two candidates differently from the reference only within ~1e-4. */
const TIE_MARGIN = 1e-3;

/**
 * Compares a PoE output with greedy jury decoding; returns the number of positions where they differ at a near-tie
 * (comparison stops there, since the continuations then legitimately differ) and throws on any other difference.
 */
function compareWithJury(towers: CpuModel[], prompt: number[], poe: number[], jury: number[], what: string): number {
  for (let i = 0; i < jury.length; i++) {
    if (poe[i] === jury[i]) continue;
    const gap = juryGap(towers, [...prompt, ...jury.slice(0, i)]);
    if (gap < TIE_MARGIN) return 1;
    throw new Error(`${what}: token ${i} is ${poe[i]} (PoE) vs ${jury[i]} (jury greedy), top-2 gap ${gap.toFixed(5)}`);
  }
  return 0;
}

function checkStats(r: PoeCallResult, gamma: number, what: string): void {
  const problems: string[] = [];
  if (r.ids.length !== NEW || r.output_tokens !== NEW) problems.push(`${r.output_tokens} tokens out, want ${NEW}`);
  if (r.accepted !== r.output_tokens - r.resampled_tokens) problems.push("accepted != output - resampled");
  if (r.sync_points > 2) problems.push(`${r.sync_points} sync points`);
  if (r.rounds > r.rounds_encoded) problems.push("more rounds than encoded");
  if (!(r.encode_ms > 0 && r.encode_ms <= r.wall_ms)) problems.push(`CPU encode ${r.encode_ms} ms of ${r.wall_ms} ms`);
  if (r.rounds < Math.ceil((NEW - 1) / gamma)) problems.push(`${r.rounds} rounds is fewer than possible`);
  const drafted = r.accepted_at.reduce((a, b) => a + b, 0);
  // Every round emits its accepted drafts plus (unless all were accepted or the call ended) one resampled token.
  if (drafted + r.resampled_tokens + 1 < NEW) {
    problems.push(`accepted ${drafted} + resampled ${r.resampled_tokens} + 1 < ${NEW}`);
  }
  if (problems.length) throw new Error(`${what}: ${problems.join("; ")} (${JSON.stringify(r)})`);
}

gpuTest("PoE at temperature 0 and beta 1 emits exactly greedy jury decoding, for gamma 1, 2, 3 and 5", async (gpu) => {
  const { model, towers } = await buildEnsemble(gpu, 0.6);
  const decoder = new Decoder(model);
  const rng = new Rng(3);
  let ties = 0, compared = 0, rejections = 0;
  try {
    for (const gamma of [1, 2, 3, 5]) {
      const poe = new PoE(model, { gamma, beta: 1, temperature: 0, maxNewTokens: NEW });
      for (let p = 0; p < 2; p++) {
        const prompt = Array.from({ length: 5 + 7 * p }, () => rng.int(tiny.vocabSize));
        const jury = (await decoder.generate(prompt, NEW, "jury")).ids;
        const r = await poe.generateIds(prompt);
        checkStats(r, gamma, `gamma ${gamma}`);
        ties += compareWithJury(towers, prompt, r.ids, jury, `gamma ${gamma} prompt ${p}`);
        compared++;
        rejections += r.resampled_tokens;
      }
      poe.destroy();
    }
    console.log(
      `PoE vs jury greedy: ${compared} calls, ${ties} diverged at a near-tie (< ${TIE_MARGIN}), ${rejections} rejections`,
    );
    if (rejections === 0) throw new Error("no draft was ever rejected: the test did not exercise rollback");
    if (ties > 1) throw new Error(`${ties} near-tie divergences in ${compared} calls is more than chance`);
  } finally {
    decoder.destroy();
    model.destroy();
  }
});

gpuTest("PoE with beta < 1 accepts at least as often as with beta = 1", async (gpu) => {
  const { model } = await buildEnsemble(gpu, 0.6);
  const rng = new Rng(11);
  const prompts = Array.from({ length: 4 }, () => Array.from({ length: 6 }, () => rng.int(tiny.vocabSize)));
  const rate = async (beta: number) => {
    const poe = new PoE(model, { gamma: 4, beta, temperature: 0, maxNewTokens: NEW });
    let accepted = 0, rounds = 0;
    for (const p of prompts) {
      const r = await poe.generateIds(p);
      accepted += r.accepted_at.reduce((a, b) => a + b, 0);
      rounds += r.rounds;
    }
    poe.destroy();
    return accepted / rounds;
  };
  try {
    const strict = await rate(1), lenient = await rate(0.05);
    console.log(`accepted drafts per round: beta 1 -> ${strict.toFixed(2)}, beta 0.05 -> ${lenient.toFixed(2)}`);
    if (!(lenient >= strict)) throw new Error(`beta 0.05 accepted ${lenient} drafts per round, beta 1 ${strict}`);
    if (!(lenient > strict)) throw new Error("beta 0.05 accepted no more than beta 1: the leniency does nothing");
  } finally {
    model.destroy();
  }
});

gpuTest("after PoE rolls back rejected drafts, continuing greedily equals a run that never speculated", async (gpu) => {
  const { model, towers } = await buildEnsemble(gpu, 0.6);
  const decoder = new Decoder(model);
  try {
    const prompt = [3, 141, 59, 265, 358, 97];
    const poe = new PoE(model, { gamma: 3, beta: 1, temperature: 0, maxNewTokens: NEW });
    const r = await poe.generateIds(prompt);
    if (r.resampled_tokens === 0) throw new Error("the PoE call rejected nothing; pick another prompt");
    // Continue from the PoE call's caches (LEN after rollback) with plain jury steps, no reset.
    const more = 8;
    const encoder = gpu.device.createCommandEncoder();
    for (let i = 0; i < more; i++) encodePass(encoder, poe.decoder.step("jury"));
    gpu.device.queue.submit([encoder.finish()]);
    const continued = (await poe.decoder.readResult()).ids;
    const straight = (await decoder.generate(prompt, NEW + more, "jury")).ids;
    if (compareWithJury(towers, prompt, continued, straight, "continued after rollback") > 0) {
      console.log("continued after rollback: stopped at a near-tie");
    } else if (continued.length !== NEW + more) {
      throw new Error(`continued for ${continued.length} tokens, want ${NEW + more}`);
    }
    poe.destroy();
  } finally {
    decoder.destroy();
    model.destroy();
  }
});

gpuTest("identical heads (synthetic spread 0): at temperature 0 and beta 1 every draft is accepted", async (gpu) => {
  const { model } = await buildEnsemble(gpu, 0.6, 0);
  try {
    const w = model.weights;
    for (const h of [1, N_HEADS - 1]) {
      const [a, b] = [w.heads[0].blocks[DEPTH - 1].gateUp, w.heads[h].blocks[DEPTH - 1].gateUp];
      if (!assertBytesEqual(new Uint8Array(await gpu.read(a)), new Uint8Array(await gpu.read(b)))) {
        throw new Error(`head ${h}'s blocks differ from head 0's at spread 0`);
      }
    }
    const prompt = [3, 141, 59, 265, 358, 97];
    for (const gamma of [1, 3, 5]) {
      const poe = new PoE(model, { gamma, beta: 1, temperature: 0, maxNewTokens: NEW });
      const r = await poe.generateIds(prompt);
      poe.destroy();
      checkStats(r, gamma, `gamma ${gamma}`);
      const accepted = r.accepted_at.reduce((a, b) => a + b, 0);
      if (r.resampled_tokens !== 0 || accepted !== NEW - 1 || r.rounds !== Math.ceil((NEW - 1) / gamma)) {
        throw new Error(`gamma ${gamma}: ${JSON.stringify(r)}: expected every draft accepted, none resampled`);
      }
    }
  } finally {
    model.destroy();
  }
});

function assertBytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

gpuTest(
  "a call's first batch is sized by the previous call: a repeated call has no no-op round and 1 sync",
  async (gpu) => {
    // heads close enough that some drafts are accepted and some not (at spread 1 nearly every draft is rejected)
    const { model } = await buildEnsemble(gpu, 0.6, 0.3);
    const gamma = 4, fewest = Math.ceil((NEW - 1) / gamma);
    const poe = new PoE(model, { gamma, beta: 1, temperature: 0, maxNewTokens: NEW });
    try {
      const prompt = [3, 141, 59, 265, 358, 97];
      const cold = await poe.generateIds(prompt);
      // the first call has no estimate: the fewest rounds that could finish, then the worst case after a readback
      if (cold.first_batch_rounds !== fewest || cold.sync_points !== 2 || cold.rounds_encoded <= cold.rounds) {
        throw new Error(`cold call: ${JSON.stringify(cold)}; want ${fewest} rounds first, 2 syncs, no-op rounds`);
      }
      const warm = await poe.generateIds(prompt);
      checkStats(warm, gamma, "repeated call");
      if (warm.ids.join() !== cold.ids.join()) {
        throw new Error(
          `the repeated call emitted ${warm.ids}, not ${cold.ids}`,
        );
      }
      if (warm.first_batch_rounds !== cold.rounds || warm.rounds_encoded !== warm.rounds || warm.sync_points !== 1) {
        throw new Error(`repeated call: ${JSON.stringify(warm)}; want ${cold.rounds} rounds, all run, 1 sync`);
      }
      // another prompt: sized by the same estimate, and still at most 2 syncs and every token out
      const other = await poe.generateIds([7, 7, 300, 12]);
      checkStats(other, gamma, "another prompt");
      if (other.first_batch_rounds !== warm.rounds) throw new Error(`another prompt: ${JSON.stringify(other)}`);
      console.log(
        `no-op rounds: cold call ${cold.rounds_encoded - cold.rounds} of ${cold.rounds_encoded}, repeated call ` +
          `${warm.rounds_encoded - warm.rounds}, another prompt ${other.rounds_encoded - other.rounds}`,
      );
    } finally {
      poe.destroy();
      model.destroy();
    }
  },
);

gpuTest("pipelined PoE rounds emit the tokens and counters of plain rounds, for gamma 1, 2, 3 and 5", async (gpu) => {
  const { model } = await buildEnsemble(gpu, 0.6);
  const rng = new Rng(17);
  let rejections = 0;
  // the A/B variable would override both decoders' option
  const env = Deno.env.get(POE_PIPELINE_ENV);
  Deno.env.delete(POE_PIPELINE_ENV);
  try {
    for (const gamma of [1, 2, 3, 5]) {
      for (const temperature of [0, 0.8]) {
        const plain = new PoE(model, { gamma, beta: 1, temperature, maxNewTokens: NEW, seed: 4, pipeline: false });
        const piped = new PoE(model, { gamma, beta: 1, temperature, maxNewTokens: NEW, seed: 4, pipeline: true });
        try {
          if (plain.roundParts.pipelined || !piped.roundParts.pipelined) throw new Error("pipeline option not applied");
          // the last draft step keeps its trunk only; its draft head runs beside the verifiers
          const lastDraft = piped.roundParts.draft.at(-1)!.length;
          if (!(lastDraft < plain.roundParts.draft.at(-1)!.length)) throw new Error("the last draft step is whole");
          const prompt = Array.from({ length: 6 }, () => rng.int(tiny.vocabSize));
          const [a, b] = [await plain.generateIds(prompt), await piped.generateIds(prompt)];
          const counters = (r: PoeCallResult) => [r.ids, r.output_tokens, r.resampled_tokens, r.rounds, r.accepted_at];
          if (JSON.stringify(counters(a)) !== JSON.stringify(counters(b))) {
            throw new Error(
              `gamma ${gamma}, T ${temperature}: ${JSON.stringify(counters(a))} vs ${JSON.stringify(counters(b))}`,
            );
          }
          rejections += b.resampled_tokens;
        } finally {
          plain.destroy();
          piped.destroy();
        }
      }
    }
    if (rejections === 0) {
      throw new Error("no draft was ever rejected: rollback after a pipelined round was not exercised");
    }
  } finally {
    if (env !== undefined) Deno.env.set(POE_PIPELINE_ENV, env);
    model.destroy();
  }
});
