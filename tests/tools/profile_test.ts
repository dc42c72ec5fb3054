/**
 * `deno task profile --config poe_verify` on the tiny model: it replays exactly the verify (and accept) part of a PoE
 * round, from a control block whose gated kernels run, and counts the bytes of its M = gamma rows; `--config prefill`
 * replays exactly the TTFT pass, its GEMMs grouped by product.
 */

import { assertEquals } from "@std/assert";
import { gpuTest } from "../../kernels/testing/harness.ts";
import { buildHydraModel } from "../../bench/configurations.ts";
import { randomIds } from "../../bench/contexts.ts";
import { roundStates } from "../../bench/poe_costs.ts";
import { classify, type FamilyProfile, type StepProfile } from "../../bench/profile.ts";
import { PRESETS } from "../../model/config.ts";
import { PoE } from "../../poe/poe.ts";
import { Decoder } from "../../model/generate.ts";
import { main } from "../../tools/profile.ts";
import { gemmTensorKernelFor } from "../../kernels/matmul/gemm_tensor.ts";
import { TENSOR_TILES_192 } from "../../kernels/matmul/linear.ts";

/** Runs the tool in-process; returns its exit code and what it printed to stdout and stderr. */
async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: string[] = [], err: string[] = [];
  const log = console.log, error = console.error;
  console.log = (...x: unknown[]) => out.push(x.join(" "));
  console.error = (...x: unknown[]) => err.push(x.join(" "));
  try {
    return { code: await main(args), stdout: out.join("\n"), stderr: err.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

/**
 * Runs the tool with `args` and `--json`, asserting exit 0 and that stdout has `header`; returns its JSON report (the
 * temporary file removed).
 */
async function report(
  args: string[],
  header: string,
): Promise<Record<string, unknown> & { profiles: Record<string, StepProfile> }> {
  const json = await Deno.makeTempFile({ suffix: ".json" });
  try {
    const r = await run([...args, "--json", json]);
    if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}`);
    if (!r.stdout.includes(header)) throw new Error(`no "${header}" header in:\n${r.stdout}`);
    return JSON.parse(await Deno.readTextFile(json));
  } finally {
    await Deno.remove(json);
  }
}

/** Asserts that profile `p` replayed `n` dispatches (`what` says whose) and that its families account for each. */
function assertDispatches(p: StepProfile, n: number, what: string): void {
  if (p.dispatches !== n) throw new Error(`${p.dispatches} dispatches, ${what} ${n}`);
  if (p.families.reduce((a, f) => a + f.dispatches, 0) !== p.dispatches) throw new Error("families lose dispatches");
}

const GAMMA = 3, HEADS = 3, DEPTH = 2, CONTEXT = 16;

gpuTest(
  "profile --config poe_verify: the verify and accept parts' dispatches, its families and their bytes",
  async (gpu) => {
    const shape = ["--n-heads", `${HEADS}`, "--heads-depth", `${DEPTH}`, "--gamma", `${GAMMA}`];
    const r = await report(
      [
        ...["--size", "tiny", "--config", "poe_verify", ...shape, "--accept"],
        ...["--contexts", `${CONTEXT}`, "--samples", "2"],
      ],
      `poe_verify, gamma ${GAMMA}, ${HEADS - 1} verifier heads + accept`,
    );
    const p = r.profiles[`${CONTEXT}`];
    if (r.gamma !== GAMMA || r.verifier_heads !== HEADS - 1) throw new Error(JSON.stringify(r));

    // the same Hydra's round, recorded by the PoE decoder itself
    const c = PRESETS.tiny;
    const model = await buildHydraModel(gpu, c, {
      nHeads: HEADS,
      headsDepth: DEPTH,
      maxPos: CONTEXT + 2 * GAMMA + 1,
      maxRows: CONTEXT,
      maxLogitRows: GAMMA,
      weights: { kind: "random", seed: 1 },
    });
    const poe = new PoE(model, { gamma: GAMMA, beta: 1, temperature: 0, maxNewTokens: GAMMA + 1, pipeline: false });
    try {
      const { verify, accept } = poe.roundParts;
      const family = (name: string): FamilyProfile => {
        const f = p.families.find((f) => f.family === name);
        if (!f) throw new Error(`no family ${name}: ${p.families.map((f) => f.family)}`);
        return f;
      };
      assertDispatches(p, verify.length + accept.length, "the round's verify + accept parts have");
      if (family("accept").dispatches !== accept.length) throw new Error(`accept: ${JSON.stringify(family("accept"))}`);
      for (const f of p.families) {
        if (!(f.alone_us > 0 && Number.isFinite(f.us))) throw new Error(`untimed: ${JSON.stringify(f)}`);
      }
      if (!(p.step_us > 0 && Number.isFinite(p.sum_us))) throw new Error(`step ${p.step_us}, sum ${p.sum_us}`);

      // bytes at M = gamma rows: each weight read once for all rows, activations per row, the cache at context + gamma
      const d = c.dModel, vp = c.paddedVocab, verifiers = HEADS - 1, blocks = verifiers * DEPTH;
      const expected: Record<string, [number, number]> = {
        lm_head: [verifiers, verifiers * (vp * d * 2 + GAMMA * (d + vp) * 4)],
        qkv: [blocks, blocks * (3 * d * d * 2 + GAMMA * (d + 3 * d) * 4)],
        attention: [blocks, blocks * (2 * (CONTEXT + GAMMA) * d * model.kvBytes + 2 * GAMMA * d * 4)],
        // phase 0 sums the verifiers' logits into the output, phase 1 normalises it in place
        "jury log_softmax": [2, (verifiers + 1 + 2) * GAMMA * vp * 4],
        control_step: [1, 0],
      };
      for (const [name, [dispatches, bytes]] of Object.entries(expected)) {
        const f = family(name);
        if (f.dispatches !== dispatches || f.bytes !== bytes) {
          throw new Error(`${name}: ${f.dispatches} dispatches, ${f.bytes} bytes; expected ${dispatches}, ${bytes}`);
        }
      }

      // the state the tool replays from runs the gated rows: the jury's last row comes out as log-probs
      const states = roundStates(poe, randomIds(7, CONTEXT, c.vocabSize));
      try {
        const encoder = gpu.device.createCommandEncoder();
        states.restore(states.active)(encoder);
        gpu.device.queue.submit([encoder.finish()]);
        gpu.run(verify);
        const row = await gpu.readF32(poe.decoder.combined, vp, (GAMMA - 1) * vp);
        const mass = row.slice(0, c.vocabSize).reduce((a, v) => a + Math.exp(v), 0);
        if (!(Math.abs(mass - 1) < 1e-3)) {
          throw new Error(
            `the verify pass did not run: row ${GAMMA - 1} sums to ${mass}`,
          );
        }
      } finally {
        states.destroy();
      }
    } finally {
      poe.destroy();
      model.destroy();
    }
  },
);

gpuTest(
  "profile --config prefill: the TTFT pass's dispatches, its GEMMs grouped by product with their weights",
  async (gpu) => {
    const PROMPT = 37; // above the matvec's rows: the prefill GEMMs run
    const r = await report(
      ["--size", "tiny", "--config", "prefill", "--contexts", `${PROMPT}`, "--samples", "2"],
      `prompt ${PROMPT}: prefill (TTFT pass)`,
    );
    const p = r.profiles[`${PROMPT}`];

    // the same model's prefill, recorded by the decoder itself
    const c = PRESETS.tiny;
    const model = await buildHydraModel(gpu, c, {
      nHeads: 1,
      headsDepth: 0,
      maxPos: PROMPT + 2,
      maxRows: PROMPT,
      maxLogitRows: 1,
      weights: { kind: "random", seed: 1 },
    });
    try {
      const decoder = new Decoder(model);
      decoder.setPrompt(randomIds(7, PROMPT, c.vocabSize), 1);
      const dispatches = decoder.prefill("single");
      assertDispatches(p, dispatches.length, "the prefill has");
      const stray = p.families.filter((f) => /^gemm_/.test(f.family));
      if (stray.length > 0) throw new Error(`GEMMs not grouped by product: ${stray.map((f) => f.family)}`);
      // each product's GEMM once a layer, its weight read once for all rows (and the rows and outputs on top); the
      // last layer's o, gate_up and down as matvecs over the last row (the TTFT pass reads only its logits: the
      // trunk's last block runs for that row alone, HydraShape.prefillTail)
      const d = c.dModel, ff = c.ffnHidden;
      const weights: [string, number, number][] = [
        ["qkv gemm", 3 * d * d * 2, c.nLayers],
        ["gate_up+swiglu gemm", 2 * ff * d * 2, c.nLayers - 1],
        ["down gemm", d * ff * 2, c.nLayers - 1],
        ["o gemm", d * d * 2, c.nLayers - 1],
        ["gate_up+swiglu", 2 * ff * d * 2, 1],
        ["down", d * ff * 2, 1],
        ["o", d * d * 2, 1],
      ];
      for (const [name, bytes, n] of weights) {
        const f = p.families.find((f) => f.family === name);
        if (!f || f.dispatches !== n || !(f.bytes >= n * bytes)) {
          throw new Error(`${name}: ${JSON.stringify(f)}; expected ${n} dispatches, > ${n * bytes} bytes`);
        }
      }
    } finally {
      model.destroy();
    }
  },
);

Deno.test("profile: a PoE knob without --config poe_verify, or a round that cannot be, is one sentence, exit 2", async () => {
  const cases: [string[], string][] = [
    [["--config", "baseline", "--gamma", "2"], "--gamma and --accept profile a PoE round"],
    [["--config", "hydra_naive", "--accept"], "--gamma and --accept profile a PoE round"],
    [["--config", "poe_verify", "--gamma", "17"], "--gamma is at most 16"],
    [["--config", "poe_verify", "--n-heads", "1"], "--config poe_verify needs a draft head and a verifier"],
    [["--config", "poe_verify", "--contexts", "510"], "--contexts: with --gamma 4 each must be at most 503"],
    [["--config", "poe_verify_x"], "--config is one of baseline, hydra_naive, poe_verify, prefill"],
    [["--config", "poe_verify", "--fuse-rows", "17"], "--fuse-rows takes one whole number from 1 to 16"],
  ];
  for (const [args, message] of cases) {
    const r = await run(["--size", "tiny", ...args]);
    if (r.code !== 2 || !r.stderr.startsWith(`error: ${message}`) || r.stderr.includes("\n")) {
      throw new Error(`${args.join(" ")}: exit ${r.code}, ${r.stderr}`);
    }
  }
});

gpuTest("profile --whole: the step timed whole and nothing else, no family rows", async () => {
  const r = await report(
    ["--size", "tiny", "--config", "prefill", "--contexts", "37", "--samples", "2", "--whole"],
    "prompt 37: prefill (TTFT pass)",
  );
  const p = r.profiles["37"];
  if (!(p.step_us > 0) || p.families.length !== 0) {
    throw new Error(`--whole: step ${p.step_us} us with ${p.families.length} family rows (want > 0 us, none)`);
  }
  const printed = await run(["--size", "tiny", "--config", "prefill", "--contexts", "37", "--samples", "2", "--whole"]);
  if (printed.stdout.includes("| family |")) throw new Error(`--whole printed a family table:\n${printed.stdout}`);
});

Deno.test("profile: a product split into its full waves and its last (linear's tailSplit) counts each weight row once", () => {
  // the 7B's down at 2,048 rows on 192 x 128 tiles (11 row tiles): 24 column tiles unsplit (264 workgroups), the last
  // 8 split 3 ways from column 3,072 (264 workgroups)
  const shape = { dModel: 4096, ffnHidden: 11008, paddedVocab: 100352, keys: 2048, kvBytes: 2 };
  const gemm = (label: string, workgroups: number, constants: Record<string, number>) =>
    ({ label, workgroups: [workgroups, 1, 1], constants: { K: 11008, N: 4096, M: 2048, ...constants } }) as never;
  // linear's tile's kernel name, as the generator makes it (classify reads the tile from it)
  const tile = gemmTensorKernelFor({ ...TENSOR_TILES_192, subgroupSize: 32 }).name;
  const full = classify(gemm(tile, 264, {}), shape),
    last = classify(gemm(`${tile}_split3`, 264, { N_BEGIN: 3072 }), shape);
  assertEquals([full.family, last.family], ["down gemm", "down gemm"]);
  const weight = (b: number, columns: number, splits: number) => b - 2048 * 11008 * 4 - splits * 2048 * columns * 4;
  assertEquals([weight(full.bytes, 3072, 1), weight(last.bytes, 1024, 3)], [3072 * 11008 * 2, 1024 * 11008 * 2]);
  // unsplit over all 352 tiles: the whole weight
  assertEquals(weight(classify(gemm(tile, 352, {}), shape).bytes, 4096, 1), 4096 * 11008 * 2);
});
