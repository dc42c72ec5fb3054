/**
 * The prompt of a run, prepared before any GPU work: the tokenizer and chat template of a checkpoint directory (or
 * the built-in dolma2 tokenizer and OLMo-2's format), the user's text rendered as one chat turn, and its token ids.
 * `deno task generate` and the benchmark call {@link preparePrompt} first, so that a missing or broken tokenizer.json,
 * tokenizer_config.json or chat_template ends the run with one sentence before weights are loaded or anything is
 * timed.
 * @module
 */

import { UserError } from "../common/errors.ts";
import { type CheckpointChatConfig, loadChatTemplateConfig } from "./chat_template.ts";
import { userPrompt } from "./poe.ts";
import { loadTokenizer, type Tokenizer } from "./tokenizer.ts";

/** A prompt ready for the model. */
export interface PreparedPrompt {
  /** The tokenizer that encoded it (decode the output with it). */
  tokenizer: Tokenizer;
  /** The chat settings it was rendered with (a PoE decoder built with them renders the same prompt). */
  chat: CheckpointChatConfig;
  /** The text that was tokenized: the chat-formatted prompt, or the user's text as is without `chat`. */
  text: string;
  /** Its token ids (no BOS added beyond what the chat format writes). */
  ids: number[];
}

/**
 * Loads the tokenizer and chat settings of checkpoint directory `dir` (built-in ones when `dir` is undefined or has no
 * tokenizer.json / tokenizer_config.json), renders `userText` as one user turn followed by the opening of the
 * assistant's (unless `chat` is false), and tokenizes it. Every problem with the directory's files, the template or
 * the text is a UserError; the result is never an empty prompt.
 */
export async function preparePrompt(
  dir: string | undefined,
  userText: string,
  { chat = true }: { chat?: boolean } = {},
): Promise<PreparedPrompt> {
  const tokenizer = await loadTokenizer(dir);
  const chatConfig = await loadChatTemplateConfig(dir);
  const text = chat ? userPrompt(userText, chatConfig) : userText;
  const ids = tokenizer.encode(text);
  if (ids.length === 0) {
    throw new UserError(
      chat
        ? `The chat template${
          chatConfig.source ? ` of ${chatConfig.source}` : ""
        } renders the prompt as empty text; fix it.`
        : "The prompt is empty; give some text to generate from.",
    );
  }
  return { tokenizer, chat: chatConfig, text, ids };
}
