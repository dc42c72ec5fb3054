import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { UserError } from "../../common/errors.ts";
import {
  DOLMA2_ADDED_TOKENS,
  DOLMA2_EOS_ID,
  DOLMA2_SPLIT_PATTERN,
  dolma2Tokenizer,
  loadTokenizer,
  loadTokenizerFile,
} from "../../poe/tokenizer.ts";
import { Rng } from "../../kernels/testing/harness.ts";
import { DOLMA2_JSON, referenceTest } from "./reference.ts";

const ADDED = Object.keys(DOLMA2_ADDED_TOKENS);

/** Text of the kinds a byte-level BPE gets wrong first: each entry is one test string. */
const CORPUS: Record<string, string> = {
  empty: "",
  prose: "The quick brown fox jumps over the lazy dog. It wasn't me, I'm sure; they'd've said so! " +
    "OLMo-2 is a fully open language model: weights, data, and code are public.",
  // Contractions change ids only where no space takes the apostrophe and letters follow ("x'The" is "x" "'T" "he").
  contractions: "I'M HERE, you'RE there, we'Ve gone, it'S fine, x'the x'The x'She x'Some x'Rex x'rEx x'VEx " +
    "x'Mer x'LLEE x'Llo x'Day x'DER x'dee x'mer x'reee DON'T'VE\n'The 'So",
  code: 'def add(a, b):\n\t"""Adds."""\n\tif a is None:\n\t\treturn b\n    return a + b  # mixed indent\n\n\n' +
    "function f(x: number): number {\n        return x ** 2; // eight spaces\n}\n\tconst s = `${x}`;\r\n" +
    "if (a&&b||!c) { x->y = a[i++] >>= 2; } /* comment */ #include <stdio.h>\n    \n",
  cjk: "我爱自然语言处理。日本語のテキストとカタカナ、ひらがな。한국어 문장입니다. 中文，English 混合 text。",
  emoji: "👍 👍🏽 👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 🇯🇵🇺🇸 flags, 1️⃣ keycap, 🧑🏿‍💻 coder, ❤️‍🔥, 😀😀😀",
  numbers: "3.14159265358979323846264338327950288 1234567890123456789012345 1,000,000 -0.0001 2024-11-26 " +
    "0x7fffffff 1e-6 100352 ١٢٣٤٥ ①②③ ½ Ⅻ 9999999999",
  whitespace: "a    b\t\t\tc   \n\n\n   d" + " ".repeat(100) + "e\u00a0f\u3000g\u2003h \u0085 i\ufeffj\u200bk\u2028l",
  lineEndings: "line1\r\nline2\r\n\r\nline3\rline4\r\rline5\n\r\n\rend\r",
  trailingSpaces: "trailing   \nspaces  \t\nend   ",
  accents: "café naïve résumé Straße İstanbul ǅemal e\u0301 ﬁ Ω",
  addedTokensInText: ADDED.map((t, i) => `word${i} ${t} text${t}more\n${t} `).join(""),
  addedTokensAdjacent: ADDED.join("") + ADDED.toReversed().join("") + "<|endoftext|><|endoftext|>",
  addedTokenLookalikes: "<|endoftext|  <|extra_id_11|> <|EXTRA_ID_1|> ||||PHONE_NUMBER|||| <|<|pad|>|> <| |> |||",
  chat: "<|endoftext|><|system|>\nBe brief.\n<|user|>\nHi!\n<|assistant|>\nHello.<|endoftext|>\n<|assistant|>\n",
};

/** A seeded random string from pieces that stress the split regex and the added-token matcher. */
function randomText(rng: Rng): string {
  const pieces = [
    " ",
    "  ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\u00a0",
    "\u0085",
    "\ufeff",
    "'s",
    "'LL",
    "a",
    "Z",
    "é",
    "ß",
    "日本",
    "한국어",
    "👨‍👩‍👧",
    "1",
    "23",
    "٣",
    ".",
    "!!",
    "$",
    "—",
    "{",
    "_",
    "\u0301",
    "<|",
    "|>",
    "|||",
    "word",
    " Word",
    ...ADDED,
  ];
  let text = "";
  for (let n = 1 + rng.int(12); n > 0; n--) text += pieces[rng.int(pieces.length)];
  return text;
}

Deno.test("dolma2: known ids, eos and vocabulary size (without the reference file)", () => {
  const tok = dolma2Tokenizer();
  assertEquals(tok.eosId, 100257);
  assertEquals(DOLMA2_EOS_ID, 100257);
  assertEquals(tok.vocabSize, 100278);
  // cl100k_base ids every tiktoken user knows, and the added tokens' own ids.
  assertEquals(tok.encode("Hello world"), [9906, 1917]);
  assertEquals(tok.encode("hello world"), [15339, 1917]);
  assertEquals(tok.encode("<|endoftext|>"), [100257]);
  for (const [text, id] of Object.entries(DOLMA2_ADDED_TOKENS)) {
    assertEquals(tok.encode(text), [id], text);
    assertEquals(tok.decode([id]), text);
  }
  assertEquals(Object.values(DOLMA2_ADDED_TOKENS), Array.from({ length: 22 }, (_, i) => 100256 + i));
  assertEquals(dolma2Tokenizer(), tok, "built once and shared");
});

Deno.test("dolma2: decode(encode(x)) === x on the corpus", () => {
  const tok = dolma2Tokenizer();
  for (const [name, text] of Object.entries(CORPUS)) assertEquals(tok.decode(tok.encode(text)), text, name);
});

Deno.test("dolma2: decode rejects ids outside the vocabulary and splits multi-byte characters into U+FFFD", () => {
  const tok = dolma2Tokenizer();
  for (const id of [-1, 100278, 100351, 1.5, NaN]) {
    assertThrows(
      () => tok.decode([id]),
      UserError,
      `Token id ${id} is not in the vocabulary of built-in dolma2; use the tokenizer that belongs to the model.`,
    );
  }
  const ids = tok.encode("🦜"); // 4 UTF-8 bytes in 3 tokens
  assertEquals(ids.length, 3);
  assertEquals(tok.decode(ids.slice(0, 1)), "\ufffd");
  assertEquals(tok.decode(ids), "🦜");
});

for (const [name, text] of Object.entries(CORPUS)) {
  referenceTest(`dolma2 matches tokenizer.json: ${name}`, (hf) => {
    assertEquals(dolma2Tokenizer().encode(text), hf.encode(text));
    assertEquals(hf.decode(hf.encode(text)), text);
  });
}

referenceTest("dolma2 matches tokenizer.json: 2000 seeded random strings", (hf) => {
  const tok = dolma2Tokenizer();
  const rng = new Rng(2025);
  for (let i = 0; i < 2000; i++) {
    const text = randomText(rng);
    assertEquals(tok.encode(text), hf.encode(text), JSON.stringify(text));
    assertEquals(tok.decode(tok.encode(text)), text);
  }
});

referenceTest("dolma2 matches tokenizer.json on long pre-tokens (thousands of merges, many ties)", (hf) => {
  // One letter, whitespace or symbol run is one pre-token however long: the merge order (lowest rank, leftmost on
  // ties) decides every id. Small alphabets make long runs of equal pairs, where a wrong tie-break shows.
  const tok = dolma2Tokenizer();
  const rng = new Rng(7);
  const alphabets = ["x", "ab", "abc", "aab", "th", "é", "eé", "日本", "  ", " \t", "!?", "=-", "\n\n ", "ü "];
  for (let i = 0; i < 60; i++) {
    const alphabet = [...alphabets[i % alphabets.length]];
    const length = 200 + rng.int(6000);
    let text = "";
    for (let j = 0; j < length; j++) text += alphabet[rng.int(alphabet.length)];
    if (i % 3 === 0) text = alphabet[0].repeat(length); // one repeated character: every pair ties
    assertEquals(tok.encode(text), hf.encode(text), `${JSON.stringify(text.slice(0, 40))}... (${length} chars)`);
  }
});

Deno.test("dolma2: encoding time grows as n log n, not n^2 (1 MiB of one letter is one pre-token)", () => {
  // Not a speed claim but a complexity guarantee: a quadratic merge (rescan every pair per merge) took 5 s for 64 KiB
  // of "x" and 385 s for 1 MiB. 8x the text costs about 9x the time here (n log n); a quadratic merge costs 64x. The
  // ratio (best of 5, to damp a loaded machine) is asserted below 24, and 1 MiB below 20 s (0.6-1.2 s measured here).
  const tok = dolma2Tokenizer();
  const best = (text: string) => {
    let fastest = Infinity;
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      tok.encode(text);
      fastest = Math.min(fastest, performance.now() - t0);
    }
    return fastest;
  };
  for (const ch of ["x", " ", "!"]) {
    const small = best(ch.repeat(16 << 10)), large = best(ch.repeat(128 << 10));
    assert(
      large < 24 * small,
      `${JSON.stringify(ch)}: 128 KiB took ${large.toFixed(1)} ms, 16 KiB ${small.toFixed(1)} ms`,
    );
  }
  const t0 = performance.now();
  const ids = tok.encode("x".repeat(1 << 20));
  const ms = performance.now() - t0;
  assert(ms < 20_000, `1 MiB of "x" took ${ms.toFixed(0)} ms`);
  assertEquals(ids.length, 131072, "1 MiB of x is 131072 tokens of 8 x");
  assertEquals(new Set(ids).size, 1);
});

referenceTest("dolma2 matches tokenizer.json: every 11th vocabulary token, alone and in context", (hf) => {
  // Each token's own text is where rank-based (tiktoken) and merge-list (HF) BPE could disagree.
  const tok = dolma2Tokenizer();
  const strict = new TextDecoder("utf-8", { fatal: true });
  let checked = 0;
  for (let id = 0; id < 100256; id += 11) {
    let text: string;
    try {
      text = strict.decode(new TextEncoder().encode(tok.decode([id])));
    } catch {
      continue;
    }
    if (text.includes("\ufffd")) continue; // a partial UTF-8 sequence: not a text of its own
    for (const s of [text, `x${text}${text}\n`]) {
      assertEquals(tok.encode(s), hf.encode(s), `id ${id}: ${JSON.stringify(s)}`);
    }
    checked++;
  }
  assert(checked > 8000, `only ${checked} tokens checked`);
});

referenceTest("the built-in split regex and added tokens are tokenizer.json's", async () => {
  const json = JSON.parse(await Deno.readTextFile(DOLMA2_JSON));
  const split = json.pre_tokenizer.pretokenizers[0];
  assertEquals([split.type, split.behavior, split.invert], ["Split", "Removed", true]);
  // Oniguruma's \s is Unicode White_Space; DOLMA2_SPLIT_PATTERN spells it out for JavaScript.
  const oniguruma: string = split.pattern.Regex;
  assertEquals(
    oniguruma.replaceAll("\\s", "\\p{White_Space}").replaceAll("\\S", "\\P{White_Space}"),
    DOLMA2_SPLIT_PATTERN,
  );
  const added = json.added_tokens.map((t: { content: string; id: number }) => [t.content, t.id]);
  assertEquals(Object.fromEntries(added), DOLMA2_ADDED_TOKENS);
  assertEquals(added.length, 22);
});

referenceTest("tokenizer.json: eos id, vocabulary size, and decode errors", (hf) => {
  assertEquals(hf.eosId, 100257);
  assertEquals(hf.vocabSize, 100278);
  assertEquals(hf.decode([]), "");
  assertThrows(() => hf.decode([100278]), Error, "Token id 100278 is not in the vocabulary of");
});

Deno.test("loadTokenizer: built-in without a directory or without tokenizer.json", async () => {
  assertEquals((await loadTokenizer()).source, "built-in dolma2");
  const dir = await Deno.makeTempDir();
  try {
    assertEquals((await loadTokenizer(dir)).source, "built-in dolma2");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

referenceTest(
  "loadTokenizer: prefers the directory's tokenizer.json and reads eos from tokenizer_config.json",
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.symlink(DOLMA2_JSON, `${dir}/tokenizer.json`);
      await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify({ eos_token: "<|pad|>" }));
      const tok = await loadTokenizer(dir);
      assertEquals(tok.source, `${dir}/tokenizer.json`);
      assertEquals(tok.eosId, 100277, "eos_token of tokenizer_config.json wins");
      assertEquals(tok.encode("Hello world<|endoftext|>"), [9906, 1917, 100257]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("loadTokenizer: one clear sentence for each unusable tokenizer", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/tokenizer.json`;
  try {
    const cases: [() => Promise<unknown>, string][] = [
      [() => loadTokenizer(`${dir}/nope`), `Cannot read checkpoint directory ${dir}/nope: it does not exist.`],
      [() => loadTokenizer(`${dir}/file`), `${dir}/file is not a directory; give the checkpoint directory`],
      [() => loadTokenizerFile(`${dir}/missing.json`), `Cannot read ${dir}/missing.json: it does not exist.`],
    ];
    await Deno.writeTextFile(`${dir}/file`, "");
    for (const [load, message] of cases) await assertRejects(load, UserError, message);
    const files: [string | null, string][] = [
      [null, `Cannot read ${path}: is a directory.`],
      ['{"model": ', `${path} is not valid JSON: `],
      ['{"version": "1.0"}', `${path} is not a Hugging Face tokenizer.json`],
      [
        JSON.stringify({ model: { type: "Nonsense" }, added_tokens: [] }),
        `${path} could not be loaded as a tokenizer: `,
      ],
      [JSON.stringify({ model: { type: "BPE", vocab: { a: 0 }, merges: [] }, added_tokens: [], decoder: null }), path],
    ];
    for (const [text, message] of files) {
      await Deno.remove(path, { recursive: true }).catch(() => {});
      if (text === null) await Deno.mkdir(path);
      else await Deno.writeTextFile(path, text);
      const e = await assertRejects(() => loadTokenizer(dir), UserError, message);
      assert(!e.message.includes("\n"), e.message);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
