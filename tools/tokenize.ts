/**
 * `deno task tokenize [--tokenizer FILE] (TEXT | --file PATH | -)`: prints the token ids of a text as one line of
 * JSON.
 *
 * The text is TEXT, the contents of PATH, or standard input (`-`, or no TEXT while stdin is a pipe or a file); files
 * and stdin must be UTF-8 and are tokenized byte for byte as given (a final newline included). Without `--tokenizer`
 * the built-in dolma2 (OLMo-2) tokenizer is used; FILE is a Hugging Face tokenizer.json (its tokenizer_config.json
 * beside it is read too) or a checkpoint directory holding one. Added tokens such as `<|endoftext|>` in the text are
 * matched literally, as the model's prompts are tokenized. Exit codes: 0 done, 2 a bad command line, an unreadable
 * input or an unusable tokenizer (one sentence on stderr).
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { join } from "@std/path";
import { UserError } from "../common/errors.ts";
import { fsFailure, isDirectory } from "../common/files.ts";
import { dolma2Tokenizer, loadTokenizerFile, type Tokenizer } from "../poe/tokenizer.ts";

/** The usage lines. */
export const USAGE = "usage: deno task tokenize [--tokenizer FILE] (TEXT | --file PATH | -)\n" +
  "  TEXT is tokenized as given (use -- before a TEXT that starts with -); --file PATH, - or a pipe on stdin give " +
  "UTF-8 text to tokenize byte for byte";

/** Where the text comes from. */
export type TextSource = { text: string } | { file: string } | { stdin: true };

/** What the command line asks for. */
export interface TokenizeRequest {
  /** The text, or where to read it. */
  input: TextSource;
  /** A tokenizer.json file or checkpoint directory; the built-in dolma2 tokenizer when absent. */
  tokenizer?: string;
}

/** Standard input as the tool needs it (injectable for tests). */
export interface Stdin {
  /** Whether it is a terminal (then nothing is piped, and no TEXT is a mistake). */
  isTerminal(): boolean;
  /** Its bytes. */
  readonly readable: ReadableStream<Uint8Array>;
}

/**
 * Parses the arguments; `"help"` for `--help`. `stdinIsTerminal` decides what no TEXT means: read stdin (a pipe or a
 * file) or a mistake (a terminal). Throws a UserError (one sentence) on a bad command line.
 */
export function parseTokenizeArgs(args: readonly string[], stdinIsTerminal = true): TokenizeRequest | "help" {
  const unknownFlags: string[] = [];
  const parsed = parseArgs([...args], {
    string: ["tokenizer", "file", "_"], // "_": positional arguments stay strings ("007" is not the number 7)
    boolean: ["help"],
    alias: { h: "help" },
    unknown: (arg: string, key?: string) => {
      if (key === undefined) return true; // a positional argument
      unknownFlags.push(arg);
      return false;
    },
  });
  if (unknownFlags.length > 0) {
    throw new UserError(
      `Unknown option ${unknownFlags[0]}; the only options are --tokenizer FILE, --file PATH and --help.`,
    );
  }
  if (parsed.help) return "help";
  if (parsed.tokenizer === "") {
    throw new UserError("--tokenizer needs a FILE (a tokenizer.json or checkpoint directory).");
  }
  if (parsed.file === "") throw new UserError("--file needs the PATH of a UTF-8 text file.");
  const texts = parsed._.map(String);
  if (texts.length > 1) throw new UserError(`Give exactly one TEXT (quote it), not ${texts.length} arguments.`);
  const tokenizer = parsed.tokenizer;
  if (parsed.file !== undefined) {
    if (texts.length > 0) throw new UserError("Give either TEXT or --file PATH, not both.");
    return { input: { file: parsed.file }, tokenizer };
  }
  // A lone "-" means stdin (as for cat); a text that is just "-" can be piped.
  if (texts.length === 1) return { input: texts[0] === "-" ? { stdin: true } : { text: texts[0] }, tokenizer };
  if (stdinIsTerminal) throw new UserError("Give the TEXT to tokenize, --file PATH, or pipe the text on stdin.");
  return { input: { stdin: true }, tokenizer };
}

/** Decodes UTF-8 bytes exactly: a byte-order mark stays a character, invalid bytes are an error naming `what`. */
function utf8Text(bytes: Uint8Array, what: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new UserError(`${what} is not UTF-8 text; convert it to UTF-8 (e.g. with iconv) and run again.`);
  }
}

/** The text a request names. */
async function readInput(input: TextSource, stdin: Stdin): Promise<string> {
  if ("text" in input) return input.text;
  if ("file" in input) {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(input.file);
    } catch (e) {
      throw new UserError(`Cannot read ${input.file}: ${fsFailure(e)}`);
    }
    return utf8Text(bytes, input.file);
  }
  return utf8Text(new Uint8Array(await new Response(stdin.readable).arrayBuffer()), "Standard input");
}

/**
 * Loads the tokenizer a request names: a tokenizer.json file, or a checkpoint directory's (which must have one: a
 * tokenizer named on the command line never silently falls back), or the built-in one when none is named.
 */
async function requestedTokenizer(path: string | undefined): Promise<Tokenizer> {
  if (path === undefined) return dolma2Tokenizer();
  return await loadTokenizerFile((await isDirectory(path)) ? join(path, "tokenizer.json") : path);
}

/**
 * Runs the command; returns the exit code. `print` gets stdout lines, `report` stderr lines, `stdin` is read for `-`
 * or when no TEXT is given and it is not a terminal.
 */
export async function main(
  args: readonly string[],
  print: (line: string) => void = console.log,
  report: (line: string) => void = console.error,
  stdin: Stdin = Deno.stdin,
): Promise<number> {
  let request: TokenizeRequest | "help";
  try {
    request = parseTokenizeArgs(args, stdin.isTerminal());
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    report(`tokenize: ${e.message}`);
    report(USAGE);
    return 2;
  }
  if (request === "help") {
    print(USAGE);
    return 0;
  }
  try {
    const tokenizer = await requestedTokenizer(request.tokenizer);
    print(JSON.stringify(tokenizer.encode(await readInput(request.input, stdin))));
    return 0;
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    report(`tokenize: ${e.message}`);
    return 2;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
