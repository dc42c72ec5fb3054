/**
 * Tokenizers: the dolma2 tokenizer of OLMo-2, built in (cl100k_base ranks + 22 added tokens), and any Hugging Face
 * `tokenizer.json` a checkpoint directory brings, loaded through `@huggingface/tokenizers`.
 *
 * Both follow what HF `tokenizers` does with `add_special_tokens=False` (how a chat-templated prompt is tokenized):
 * added tokens are matched literally anywhere in the raw text, special or not (longest match first), the text between
 * them is split by the pre-tokenizer regex and byte-level BPE-encoded, and nothing (no BOS) is added. Decoding keeps
 * special tokens, so `decode(encode(text)) === text` for any well-formed string.
 *
 * A tokenizer file that cannot be used, and an id outside the vocabulary, are UserErrors (one sentence naming the
 * file); the built-in tokenizer's own inconsistencies are bugs (plain errors). Its encoding takes O(n log n) time in
 * the length of the text, however the text repeats (see `BpeTokenizer`).
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

/**
 * The error for an id a tokenizer cannot decode: the ids came from the user, or from a model whose vocabulary is not
 * the tokenizer's.
 */
function outsideVocabulary(id: number, source: string): UserError {
  return new UserError(
    `Token id ${id} is not in the vocabulary of ${source}; use the tokenizer that belongs to the model.`,
  );
}

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
      if (bytes === undefined) throw outsideVocabulary(id, this.source);
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
   * Appends the ids of one piece (a binary string of >= 2 bytes that is not itself a token): repeatedly merges the
   * adjacent pair of parts whose concatenation has the lowest rank, leftmost on ties, until no pair is a token.
   *
   * The pairs wait in a min-heap keyed by (rank, start of the left part); parts form a linked list indexed by their
   * first byte. A merge changes only the pairs on either side of the merged part, so a piece of n bytes costs
   * O(n log n), not the O(n^2) of rescanning every pair per merge (tiktoken's loop): a pre-token can be as long as the
   * input (64 KiB of one letter took 5 s that way, 1 MiB 385 s; now 1 MiB takes 0.6-1.2 s). A heap entry is current
   * while its part is alive and the rank stored for the part is still the entry's: a rank names one token, hence one
   * span, so a changed pair never keeps its old rank, and nothing merges twice. The arrays are reused between pieces.
   */
  #bytePairEncode(piece: string, ids: number[]): void {
    const ranks = this.#ranks, n = piece.length;
    const { next, prev, pairRank, heap } = mergeScratch(n);
    const rankOf = (i: number): number =>
      next[i] >= n ? Infinity : ranks.get(piece.slice(i, next[next[i]])) ?? Infinity;
    for (let i = 0; i < n; i++) {
      next[i] = i + 1;
      prev[i] = i - 1;
    }
    heap.clear(n);
    for (let i = 0; i < n; i++) {
      pairRank[i] = rankOf(i);
      if (pairRank[i] !== Infinity) heap.push(pairRank[i], i);
    }
    while (heap.size > 0) {
      const i = heap.pop(), rank = heap.poppedRank;
      if (pairRank[i] !== rank) continue; // stale: the part was merged away or its pair changed
      const j = next[i];
      next[i] = next[j];
      if (next[j] < n) prev[next[j]] = i;
      pairRank[j] = NaN; // the part at j is gone: no entry of its matches any more
      pairRank[i] = rankOf(i);
      if (pairRank[i] !== Infinity) heap.push(pairRank[i], i);
      const p = prev[i];
      if (p >= 0) {
        pairRank[p] = rankOf(p);
        if (pairRank[p] !== Infinity) heap.push(pairRank[p], p);
      }
    }
    for (let i = 0; i < n; i = next[i]) ids.push(ranks.get(piece.slice(i, next[i]))!);
  }
}

/** The merge's working arrays for a piece of `n` bytes, kept between pieces (encoding is synchronous). */
function mergeScratch(n: number): { next: Int32Array; prev: Int32Array; pairRank: Float64Array; heap: MinHeap } {
  if (scratch.next.length < n) {
    const size = Math.max(n, 2 * scratch.next.length);
    scratch.next = new Int32Array(size);
    scratch.prev = new Int32Array(size);
    scratch.pairRank = new Float64Array(size);
  }
  return scratch;
}

/**
 * A binary min-heap of (rank, index) pairs ordered by rank, then index, each stored as one float64 key:
 * rank * stride + index, exact below 2^53 (ranks < 2^21 and indexes < stride <= 2^32 here).
 */
class MinHeap {
  #keys = new Float64Array(256);
  #stride = 1;
  /** Entries held. */
  size = 0;
  /** The rank of the entry {@link pop} returned last. */
  poppedRank = 0;

  /** Empties the heap for indexes 0..maxIndex. */
  clear(maxIndex: number): void {
    this.size = 0;
    this.#stride = maxIndex + 1;
  }

  push(rank: number, index: number): void {
    if (this.size === this.#keys.length) {
      const grown = new Float64Array(this.size * 2);
      grown.set(this.#keys);
      this.#keys = grown;
    }
    const keys = this.#keys, key = rank * this.#stride + index;
    let at = this.size++;
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (keys[parent] <= key) break;
      keys[at] = keys[parent];
      at = parent;
    }
    keys[at] = key;
  }

  /** Removes the smallest entry and returns its index (its rank goes to {@link poppedRank}). */
  pop(): number {
    const keys = this.#keys, top = keys[0], last = keys[--this.size];
    let at = 0;
    for (;;) {
      let child = 2 * at + 1;
      if (child >= this.size) break;
      if (child + 1 < this.size && keys[child + 1] < keys[child]) child++;
      if (keys[child] >= last) break;
      keys[at] = keys[child];
      at = child;
    }
    keys[at] = last;
    const index = top % this.#stride;
    this.poppedRank = (top - index) / this.#stride;
    return index;
  }
}

const scratch = {
  next: new Int32Array(256),
  prev: new Int32Array(256),
  pairRank: new Float64Array(256),
  heap: new MinHeap(),
};

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
      throw new UserError(
        `${source} is not a Hugging Face tokenizer.json (it needs "model" and "added_tokens"); replace the file.`,
      );
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
    try {
      return this.#tokenizer.encode(text, { add_special_tokens: false }).ids;
    } catch (e) {
      throw new UserError(`${this.source} failed to tokenize a text: ${sentenceEnd(e)}`);
    }
  }

  /** The text of `ids`, special tokens included. */
  decode(ids: readonly number[]): string {
    if (ids.length === 0) return "";
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || this.#tokenizer.id_to_token(id) === undefined) {
        throw outsideVocabulary(id, this.source);
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
  if (!info.isDirectory) {
    throw new UserError(`${dir} is not a directory; give the checkpoint directory that holds tokenizer.json.`);
  }
  const path = join(dir, "tokenizer.json");
  return await pathExists(path) ? await loadTokenizerFile(path) : dolma2Tokenizer();
}
