/**
 * `deno task tokenize [--tokenizer FILE] TEXT`: prints the token ids of TEXT as one line of JSON.
 *
 * Without `--tokenizer` the built-in dolma2 (OLMo-2) tokenizer is used; FILE is a Hugging Face tokenizer.json (its
 * tokenizer_config.json beside it is read too) or a checkpoint directory holding one. Added tokens such as
 * `<|endoftext|>` in TEXT are matched literally, as the model's prompts are tokenized. Exit codes: 0 done, 1 the
 * tokenizer cannot be loaded, 2 bad command line.
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { isDirectory } from "../common/files.ts";
import { join } from "@std/path";
import { dolma2Tokenizer, loadTokenizerFile, type Tokenizer } from "../poe/tokenizer.ts";

/** The one-line usage. */
export const USAGE = "usage: deno task tokenize [--tokenizer FILE] TEXT   (use -- before a TEXT that starts with -)";

/** A command-line mistake: reported as one sentence with exit code 2. */
export class UsageError extends Error {}

/** What the command line asks for. */
export interface TokenizeRequest {
  /** The text to tokenize. */
  text: string;
  /** A tokenizer.json file or checkpoint directory; the built-in dolma2 tokenizer when absent. */
  tokenizer?: string;
}

/** Parses the arguments; `"help"` for `--help`. Throws `UsageError` (one sentence) on a bad command line. */
export function parseTokenizeArgs(args: readonly string[]): TokenizeRequest | "help" {
  const unknownFlags: string[] = [];
  const parsed = parseArgs([...args], {
    string: ["tokenizer", "_"], // "_": positional arguments stay strings ("007" is not the number 7)
    boolean: ["help"],
    alias: { h: "help" },
    unknown: (arg: string, key?: string) => {
      if (key === undefined) return true; // a positional argument
      unknownFlags.push(arg);
      return false;
    },
  });
  if (unknownFlags.length > 0) {
    throw new UsageError(`Unknown option ${unknownFlags[0]}; the only options are --tokenizer FILE and --help.`);
  }
  if (parsed.help) return "help";
  if (parsed.tokenizer === "") {
    throw new UsageError("--tokenizer needs a FILE (a tokenizer.json or checkpoint directory).");
  }
  const texts = parsed._.map(String);
  if (texts.length !== 1) {
    throw new UsageError(
      texts.length === 0
        ? "Give the TEXT to tokenize."
        : `Give exactly one TEXT (quote it), not ${texts.length} arguments.`,
    );
  }
  return { text: texts[0], tokenizer: parsed.tokenizer };
}

/**
 * Loads the tokenizer a request names: a tokenizer.json file, or a checkpoint directory's (which must have one: a
 * tokenizer named on the command line never silently falls back), or the built-in one when none is named.
 */
async function requestedTokenizer(path: string | undefined): Promise<Tokenizer> {
  if (path === undefined) return dolma2Tokenizer();
  return await loadTokenizerFile((await isDirectory(path)) ? join(path, "tokenizer.json") : path);
}

/** Runs the command; returns the exit code. `print` gets stdout lines, `report` stderr lines. */
export async function main(
  args: readonly string[],
  print: (line: string) => void = console.log,
  report: (line: string) => void = console.error,
): Promise<number> {
  let request: TokenizeRequest | "help";
  try {
    request = parseTokenizeArgs(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    report(`tokenize: ${e.message}`);
    report(USAGE);
    return 2;
  }
  if (request === "help") {
    print(USAGE);
    return 0;
  }
  let tokenizer: Tokenizer;
  try {
    tokenizer = await requestedTokenizer(request.tokenizer);
  } catch (e) {
    report(`tokenize: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
  print(JSON.stringify(tokenizer.encode(request.text)));
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
