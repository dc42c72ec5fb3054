/**
 * Chat templates: a checkpoint's own Jinja `chat_template` (from tokenizer_config.json), rendered with
 * `@huggingface/jinja` and the variables HF transformers passes, or, when it has none, OLMo-2 Instruct's (Tulu) format.
 * @module
 */

import { Template } from "@huggingface/jinja";
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
}

/** What a checkpoint's tokenizer_config.json says about chat formatting. */
export interface CheckpointChatConfig {
  /** Its `chat_template` (the one named `default` when it holds several), if any. */
  template?: string;
  /** Its special-token strings by HF name (`bos_token`, `eos_token`, ...). */
  specialTokens: Record<string, string>;
}

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

/** Renders a Jinja chat template with the variables transformers' apply_chat_template passes. */
function renderJinjaChatTemplate(
  source: string,
  messages: readonly ChatMessage[],
  options: ChatTemplateOptions,
): string {
  let template: Template;
  try {
    template = new Template(source);
  } catch (e) {
    throw new UserError(`The chat template is not valid Jinja: ${sentenceEnd(e)}`);
  }
  try {
    return template.render({
      eos_token: ENDOFTEXT,
      ...options.specialTokens,
      messages,
      add_generation_prompt: options.addGenerationPrompt,
    });
  } catch (e) {
    throw new UserError(`The chat template failed to render: ${sentenceEnd(e)}`);
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
  return { template: chatTemplateOf(fields.chat_template, path), specialTokens };
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
