import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { planRun, readRunInput } from "../../bench/plan.ts";
import { UserError } from "../../common/errors.ts";
import { PRESETS } from "../../model/config.ts";

const FIXTURE = new URL("../fixtures/olmo2_tiny", import.meta.url).pathname;

/** A temp folder with a copy of the HF fixture checkpoint (4 layers, vocabulary 512, context 256) and a config. */
async function checkpointRun(files: Record<string, string>, knobs: Record<string, unknown> = {}) {
  const dir = await Deno.makeTempDir({ prefix: "bench_plan_" });
  const base = join(dir, "ckpt");
  await Deno.mkdir(base);
  for (const f of ["config.json", "model.safetensors"]) await Deno.copyFile(join(FIXTURE, f), join(base, f));
  for (const [name, text] of Object.entries(files)) await Deno.writeTextFile(join(base, name), text);
  const config = join(dir, "config.json");
  await Deno.writeTextFile(config, JSON.stringify({ n_heads: 3, weights: { base, heads: [[], [], []] }, ...knobs }));
  return { dir, base, config };
}

/** A tokenizer.json for the fixture's 512 ids: bytes as in GPT-2 (256 ids) and no merges. */
function byteTokenizer(): string {
  const bytes: number[] = [];
  for (let b = 33; b <= 126; b++) bytes.push(b);
  for (let b = 161; b <= 172; b++) bytes.push(b);
  for (let b = 174; b <= 255; b++) bytes.push(b);
  const chars = new Map<number, string>();
  let n = 0;
  for (let b = 0; b < 256; b++) chars.set(b, String.fromCodePoint(bytes.includes(b) ? b : 256 + n++));
  const vocab = Object.fromEntries([...chars.values()].map((c, i) => [c, i]));
  return JSON.stringify({
    model: { type: "BPE", vocab, merges: [] },
    added_tokens: [{ id: 300, content: "<|endoftext|>", special: true }],
    normalizer: null,
    post_processor: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, use_regex: true },
    decoder: { type: "ByteLevel" },
  });
}

Deno.test("a weights checkpoint's broken tokenizer or chat template fails before the GPU is touched", async () => {
  const cases: [Record<string, string>, string][] = [
    [{ "tokenizer.json": '{"model": ' }, "tokenizer.json is not valid JSON"],
    [{ "tokenizer.json": '{"version": "1.0"}' }, "is not a Hugging Face tokenizer.json"],
    [{ "tokenizer_config.json": '{"chat_template": "{% for %}"}' }, "tokenizer_config.json is not valid Jinja"],
    [
      { "tokenizer_config.json": JSON.stringify({ chat_template: "{% for i in range(100000000) %}x{% endfor %}" }) },
      "asked range() for 100000000 items",
    ],
  ];
  for (const [files, message] of cases) {
    const { dir, config } = await checkpointRun(files);
    try {
      const e = await assertRejects(() => readRunInput([], config), UserError);
      assertStringIncludes(e.message, message);
      assert(!e.message.includes("\n"), e.message);
      // Without hydra_poe the checkpoint's prompt files are not needed.
      assertEquals((await readRunInput(["--configs", "baseline"], config)).prompt, null);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("planRun checks what only the checkpoint or the prompt knows: layers, vocabulary, context", async () => {
  const { dir, config } = await checkpointRun({ "tokenizer.json": byteTokenizer() });
  try {
    const plan = async (argv: string[]) => planRun(await readRunInput(argv, config), { software: true });
    const ok = await plan([]);
    assert(ok.poe !== null && ok.poe.ids.length > 0 && !ok.poe.folded && ok.poe.ids.every((t) => t < 512));
    let e = await assertRejects(() => plan(["--heads-depth", "4", "--size", "7b"]), UserError);
    assertStringIncludes(e.message, "has 4 layers");
    assertStringIncludes(e.message, "at most 3");
    // The fixture's context is 256 positions: prompt + poe_max_new_tokens + the largest gamma must fit.
    e = await assertRejects(() => plan(["--poe-max-new-tokens", "240"]), UserError);
    assertStringIncludes(e.message, "above the 256-token context of the checkpoint");
    // Without its own tokenizer.json the built-in dolma2 ids do not fit the 512-id vocabulary.
    await Deno.remove(join(dir, "ckpt", "tokenizer.json"));
    e = await assertRejects(() => plan([]), UserError);
    assertStringIncludes(e.message, "outside the 512-token vocabulary");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("synthetic tiny weights get the prompt folded into their vocabulary; the switch to tiny is listed", async () => {
  const repo = new URL("../../config.json", import.meta.url).pathname;
  const plan = await planRun(await readRunInput([], repo), { software: true });
  assertEquals(plan.config.size, "tiny");
  assert(plan.softwareKnobs.includes("size"));
  assert(plan.poe !== null && plan.poe.folded && plan.poe.ids.every((t) => t < PRESETS.tiny.vocabSize));
  const gpu = await planRun(await readRunInput([], repo), { software: false });
  assertEquals([gpu.config.size, gpu.softwareKnobs, gpu.poe?.folded], ["7b", [], false]);
});
