import { assertEquals, assertStringIncludes } from "@std/assert";
import { main } from "../../tools/tokenize.ts";
import { DOLMA2_JSON, HAVE_DOLMA2_JSON } from "../poe/reference.ts";

/** Runs the tool in-process; returns its exit code and what it wrote. */
async function run(...args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [], err: string[] = [];
  const code = await main(args, (l) => out.push(l), (l) => err.push(l));
  return { code, out, err };
}

Deno.test("tokenize: prints the ids as one line of JSON", async () => {
  assertEquals(await run("Hello world"), { code: 0, out: ["[9906,1917]"], err: [] });
  assertEquals((await run("--", "-5<|endoftext|>")).out, ["[12,20,100257]"], "text after -- may start with -");
  assertEquals((await run("007")).out, ["[11194]"], "a numeric TEXT stays text");
});

Deno.test({
  name: "tokenize: --tokenizer FILE uses that tokenizer.json",
  ignore: !HAVE_DOLMA2_JSON,
  fn: async () => {
    assertEquals(await run("--tokenizer", DOLMA2_JSON, "Hello<|endoftext|>"), {
      code: 0,
      out: ["[9906,100257]"],
      err: [],
    });
    assertEquals((await run(`--tokenizer=${DOLMA2_JSON}`, "Hello")).out, ["[9906]"]);
  },
});

Deno.test("tokenize: a bad command line is one sentence and exit code 2", async () => {
  const cases: [string[], string][] = [
    [["--bogus", "x"], "tokenize: Unknown option --bogus; the only options are --tokenizer FILE and --help."],
    [["-x", "y"], "tokenize: Unknown option -x;"],
    [[], "tokenize: Give the TEXT to tokenize."],
    [["a", "b"], "tokenize: Give exactly one TEXT (quote it), not 2 arguments."],
    [["--tokenizer"], "tokenize: --tokenizer needs a FILE"],
  ];
  for (const [args, message] of cases) {
    const { code, out, err } = await run(...args);
    assertEquals([code, out], [2, []], args.join(" "));
    assertStringIncludes(err[0], message);
  }
});

Deno.test("tokenize: an unloadable tokenizer is one sentence and exit code 1", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assertEquals(await run("--tokenizer", `${dir}/nope.json`, "x"), {
      code: 1,
      out: [],
      err: [`tokenize: Cannot read ${dir}/nope.json: it does not exist.`],
    });
    // A directory named on the command line must hold a tokenizer.json: no silent fallback to the built-in one.
    assertEquals((await run("--tokenizer", dir, "x")).err, [
      `tokenize: Cannot read ${dir}/tokenizer.json: it does not exist.`,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task tokenize: exit code 2 on a bad flag, ids on stdout otherwise", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const spawn = (...args: string[]) =>
    new Deno.Command(Deno.execPath(), { args: ["task", "-q", "tokenize", ...args], cwd: root, stdin: "null" }).output();
  const bad = await spawn("--bogus", "x");
  assertEquals(bad.code, 2);
  assertStringIncludes(new TextDecoder().decode(bad.stderr), "Unknown option --bogus");
  const good = await spawn("Hello world");
  assertEquals([good.code, new TextDecoder().decode(good.stdout)], [0, "[9906,1917]\n"]);
});
