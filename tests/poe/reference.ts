/**
 * The real dolma2 tokenizer.json for tests: kept in ../shared beside the repository (data for tests, never copied into
 * it), loaded through @huggingface/tokenizers. Tests that need it are skipped, with a message, when it is absent.
 */

import { loadTokenizerFile, type Tokenizer } from "../../poe/tokenizer.ts";

/** Path of the real dolma2 tokenizer.json (OLMo-2's). */
export const DOLMA2_JSON = new URL("../../../shared/data/tokenizers/allenai_dolma2.json", import.meta.url).pathname;

/** Whether the real tokenizer.json is there. */
export const HAVE_DOLMA2_JSON: boolean = await Deno.stat(DOLMA2_JSON).then(() => true, () => false);
if (!HAVE_DOLMA2_JSON) {
  console.warn(`${DOLMA2_JSON} is absent, so the tests against the real dolma2 tokenizer.json are skipped.`);
}

let reference: Promise<Tokenizer> | undefined;

/** The real tokenizer.json through @huggingface/tokenizers (loaded once per test file: ~0.7 s). */
export function referenceTokenizer(): Promise<Tokenizer> {
  return reference ??= loadTokenizerFile(DOLMA2_JSON);
}

/** Registers a test that needs the real tokenizer.json; it is reported as ignored when the file is absent. */
export function referenceTest(name: string, fn: (hf: Tokenizer) => Promise<void> | void): void {
  Deno.test({ name, ignore: !HAVE_DOLMA2_JSON, fn: async () => fn(await referenceTokenizer()) });
}
