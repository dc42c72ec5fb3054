import { assert, assertEquals, assertRejects, assertStringIncludes, assertThrows } from "@std/assert";
import { join } from "@std/path";
import {
  type BenchConfig,
  decodeKvLength,
  decodePositions,
  DEFAULT_CONFIG,
  flagName,
  helpText,
  knobSources,
  loadConfig,
  poeGammas,
  poeKvLength,
  poeSpreads,
  readConfig,
  runSwitches,
  SOFTWARE_DEFAULTS,
  validateBenchConfig,
  wantsHelp,
  withSoftwareDefaults,
} from "../../bench/config.ts";
import { UserError } from "../../common/errors.ts";

/** Writes `knobs` as a config file in a fresh temp folder and returns its path. */
async function configFile(knobs: unknown): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "bench_config_" });
  const path = join(dir, "config.json");
  await Deno.writeTextFile(path, typeof knobs === "string" ? knobs : JSON.stringify(knobs));
  return path;
}

/** Asserts that loading rejects with a UserError whose message contains every one of `parts`. */
async function rejects(path: string, argv: string[], ...parts: string[]): Promise<void> {
  const err = await assertRejects(() => loadConfig(path, argv), UserError);
  for (const p of parts) assertStringIncludes(err.message, p);
}

Deno.test("the repository's config.json holds every knob at its documented default", async () => {
  const path = new URL("../../config.json", import.meta.url).pathname;
  const fromFile = JSON.parse(await Deno.readTextFile(path));
  assertEquals(Object.keys(fromFile).sort(), Object.keys(DEFAULT_CONFIG).sort());
  assertEquals(await loadConfig(path, []), DEFAULT_CONFIG as BenchConfig);
  assertEquals(DEFAULT_CONFIG.size, "7b"); // the headline configuration
});

Deno.test("defaults < config.json < flags; both flag spellings and comma lists are accepted", async () => {
  const path = await configFile({ size: "1b", rep_ms: 300, poe_gamma_sweep: [2] });
  const c = await loadConfig(path, [
    "--rep-ms",
    "50",
    "--poe-gamma-sweep=1,3",
    "--configs",
    "hydra_poe,baseline",
    "--poe-beta",
    "0.25",
    "--poe-prompt",
    "Hi there",
  ]);
  assertEquals(c.size, "1b"); // from the file
  assertEquals(c.rep_ms, 50); // the flag beats the file
  assertEquals(c.warmup_ms, DEFAULT_CONFIG.warmup_ms); // neither: the default
  assertEquals(c.poe_gamma_sweep, [1, 3]);
  assertEquals(c.configs, ["baseline", "hydra_poe"]); // always run in canonical order
  assertEquals(c.poe_beta, 0.25);
  assertEquals(c.poe_prompt, "Hi there");
  // the last occurrence of a flag wins; an empty list is allowed for the sweep
  const d = await loadConfig(path, ["--size", "tiny", "--size=7b", "--poe-gamma-sweep="]);
  assertEquals(d.size, "7b");
  assertEquals(d.poe_gamma_sweep, []);
  assertEquals(poeGammas(d), [d.poe_gamma]);
});

Deno.test("--config replaces the path, and a missing or malformed file gets a clear error", async () => {
  const path = await configFile({ seed: 7 });
  assertEquals((await loadConfig("/nonexistent/config.json", ["--config", path])).seed, 7);
  await rejects("/nonexistent/config.json", [], "/nonexistent/config.json does not exist", "--config");
  await rejects(await configFile('{ "size": '), [], "is not valid JSON");
  await rejects(await configFile("[1, 2]"), [], "must hold one JSON object");
});

Deno.test("unknown keys and flags are rejected with a suggestion", async () => {
  const path = await configFile({ rep_msec: 10 });
  await rejects(path, [], 'unknown key "rep_msec"', "did you mean rep_ms?", path);
  const ok = await configFile({});
  await rejects(ok, ["--poe-gama", "3"], "Unknown flag --poe-gama", "did you mean --poe-gamma?");
  await rejects(ok, ["--rep_ms", "3"], "Unknown flag --rep_ms", "did you mean --rep-ms?");
  await rejects(ok, ["7b"], 'Unexpected argument "7b"');
  await rejects(ok, ["--seed"], "--seed needs a value");
});

Deno.test("values of the wrong type or out of range name the knob, where it was set, and what to do", async () => {
  const cases: [Record<string, unknown>, string[], string[]][] = [
    [{ prompt_length: "128" }, [], ['"prompt_length" in', "a whole number from 1 to 4095", '"128"', "edit"]],
    [{ rep_ms: 0 }, [], ['"rep_ms" in', "a number > 0"]],
    [{ warmup_ms: -5 }, [], ['"warmup_ms"', "a number >= 0"]],
    [{ size: "13b" }, [], ['"size"', 'one of "1b", "7b", "tiny"']],
    [{ poe_beta: 0 }, [], ['"poe_beta"', "above 0 and at most 1"]],
    [{}, ["--poe-beta", "1.5"], ["--poe-beta must be a number above 0 and at most 1", "1.5", "change --poe-beta"]],
    [{}, ["--poe-gamma", "0"], ["--poe-gamma", "from 1 to 16"]],
    // the decode attention and matvec kernels take at most 16 rows: 17..24 (the control block's counters) crashed
    [{ poe_gamma: 17 }, [], ['"poe_gamma"', "from 1 to 16"]],
    [{}, ["--poe-gamma", "20"], ['--poe-gamma must be a whole number from 1 to 16, but it is "20"']],
    [{ poe_gamma_sweep: [1, 30] }, [], ['"poe_gamma_sweep"', "whole numbers from 1 to 16"]],
    [{}, ["--poe-gamma-sweep", "1,2,4,8,16,24"], ["--poe-gamma-sweep", "whole numbers from 1 to 16"]],
    // the mean and jury kernels combine at most 8 heads
    [{}, ["--n-heads", "9"], ["--n-heads must be a whole number from 1 to 8"]],
    [{}, ["--poe-gamma-sweep", "2,2"], ["--poe-gamma-sweep", "without repeats"]],
    [{}, ["--poe-gamma-sweep", "1,x"], ["--poe-gamma-sweep", '"1,x"']],
    [{ poe_temperature: -1 }, [], ['"poe_temperature"', ">= 0"]],
    [{}, ["--seed=-1"], ["--seed must be a whole number from 0 to 4294967295", '"-1"', "change --seed"]],
    // parse-args reads "--seed -1" as a flag without a value (then a flag "-1"): a negative value needs the = form
    [{}, ["--seed", "-1"], ["The flag --seed needs a value (e.g. --seed=VALUE)"]],
    [{}, ["--n-heads", "2.5"], ["--n-heads", "a whole number"]],
    [{ configs: [] }, [], ['"configs"', "a non-empty list"]],
    [{ configs: ["baseline", "fast"] }, [], ['"configs"', "baseline, hydra_naive, hydra_poe"]],
    [{ poe_prompt: "  " }, [], ['"poe_prompt"', "a non-empty string"]],
    [{ weights: "yes" }, [], ['"weights"', "null (synthetic weights)"]],
    [{ weights: { base: "/tmp", adapters: [] } }, [], ['"weights"', 'unknown key "adapters"']],
    [{}, ["--weights", "{not json"], ["--weights", "as JSON"]],
    [{ synthetic_spread: -0.5 }, [], ['"synthetic_spread"', "a number >= 0"]],
    [{}, ["--poe-spread-sweep=0,-1"], ["--poe-spread-sweep", "numbers >= 0"]],
    [{ poe_spread_sweep: [0, 0] }, [], ['"poe_spread_sweep"', "without repeats"]],
  ];
  for (const [knobs, argv, parts] of cases) await rejects(await configFile(knobs), argv, ...parts);
});

Deno.test("knobs that contradict each other are caught", async () => {
  const ok = await configFile({});
  await rejects(ok, ["--heads-depth", "32"], "--heads-depth is 32", 'size "7b" has 32 layers', "at most 31");
  await rejects(ok, ["--size", "tiny", "--heads-depth", "4"], "tiny", "at most 3");
  await rejects(ok, ["--n-heads", "1"], "--n-heads is 1", "hydra_poe needs a draft head");
  assertEquals((await loadConfig(ok, ["--n-heads", "1", "--configs", "baseline,hydra_naive"])).n_heads, 1);
  await rejects(ok, ["--step-interval", "200"], "--step-interval is 200", "at most 128");
  await rejects(ok, ["--prompt-length", "4000", "--gen-length", "200"], "exceeds the 4096-token context");
  // tiny's context is 512 (the KV cache refused it after baseline had run)
  await rejects(ok, ["--size", "tiny", "--prompt-length", "500"], 'the 512-token context of size "tiny"', "512");
  await rejects(ok, ["--size", "tiny", "--poe-max-new-tokens", "505"], "poe_max_new_tokens", "below 504");
  await rejects(ok, ["--poe-max-new-tokens", "4090"], "poe_max_new_tokens 4090", "largest gamma 8");
});

Deno.test("weights: paths resolve against the config file's folder, must exist, one adapter list per head", async () => {
  const path = await configFile({});
  const dir = join(path, "..");
  await Deno.mkdir(join(dir, "base"));
  for (let h = 0; h < 2; h++) await Deno.mkdir(join(dir, `a${h}`));
  await Deno.writeTextFile(path, JSON.stringify({ n_heads: 2, weights: { base: "base", heads: [["a0"], ["a1"]] } }));
  const c = await loadConfig(path, []);
  assertEquals(c.weights, { base: join(dir, "base"), heads: [[join(dir, "a0")], [join(dir, "a1")]] });
  assertEquals((await loadConfig(path, ["--weights", "synthetic"])).weights, null);
  // the spread knobs scale the synthetic ensemble: with a checkpoint they are a mistake, not silently ignored
  await rejects(path, ["--synthetic-spread", "0"], "--synthetic-spread scales the synthetic ensemble", "set weights");
  await rejects(path, ["--poe-spread-sweep", "0,2"], "--poe-spread-sweep", "change --poe-spread-sweep (to [])");
  await Deno.writeTextFile(path, JSON.stringify({ n_heads: 2, weights: { base: "base", heads: [["a0"], ["nope"]] } }));
  await rejects(path, [], '"weights" in', join(dir, "nope"), "does not exist");
  await Deno.writeTextFile(path, JSON.stringify({ weights: { base: "base", heads: [["a0"], []] } }));
  await rejects(path, [], "adapters for 2 heads but n_heads is 5");
});

Deno.test("--help lists every knob's flag with its default", () => {
  const text = helpText();
  for (const [key, value] of Object.entries(DEFAULT_CONFIG)) {
    // a knob's entry: its flag line and the wrapped lines below it, up to the next flag
    const entry = text.split(/\n(?= {2}-)/).find((l) => l.trimStart().startsWith(flagName(key) + " ")) ?? "";
    assert(entry !== "", `--help has no entry for ${flagName(key)}`);
    const line = entry.replace(/\s+/g, " ");
    const shown = Array.isArray(value) ? value.join(",") : value === null ? "synthetic" : String(value);
    const tail = line.slice(line.indexOf("[default: "));
    assert(tail.startsWith("[default: ") && tail.includes(shown), `${line} does not show the default ${shown}`);
  }
  assertStringIncludes(text, "--config <path>");
  assert(wantsHelp(["--size", "1b", "--help"]));
  assert(wantsHelp(["-h"]));
  assert(!wantsHelp(["--size", "1b"]));
});

Deno.test("validateBenchConfig accepts a complete config and rejects a missing or bad knob", () => {
  assertEquals(validateBenchConfig(structuredClone(DEFAULT_CONFIG)), DEFAULT_CONFIG as BenchConfig);
  const { seed: _, ...noSeed } = DEFAULT_CONFIG;
  assertThrows(() => validateBenchConfig(noSeed, "results.json config"), UserError, 'lacks the knob "seed"');
  assertThrows(() => validateBenchConfig({ ...DEFAULT_CONFIG, poe_beta: 2 }), UserError, "poe_beta");
  // a run recorded before the spread knobs ran at their defaults
  const { synthetic_spread: _s, poe_spread_sweep: _p, ...before } = DEFAULT_CONFIG;
  assertEquals(validateBenchConfig(structuredClone(before)), DEFAULT_CONFIG as BenchConfig);
});

Deno.test("derived lengths: decode positions, KV rows, PoE gammas", () => {
  const c = { ...DEFAULT_CONFIG, gen_length: 20, step_interval: 8, poe_gamma: 6, poe_gamma_sweep: [2, 8, 6] };
  assertEquals(decodePositions(c), [0, 8, 16]);
  assertEquals(decodeKvLength(c), DEFAULT_CONFIG.prompt_length + 20);
  assertEquals(poeGammas(c), [2, 6, 8]);
  assertEquals(poeSpreads({ synthetic_spread: 0.5, poe_spread_sweep: [1, 0, 0.5] }), [0.5, 0, 1]);
  assertEquals(poeSpreads(DEFAULT_CONFIG), [1]);
  assertEquals(poeKvLength(c, 40), 40 + DEFAULT_CONFIG.poe_max_new_tokens + 8);
});

Deno.test("the sweep, kv_dtype and peers knobs: off by default, read from flags, checked against the size's context", async () => {
  assertEquals(
    [DEFAULT_CONFIG.prompt_lengths, DEFAULT_CONFIG.decode_contexts, DEFAULT_CONFIG.kv_dtype, DEFAULT_CONFIG.peers],
    [[], [], "bf16", []],
  );
  const ok = await configFile({});
  const c = await loadConfig(ok, [
    "--prompt-lengths",
    "512,2048",
    "--decode-contexts=128,1024,4095",
    "--kv-dtype",
    "f32",
    "--peers",
    "torch,hf",
  ]);
  assertEquals([c.prompt_lengths, c.decode_contexts, c.kv_dtype, c.peers], [
    [512, 2048],
    [128, 1024, 4095],
    "f32",
    ["torch", "hf"],
  ]);
  await rejects(ok, ["--kv-dtype", "f16"], "--kv-dtype", '"bf16", "f32"');
  await rejects(ok, ["--peers", "torch,jax"], "--peers", "torch, hf");
  await rejects(ok, ["--decode-contexts", "4096"], "--decode-contexts", "from 1 to 4095");
  await rejects(ok, ["--prompt-lengths", "64,64"], "--prompt-lengths", "without repeats");
  // the tiny model's context is 512 tokens: a step after 512 cached tokens would write position 512
  await rejects(ok, ["--size", "tiny", "--decode-contexts", "8,512"], "--decode-contexts holds 512", "at most 511");
  await rejects(ok, ["--size", "tiny", "--prompt-lengths", "600"], "--prompt-lengths holds 600", "512-token context");
  assertEquals((await loadConfig(ok, ["--size", "tiny", "--decode-contexts", "511"])).decode_contexts, [511]);
});

Deno.test("a results.json config written before the sweep, kv_dtype and peers knobs gets the values those runs used", () => {
  const { prompt_lengths: _p, decode_contexts: _d, kv_dtype: _k, peers: _q, ...old } = structuredClone(DEFAULT_CONFIG);
  const c = validateBenchConfig(old, "results.json config");
  // no sweeps, no peers, and the f32 K/V cache of the runs before bf16 became the default
  assertEquals([c.prompt_lengths, c.decode_contexts, c.kv_dtype, c.peers], [[], [], "f32", []]);
  assertThrows(() => validateBenchConfig({ ...old, kv_dtype: "f16" }, "results.json config"), UserError, "kv_dtype");
});

Deno.test("the prefill_math knob: f32 by default, f16 from the flag or config.json, f32 for runs before it", async () => {
  assertEquals(DEFAULT_CONFIG.prefill_math, "f32");
  const ok = await configFile({});
  assertEquals((await loadConfig(ok, ["--prefill-math", "f16"])).prefill_math, "f16");
  assertEquals((await loadConfig(await configFile({ prefill_math: "f16" }), [])).prefill_math, "f16");
  await rejects(ok, ["--prefill-math", "bf16"], "--prefill-math", '"f32", "f16"');
  const { prefill_math: _m, ...old } = structuredClone(DEFAULT_CONFIG);
  assertEquals(validateBenchConfig(old, "results.json config").prefill_math, "f32");
  assertThrows(
    () => validateBenchConfig({ ...old, prefill_math: "f8" }, "results.json config"),
    UserError,
    "prefill_math",
  );
});

Deno.test("a software adapter's smoke-test values apply only to the knobs the user left unset", async () => {
  const repo = new URL("../../config.json", import.meta.url).pathname;
  // The repository's config.json lists every default: on a CPU adapter it still means the smoke test.
  const smoke = await loadConfig(repo, [], { software: true });
  assertEquals({ ...smoke, ...SOFTWARE_DEFAULTS }, smoke);
  assertEquals(await loadConfig(repo, [], { software: false }), DEFAULT_CONFIG as BenchConfig);
  // A value the user set in the config file or by flag is kept (it was overridden before).
  const path = await configFile({ size: "1b", gen_length: 64, step_interval: 16 });
  const c = await loadConfig(path, ["--rep-ms", "300", "--poe-gamma-sweep", "2,8"], { software: true });
  assertEquals([c.size, c.gen_length, c.rep_ms, c.poe_gamma_sweep], ["1b", 64, 300, [2, 8]]);
  assertEquals([c.warmup_ms, c.poe_max_new_tokens], [
    SOFTWARE_DEFAULTS.warmup_ms,
    SOFTWARE_DEFAULTS.poe_max_new_tokens,
  ]);
  // Each knob's source, as results.json records it.
  const r = withSoftwareDefaults(await readConfig(path, ["--rep-ms", "300", "--seed=5"]));
  const sources = knobSources(r);
  assertEquals(sources.size, "config file");
  assertEquals(sources.rep_ms, "flag");
  assertEquals(sources.seed, "flag");
  assertEquals(sources.warmup_ms, "software-adapter default");
  assertEquals(sources.poe_beta, "default");
  assertEquals(knobSources(await readConfig(repo, [])).poe_beta, "config file");
  assertEquals(r.file, path);
});

Deno.test("the relations are checked on the values a software-adapter run uses, naming the switch", async () => {
  const repo = new URL("../../config.json", import.meta.url).pathname;
  const soft = (argv: string[]) => assertRejects(() => loadConfig(repo, argv, { software: true }), UserError);
  // --step-interval 64 passed (gen_length 128), then the switch to 32 left one position and a results.json the
  // schema rejects; --heads-depth 10 passed for 7b, then failed after baseline with a wrong limit "0..4".
  let e = await soft(["--step-interval", "64"]);
  for (
    const part of ["--step-interval is 64", "gen_length 32 (the software adapter's smoke-test default)", "at most 32"]
  ) {
    assertStringIncludes(e.message, part);
  }
  assertStringIncludes(e.message, "or set --gen-length");
  e = await soft(["--heads-depth", "10"]);
  assertStringIncludes(e.message, 'size "tiny" (the software adapter\'s smoke-test default) has 4 layers');
  assertStringIncludes(e.message, "to at most 3, or set --size");
  assert(!e.message.includes("\n"));
  e = await soft(["--prompt-length", "500"]);
  assertStringIncludes(e.message, 'the 512-token context of size "tiny" (the software adapter\'s smoke-test default)');
  // The same flags on a GPU: valid, and a user's own --size keeps its limits.
  assertEquals((await loadConfig(repo, ["--step-interval", "64"])).step_interval, 64);
  assertEquals((await loadConfig(repo, ["--heads-depth", "10", "--size", "1b"], { software: true })).heads_depth, 10);
});

Deno.test("--no-wait and --allow-concurrent are switches, not knobs, and --help lists them", async () => {
  assertEquals(runSwitches([]), { noWait: false, allowConcurrent: false });
  assertEquals(runSwitches(["--size", "tiny", "--no-wait", "--allow-concurrent"]), {
    noWait: true,
    allowConcurrent: true,
  });
  const ok = await configFile({});
  assertEquals((await loadConfig(ok, ["--no-wait", "--seed", "3"])).seed, 3);
  await rejects(ok, ["--no-wiat"], "Unknown flag --no-wiat", "did you mean --no-wait?");
  const help = helpText();
  for (const part of ["--no-wait", "--allow-concurrent", "software adapter", "size tiny", "1..16"]) {
    assertStringIncludes(help, part);
  }
});
