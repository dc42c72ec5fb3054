/**
 * Chat templates: a checkpoint's own Jinja `chat_template` (from tokenizer_config.json), rendered with
 * `@huggingface/jinja` and the variables HF transformers passes, or, when it has none, OLMo-2 Instruct's (Tulu) format.
 *
 * A checkpoint's template is code from a downloaded file, so its rendering is bounded ({@link TEMPLATE_LIMITS}):
 * evaluation steps, characters and list items produced, items per `range()`, and wall time; past any bound it stops
 * with one sentence naming the file. Without bounds, `{% for i in range(100000000) %}` exhausted the V8 heap after 32 s (range builds its list
 * first), and a doubling string or list grows past any memory in a few dozen steps.
 * @module
 */

import { Environment, Interpreter, Template } from "@huggingface/jinja";
import { join } from "@std/path";
import { UserError } from "../common/errors.ts";
import { isJsonObject, pathExists, readJsonFile, sentenceEnd } from "../common/files.ts";
import { specialTokenText } from "./tokenizer.ts";

/** One chat message. OLMo-2's format knows the roles `system`, `user` and `assistant`. */
export interface ChatMessage {
  /** `system`, `user` or `assistant` (a checkpoint's own template may accept others). */
  role: string;
  /** The message text. */
  content: string;
}

/** How to render a conversation. */
export interface ChatTemplateOptions {
  /** Jinja source of the checkpoint's `chat_template`; when absent, OLMo-2 Instruct's format is used. */
  template?: string;
  /** Whether to end with the opening of an assistant turn (`<|assistant|>\n` in OLMo-2), for generation. */
  addGenerationPrompt: boolean;
  /**
   * Special-token strings the template sees, by their HF names (`bos_token`, `eos_token`, `pad_token`, ...), as
   * transformers passes its special_tokens_map; `eos_token` defaults to `<|endoftext|>`. Only a Jinja template sees
   * them.
   */
  specialTokens?: Readonly<Record<string, string>>;
  /** Where `template` came from (a tokenizer_config.json path), for messages. */
  source?: string;
  /** Tighter bounds than {@link TEMPLATE_LIMITS} (tests use them to reach each bound quickly). */
  limits?: Partial<TemplateLimits>;
}

/** What a checkpoint's tokenizer_config.json says about chat formatting. */
export interface CheckpointChatConfig {
  /** Its `chat_template` (the one named `default` when it holds several), if any. */
  template?: string;
  /** Its special-token strings by HF name (`bos_token`, `eos_token`, ...). */
  specialTokens: Record<string, string>;
  /** The tokenizer_config.json it was read from (absent when the checkpoint has none). */
  source?: string;
}

/**
 * The bounds of one Jinja rendering. Real chat templates stay far below them: OLMo-2's renders a four-message
 * conversation in about 100 steps and a few hundred characters; a loop runs about 0.4 to 2 million steps per second
 * here, so the step bound ends a runaway loop within a few seconds.
 */
export const TEMPLATE_LIMITS = Object.freeze({
  /** Evaluation steps (every expression and statement evaluated counts one). */
  steps: 1_000_000,
  /** Characters of the strings the steps produce (a variable's value each time it is read), summed (16 Mi). */
  characters: 1 << 24,
  /** Items of the lists the steps produce, summed over the rendering (4 Mi). */
  listItems: 1 << 22,
  /** Items of one `range(...)` (the library builds the whole list before a loop starts). */
  rangeItems: 1_000_000,
  /** Wall-clock seconds: the last resort for steps that are slow each (a search of a long string). */
  seconds: 5,
});

/** The special-token names transformers passes to a chat template (its SPECIAL_TOKENS_ATTRIBUTES). */
const SPECIAL_TOKEN_NAMES = [
  "bos_token",
  "eos_token",
  "unk_token",
  "sep_token",
  "pad_token",
  "cls_token",
  "mask_token",
] as const;

/** OLMo-2's (dolma2's) end-of-text token; OLMo-2's tokenizer_config uses it as bos_token and eos_token alike. */
const ENDOFTEXT = "<|endoftext|>";

/**
 * Renders `messages` as one prompt string. With `template`, renders that Jinja template as transformers'
 * `apply_chat_template` does (variables `messages`, `add_generation_prompt` and the special tokens). Without, OLMo-2
 * Instruct's format, which is what its released chat_template renders:
 * `<|endoftext|>`, then per message `<|system|>\n{content}\n`, `<|user|>\n{content}\n` or
 * `<|assistant|>\n{content}<|endoftext|>` (plus `\n` unless it is the last message), then `<|assistant|>\n` when
 * `addGenerationPrompt` (and there is at least one message).
 */
export function applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions): string {
  return options.template === undefined
    ? olmo2ChatPrompt(messages, options.addGenerationPrompt)
    : renderJinjaChatTemplate(options.template, messages, options);
}

/** OLMo-2 Instruct's chat format (see `applyChatTemplate`). */
function olmo2ChatPrompt(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
  let out = ENDOFTEXT;
  messages.forEach((message, i) => {
    if (typeof message?.content !== "string") {
      throw new Error(`Chat message ${i} has no text content (content must be a string).`);
    }
    const last = i === messages.length - 1;
    switch (message.role) {
      case "system":
      case "user":
        out += `<|${message.role}|>\n${message.content}\n`;
        break;
      case "assistant":
        out += `<|assistant|>\n${message.content}${ENDOFTEXT}${last ? "" : "\n"}`;
        break;
      default:
        throw new Error(
          `Chat message ${i} has role ${JSON.stringify(message.role)}, which OLMo-2's chat format does not have ` +
            `(system, user, assistant).`,
        );
    }
    if (last && addGenerationPrompt) out += "<|assistant|>\n";
  });
  return out;
}

/** The bounds of one rendering (see {@link TEMPLATE_LIMITS}). */
export type TemplateLimits = { readonly [K in keyof typeof TEMPLATE_LIMITS]: number };

/** A bound of {@link TEMPLATE_LIMITS} was passed; the message ends the sentence "the chat template ...". */
class TemplateLimitError extends Error {}

/** A runtime value of the interpreter, as far as the bounds need to see it. */
type Value = ReturnType<Interpreter["evaluate"]>;

/** An interpreter that counts every evaluation step and what it produces, and stops past its limits. */
class BoundedInterpreter extends Interpreter {
  #steps = 0;
  #characters = 0;
  #listItems = 0;
  readonly #deadline: number;

  constructor(environment: Environment, readonly limits: TemplateLimits) {
    super(environment);
    this.#deadline = performance.now() + limits.seconds * 1000;
  }

  override evaluate(statement: Parameters<Interpreter["evaluate"]>[0], environment: Environment): Value {
    const limits = this.limits;
    if (++this.#steps > limits.steps) {
      throw new TemplateLimitError(`did not finish within ${limits.steps} steps (an endless loop?)`);
    }
    if (performance.now() > this.#deadline) throw new TemplateLimitError(`did not finish within ${limits.seconds} s`);
    const value = super.evaluate(statement, environment);
    if (typeof value.value === "string") {
      this.#characters += value.value.length;
      if (this.#characters > limits.characters) {
        throw new TemplateLimitError(`produced more than ${limits.characters} characters`);
      }
    } else if (Array.isArray(value.value)) {
      this.#listItems += value.value.length;
      if (this.#listItems > limits.listItems) {
        throw new TemplateLimitError(`produced more than ${limits.listItems} list items`);
      }
    }
    return value;
  }

  /** Refuses `range(...)` arguments (the library's) that make more than `limits.rangeItems` items. */
  checkRange([start, stop, step = 1]: unknown[]): void {
    const [from, to] = stop === undefined ? [0, start] : [start, stop];
    if (typeof from !== "number" || typeof to !== "number" || typeof step !== "number" || step === 0) return;
    const items = Math.ceil((to - from) / step);
    if (items > this.limits.rangeItems) {
      throw new TemplateLimitError(`asked range() for ${items} items, above the limit of ${this.limits.rangeItems}`);
    }
  }
}

let globals: ReadonlyMap<string, Value> | undefined;

/**
 * The global variables `Template.render` gives a template (true/false/none, raise_exception, range, strftime_now):
 * the library does not export them, so they are read once from the interpreter of an empty rendering.
 */
function libraryGlobals(): ReadonlyMap<string, Value> {
  if (globals) return globals;
  const run = Interpreter.prototype.run;
  let seen: Map<string, Value> | undefined;
  Interpreter.prototype.run = function (this: Interpreter, program) {
    seen = new Map(this.global.variables);
    return run.call(this, program);
  };
  try {
    new Template("").render({});
  } finally {
    Interpreter.prototype.run = run;
  }
  if (!seen?.has("range")) throw new Error("@huggingface/jinja: its global variables were not found");
  return globals = seen;
}

/** One line of an error's message (Jinja messages may span lines), as the end of a parenthesis. */
function reason(e: unknown): string {
  return sentenceEnd(e).replace(/\s*\n\s*/g, " ").replace(/\.$/, "");
}

/**
 * Renders a Jinja chat template with the variables transformers' apply_chat_template passes, as `Template.render`
 * does but through {@link BoundedInterpreter}. Every failure is a UserError naming `options.source`.
 */
function renderJinjaChatTemplate(
  source: string,
  messages: readonly ChatMessage[],
  options: ChatTemplateOptions,
): string {
  const what = options.source === undefined ? "The chat template" : `The chat_template of ${options.source}`;
  const fix = options.source === undefined ? "fix the template" : "fix it, or delete it to use OLMo-2's format";
  let template: Template;
  try {
    template = new Template(source);
  } catch (e) {
    throw new UserError(`${what} is not valid Jinja (${reason(e)}); ${fix}.`);
  }
  const environment = new Environment();
  for (const [name, value] of libraryGlobals()) environment.variables.set(name, value);
  const interpreter = new BoundedInterpreter(environment, { ...TEMPLATE_LIMITS, ...options.limits });
  // range() refuses long lists before the library builds them; its function value's class makes the wrapper.
  const range = environment.variables.get("range")!;
  const call = range.value as (args: Value[], scope: Environment) => Value;
  const FunctionValue = range.constructor as new (f: (args: Value[], scope: Environment) => Value) => Value;
  environment.variables.set(
    "range",
    new FunctionValue((args, scope) => {
      interpreter.checkRange(args.map((a) => a.value));
      return call(args, scope);
    }),
  );
  const variables = {
    eos_token: ENDOFTEXT,
    ...options.specialTokens,
    messages,
    add_generation_prompt: options.addGenerationPrompt,
  };
  for (const [name, value] of Object.entries(variables)) environment.set(name, value);
  try {
    return interpreter.run(template.parsed).value as string;
  } catch (e) {
    if (e instanceof TemplateLimitError) throw new UserError(`${what} ${e.message}; ${fix}.`);
    throw new UserError(`${what} failed to render (${reason(e)}); ${fix}.`);
  }
}

/**
 * The chat settings of a checkpoint directory from its tokenizer_config.json: its `chat_template` and special tokens.
 * A directory without that file (or no directory) gives `{ specialTokens: {} }`, i.e. OLMo-2's built-in format.
 */
export async function loadChatTemplateConfig(dir?: string): Promise<CheckpointChatConfig> {
  if (dir === undefined) return { specialTokens: {} };
  const path = join(dir, "tokenizer_config.json");
  if (!(await pathExists(path))) return { specialTokens: {} };
  const fields = await readJsonFile(path);
  if (!isJsonObject(fields)) throw new UserError(`${path} is not a JSON object.`);
  const specialTokens: Record<string, string> = {};
  for (const name of SPECIAL_TOKEN_NAMES) {
    const text = specialTokenText(fields[name]);
    if (text !== undefined) specialTokens[name] = text;
  }
  const template = chatTemplateOf(fields.chat_template, path);
  return template === undefined ? { specialTokens, source: path } : { template, specialTokens, source: path };
}

/** The template text of a tokenizer_config `chat_template` value: a string, or a list of `{name, template}`. */
function chatTemplateOf(value: unknown, path: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value.find((t) => t?.name === "default");
    if (typeof named?.template === "string") return named.template;
    throw new UserError(`${path} has several chat templates and none is named "default".`);
  }
  throw new UserError(`${path} has a chat_template that is neither a string nor a list of named templates.`);
}
