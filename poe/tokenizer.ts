/**
 * Tokenizers: the dolma2 tokenizer of OLMo-2, built in (cl100k_base ranks + 22 added tokens), and any Hugging Face
 * `tokenizer.json` a checkpoint directory brings, loaded through `@huggingface/tokenizers`.
 *
 * Both follow what HF `tokenizers` does with `add_special_tokens=False` (how a chat-templated prompt is tokenized):
 * added tokens are matched literally anywhere in the raw text, special or not (longest match first), the text between
 * them is split by the pre-tokenizer regex and byte-level BPE-encoded, and nothing (no BOS) is added. Decoding keeps
 * special tokens, so `decode(encode(text)) === text` for any well-formed string.
 * @module
 */

import { Tokenizer as HfLibraryTokenizer } from "@huggingface/tokenizers";
import cl100kBase from "js-tiktoken/ranks/cl100k_base";
import { dirname, join } from "@std/path";
import { UserError } from "../common/errors.ts";
import { fsFailure, isJsonObject, pathExists, readJsonFile, sentenceEnd } from "../common/files.ts";

/** A text tokenizer: what the decoder and the tools need. */
export interface Tokenizer {
  /** The token ids of `text` (no BOS or EOS is added). */
  encode(text: string): number[];
  /** The text of `ids`; bytes that are not valid UTF-8 become U+FFFD. Throws on an id outside the vocabulary. */
  decode(ids: readonly number[]): string;
  /** The end-of-sequence token id (100257, `<|endoftext|>`, for dolma2). */
  readonly eosId: number;
  /** Number of token ids it can emit: largest id + 1 (100278 for dolma2, below the 100352 padded embedding rows). */
  readonly vocabSize: number;
  /** Where the tokenizer came from: a tokenizer.json path, or `built-in dolma2`. */
  readonly source: string;
}

/** The 22 tokens dolma2 adds after cl100k_base's 100256 ranks, with their ids (from OLMo-2's tokenizer.json). */
export const DOLMA2_ADDED_TOKENS: Readonly<Record<string, number>> = Object.freeze({
  "<|extra_id_0|>": 100256,
  "<|endoftext|>": 100257,
  "<|fim_prefix|>": 100258,
  "<|fim_middle|>": 100259,
  "<|fim_suffix|>": 100260,
  "|||PHONE_NUMBER|||": 100261,
  "|||EMAIL_ADDRESS|||": 100262,
  "|||IP_ADDRESS|||": 100263,
  "<|im_start|>": 100264,
  "<|im_end|>": 100265,
  "<|extra_id_1|>": 100266,
  "<|extra_id_2|>": 100267,
  "<|extra_id_3|>": 100268,
  "<|extra_id_4|>": 100269,
  "<|extra_id_5|>": 100270,
  "<|extra_id_6|>": 100271,
  "<|extra_id_7|>": 100272,
  "<|extra_id_8|>": 100273,
  "<|extra_id_9|>": 100274,
  "<|extra_id_10|>": 100275,
  "<|endofprompt|>": 100276,
  "<|pad|>": 100277,
});

/** dolma2's end-of-sequence token, `<|endoftext|>`. */
export const DOLMA2_EOS_ID = 100257;

/**
 * dolma2's pre-tokenizer split regex (cl100k_base's), as its tokenizer.json writes it for Oniguruma, with `\s`/`\S`
 * spelled `\p{White_Space}`/`\P{White_Space}`: Oniguruma's `\s` is the Unicode White_Space set (it includes U+0085
 * and not U+FEFF), JavaScript's `\s` is not. Use with the `gu` flags.
 */
export const DOLMA2_SPLIT_PATTERN = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}` +
  String.raw`| ?[^\p{White_Space}\p{L}\p{N}]+[\r\n]*|\p{White_Space}*[\r\n]+|\p{White_Space}+(?!\P{White_Space})` +
  String.raw`|\p{White_Space}+`;

const utf8Encoder = new TextEncoder();
// Not fatal: invalid bytes decode to U+FFFD, as in HF's byte-level decoder. ignoreBOM keeps a leading U+FEFF.
const utf8Decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const ASCII_ONLY = /^\p{ASCII}*$/u;

/** The UTF-8 bytes of `text` as a binary string (one char per byte, code 0..255): the key type of the rank map. */
function utf8BinaryString(text: string): string {
  if (ASCII_ONLY.test(text)) return text;
  const bytes = utf8Encoder.encode(text);
  let out = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return out;
}

/** The bytes of a binary string (inverse of `utf8BinaryString` before decoding). */
function binaryStringBytes(binary: string): Uint8Array {
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** A regex matching any of `literals` (longest first at a given position, as HF's added-token matcher). */
function literalAlternation(literals: readonly string[]): RegExp {
  const escaped = [...literals].sort((a, b) => b.length - a.length)
    .map((s) => s.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&"));
  return new RegExp(escaped.join("|"), "gu");
}

/**
 * A byte-level BPE tokenizer with tiktoken semantics: pieces from a split regex, then repeated merging of the adjacent
 * pair whose concatenation has the lowest rank (leftmost on ties), plus literal added tokens.
 */
export class BpeTokenizer implements Tokenizer {
  readonly eosId: number;
  readonly vocabSize: number;
  readonly source: string;
  readonly #ranks: Map<string, number>;
  readonly #idBytes: string[];
  readonly #split: RegExp;
  readonly #added: Map<string, number>;
  readonly #addedPattern: RegExp | null;

  /**
   * @param ranks byte string (binary string, one char per byte) -> rank; ranks are the token ids.
   * @param splitPattern the pre-tokenizer regex source (compiled with `gu`).
   * @param addedTokens literal text -> id of tokens matched before splitting; ids must not collide with ranks.
   * @param eosId the end-of-sequence id.
   * @param source a description for `Tokenizer.source`.
   */
  constructor(
    ranks: Map<string, number>,
    splitPattern: string,
    addedTokens: Readonly<Record<string, number>>,
    eosId: number,
    source: string,
  ) {
    this.#ranks = ranks;
    this.#split = new RegExp(splitPattern, "gu");
    this.#added = new Map(Object.entries(addedTokens));
    this.#addedPattern = this.#added.size > 0 ? literalAlternation([...this.#added.keys()]) : null;
    let maxId = -1;
    for (const id of ranks.values()) maxId = Math.max(maxId, id);
    for (const id of this.#added.values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.#idBytes = new Array<string>(this.vocabSize);
    for (const [bytes, id] of ranks) this.#idBytes[id] = bytes;
    for (const [text, id] of this.#added) {
      if (this.#idBytes[id] !== undefined) {
        throw new Error(`BpeTokenizer: added token ${JSON.stringify(text)} reuses id ${id}.`);
      }
      this.#idBytes[id] = utf8BinaryString(text);
    }
    if (this.#idBytes[eosId] === undefined) throw new Error(`BpeTokenizer: the eos id ${eosId} is not a token.`);
    this.eosId = eosId;
    this.source = source;
  }

  /** The token ids of `text`. */
  encode(text: string): number[] {
    const ids: number[] = [];
    let start = 0;
    if (this.#addedPattern) {
      for (const m of text.matchAll(this.#addedPattern)) {
        this.#encodeOrdinary(text.slice(start, m.index), ids);
        ids.push(this.#added.get(m[0])!);
        start = m.index + m[0].length;
      }
    }
    this.#encodeOrdinary(text.slice(start), ids);
    return ids;
  }

  /** The text of `ids`. */
  decode(ids: readonly number[]): string {
    let binary = "";
    for (const id of ids) {
      const bytes = Number.isInteger(id) ? this.#idBytes[id] : undefined;
      if (bytes === undefined) throw new Error(`Token id ${id} is not in the vocabulary of ${this.source}.`);
      binary += bytes;
    }
    return utf8Decoder.decode(binaryStringBytes(binary));
  }

  /** Appends the ids of `text`, which holds no added token. */
  #encodeOrdinary(text: string, ids: number[]): void {
    if (text.length === 0) return;
    for (const m of text.matchAll(this.#split)) {
      const piece = utf8BinaryString(m[0]);
      const whole = this.#ranks.get(piece);
      if (whole !== undefined) ids.push(whole);
      else this.#bytePairEncode(piece, ids);
    }
  }

  /**
   * Appends the ids of one piece (a binary string of >= 2 bytes that is not itself a token). `bounds` holds the start
   * of each part plus the end; `pairRanks[i]` is the rank of parts i and i+1 merged (Infinity when not a token).
   * O(bytes^2) per piece, as tiktoken; pieces are words, so short, except long whitespace or symbol runs.
   */
  #bytePairEncode(piece: string, ids: number[]): void {
    const ranks = this.#ranks;
    const bounds: number[] = [];
    for (let i = 0; i <= piece.length; i++) bounds.push(i);
    const pairRank = (i: number): number => ranks.get(piece.slice(bounds[i], bounds[i + 2])) ?? Infinity;
    const pairRanks: number[] = [];
    for (let i = 0; i + 2 < bounds.length; i++) pairRanks.push(pairRank(i));
    while (pairRanks.length > 0) {
      let best = 0;
      for (let i = 1; i < pairRanks.length; i++) if (pairRanks[i] < pairRanks[best]) best = i;
      if (pairRanks[best] === Infinity) break;
      bounds.splice(best + 1, 1);
      pairRanks.splice(best, 1);
      if (best < pairRanks.length) pairRanks[best] = pairRank(best);
      if (best > 0) pairRanks[best - 1] = pairRank(best - 1);
    }
    for (let i = 0; i + 1 < bounds.length; i++) ids.push(ranks.get(piece.slice(bounds[i], bounds[i + 1]))!);
  }
}

/** Parses tiktoken ranks as js-tiktoken ships them: lines of `<name> <first rank> <base64 token>...`. */
function parseTiktokenRanks(compressed: string): Map<string, number> {
  const ranks = new Map<string, number>();
  for (const line of compressed.split("\n")) {
    if (line.length === 0) continue;
    const fields = line.split(" ");
    const first = Number.parseInt(fields[1], 10);
    for (let i = 2; i < fields.length; i++) ranks.set(atob(fields[i]), first + i - 2);
  }
  return ranks;
}

let dolma2: BpeTokenizer | undefined;

/**
 * The dolma2 tokenizer of OLMo-2, built from js-tiktoken's cl100k_base ranks (ids 0..100255) and the 22 added tokens
 * (100256..100277). Built once per process (about 0.2 s) and shared: it is immutable.
 */
export function dolma2Tokenizer(): BpeTokenizer {
  dolma2 ??= new BpeTokenizer(
    parseTiktokenRanks(cl100kBase.bpe_ranks),
    DOLMA2_SPLIT_PATTERN,
    DOLMA2_ADDED_TOKENS,
    DOLMA2_EOS_ID,
    "built-in dolma2",
  );
  return dolma2;
}

/** The text of a special-token entry of tokenizer_config.json (a string or an AddedToken object), if any. */
export function specialTokenText(entry: unknown): string | undefined {
  if (typeof entry === "string") return entry;
  return isJsonObject(entry) && typeof entry.content === "string" ? entry.content : undefined;
}

/** A tokenizer.json loaded through `@huggingface/tokenizers`. */
export class HfTokenizer implements Tokenizer {
  readonly eosId: number;
  readonly vocabSize: number;
  readonly source: string;
  readonly #tokenizer: HfLibraryTokenizer;
  readonly #cleanUpSpaces: boolean;

  /**
   * @param tokenizerJson the parsed tokenizer.json.
   * @param config the parsed tokenizer_config.json (`{}` when the checkpoint has none).
   * @param source where it came from, for messages.
   */
  constructor(tokenizerJson: unknown, config: unknown, source: string) {
    if (
      !isJsonObject(tokenizerJson) || !isJsonObject(tokenizerJson.model) || !Array.isArray(tokenizerJson.added_tokens)
    ) {
      throw new UserError(`${source} is not a Hugging Face tokenizer.json (it needs "model" and "added_tokens").`);
    }
    const cfg = isJsonObject(config) ? config : {};
    try {
      this.#tokenizer = new HfLibraryTokenizer(tokenizerJson, cfg);
    } catch (e) {
      throw new UserError(`${source} could not be loaded as a tokenizer: ${sentenceEnd(e)}`);
    }
    this.source = source;
    // transformers' default since 4.45 is false; true would turn " ." into "." and break decode(encode(x)) === x.
    this.#cleanUpSpaces = cfg.clean_up_tokenization_spaces === true;
    let maxId = -1;
    for (const id of this.#tokenizer.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    const eosText = specialTokenText(cfg.eos_token) ?? "<|endoftext|>";
    const eosId = this.#tokenizer.token_to_id(eosText);
    if (eosId === undefined) {
      throw new UserError(`${source} has no token ${JSON.stringify(eosText)} to use as end of sequence.`);
    }
    this.eosId = eosId;
  }

  /** The token ids of `text`, without the post-processor's special tokens (as HF with add_special_tokens=False). */
  encode(text: string): number[] {
    return this.#tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /** The text of `ids`, special tokens included. */
  decode(ids: readonly number[]): string {
    if (ids.length === 0) return "";
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || this.#tokenizer.id_to_token(id) === undefined) {
        throw new Error(`Token id ${id} is not in the vocabulary of ${this.source}.`);
      }
    }
    return this.#tokenizer.decode([...ids], {
      skip_special_tokens: false,
      clean_up_tokenization_spaces: this.#cleanUpSpaces,
    });
  }
}

/**
 * Loads a tokenizer.json file through `@huggingface/tokenizers`, with the tokenizer_config.json next to it when there
 * is one (it names the eos token and decoding options).
 */
export async function loadTokenizerFile(tokenizerJsonPath: string): Promise<HfTokenizer> {
  const json = await readJsonFile(tokenizerJsonPath);
  const configPath = join(dirname(tokenizerJsonPath), "tokenizer_config.json");
  const config = await pathExists(configPath) ? await readJsonFile(configPath) : {};
  return new HfTokenizer(json, config, tokenizerJsonPath);
}

/**
 * The tokenizer of a checkpoint directory: `dir/tokenizer.json` when it exists, else the built-in dolma2 tokenizer
 * (also when `dir` is omitted). A tokenizer.json that exists but cannot be read or parsed is an error, not a fallback.
 */
export async function loadTokenizer(dir?: string): Promise<Tokenizer> {
  if (dir === undefined) return dolma2Tokenizer();
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (e) {
    throw new UserError(`Cannot read checkpoint directory ${dir}: ${fsFailure(e)}`);
  }
  if (!info.isDirectory) throw new UserError(`${dir} is not a directory (give the checkpoint directory).`);
  const path = join(dir, "tokenizer.json");
  return await pathExists(path) ? await loadTokenizerFile(path) : dolma2Tokenizer();
}
