import { assert, assertEquals, assertRejects } from "@std/assert";
import { UserError } from "../../common/errors.ts";
import { preparePrompt } from "../../poe/prompt.ts";
import { dolma2Tokenizer } from "../../poe/tokenizer.ts";
import { DOLMA2_JSON, HAVE_DOLMA2_JSON } from "./reference.ts";

const CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

Deno.test("preparePrompt: the built-in tokenizer and OLMo-2's format without a directory", async () => {
  const p = await preparePrompt(undefined, "Hi");
  assertEquals(p.text, "<|endoftext|><|user|>\nHi\n<|assistant|>\n");
  assertEquals(p.ids, dolma2Tokenizer().encode(p.text));
  assertEquals(p.ids[0], 100257);
  assertEquals(p.tokenizer.source, "built-in dolma2");
  const plain = await preparePrompt(undefined, "Hello world", { chat: false });
  assertEquals([plain.text, plain.ids], ["Hello world", [9906, 1917]]);
});

Deno.test({
  name: "preparePrompt: a checkpoint directory's tokenizer.json and chat_template are what it uses",
  ignore: !HAVE_DOLMA2_JSON,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.symlink(DOLMA2_JSON, `${dir}/tokenizer.json`);
      await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify({ chat_template: CHATML }));
      const p = await preparePrompt(dir, "Hi");
      assertEquals(p.text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
      assertEquals(p.ids.filter((id) => id === 100264).length, 2, "<|im_start|> is an added token of dolma2");
      assertEquals(p.tokenizer.source, `${dir}/tokenizer.json`);
      assertEquals(p.chat.source, `${dir}/tokenizer_config.json`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("preparePrompt: every unusable tokenizer, template or prompt is one sentence naming the file", async () => {
  const dir = await Deno.makeTempDir();
  const tokenizer = `${dir}/tokenizer.json`, config = `${dir}/tokenizer_config.json`;
  try {
    await Deno.writeTextFile(`${dir}/file.json`, "{}");
    const cases: [string | undefined, Record<string, string>, string, string][] = [
      [`${dir}/nope`, {}, "Hi", `Cannot read checkpoint directory ${dir}/nope: it does not exist.`],
      [`${dir}/file.json`, {}, "Hi", `${dir}/file.json is not a directory`],
      [dir, { [tokenizer]: "{" }, "Hi", `${tokenizer} is not valid JSON`],
      [dir, { [tokenizer]: '{"model": {}, "added_tokens": []}' }, "Hi", `${tokenizer} could not be loaded`],
      [dir, { [config]: '{"chat_template": "{% if %}"}' }, "Hi", `The chat_template of ${config} is not valid Jinja`],
      [dir, { [config]: '{"chat_template": "{{ raise_exception(\\"no\\") }}"}' }, "Hi", "failed to render (no)"],
      [dir, { [config]: '{"chat_template": "{% for i in range(10**9) %}{% endfor %}"}' }, "Hi", "range()"],
      [dir, { [config]: '{"chat_template": ""}' }, "Hi", `The chat template of ${config} renders the prompt as empty`],
      [undefined, {}, "", "The prompt is empty"],
    ];
    for (const [where, files, text, message] of cases) {
      for (const path of [tokenizer, config]) await Deno.remove(path).catch(() => {});
      for (const [path, contents] of Object.entries(files)) await Deno.writeTextFile(path, contents);
      const e = await assertRejects(() => preparePrompt(where, text, { chat: text !== "" }), UserError, message);
      assert(!e.message.includes("\n"), e.message);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
