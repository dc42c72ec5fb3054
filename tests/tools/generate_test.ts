import { fromFileUrl } from "@std/path";
import { main } from "../../tools/generate.ts";
import { UserError } from "../../common/errors.ts";
import { gpuTest } from "../../kernels/testing/harness.ts";

const DIR = fromFileUrl(new URL("../fixtures/olmo2_tiny", import.meta.url));
const REF = JSON.parse(await Deno.readTextFile(`${DIR}/reference.json`));

/** Runs the tool in-process and returns what it printed to stdout. */
async function run(args: string[]): Promise<string> {
  const lines: string[] = [];
  const log = console.log, err = console.error;
  console.log = (...x: unknown[]) => lines.push(x.join(" "));
  console.error = () => {};
  try {
    const code = await main(args);
    if (code !== 0) throw new Error(`exit code ${code}`);
  } finally {
    console.log = log;
    console.error = err;
  }
  return lines.join("\n");
}

gpuTest("deno task generate --json reproduces HF's greedy ids and prompt logits on the fixture", async () => {
  const c = REF.cases[0];
  const out = JSON.parse(
    await run([
      ...["--weights", DIR, "--ids", c.prompt.join(","), "--max-new-tokens", "24", "--json", "--logits"],
      ...["--kv-dtype", "f32"], // HF keeps f32 K/V: within 1e-4 (the bf16 default: tests/model/hf_fixture_test.ts)
    ]),
  );
  if (JSON.stringify(out.ids) !== JSON.stringify(c.base.greedy)) throw new Error(`ids ${out.ids} vs ${c.base.greedy}`);
  const worst = Math.max(...out.prompt_last_logits.map((v: number, i: number) => Math.abs(v - c.base.last_logits[i])));
  if (!(worst < 1e-4)) throw new Error(`prompt logits differ from HF by ${worst}`);
});

gpuTest("deno task generate --mode poe with adapters as heads reports PoE stats and the jury's tokens", async () => {
  const c = REF.cases[1];
  const heads = [0, 1, 2].flatMap((h) => ["--head-adapter", `${h}=${DIR}/adapter_${h}`]);
  const out = JSON.parse(
    await run([
      "--weights",
      DIR,
      ...heads,
      "--heads",
      "3",
      "--heads-depth",
      "2",
      "--mode",
      "poe",
      "--gamma",
      "3",
      "--ids",
      c.prompt.join(","),
      "--max-new-tokens",
      "24",
      "--json",
    ]),
  );
  if (JSON.stringify(out.ids) !== JSON.stringify(c.jury.greedy)) throw new Error(`ids ${out.ids} vs ${c.jury.greedy}`);
  for (const k of ["output_tokens", "resampled_tokens", "accepted", "rounds", "accepted_at", "sync_points"]) {
    if (!(k in out.stats)) throw new Error(`stats lack ${k}: ${JSON.stringify(out.stats)}`);
  }
  if (out.stats.sync_points > 2) throw new Error(`${out.stats.sync_points} sync points`);
});

gpuTest("deno task generate rejects bad input with one sentence", async () => {
  const bad = [
    ["--size", "tiny", "--random", "--ids", "1,2", "--bogus"],
    ["--size", "tiny", "--ids", "1"],
    ["--size", "tiny", "--random", "--ids", "1,x"],
    ["--size", "tiny", "--random", "--ids", "600"],
    ["--size", "tiny", "--random", "--ids", "1", "--mode", "poe"],
    ["--weights", `${DIR}/nope`, "--ids", "1"],
  ];
  for (const args of bad) {
    try {
      await run(args);
    } catch (e) {
      if (e instanceof UserError && !e.message.includes("\n")) continue;
      throw new Error(`${args.join(" ")}: ${(e as Error).message}`);
    }
    throw new Error(`${args.join(" ")} was accepted`);
  }
});

/** A checkpoint directory: the fixture's config and weights (linked), plus the given tokenizer files. */
async function fixtureCopy(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "hydra_generate_test_" });
  for (const name of ["config.json", "model.safetensors"]) await Deno.symlink(`${DIR}/${name}`, `${dir}/${name}`);
  for (const [name, text] of Object.entries(files)) await Deno.writeTextFile(`${dir}/${name}`, text);
  return dir;
}

/**
 * `deno task generate` with no WebGPU adapter (Linux has no DirectX 12, so forcing that backend leaves none): a case
 * that is refused with its own sentence, not "No WebGPU adapter was found", is refused before any GPU work.
 */
async function generateWithoutGpu(args: string[]): Promise<{ code: number; stderr: string }> {
  const root = fromFileUrl(new URL("../../", import.meta.url));
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "generate", ...args],
    cwd: root,
    env: { DENO_WEBGPU_BACKEND: "dx12" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test({
  name: "deno task generate: bad knobs, ids, tokenizers and templates are one sentence, exit 2, before any GPU work",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const tiny = ["--size", "tiny", "--random"];
    const jsonFile = await Deno.makeTempFile({ suffix: ".json" });
    const huge = "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}";
    const dirs = {
      badJson: await fixtureCopy({ "tokenizer.json": "{" }),
      // A vocabulary of the fixture's 512 ids (so the checkpoint's headers pass) but no decoder: not loadable.
      badTokenizer: await fixtureCopy({
        "tokenizer.json": JSON.stringify({
          model: { type: "BPE", vocab: Object.fromEntries(Array.from({ length: 512 }, (_, i) => [`t${i}`, i])) },
          added_tokens: [],
        }),
      }),
      badTemplate: await fixtureCopy({ "tokenizer_config.json": JSON.stringify({ chat_template: "{% if %}" }) }),
      hugeTemplate: await fixtureCopy({ "tokenizer_config.json": JSON.stringify({ chat_template: huge }) }),
    };
    const cases: [string[], string][] = [
      [[...tiny, "--ids", "1", "--beta", "-1"], "error: --beta must be in (0, 1] "],
      [[...tiny, "--ids", "1", "--beta", "1.5"], "error: --beta must be in (0, 1] "],
      [[...tiny, "--ids", "1", "--temperature", "-1"], "error: --temperature must be a finite number >= 0 "],
      [[...tiny, "--ids", "1", "--gamma", "17"], 'error: --gamma must be an integer in 1..16, got "17".'],
      [[...tiny, "--ids", "1", "--gamma", "-3"], 'error: --gamma must be an integer in 1..16, got "-3".'],
      [[...tiny, "--ids", "1", "--seed", ""], 'error: --seed must be a number, not "".'],
      [[...tiny, "--ids", "1", "--prefill-math", "f8"], 'error: --prefill-math must be f32 or f16, not "f8".'],
      [[...tiny, "--ids", "1", "--heads", "2", "--draft-head", "2"], "error: --draft-head 2 is not a head"],
      [[...tiny, "--ids", ""], "error: --ids is empty;"],
      [[...tiny, "--ids", "1,,2"], 'error: --ids must be comma-separated token ids such as "1,2,3", and item 2 is'],
      [[...tiny, "--ids", "1,2,"], "and item 3 is empty."],
      [[...tiny, "--ids", "-1"], '"-1" is not a token id.'],
      [[...tiny, "--prompt", ""], "error: The prompt is empty"],
      [[...tiny, "--prompt", "Hi", "--tokenizer", "/nonexistent"], "Cannot read checkpoint directory /nonexistent: "],
      [[...tiny, "--prompt", "Hi", "--tokenizer", jsonFile], `error: ${jsonFile} is not a directory;`],
      [[...tiny, "--ids", "1", "--tokenizer", dirs.badTokenizer], `${dirs.badTokenizer}/tokenizer.json could not be`],
      [["--weights", dirs.badJson, "--prompt", "Hi"], `error: ${dirs.badJson}/tokenizer.json is not valid JSON`],
      [["--weights", dirs.badTokenizer, "--prompt", "Hi"], `error: ${dirs.badTokenizer}/tokenizer.json could not be`],
      [["--weights", dirs.badTokenizer, "--ids", "1"], `error: ${dirs.badTokenizer}/tokenizer.json could not be`],
      [["--weights", dirs.badTemplate, "--prompt", "Hi", "--chat"], `${dirs.badTemplate}/tokenizer_config.json is not`],
      [
        ["--weights", dirs.hugeTemplate, "--prompt", "Hi", "--heads", "2", "--mode", "poe"],
        // The step bound (1e6 steps, ~2.5 s) or, on a loaded machine, the 5 s bound: either ends it.
        `error: The chat_template of ${dirs.hugeTemplate}/tokenizer_config.json did not finish within `,
      ],
    ];
    try {
      for (let i = 0; i < cases.length; i += 4) {
        const batch = cases.slice(i, i + 4);
        const results = await Promise.all(batch.map(([args]) => generateWithoutGpu(args)));
        results.forEach(({ code, stderr }, j) => {
          const [args, message] = batch[j];
          const lines = stderr.trim().split("\n");
          if (code !== 2 || lines.length !== 1 || !lines[0].includes(message)) {
            throw new Error(`generate ${JSON.stringify(args)}: exit ${code}, stderr ${JSON.stringify(stderr)}`);
          }
        });
      }
    } finally {
      for (const dir of [...Object.values(dirs), jsonFile]) await Deno.remove(dir, { recursive: true });
    }
  },
});
