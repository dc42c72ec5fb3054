/**
 * Property: every configuration that passes the bench's resolution and validation on the CPU adapter produces a run
 * whose results.json the suite's own schema accepts. 400 seeded random knob sets (each knob unset, in a config file,
 * or a flag) go through the path bench/main.ts takes (`readRunInput`, `planRun` on a software adapter); every one is
 * either refused with one sentence or yields a config whose results.json block validates and whose lengths fit the
 * kernels and the model. A handful of cheap accepted ones then run the whole benchmark as a child process, and each
 * results.json must be complete and valid.
 */

import { assert, assertEquals, assertInstanceOf } from "@std/assert";
import { join } from "@std/path";
import {
  CONFIGURATION_NAMES,
  decodeKvLength,
  decodePositions,
  poeGammas,
  poeKvLength,
  SIZE_LAYERS,
  validateBenchConfig,
} from "../../bench/config.ts";
import { planRun, readRunInput, type RunPlan } from "../../bench/plan.ts";
import { assertValidResults } from "../../bench/schema.ts";
import { UserError } from "../../common/errors.ts";
import { LOGITS_MAX_HEADS } from "../../kernels/logits/log_softmax.ts";
import { PRESETS } from "../../model/config.ts";
import { POE_MAX_GAMMA } from "../../poe/poe.ts";
import { Rng } from "../../kernels/testing/harness.ts";
import { bench, runFolders } from "./run_bench.ts";

/** A knob value drawn by `rng`; `cheap` keeps a run of it short on the CPU adapter. */
type Draw = (rng: Rng, cheap: boolean) => unknown;

const between = (rng: Rng, lo: number, hi: number) => lo + rng.int(hi - lo + 1);
/** Each of `items` with probability `p`, at most `max` of them, in order. */
const subset = <T>(rng: Rng, items: readonly T[], p: number, max: number) =>
  items.filter(() => rng.next() < p).slice(0, max);

/** How each knob is drawn: in range on its own, so that the relations between knobs decide. */
const DRAWS: Record<string, Draw> = {
  size: (r, cheap) => cheap ? "tiny" : ["tiny", "1b", "7b"][r.int(3)],
  prompt_length: (r, cheap) => between(r, 1, cheap ? 24 : 600),
  gen_length: (r, cheap) => between(r, 1, cheap ? 10 : 200),
  step_interval: (r, cheap) => between(r, 1, cheap ? 10 : 100),
  // The length sweeps cost minutes on the CPU adapter: drawn only where the bench is not run.
  prompt_lengths: (r, cheap) => cheap ? [] : subset(r, [16, 300, 600, 2000], 0.3, 4),
  decode_contexts: (r, cheap) => cheap ? [] : subset(r, [12, 511, 1000, 4095], 0.3, 4),
  kv_dtype: (r) => ["bf16", "f32"][r.int(2)],
  prefill_math: (r) => ["f32", "f16"][r.int(2)],
  synthetic_spread: (r) => [0, 0.5, 1, 2][r.int(4)],
  poe_spread_sweep: (r, cheap) => cheap ? [] : subset(r, [0, 0.5, 2], 0.3, 3),
  warmup_ms: (r, cheap) => cheap ? r.int(3) : r.int(300),
  rep_ms: (r, cheap) => cheap ? between(r, 1, 10) : between(r, 1, 2000),
  n_heads: (r, cheap) => between(r, 1, cheap ? 3 : LOGITS_MAX_HEADS),
  heads_depth: (r, cheap) => between(r, 1, cheap ? 3 : 5),
  poe_gamma: (r) => between(r, 1, POE_MAX_GAMMA),
  poe_gamma_sweep: (r, cheap) => subset(r, Array.from({ length: POE_MAX_GAMMA }, (_, i) => i + 1), 0.12, cheap ? 1 : 3),
  poe_beta: (r) => Math.round((1 - r.next()) * 100) / 100 || 1,
  poe_temperature: (r) => r.next() < 0.5 ? 0 : Math.round(r.next() * 200) / 100,
  poe_max_new_tokens: (r, cheap) => between(r, 1, cheap ? 10 : 600),
  poe_prompt: (r, cheap) =>
    ["Hi", "Why is the sky blue?", "Explain in a few sentences why the sky is blue. ".repeat(6)][r.int(cheap ? 2 : 3)],
  configs: (r) => {
    const c = subset(r, CONFIGURATION_NAMES, 0.6, 3);
    return c.length ? c : [CONFIGURATION_NAMES[r.int(3)]];
  },
  seed: (r) => r.int(2 ** 32),
};

/** A random run: config file knobs and flags (each knob unset, in the file, or a flag, a third each). */
function randomRun(rng: Rng, cheap: boolean): { file: Record<string, unknown>; argv: string[] } {
  const file: Record<string, unknown> = {}, argv: string[] = [];
  for (const [key, draw] of Object.entries(DRAWS)) {
    const where = rng.int(3), value = draw(rng, cheap);
    if (where === 1) file[key] = value;
    if (where === 2) argv.push(`--${key.replaceAll("_", "-")}=${Array.isArray(value) ? value.join(",") : value}`);
  }
  if (cheap) argv.push("--size=tiny"); // the CPU adapter's smoke-test size, whatever the file says
  return { file, argv };
}

/** What a run of `plan` needs to hold for its results.json to validate and its kernels and model to accept it. */
function assertRunnable(plan: RunPlan, what: string): void {
  const c = plan.config;
  validateBenchConfig(structuredClone(c), what); // the config block of results.json
  const model = PRESETS[c.size];
  assert(c.heads_depth < SIZE_LAYERS[c.size], `${what}: heads_depth ${c.heads_depth}`);
  assert(c.n_heads <= LOGITS_MAX_HEADS, `${what}: n_heads ${c.n_heads}`);
  if (c.configs.includes("baseline") || c.configs.includes("hydra_naive")) {
    assert(decodePositions(c).length > 0, `${what}: no decode position`);
    assert(decodeKvLength(c) <= model.maxContext, `${what}: decode KV ${decodeKvLength(c)}`);
    const longest = Math.max(0, ...c.prompt_lengths, ...c.decode_contexts);
    assert(longest < model.maxContext, `${what}: a sweep reaches position ${longest}`);
  }
  if (c.configs.includes("hydra_poe")) {
    const poe = plan.poe;
    if (poe === null || c.n_heads < 2) throw new Error(`${what}: PoE without a prompt or a verifier`);
    assert(poeGammas(c).every((g) => g <= POE_MAX_GAMMA), `${what}: gammas ${poeGammas(c)}`);
    assert(poeKvLength(c, poe.ids.length) <= model.maxContext, `${what}: PoE KV`);
    assert(poe.ids.every((t) => t < model.vocabSize), `${what}: prompt ids outside the vocabulary`);
  }
}

/** Resolves and validates `run` as bench/main.ts does on the CPU adapter: the plan, or the UserError's message. */
async function resolve(run: { file: Record<string, unknown>; argv: string[] }, dir: string) {
  const path = join(dir, "config.json");
  await Deno.writeTextFile(path, JSON.stringify(run.file));
  try {
    return await planRun(await readRunInput(run.argv, path), { software: true });
  } catch (e) {
    assertInstanceOf(e, UserError);
    const message = (e as UserError).message;
    assert(!message.includes("\n") && message.length < 400, message);
    return message;
  }
}

Deno.test("every random config that resolves and validates on the CPU adapter is runnable", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench_property_" });
  try {
    const rng = new Rng(20261130);
    let accepted = 0;
    const refusals = new Set<string>();
    for (let i = 0; i < 400; i++) {
      const run = randomRun(rng, false);
      const plan = await resolve(run, dir);
      if (typeof plan === "string") refusals.add(plan.replace(/[\d"]+/g, "#").slice(0, 40));
      else {
        assertRunnable(plan, `case ${i} (${JSON.stringify(run)})`);
        accepted++;
      }
    }
    // Both sides are exercised: many accepted, and refusals of several kinds.
    assert(accepted >= 40, `only ${accepted} of 400 accepted`);
    assert(refusals.size >= 5, `only ${refusals.size} kinds of refusal: ${[...refusals].join(" | ")}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a handful of random accepted configs run the whole bench on the CPU adapter to a valid results.json",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "bench_property_runs_" });
    try {
      const rng = new Rng(7);
      let ran = 0;
      for (let i = 0; ran < 3; i++) {
        assert(i < 200, "fewer than 3 cheap random configs were accepted");
        const run = randomRun(rng, true);
        const plan = await resolve(run, dir);
        if (typeof plan === "string") continue;
        const results = join(dir, `results${i}`);
        const config = join(dir, `config${i}.json`);
        await Deno.writeTextFile(config, JSON.stringify(run.file));
        const r = await bench(["--config", config, ...run.argv, `--results-dir=${results}`]);
        const what = `case ${i} (${JSON.stringify(run)})`;
        assertEquals(r.code, 0, `${what}: exit ${r.code}: ${r.stderr.slice(-1500)}`);
        const runs = runFolders(results);
        assertEquals(runs.length, 1, what);
        const doc = JSON.parse(await Deno.readTextFile(join(results, runs[0], "results.json")));
        assertValidResults(doc);
        assertEquals(doc.status, "complete", what);
        const validated = { ...plan.config, results_dir: results };
        assertEquals(doc.config, validated, `${what}: the run used another config than the one validated`);
        ran++;
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
