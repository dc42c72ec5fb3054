import { assert, assertEquals, assertRejects, assertStringIncludes, assertThrows } from "@std/assert";
import { UserError } from "../../common/errors.ts";
import {
  applyChatTemplate,
  type ChatMessage,
  loadChatTemplateConfig,
  TEMPLATE_LIMITS,
} from "../../poe/chat_template.ts";
import { userPrompt } from "../../poe/poe.ts";
import { dolma2Tokenizer, type Tokenizer } from "../../poe/tokenizer.ts";
import { HAVE_DOLMA2_JSON, referenceTokenizer } from "./reference.ts";

/** OLMo-2 Instruct's released chat_template (allenai/OLMo-2-1124-7B-Instruct tokenizer_config.json). */
const OLMO2_JINJA = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}" +
  "{{ '<|system|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'user' %}" +
  "{{ '<|user|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'assistant' %}" +
  "{% if not loop.last %}{{ '<|assistant|>\\n'  + message['content'] + eos_token + '\\n' }}" +
  "{% else %}{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endif %}" +
  "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}";
const OLMO2_TOKENS = { bos_token: "<|endoftext|>", eos_token: "<|endoftext|>", pad_token: "<|pad|>" };

/** A ChatML template: a different format, to show the checkpoint's template is what renders. */
const CHATML_JINJA = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const CONVERSATIONS: Record<string, ChatMessage[]> = {
  none: [],
  user: [{ role: "user", content: "What is 2+2?" }],
  systemUser: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi!\nHow are you?" }],
  multiTurn: [
    { role: "system", content: "You are OLMo." },
    { role: "user", content: "Name a prime." },
    { role: "assistant", content: "7" },
    { role: "user", content: "Another, please." },
  ],
  endsWithAssistant: [{ role: "user", content: "Say hi." }, { role: "assistant", content: "Hi <b>there</b> 😀" }],
  emptyContent: [{ role: "user", content: "" }],
};

Deno.test("built-in OLMo-2 template: exact strings", () => {
  assertEquals(
    applyChatTemplate(CONVERSATIONS.user, { addGenerationPrompt: true }),
    "<|endoftext|><|user|>\nWhat is 2+2?\n<|assistant|>\n",
  );
  assertEquals(
    applyChatTemplate(CONVERSATIONS.multiTurn, { addGenerationPrompt: false }),
    "<|endoftext|><|system|>\nYou are OLMo.\n<|user|>\nName a prime.\n<|assistant|>\n7<|endoftext|>\n" +
      "<|user|>\nAnother, please.\n",
  );
  assertEquals(
    applyChatTemplate(CONVERSATIONS.endsWithAssistant, { addGenerationPrompt: false }),
    "<|endoftext|><|user|>\nSay hi.\n<|assistant|>\nHi <b>there</b> 😀<|endoftext|>",
  );
  assertEquals(applyChatTemplate([], { addGenerationPrompt: true }), "<|endoftext|>");
});

Deno.test("built-in and Jinja OLMo-2 templates render the same strings", () => {
  for (const [name, messages] of Object.entries(CONVERSATIONS)) {
    for (const addGenerationPrompt of [false, true]) {
      assertEquals(
        applyChatTemplate(messages, { template: OLMO2_JINJA, addGenerationPrompt, specialTokens: OLMO2_TOKENS }),
        applyChatTemplate(messages, { addGenerationPrompt }),
        `${name}, addGenerationPrompt=${addGenerationPrompt}`,
      );
    }
  }
});

Deno.test("a checkpoint's own Jinja template is what renders", () => {
  assertEquals(
    applyChatTemplate(CONVERSATIONS.systemUser, { template: CHATML_JINJA, addGenerationPrompt: true }),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!\nHow are you?<|im_end|>\n<|im_start|>assistant\n",
  );
  // As in transformers: eos_token defaults to <|endoftext|>; an unset bos_token renders as nothing.
  assertEquals(
    applyChatTemplate([], { template: "[{{ bos_token }}|{{ eos_token }}]", addGenerationPrompt: false }),
    "[|<|endoftext|>]",
  );
  assertEquals(
    applyChatTemplate([], {
      template: "{{ bos_token }}{{ eos_token }}{{ pad_token }}",
      addGenerationPrompt: false,
      specialTokens: { bos_token: "<s>", eos_token: "</s>", pad_token: "<pad>" },
    }),
    "<s></s><pad>",
  );
});

Deno.test("chat template errors are one clear sentence", () => {
  assertThrows(
    () => applyChatTemplate([{ role: "tool", content: "x" }], { addGenerationPrompt: true }),
    Error,
    `Chat message 0 has role "tool", which OLMo-2's chat format does not have (system, user, assistant).`,
  );
  assertThrows(
    () => applyChatTemplate([{ role: "user", content: 3 as unknown as string }], { addGenerationPrompt: true }),
    Error,
    "Chat message 0 has no text content",
  );
  assertThrows(
    () => applyChatTemplate([], { template: "{% if %}", addGenerationPrompt: true }),
    UserError,
    "The chat template is not valid Jinja (Unexpected token: CloseStatement); fix the template.",
  );
  assertThrows(
    () =>
      applyChatTemplate([], {
        template: "{{ raise_exception('no system role') }}",
        addGenerationPrompt: true,
        source: "ckpt/tokenizer_config.json",
      }),
    UserError,
    "The chat_template of ckpt/tokenizer_config.json failed to render (no system role); fix it, or delete it to use " +
      "OLMo-2's format.",
  );
});

/** Renders `template` for one user message with `limits`; returns the UserError it must end with, and its time. */
function hostile(template: string, limits = {}): { message: string; ms: number } {
  const t0 = performance.now();
  const e = assertThrows(
    () =>
      applyChatTemplate([{ role: "user", content: "Hi" }], {
        template,
        addGenerationPrompt: true,
        source: "T",
        limits,
      }),
    UserError,
  );
  assert(!e.message.includes("\n") && e.message.startsWith("The chat_template of T "), e.message);
  return { message: e.message, ms: performance.now() - t0 };
}

Deno.test("a hostile chat template is stopped at each bound with one sentence", () => {
  // Unbounded, the first exhausted the V8 heap after 32 s: range() builds its 1e8-item list before the loop starts.
  assertStringIncludes(
    hostile("{% for i in range(100000000) %}x{% endfor %}").message,
    "asked range() for 100000000 items, above the limit of 1000000",
  );
  // An endless loop ends at the step bound (1e8 iterations of two nested loops; about 2.5 s here). The wall-clock
  // bound is lifted so that only the (deterministic) step count can end it, however loaded the machine.
  const loop = hostile("{% for i in range(10000) %}{% for j in range(10000) %}{{ i }}{% endfor %}{% endfor %}", {
    seconds: 600,
  });
  assertStringIncludes(loop.message, `did not finish within ${TEMPLATE_LIMITS.steps} steps`);
  assert(loop.ms < 30_000, `the step bound took ${loop.ms} ms`); // a hang guard, not a speed claim
  // A string or a list doubled 64 times would need 2^64 units of memory; the bounds stop them within ~30 steps.
  assertStringIncludes(
    hostile("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}").message,
    `produced more than ${TEMPLATE_LIMITS.characters} characters`,
  );
  assertStringIncludes(
    hostile("{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}").message,
    `produced more than ${TEMPLATE_LIMITS.listItems} list items`,
  );
  // The wall-clock bound, for steps slow each: shown with a 0.2 s bound on a loop the step bound would stop later.
  const slow = hostile("{% for i in range(1000) %}{% for j in range(1000) %}{{ i }}{% endfor %}{% endfor %}", {
    seconds: 0.2,
  });
  assertStringIncludes(slow.message, "did not finish within 0.2 s");
  assert(slow.ms < 2_000, `the 0.2 s bound took ${slow.ms} ms`);
});

Deno.test("the bounded interpreter keeps the library's globals and its Jinja", () => {
  const out = applyChatTemplate([{ role: "user", content: "Hi" }], {
    template: "{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ true }} {{ none is none }} {{ strftime_now('%Y') }} " +
      "{% for m in messages %}{{ loop.index }}:{{ m.content|upper }}{% endfor %}",
    addGenerationPrompt: false,
  });
  assertEquals(out, `[0, 1, 2] [1, 3, 5] true true ${new Date().getFullYear()} 1:HI`);
  assertThrows(
    () => applyChatTemplate([], { template: "{{ range(3, 4, 0) }}", addGenerationPrompt: false }),
    UserError,
    "range() step must not be zero",
  );
});

Deno.test("a checkpoint's hostile or broken chat_template is one sentence naming its tokenizer_config.json", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/tokenizer_config.json`;
  try {
    const cases: [string, string][] = [
      ["{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}", "did not finish within"],
      ["{% for m in messages %}", "is not valid Jinja"],
      ["{{ messages[0].content.nope() }}", "failed to render"],
    ];
    for (const [template, message] of cases) {
      await Deno.writeTextFile(path, JSON.stringify({ chat_template: template }));
      const chat = await loadChatTemplateConfig(dir);
      const e = assertThrows(() => userPrompt("Hi", chat), UserError, `The chat_template of ${path} ${message}`);
      assertStringIncludes(e.message, "fix it, or delete it to use OLMo-2's format.");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the templated prompt tokenizes with <|endoftext|> as the single id 100257", async () => {
  const prompt = applyChatTemplate(CONVERSATIONS.multiTurn, { addGenerationPrompt: true });
  const tokenizers: Tokenizer[] = [dolma2Tokenizer()];
  if (HAVE_DOLMA2_JSON) tokenizers.push(await referenceTokenizer());
  for (const tok of tokenizers) {
    const ids = tok.encode(prompt);
    assertEquals(ids[0], 100257, tok.source);
    assertEquals(ids.filter((id) => id === 100257).length, 2, `BOS and the assistant turn's end (${tok.source})`);
    // <|user|> and <|assistant|> are plain text: several ordinary tokens each, no added token.
    assertEquals(ids.filter((id) => id >= 100256 && id !== 100257), [], tok.source);
    assertEquals(tok.encode("<|assistant|>\n"), [27, 91, 78191, 91, 397], tok.source);
    assertEquals(tok.decode(ids), prompt);
  }
});

Deno.test("loadChatTemplateConfig reads chat_template and special tokens from tokenizer_config.json", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/tokenizer_config.json`;
  try {
    assertEquals(await loadChatTemplateConfig(), { specialTokens: {} });
    assertEquals(await loadChatTemplateConfig(dir), { specialTokens: {} });
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        chat_template: OLMO2_JINJA,
        bos_token: "<|endoftext|>",
        eos_token: { content: "<|endoftext|>", special: true }, // older files write AddedToken objects
        pad_token: "<|pad|>",
        unk_token: null,
        model_max_length: 4096,
      }),
    );
    const config = await loadChatTemplateConfig(dir);
    assertEquals(config, { template: OLMO2_JINJA, specialTokens: OLMO2_TOKENS, source: path });
    assertEquals(
      applyChatTemplate(CONVERSATIONS.multiTurn, { ...config, addGenerationPrompt: true }),
      applyChatTemplate(CONVERSATIONS.multiTurn, { addGenerationPrompt: true }),
    );
    await Deno.writeTextFile(
      path,
      JSON.stringify({ chat_template: [{ name: "tool_use", template: "x" }, { name: "default", template: "y" }] }),
    );
    assertEquals((await loadChatTemplateConfig(dir)).template, "y");
    await Deno.writeTextFile(path, JSON.stringify({ chat_template: [{ name: "tool_use", template: "x" }] }));
    await assertRejects(
      () => loadChatTemplateConfig(dir),
      UserError,
      `${path} has several chat templates and none is named "default".`,
    );
    await Deno.writeTextFile(path, JSON.stringify({ chat_template: 7 }));
    await assertRejects(() => loadChatTemplateConfig(dir), UserError, `${path} has a chat_template that is neither`);
    await Deno.writeTextFile(path, "{ chat_template: 1 }");
    await assertRejects(() => loadChatTemplateConfig(dir), UserError, `${path} is not valid JSON: `);
    await Deno.writeTextFile(path, "[]");
    await assertRejects(() => loadChatTemplateConfig(dir), UserError, `${path} is not a JSON object.`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
