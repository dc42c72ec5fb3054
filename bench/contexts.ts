/**
 * The length sweeps of baseline and hydra_naive, both off by default: TTFT (and prefill tokens/s) at every prompt
 * length of `prompt_lengths`, and one decode step (latency, tokens/s) at every KV length of `decode_contexts`; and the
 * model shape that covers them.
 * @module
 */

import type { Decoder, PickMode } from "../model/generate.ts";
import { type BenchConfig, decodeKvLength } from "./config.ts";
import { benchmarkStepAt, benchmarkTtft, type Budgets, type Progress } from "./configurations.ts";
import { pickStats } from "./metrics.ts";
import type { DecodeContext, TimedStats, TtftAtLength } from "./results_types.ts";
import { Rng } from "./rng.ts";

/** Ascending, each once. */
function ascending(values: readonly number[]): number[] {
  return [...new Set(values)].sort((a, b) => a - b);
}

/** Prompt lengths whose TTFT is timed: prompt_length and every prompt_lengths entry, ascending; [] when it is empty. */
export function ttftLengths(c: Pick<BenchConfig, "prompt_length" | "prompt_lengths">): number[] {
  return c.prompt_lengths.length === 0 ? [] : ascending([c.prompt_length, ...c.prompt_lengths]);
}

/** KV lengths at which one decode step is timed, ascending. */
export function decodeContexts(c: Pick<BenchConfig, "decode_contexts">): number[] {
  return ascending(c.decode_contexts);
}

/**
 * The KV cache rows and prompt rows a baseline or hydra_naive model needs: the decode benchmark's prompt plus
 * generated tokens, the row a step at the longest decode context writes (its KV length), and the first token a
 * prefill of the longest prompt picks (at its length); the rows of the longest prompt.
 */
export function decodeModelShape(
  c: Pick<BenchConfig, "prompt_length" | "gen_length" | "prompt_lengths" | "decode_contexts">,
): { maxPos: number; maxRows: number } {
  const longestPrompt = Math.max(c.prompt_length, ...c.prompt_lengths);
  return {
    maxPos: Math.max(decodeKvLength(c), ...c.decode_contexts.map((n) => n + 1), longestPrompt + 1),
    maxRows: longestPrompt,
  };
}

/** Measurements (harness calls) the sweeps add to baseline or hydra_naive (prompt_length's TTFT is timed anyway). */
export function sweepMeasurements(
  c: Pick<BenchConfig, "prompt_length" | "prompt_lengths" | "decode_contexts">,
): number {
  return Math.max(0, ttftLengths(c).length - 1) + decodeContexts(c).length;
}

/** `n` seeded random token ids below `vocab`: the prompt of a given seed, and a shorter one is a prefix of a longer. */
export function randomIds(seed: number, n: number, vocab: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.int(vocab));
}

/** What the sweeps add to a configuration's results (a key only when its knob is set). */
export interface Sweeps {
  ttft_by_length?: TtftAtLength[];
  decode_contexts?: DecodeContext[];
}

/**
 * Times the sweeps on `decoder` (a model built with `decodeModelShape`) in pick mode `mode`: TTFT at every
 * `ttftLengths` entry over a prefix of the seeded random prompt (at prompt_length `ttft`, already timed on that same
 * prompt, is reused), then a decode step at every decode context.
 */
export async function benchmarkSweeps(
  decoder: Decoder,
  mode: PickMode,
  c: BenchConfig,
  ttft: TimedStats,
  budgets: Budgets,
  progress: Progress,
): Promise<Sweeps> {
  const out: Sweeps = {};
  const lengths = ttftLengths(c);
  if (lengths.length > 0) {
    const ids = randomIds(c.seed, lengths[lengths.length - 1], decoder.model.config.vocabSize);
    out.ttft_by_length = [];
    for (const n of lengths) {
      const stats = n === c.prompt_length ? ttft : await benchmarkTtft(decoder, ids.slice(0, n), mode, budgets);
      const tps = 1000 * n / stats.median_ms;
      out.ttft_by_length.push({ prompt_length: n, ...pickStats(stats), tokens_per_s: tps });
      progress(`ttft at ${n} prompt tokens: ${stats.median_ms.toFixed(3)} ms = ${tps.toFixed(0)} prefill tok/s`);
    }
  }
  const contexts = decodeContexts(c);
  if (contexts.length > 0) {
    // No generation fills the cache first: a step's cost depends on its KV length (attention reads LEN rows of K and
    // V) and on the shapes, never on the cached values (no kernel does data-dependent work, the argmax's comparisons
    // aside), so a step with LEN = POS = n over whatever the rows below n hold costs what it costs after a real
    // generation of n tokens, which at 4,095 would take thousands of steps per configuration.
    const step = decoder.step(mode);
    out.decode_contexts = [];
    for (const n of contexts) {
      const stats = await benchmarkStepAt(decoder, step, n, `decode at ${n}`, budgets);
      out.decode_contexts.push({ context: n, ...pickStats(stats), tokens_per_s: 1000 / stats.median_ms });
      progress(
        `decode at KV length ${n}: ${stats.median_ms.toFixed(3)} ms = ${(1000 / stats.median_ms).toFixed(1)} tok/s`,
      );
    }
  }
  return out;
}
