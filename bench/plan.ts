/**
 * What a run will do, decided and checked before any configuration runs, so that a bad input never costs the
 * configurations before the one it breaks:
 *
 * 1. `readRunInput` (before the GPU is touched): config file and flags, each value checked; the directories of
 *    `weights`; and, when hydra_poe is configured, the PoE prompt: the tokenizer and chat template of `weights` (or
 *    the built-in ones) are loaded and the prompt rendered and tokenized (`preparePrompt`).
 * 2. `planRun` (once the adapter is known): on a software adapter the smoke-test defaults for the knobs left unset,
 *    then the relations between the knobs a run will actually use, then what only the prompt or the checkpoint
 *    knows: a checkpoint's layer count and context, and whether a PoE call fits that context.
 *
 * The benchmark (bench/main.ts) and the tests run this same path.
 * @module
 */

import { UserError } from "../common/errors.ts";
import { Checkpoint } from "../model/checkpoint.ts";
import { type ModelConfig, PRESETS } from "../model/config.ts";
import type { CheckpointChatConfig } from "../poe/chat_template.ts";
import { type PreparedPrompt, preparePrompt } from "../poe/prompt.ts";
import type { Tokenizer } from "../poe/tokenizer.ts";
import {
  type BenchConfig,
  checkConfig,
  checkWeightPaths,
  flagName,
  poeGammas,
  poeKvLength,
  readConfig,
  type ResolvedConfig,
  runSwitches,
  withSoftwareDefaults,
} from "./config.ts";

/** A run's input as read before the GPU is touched. */
export interface RunInput {
  /** The knobs from the config file and flags, and where each came from. */
  readonly resolved: ResolvedConfig;
  /** `--no-wait` and `--allow-concurrent`. */
  readonly switches: { noWait: boolean; allowConcurrent: boolean };
  /** The PoE prompt when hydra_poe is configured, else null. */
  readonly prompt: PreparedPrompt | null;
}

/**
 * Reads config file `path` (or --config's) and the flags of `argv`, finds the `weights` directories, and prepares the
 * PoE prompt when hydra_poe is configured. Every problem is a UserError.
 */
export async function readRunInput(argv: readonly string[], path = "config.json"): Promise<RunInput> {
  const resolved = await readConfig(path, argv);
  const c = resolved.config;
  await checkWeightPaths(resolved);
  const prompt = c.configs.includes("hydra_poe") ? await preparePrompt(c.weights?.base, c.poe_prompt) : null;
  return { resolved, switches: runSwitches(argv), prompt };
}

/** The prompt hydra_poe times, as the model gets it. */
export interface PoePrompt {
  /** Token ids (folded into a tiny vocabulary for synthetic weights: see `folded`). */
  ids: number[];
  tokenizer: Tokenizer;
  chat: CheckpointChatConfig;
  /** Whether the ids were folded modulo the vocabulary of synthetic tiny weights (which know no text). */
  folded: boolean;
}

/** A checked run. */
export interface RunPlan {
  /** The knobs the run uses, and where each came from (software-adapter defaults included). */
  readonly resolved: ResolvedConfig;
  readonly config: BenchConfig;
  /** The knobs a software adapter's smoke-test defaults set (empty on a GPU). */
  readonly softwareKnobs: (keyof BenchConfig)[];
  /** hydra_poe's prompt, or null when hydra_poe is not configured. */
  readonly poe: PoePrompt | null;
}

/**
 * The run of `input` on an adapter that is `software` or not: its effective knobs, checked as a whole, and the PoE
 * prompt as the model gets it. Throws UserError naming the knob (and the software-adapter default, where one was
 * used) and the limit that holds.
 */
export async function planRun(input: RunInput, { software }: { software: boolean }): Promise<RunPlan> {
  const resolved = software ? withSoftwareDefaults(input.resolved) : input.resolved;
  const config = await checkConfig(resolved);
  const softwareKnobs = (Object.keys(resolved.origins) as (keyof BenchConfig)[]).filter((k) => {
    const o = resolved.origins[k];
    return o !== "default" && o.kind === "software";
  });
  const poe = input.prompt && config.configs.includes("hydra_poe") ? await checkPoe(config, input.prompt) : null;
  return { resolved, config, softwareKnobs, poe };
}

/** The model hydra_poe builds: the checkpoint's shapes (header and config read, nothing loaded), else the size's. */
async function poeModel(c: BenchConfig): Promise<{ model: ModelConfig; what: string }> {
  if (!c.weights) return { model: PRESETS[c.size], what: `size "${c.size}"` };
  const ckpt = await Checkpoint.open(c.weights.base);
  ckpt.close();
  return { model: ckpt.config, what: `the checkpoint ${c.weights.base}` };
}

/** Checks hydra_poe against its model and prompt; returns the prompt as the model gets it. */
async function checkPoe(c: BenchConfig, prompt: PreparedPrompt): Promise<PoePrompt> {
  const { model, what } = await poeModel(c);
  if (c.weights && c.heads_depth >= model.nLayers) {
    throw new UserError(
      `heads_depth is ${c.heads_depth}, but ${what} has ${model.nLayers} layers and the trunk needs at least one: ` +
        `set ${flagName("heads_depth")} to at most ${model.nLayers - 1}.`,
    );
  }
  const folded = !c.weights && model.vocabSize < prompt.tokenizer.vocabSize;
  const ids = folded ? prompt.ids.map((t) => t % model.vocabSize) : prompt.ids;
  const outside = ids.find((t) => t >= model.vocabSize);
  if (outside !== undefined) {
    throw new UserError(
      `The PoE prompt has token id ${outside}, outside the ${model.vocabSize}-token vocabulary of ${what}: put the ` +
        "checkpoint's own tokenizer.json beside its config.json.",
    );
  }
  const kv = poeKvLength(c, ids.length);
  if (kv > model.maxContext) {
    throw new UserError(
      `The PoE prompt is ${ids.length} tokens after the chat template; with poe_max_new_tokens ` +
        `${c.poe_max_new_tokens} and the largest gamma ${Math.max(...poeGammas(c))} a call needs ${kv} positions, ` +
        `above the ${model.maxContext}-token context of ${what}: shorten poe_prompt or lower poe_max_new_tokens.`,
    );
  }
  return { ids, tokenizer: prompt.tokenizer, chat: prompt.chat, folded };
}
