/**
 * Helpers of the model-loading tests: temporary directories, a small valid config, deterministic tensor values, and
 * `assertUserError`, which checks that bad input is refused with one clear sentence naming the file.
 */

import { assert, assertInstanceOf, assertStringIncludes } from "@std/assert";
import { UserError } from "../../common/errors.ts";
import type { ModelConfig } from "../../model/config.ts";
import type { TensorSpec } from "../../model/checkpoint.ts";
import { Rng } from "../../kernels/testing/harness.ts";

/**
 * The smallest config `validateConfig` accepts: one head of the real width 64 needs d >= 64, so 2 heads of 64
 * (d 128), F 64, 2 layers, 100 token ids padded to 128 rows. Keeps fixture files around 0.3 MB.
 */
export const MICRO: Readonly<ModelConfig> = {
  name: "micro",
  dModel: 128,
  nLayers: 2,
  nHeads: 2,
  nKvHeads: 2,
  headDim: 64,
  ffnHidden: 64,
  vocabSize: 100,
  paddedVocab: 128,
  ropeTheta: 500000,
  rmsNormEps: 1e-6,
  maxContext: 256,
  tieEmbeddings: false,
};

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
export async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "hydra_ckpt_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A stable seed from a string (FNV-1a). */
export function seedOf(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Deterministic values of a tensor (seeded by its canonical name), so two checkpoints can be compared. */
export function valuesOf(spec: Pick<TensorSpec, "name">, shape: readonly number[]): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  return new Rng(seedOf(spec.name)).normals(n, 0.5);
}

/**
 * Awaits `fn`, asserts it threw a `UserError` whose message contains every string of `mustName` (the file, the
 * tensor or key), is one sentence (ends with a period, no newline, no second sentence) and carries no stack trace.
 */
export async function assertUserError(fn: () => unknown, mustName: readonly string[]): Promise<string> {
  let error: unknown = undefined;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  assert(error !== undefined, `expected a UserError naming ${mustName.join(", ")}, but nothing was thrown`);
  assertInstanceOf(error, UserError, `expected a UserError, got ${error}`);
  const msg = (error as UserError).message;
  for (const s of mustName) assertStringIncludes(msg, s);
  assert(msg.endsWith("."), `not one sentence (no final period): ${msg}`);
  assert(!msg.includes("\n"), `not one sentence (newline): ${msg}`);
  assert(!/[.!?]\s+[A-Z]/.test(msg), `more than one sentence: ${msg}`);
  assert(!/\bat .*:\d+:\d+/.test(msg) && !msg.includes("file://"), `stack trace content in: ${msg}`);
  return msg;
}
