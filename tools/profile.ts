/**
 * `deno task profile`: where a decode step, or a PoE round's verify pass, goes per kernel family (bench/profile.ts has
 * the method).
 *
 *   deno task profile [--size 1b|7b|tiny] [--config baseline|hydra_naive|poe_verify|prefill] [--contexts 256,4096]
 *                     [--n-heads 5] [--heads-depth 3] [--gamma 4] [--accept] [--samples 20] [--json FILE] [--check]
 *                     [--webgpu deno|dawn] [--fuse default|all|none|attention|attention-stats|post-norm|prefill-apart]
 *                     [--fuse-rows N] [--whole]
 *
 * `--webgpu` picks the WebGPU runtime (default: `HYDRA_WEBGPU`, else deno; ARCHITECTURE.md "Two WebGPU runtimes").
 *
 * For each context length: the model's decode step with the KV cache at that length (random weights and cache
 * contents: the time of a step does not depend on the values), one table per context. `--fuse` picks the kernel
 * fusions of the decode blocks (model/hydra.ts FuseOptions; default FUSE_DEFAULTS), to A/B them: `attention-stats`
 * is `attention` with the QK-norm statistics from the QKV matvec's partial sums (`qkStats`); `prefill-apart` the
 * default with a prefill's post-norms apart from the split-K sums and f16 rows they fuse (`prefillNorm`). `--check`
 * exits 1 when the sum of the per-dispatch times is more than 5% off the step timed whole.
 *
 * `--whole` times each step whole and prints only that (no family rows: each would replay the step again), for quick
 * A/Bs of the whole step across processes (an environment switch each).
 *
 * `--config poe_verify` profiles the verify part of a plain PoE round (poe/poe.ts `PoeRoundParts.verify`; with
 * HYDRA_POE_PIPELINE=1 the pipelined round's, the last draft step's head beside the verifiers) instead, on the
 * Hydra hydra_naive uses (`--n-heads`, `--heads-depth`, random weights; head 0 drafts, the others are the jury): POS =
 * LEN, every verifier head over `--gamma` saved trunk states (its matvecs at M = gamma, its attention over context +
 * gamma keys) and the jury's log-softmax. Each context starts from a prefill of that many random ids, whose control
 * block (ACTIVE set, so the gated kernels run) is restored before every replay, as bench/poe_costs.ts times the parts.
 * `--accept` adds the round's accept part (the jury's argmax and the acceptance kernel) as one more family, `accept`.
 *
 * `--config prefill` profiles the baseline's time to first token instead: for each `--contexts` length, the prompt's
 * prefill (a prompt of random ids that long) and the pick of the next token, as `benchmarkTtft` times it, each replay
 * starting from the reset prompt. Its GEMMs are grouped by product ("qkv gemm", "down gemm", ...), their row-scale
 * pre-passes and split-K reductions apart; the bytes column counts each weight once.
 *
 * Its time grows with `--samples` times the step's dispatches times its families: every replay is encoded again. On
 * the H200 with Dawn the 7B's 128-token prefill (327-454 dispatches, ~15 families) took 27-32 s with `--samples 2` and
 * over 150 s with 10 (docs/PERF.md, session AE): give a prefill profile on Dawn a few samples.
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { runEntryPoint, UserError } from "../common/errors.ts";
import { DECODE_MAX_ROWS } from "../kernels/attention/decode.ts";
import { CTL } from "../kernels/control/ctl.ts";
import { type Dispatch, Gpu, runtimeFromFlag } from "../kernels/runtime.ts";
import { measureCopyBandwidth } from "../bench/bandwidth.ts";
import { buildHydraModel } from "../bench/configurations.ts";
import { randomIds } from "../bench/contexts.ts";
import { roundStates } from "../bench/poe_costs.ts";
import { profileStep, profileTable, type StepProfile } from "../bench/profile.ts";
import { presetConfig } from "../model/config.ts";
import { Decoder } from "../model/generate.ts";
import type { HydraShape } from "../model/hydra.ts";
import { PoE, POE_MAX_GAMMA } from "../poe/poe.ts";

const USAGE = "deno task profile [--size 1b|7b|tiny] [--config baseline|hydra_naive|poe_verify|prefill] " +
  "[--contexts 256,4096] [--n-heads 5] [--heads-depth 3] [--gamma 4] [--accept] [--samples 20] [--json FILE] " +
  "[--check] [--webgpu deno|dawn] [--fuse default|all|none|attention|attention-stats|post-norm|prefill-apart] " +
  "[--fuse-rows N] [--whole]";

const CONFIGS = ["baseline", "hydra_naive", "poe_verify", "prefill"];

/** Seed of the random weights and (plus the context length) of the prompt a verify pass starts from. */
const SEED = 1234;

function positiveInts(flag: string, text: string): number[] {
  const v = text.split(",").map((s) => Number(s.trim()));
  if (v.length === 0 || v.some((x) => !Number.isInteger(x) || x < 1)) {
    throw new UserError(`--${flag} takes positive integers separated by commas, got "${text}".`);
  }
  return v;
}

/** A replay of the profile: its dispatches, what restores the state before it, and its attention's keys. */
interface Profiled {
  dispatches: readonly Dispatch[];
  groups?: readonly (string | undefined)[];
  restore: (encoder: GPUCommandEncoder) => void;
  keys: number;
  done(): void;
}

/** Runs the tool on `argv`; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, {
    string: [
      "size",
      "config",
      "contexts",
      "n-heads",
      "heads-depth",
      "gamma",
      "samples",
      "json",
      "webgpu",
      "fuse",
      "fuse-rows",
    ],
    boolean: ["check", "help", "accept", "whole"],
    default: {
      size: "7b",
      config: "baseline",
      contexts: "256",
      "n-heads": "5",
      "heads-depth": "3",
      samples: "20",
      fuse: "default",
    },
  });
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  return await runEntryPoint(async () => {
    if (!CONFIGS.includes(args.config)) {
      throw new UserError(`--config is one of ${CONFIGS.join(", ")}, got "${args.config}".`);
    }
    const verify = args.config === "poe_verify";
    const prefill = args.config === "prefill"; // the baseline's TTFT pass at each --contexts prompt length
    const trunkOnly = args.config === "baseline" || prefill;
    if (!verify && (args.gamma !== undefined || args.accept)) {
      throw new UserError("--gamma and --accept profile a PoE round: give them with --config poe_verify.");
    }
    const fusions: Record<string, HydraShape["fuse"]> = {
      default: {},
      all: { attention: true, postNorm: true },
      none: false,
      attention: { attention: true, postNorm: false, qkStats: false },
      // the fused attention with its QK-norm statistics from the QKV matvec's partial sums (FuseOptions.qkStats)
      "attention-stats": { attention: true, postNorm: false, qkStats: true },
      "post-norm": { attention: false, postNorm: true },
      // the default with the prefill post-norms apart: split_k_reduce and row_scale_half dispatches (prefillNorm)
      "prefill-apart": { prefillNorm: false },
    };
    if (!(args.fuse in fusions)) {
      throw new UserError(`--fuse is one of ${Object.keys(fusions).join(", ")}, got "${args.fuse}".`);
    }
    // --fuse-rows N: the most rows a fused pass takes (FuseOptions.maxRows), e.g. a verify pass's gamma rows
    const fuseRows = args["fuse-rows"] === undefined ? undefined : Number(args["fuse-rows"]);
    if (fuseRows !== undefined && !(Number.isInteger(fuseRows) && fuseRows >= 1 && fuseRows <= DECODE_MAX_ROWS)) {
      throw new UserError(
        `--fuse-rows takes one whole number from 1 to ${DECODE_MAX_ROWS}, got "${args["fuse-rows"]}".`,
      );
    }
    const fuse = fusions[args.fuse];
    const fuseWith = fuse === false || fuseRows === undefined ? fuse : { ...fuse, maxRows: fuseRows };
    const config = presetConfig(args.size, "--size");
    const contexts = positiveInts("contexts", args.contexts);
    const [nHeads] = trunkOnly ? [1] : positiveInts("n-heads", args["n-heads"]);
    const [headsDepth] = trunkOnly ? [0] : positiveInts("heads-depth", args["heads-depth"]);
    const [samples] = positiveInts("samples", args.samples);
    const [gamma] = positiveInts("gamma", args.gamma ?? "4");
    if (gamma > POE_MAX_GAMMA) throw new UserError(`--gamma is at most ${POE_MAX_GAMMA}, got ${gamma}.`);
    if (verify && nHeads < 2) {
      throw new UserError("--config poe_verify needs a draft head and a verifier: give --n-heads 2 or more.");
    }
    const longest = Math.max(...contexts);
    if (longest >= config.maxContext) {
      throw new UserError(`--contexts: each must be below the model's context of ${config.maxContext}.`);
    }
    // a verify pass: the prompt, then the new tokens and a round's gamma rows the decoder's checks make room for
    const maxNewTokens = gamma + 1;
    const maxPos = verify ? longest + maxNewTokens + gamma : Math.min(config.maxContext, longest + 2);
    if (maxPos > config.maxContext) {
      throw new UserError(
        `--contexts: with --gamma ${gamma} each must be at most ${config.maxContext - maxNewTokens - gamma}, so ` +
          `that a round and its new tokens fit the model's context of ${config.maxContext}.`,
      );
    }
    const gpu = await Gpu.create(runtimeFromFlag(args.webgpu));
    try {
      const copy = await measureCopyBandwidth(gpu);
      const what = verify
        ? `poe_verify, gamma ${gamma}, ${nHeads - 1} verifier head${nHeads > 2 ? "s" : ""}${
          args.accept ? " + accept" : ""
        }`
        : args.config;
      console.log(
        `${gpu.description.description}: copy ${copy.kernel_copy_gbps.toFixed(0)} GB/s; ${args.size} ${what}, ` +
          `fuse ${args.fuse}${fuseRows === undefined ? "" : ` up to ${fuseRows} rows`}` +
          (nHeads > 1 ? ` (${nHeads} heads x ${headsDepth} blocks)` : ""),
      );
      const model = await buildHydraModel(gpu, config, {
        nHeads,
        headsDepth,
        maxPos,
        maxRows: verify || prefill ? longest : 1, // a prefill of the context (a verify pass starts from one)
        maxLogitRows: verify ? gamma : 1,
        weights: { kind: "random", seed: SEED },
        fuse: fuseWith,
      });
      // the verification alone (the plain round's verify part); HYDRA_POE_PIPELINE=1 profiles the pipelined round's,
      // the last draft step's head beside the verifiers
      const poe = verify
        ? new PoE(model, { gamma, beta: 1, temperature: 0, maxNewTokens, pipeline: false })
        : undefined;
      const decoder = verify ? undefined : new Decoder(model);
      const at = gpu.buffer("profile ctl", model.ctl.size);
      try {
        // the decode step from a control block at the context, or the verify pass from a prefill of the context
        const decodeStep = (decoder: Decoder, context: number): Profiled => {
          const ctl = new Uint32Array(model.ctl.size / 4);
          ctl[CTL.POS] = ctl[CTL.LEN] = context;
          ctl[CTL.ACTIVE] = 1;
          ctl[CTL.MAX_OUT] = 1 << 30;
          gpu.write(at, ctl);
          return {
            dispatches: decoder.step(args.config === "baseline" ? "single" : "naive"),
            restore: (encoder) => encoder.copyBufferToBuffer(at, 0, model.ctl, 0, at.size),
            keys: context + 1,
            done() {},
          };
        };
        // the TTFT pass: the prompt reset, its prefill and the next token's pick
        const prefillPass = (decoder: Decoder, length: number): Profiled => {
          decoder.setPrompt(randomIds(SEED + length, length, config.vocabSize), 1);
          return {
            dispatches: decoder.prefill("single"),
            restore: (encoder) => decoder.encodeReset(encoder),
            keys: length,
            done() {},
          };
        };
        const verifyPass = async (poe: PoE, context: number): Promise<Profiled> => {
          const parts = poe.roundParts;
          const states = roundStates(poe, randomIds(SEED + context, context, config.vocabSize));
          const start = new Uint32Array(await gpu.read(states.active));
          if (start[CTL.ACTIVE] !== 1 || start[CTL.POS] !== context || start[CTL.LEN] !== context) {
            states.destroy();
            throw new Error(`poe_verify: the prefill left the control block at ${start.slice(0, 5)}`);
          }
          return {
            dispatches: args.accept ? [...parts.verify, ...parts.accept] : parts.verify,
            groups: args.accept ? [...parts.verify.map(() => undefined), ...parts.accept.map(() => "accept")] : [],
            restore: states.restore(states.active),
            keys: context + gamma,
            done: () => states.destroy(),
          };
        };
        const out: Record<string, StepProfile> = {};
        let failed = false;
        for (const context of contexts) {
          const s = poe
            ? await verifyPass(poe, context)
            : prefill
            ? prefillPass(decoder!, context)
            : decodeStep(decoder!, context);
          let p: StepProfile;
          try {
            p = await profileStep(
              gpu,
              s.dispatches,
              s.restore,
              {
                dModel: config.dModel,
                ffnHidden: config.ffnHidden,
                paddedVocab: config.paddedVocab,
                keys: s.keys,
                kvBytes: model.kvBytes,
              },
              copy.kernel_copy_gbps,
              samples,
              s.groups,
              args.whole,
            );
          } finally {
            s.done();
          }
          out[String(context)] = p;
          const pass = verify
            ? (args.accept ? "verify pass + accept" : "verify pass")
            : prefill
            ? "prefill (TTFT pass)"
            : "step";
          console.log(
            `\n${prefill ? "prompt" : "context"} ${context}: ${pass} ${
              (p.step_us / 1000).toFixed(3)
            } ms, ${p.dispatches} dispatches\n`,
          );
          if (args.whole) continue;
          console.log(profileTable(p));
          if (!p.overlapping && Math.abs(p.reconcile) > 0.05) failed = true;
        }
        if (args.json) {
          const poeKeys = verify ? { gamma, verifier_heads: nHeads - 1, accept: args.accept } : {};
          await Deno.writeTextFile(
            args.json,
            JSON.stringify(
              {
                device: gpu.description,
                size: args.size,
                config: args.config,
                ...poeKeys,
                fuse: args.fuse,
                fuse_rows: fuseRows ?? null,
                copy,
                profiles: out,
              },
              null,
              1,
            ),
          );
        }
        if (args.check && failed) {
          console.error("The families' in-step times add up to more than 5% off the step timed whole.");
          return 1;
        }
        return 0;
      } finally {
        at.destroy();
        poe?.destroy();
        decoder?.destroy();
        model.destroy();
      }
    } finally {
      gpu.destroy();
    }
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
