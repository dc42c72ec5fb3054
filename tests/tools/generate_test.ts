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
