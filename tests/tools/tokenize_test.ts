import { assertEquals, assertStringIncludes } from "@std/assert";
import { main, type Stdin } from "../../tools/tokenize.ts";
import { DOLMA2_JSON, HAVE_DOLMA2_JSON } from "../poe/reference.ts";

/** A stdin for the tool: a terminal (nothing piped), or a pipe that yields `bytes`. */
function stdin(bytes?: Uint8Array<ArrayBuffer> | string): Stdin {
  const data = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  return {
    isTerminal: () => data === undefined,
    get readable() {
      if (data === undefined) throw new Error("the tool read a terminal's stdin");
      return new Blob([data]).stream();
    },
  };
}

/** Runs the tool in-process with `input` as stdin (a terminal by default); returns its exit code and output. */
async function runWith(input: Stdin, ...args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [], err: string[] = [];
  const code = await main(args, (l) => out.push(l), (l) => err.push(l), input);
  return { code, out, err };
}

const run = (...args: string[]) => runWith(stdin(), ...args);

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
    [
      ["--bogus", "x"],
      "tokenize: Unknown option --bogus; the only options are --tokenizer FILE, --file PATH and --help.",
    ],
    [["-x", "y"], "tokenize: Unknown option -x;"],
    [[], "tokenize: Give the TEXT to tokenize, --file PATH, or pipe the text on stdin."],
    [["--file"], "tokenize: --file needs the PATH"],
    [["--file", "a.txt", "text"], "tokenize: Give either TEXT or --file PATH, not both."],
    [["a", "b"], "tokenize: Give exactly one TEXT (quote it), not 2 arguments."],
    [["--tokenizer"], "tokenize: --tokenizer needs a FILE"],
  ];
  for (const [args, message] of cases) {
    const { code, out, err } = await run(...args);
    assertEquals([code, out], [2, []], args.join(" "));
    assertStringIncludes(err[0], message);
  }
});

Deno.test("tokenize: an unloadable tokenizer is one sentence and exit code 2", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assertEquals(await run("--tokenizer", `${dir}/nope.json`, "x"), {
      code: 2,
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

Deno.test("tokenize: --file PATH and stdin give the text, byte for byte", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const text = "Hello world\n<|endoftext|> caf\u00e9\r\n\ufeffend";
    const ids = (await run(text)).out;
    await Deno.writeTextFile(`${dir}/t.txt`, text);
    assertEquals(await run("--file", `${dir}/t.txt`), { code: 0, out: ids, err: [] });
    assertEquals(await runWith(stdin(text), "-"), { code: 0, out: ids, err: [] }, "- reads stdin");
    assertEquals(await runWith(stdin(text)), { code: 0, out: ids, err: [] }, "no TEXT and a pipe: stdin");
    assertEquals((await runWith(stdin(text), "Hello")).out, ["[9906]"], "a TEXT wins over a pipe");
    assertEquals((await runWith(stdin(""))).out, ["[]"], "an empty pipe is an empty text");
    // 1 MiB of one letter is one pre-token: the merge must stay n log n (it took minutes when quadratic).
    await Deno.writeTextFile(`${dir}/big.txt`, "x".repeat(1 << 20));
    const big = await run("--file", `${dir}/big.txt`);
    assertEquals(JSON.parse(big.out[0]).length, 131072);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokenize: an unreadable or non-UTF-8 input is one sentence and exit code 2", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/latin1.txt`, new Uint8Array([0x63, 0x61, 0x66, 0xe9])); // "café" in Latin-1
    const cases: [Stdin, string[], string][] = [
      [stdin(), ["--file", `${dir}/nope.txt`], `tokenize: Cannot read ${dir}/nope.txt: it does not exist.`],
      [stdin(), ["--file", dir], `tokenize: Cannot read ${dir}: is a directory.`],
      [stdin(), ["--file", `${dir}/latin1.txt`], `tokenize: ${dir}/latin1.txt is not UTF-8 text; convert it`],
      [stdin(new Uint8Array([0xff, 0xfe])), ["-"], "tokenize: Standard input is not UTF-8 text; convert it"],
    ];
    for (const [input, args, message] of cases) {
      const r = await runWith(input, ...args);
      assertEquals([r.code, r.out, r.err.length], [2, [], 1], args.join(" "));
      assertStringIncludes(r.err[0], message);
    }
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
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "tokenize"],
    cwd: root,
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("Hello world"));
  await writer.close();
  const piped = await child.output();
  assertEquals([piped.code, new TextDecoder().decode(piped.stdout)], [0, "[9906,1917]\n"], "text piped on stdin");
});
