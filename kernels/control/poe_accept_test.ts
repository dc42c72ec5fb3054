/**
 * Tests of the PoE acceptance kernel (`poe_accept.ts`): accepted lengths, resampling, counters and KV rollback
 * against the reference, exactly, for drafts placed on either side of the acceptance threshold, and mutants.
 * @module
 */

import { CTL, CTL_SLOTS, MAX_GAMMA } from "./ctl.ts";
import { poeAccept, poeAcceptKernel, poeAcceptReference, type PoeAcceptResult } from "./poe_accept.ts";
import { logSoftmaxReference } from "../logits/log_softmax.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, assertClose, gpuTest, mutate, Rng } from "../testing/harness.ts";

// Every comparison here is exact (atol 0): the kernel and the reference make the same f32 comparisons on the same f32
// values (the threshold log(beta) + max is one correctly rounded f32 addition on both sides) and move integers.

/**
 * What the draft at each position is, relative to the jury's row:
 *   best   the jury's argmax                            (accepted for every beta)
 *   near   p = sqrt(beta) * max p; max p / e^0.5 at beta 1 (accepted iff beta < 1)
 *   edge   logp exactly at the f32 threshold            (accepted: >=)
 *   under  logp one f32 step below the threshold        (rejected)
 *   far    p = beta * max p / e                         (rejected)
 *   tie    the higher id of two exactly tied maxima     (accepted)
 *   farTie far, in a row with two tied maxima           (rejected; the resampled token is the lower tied id)
 *   pad    an id >= vocab                               (rejected)
 */
type Draft = "best" | "near" | "edge" | "under" | "far" | "tie" | "farTie" | "pad";

interface Round {
  drafts: Draft[];
  beta?: number;
  vp?: number;
  vocab?: number;
  len?: number;
  out?: number;
  maxOut?: number;
  active?: number;
  gated?: boolean;
  kernel?: Kernel;
  seed?: number;
}

interface RoundData {
  logp: Float32Array;
  seq: Uint32Array;
  ctl: Uint32Array;
}

/** Jury log-probs, a sequence holding the drafts and a control block for one round. */
function makeRound(r: Round): RoundData {
  const gamma = r.drafts.length, vp = r.vp ?? 37, vocab = r.vocab ?? 30, beta = r.beta ?? 1, len = r.len ?? 5;
  const rng = new Rng(r.seed ?? gamma * 131 + vp);
  const logp = logSoftmaxReference(rng.normals(gamma * vp, 2), gamma, vp, vocab);
  const seq = new Uint32Array(len + gamma + 4);
  for (let p = 0; p <= len; p++) seq[p] = rng.int(vocab);
  seq.fill(0xdeadbeef, len + gamma + 1);
  const logBeta = Math.fround(Math.log(beta));
  for (let i = 0; i < gamma; i++) {
    const row = logp.subarray(i * vp, (i + 1) * vp);
    let best = 0;
    for (let x = 1; x < vocab; x++) if (row[x] > row[best]) best = x;
    const max = row[best];
    let other = rng.int(vocab); // a non-best id to plant a value at
    if (other === best) other = (best + 1) % vocab;
    const plant = (value: number) => {
      row[other] = value;
      return other;
    };
    const threshold = Math.fround(logBeta + max);
    let d: number;
    switch (r.drafts[i]) {
      case "best":
        d = best;
        break;
      case "near":
        d = plant(max + (beta < 1 ? Math.log(beta) / 2 : -0.5));
        break;
      case "edge":
        d = plant(threshold);
        break;
      case "under":
        d = plant(nextDown(threshold));
        break;
      case "far":
        d = plant(max + Math.log(beta) - 1);
        break;
      case "tie":
      case "farTie": {
        if (vocab < 3) throw new Error("ties need vocab >= 3");
        row[other] = max;
        let far = rng.int(vocab);
        while (far === best || far === other) far = rng.int(vocab);
        row[far] = max + Math.log(beta) - 1;
        d = r.drafts[i] === "tie" ? Math.max(best, other) : far;
        break;
      }
      case "pad":
        d = vocab;
        break;
    }
    seq[len + 1 + i] = d;
  }
  const ctl = new Uint32Array(CTL_SLOTS);
  ctl[CTL.POS] = len + gamma - 1; // where the verification pass left it
  ctl[CTL.LEN] = len;
  ctl[CTL.ACTIVE] = r.active ?? 1;
  ctl[CTL.OUT] = r.out ?? 1;
  ctl[CTL.MAX_OUT] = r.maxOut ?? 100;
  ctl[CTL.ROUNDS] = 3;
  ctl[CTL.RESAMPLED] = 2;
  ctl[CTL.PROMPT] = 4;
  for (let i = 0; i < MAX_GAMMA; i++) ctl[CTL.ACCEPTED_AT + i] = rng.int(5); // counters are incremented, not set
  return { logp, seq, ctl };
}

/** The largest f32 below `x`. */
function nextDown(x: number): number {
  const f = new Float32Array([x]), u = new Uint32Array(f.buffer);
  u[0] += x > 0 ? -1 : 1;
  return f[0];
}

/** Runs `rounds` consecutive acceptances on the GPU (one submission) and checks seq and ctl against the reference. */
async function runRounds(gpu: Gpu, r: Round, rounds = 1): Promise<{ before: RoundData; after: PoeAcceptResult }> {
  const before = makeRound(r);
  const gamma = r.drafts.length, vp = r.vp ?? 37, vocab = r.vocab ?? 30, beta = r.beta ?? 1;
  const ctl = gpu.upload("ctl", before.ctl),
    logp = gpu.upload("logp", before.logp),
    seq = gpu.upload("seq", before.seq);
  const bestIds = gpu.buffer("best ids", gamma * 4), bestLogp = gpu.buffer("best logp", gamma * 4);
  const one = poeAccept(gpu, { ctl, logp, seq, gamma, vp, vocab, beta, bestIds, bestLogp, gated: r.gated }, r.kernel);
  gpu.run(Array.from({ length: rounds }, () => one).flat());
  const gotSeq = await gpu.readU32(seq, before.seq.length), gotCtl = await gpu.readU32(ctl, CTL_SLOTS);
  for (const b of [ctl, logp, seq, bestIds, bestLogp]) b.destroy();
  let after: PoeAcceptResult = { seq: before.seq, ctl: before.ctl, accepted: 0 };
  for (let i = 0; i < rounds; i++) {
    after = poeAcceptReference(before.logp, vp, vocab, gamma, after.seq, after.ctl, beta, r.gated);
  }
  const what = `poeAccept ${JSON.stringify({ ...r, kernel: r.kernel?.name })} x${rounds}`;
  assertClose(gotSeq, after.seq, { atol: 0 }, `${what}: seq`);
  assertClose(gotCtl, after.ctl, { atol: 0 }, `${what}: ctl`);
  return { before, after };
}

/** Runs one round and asserts its outcome in the spec's terms (independently of the reference). */
async function expectRound(
  gpu: Gpu,
  r: Round,
  want: { accepted: number; emitted: number; resampled: boolean },
): Promise<void> {
  const { before, after } = await runRounds(gpu, r);
  const b = before.ctl, a = after.ctl, len = b[CTL.LEN], gamma = r.drafts.length;
  const what = `${JSON.stringify(r.drafts)} beta=${r.beta ?? 1} out=${b[CTL.OUT]}/${b[CTL.MAX_OUT]}`;
  const check = (ok: boolean, msg: string) => {
    if (!ok) throw new Error(`${what}: ${msg}`);
  };
  check(after.accepted === want.accepted, `accepted ${after.accepted}, want ${want.accepted}`);
  check(a[CTL.LEN] === len + want.emitted && a[CTL.POS] === a[CTL.LEN], `LEN ${a[CTL.LEN]} POS ${a[CTL.POS]}`);
  check(a[CTL.OUT] === b[CTL.OUT] + want.emitted, `OUT ${a[CTL.OUT]}`);
  check(a[CTL.ROUNDS] === b[CTL.ROUNDS] + 1, `ROUNDS ${a[CTL.ROUNDS]}`);
  check(a[CTL.RESAMPLED] === b[CTL.RESAMPLED] + (want.resampled ? 1 : 0), `RESAMPLED ${a[CTL.RESAMPLED]}`);
  check(a[CTL.ACTIVE] === (a[CTL.OUT] < a[CTL.MAX_OUT] ? 1 : 0), `ACTIVE ${a[CTL.ACTIVE]}`);
  for (let i = 0; i < MAX_GAMMA; i++) {
    const inc = i < Math.min(want.accepted, want.emitted) ? 1 : 0;
    check(a[CTL.ACCEPTED_AT + i] === b[CTL.ACCEPTED_AT + i] + inc, `ACCEPTED_AT + ${i}`);
  }
  // Accepted drafts stay; a rejected draft is replaced by the jury's argmax; later positions are untouched.
  for (let i = 0; i < gamma; i++) {
    const p = len + 1 + i;
    if (i !== want.accepted) check(after.seq[p] === before.seq[p], `seq[${p}] changed`);
  }
  if (want.accepted < gamma) {
    const vp = r.vp ?? 37, vocab = r.vocab ?? 30, row = before.logp.subarray(want.accepted * vp);
    let best = 0;
    for (let x = 1; x < vocab; x++) if (row[x] > row[best]) best = x;
    check(after.seq[len + 1 + want.accepted] === best, `resampled ${after.seq[len + 1 + want.accepted]}, want ${best}`);
  }
}

gpuTest("poeAccept with beta = 1 accepts exactly the jury's argmax", async (gpu) => {
  await expectRound(gpu, { drafts: ["best", "best", "best", "best"] }, { accepted: 4, emitted: 4, resampled: false });
  await expectRound(gpu, { drafts: ["far", "best", "best"] }, { accepted: 0, emitted: 1, resampled: true });
  await expectRound(gpu, { drafts: ["best", "best", "far", "best", "best"] }, {
    accepted: 2,
    emitted: 3,
    resampled: true,
  });
  await expectRound(gpu, { drafts: ["best", "near", "best"] }, { accepted: 1, emitted: 2, resampled: true });
  await expectRound(gpu, { drafts: ["best", "best", "best", "under"] }, { accepted: 3, emitted: 4, resampled: true });
});

gpuTest("poeAccept with beta < 1 accepts drafts within a factor beta of the jury's best", async (gpu) => {
  for (const beta of [0.5, 0.1, 1e-3]) {
    await expectRound(gpu, { beta, drafts: ["near", "best", "near", "far", "best"] }, {
      accepted: 3,
      emitted: 4,
      resampled: true,
    });
    await expectRound(gpu, { beta, drafts: ["edge", "near", "edge", "under", "best"] }, {
      accepted: 3,
      emitted: 4,
      resampled: true,
    });
    await expectRound(gpu, { beta, drafts: ["near", "edge", "near"] }, { accepted: 3, emitted: 3, resampled: false });
  }
});

gpuTest("poeAccept counts exact ties as accepted and resamples the lowest tied id", async (gpu) => {
  await expectRound(gpu, { drafts: ["tie", "tie", "best"] }, { accepted: 3, emitted: 3, resampled: false });
  await expectRound(gpu, { drafts: ["tie", "farTie", "best"] }, { accepted: 1, emitted: 2, resampled: true });
  await expectRound(gpu, { beta: 0.3, drafts: ["best", "farTie"] }, { accepted: 1, emitted: 2, resampled: true });
});

gpuTest("poeAccept rejects a draft outside the real vocabulary", async (gpu) => {
  await expectRound(gpu, { drafts: ["best", "pad", "best"] }, { accepted: 1, emitted: 2, resampled: true });
  await expectRound(gpu, { beta: 1e-6, drafts: ["pad"], vp: 1000, vocab: 997 }, {
    accepted: 0,
    emitted: 1,
    resampled: true,
  });
});

gpuTest("poeAccept clamps emission to the call's MAX_OUT and turns ACTIVE off there", async (gpu) => {
  const all4: Draft[] = ["best", "best", "best", "best"];
  // All accepted, 2 tokens left: 2 emitted, the call ends.
  await expectRound(gpu, { drafts: all4, out: 8, maxOut: 10 }, { accepted: 4, emitted: 2, resampled: false });
  // Exactly gamma left.
  await expectRound(gpu, { drafts: all4, out: 6, maxOut: 10 }, { accepted: 4, emitted: 4, resampled: false });
  // gamma + 1 left: ACTIVE stays on.
  await expectRound(gpu, { drafts: all4, out: 5, maxOut: 10 }, { accepted: 4, emitted: 4, resampled: false });
  // Rejected at 3 of 5 with 2 left: the resampled token is cut off and not counted.
  const rej3: Draft[] = ["best", "best", "best", "far", "best"];
  await expectRound(gpu, { drafts: rej3, out: 8, maxOut: 10 }, { accepted: 3, emitted: 2, resampled: false });
  // With exactly k + 1 left it is emitted and counted, and the call ends.
  await expectRound(gpu, { drafts: rej3, out: 6, maxOut: 10 }, { accepted: 3, emitted: 4, resampled: true });
  // Nothing left (ungated): the round is counted but emits nothing.
  await expectRound(gpu, { drafts: rej3, out: 10, maxOut: 10 }, { accepted: 3, emitted: 0, resampled: false });
});

gpuTest("poeAccept gated with ACTIVE = 0 on entry changes nothing", async (gpu) => {
  const { before, after } = await runRounds(gpu, { drafts: ["far", "best"], active: 0, gated: true });
  assertClose(after.ctl, before.ctl, { atol: 0 }, "gated ctl");
  assertClose(after.seq, before.seq, { atol: 0 }, "gated seq");
});

gpuTest("poeAccept rounds replayed past the end of a call become no-ops", async (gpu) => {
  // 4 rounds of gamma 3 with 5 tokens to go: round 1 accepts its 3 drafts; rounds 2 and 3 find no drafts (the
  // sequence holds ids >= vocab there) and emit one resampled token each, which ends the call; round 4 does nothing.
  const { before, after } = await runRounds(
    gpu,
    { drafts: ["best", "best", "best"], out: 5, maxOut: 10, gated: true },
    4,
  );
  if (after.ctl[CTL.ROUNDS] !== before.ctl[CTL.ROUNDS] + 3 || after.ctl[CTL.OUT] !== 10 || after.ctl[CTL.ACTIVE]) {
    throw new Error(`after 4 gated rounds: ctl ${after.ctl}`);
  }
});

gpuTest("poeAccept at the extremes of gamma and vocabulary, and at the OLMo-2 vocabulary", async (gpu) => {
  await expectRound(gpu, { drafts: ["best"], vp: 1, vocab: 1 }, { accepted: 1, emitted: 1, resampled: false });
  const many = Array.from({ length: MAX_GAMMA }, (): Draft => "best");
  await expectRound(gpu, { drafts: many }, { accepted: MAX_GAMMA, emitted: MAX_GAMMA, resampled: false });
  await expectRound(gpu, { drafts: [...many.slice(1), "far"] }, {
    accepted: MAX_GAMMA - 1,
    emitted: MAX_GAMMA,
    resampled: true,
  });
  await expectRound(gpu, { beta: 0.5, drafts: ["best", "near", "far"], vp: 100352, vocab: 100278 }, {
    accepted: 2,
    emitted: 3,
    resampled: true,
  });
});

gpuTest("poeAccept rejects bad arguments with a clear error", (gpu) => {
  const buf = gpu.buffer("dummy", 16);
  const base = { ctl: buf, logp: buf, seq: buf, gamma: 2, vp: 10, vocab: 10, beta: 1 };
  for (const b of [{ gamma: 0 }, { gamma: MAX_GAMMA + 1 }, { beta: 0 }, { beta: 1.5 }, { vocab: 11 }]) {
    let threw = false;
    try {
      poeAccept(gpu, { ...base, ...b });
    } catch {
      threw = true;
    }
    if (!threw) throw new Error(`poeAccept accepted ${JSON.stringify(b)}`);
  }
  buf.destroy();
  return Promise.resolve();
});

gpuTest("poeAccept checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    [">= LOG_BETA + best_lp[k]", "> LOG_BETA + best_lp[k]"], // ties (and the exact threshold) rejected
    [">= LOG_BETA + best_lp[k]", ">= best_lp[k]"], // beta ignored
    ["min(round_len, select(", "max(round_len, select("], // no clamp to MAX_OUT
    ["emitted == k + 1u", "round_len == k + 1u"], // resampled counted although cut off
    ["i < min(k, emitted)", "i < k"], // acceptance counted although cut off
    ["out + emitted < max_out", "out + emitted <= max_out"], // ACTIVE left on at the end of the call
    ["seq[len + k + 1u] = best_id[k]", "seq[len + k] = best_id[k]"], // resampled token at the wrong position
  ];
  for (const [from, to] of cases) {
    const kernel = mutate(poeAcceptKernel, from, to);
    await assertCaught(async () => {
      await runRounds(gpu, { drafts: ["tie", "edge", "near", "far"], beta: 0.5, kernel });
      await runRounds(gpu, { drafts: ["best", "best", "far", "best"], out: 8, maxOut: 10, kernel });
      await runRounds(gpu, { drafts: ["best", "best", "best"], out: 8, maxOut: 10, kernel });
    }, `${from} -> ${to}`);
  }
});
