/**
 * `deno task profile`: where a decode step goes, per kernel family (bench/profile.ts has the method).
 *
 *   deno task profile [--size 1b|7b|tiny] [--config baseline|hydra_naive] [--contexts 256,4096]
 *                     [--n-heads 5] [--heads-depth 3] [--samples 20] [--json FILE] [--check] [--webgpu deno|dawn]
 *                     [--fuse default|all|none|attention|attention-stats|post-norm]
 *
 * `--webgpu` picks the WebGPU runtime (default: `HYDRA_WEBGPU`, else deno; ARCHITECTURE.md "Two WebGPU runtimes").
 *
 * For each context length: the model's decode step with the KV cache at that length (random weights and cache
 * contents: the time of a step does not depend on the values), one table per context. `--fuse` picks the kernel
 * fusions of the decode blocks (model/hydra.ts FuseOptions; default FUSE_DEFAULTS), to A/B them: `attention-stats`
 * is `attention` with the QK-norm statistics from the QKV matvec's partial sums (`qkStats`). `--check` exits 1 when the sum
 * of the per-dispatch times is more than 5% off the step timed whole.
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { runEntryPoint, UserError } from "../common/errors.ts";
import { CTL } from "../kernels/control/ctl.ts";
import { Gpu, runtimeFromFlag } from "../kernels/runtime.ts";
import { measureCopyBandwidth } from "../bench/bandwidth.ts";
import { buildHydraModel } from "../bench/configurations.ts";
import { profileStep, profileTable, type StepProfile } from "../bench/profile.ts";
import { presetConfig } from "../model/config.ts";
import { Decoder } from "../model/generate.ts";
import type { HydraShape } from "../model/hydra.ts";

const args = parseArgs(Deno.args, {
  string: ["size", "config", "contexts", "n-heads", "heads-depth", "samples", "json", "webgpu", "fuse"],
  boolean: ["check", "help"],
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
  console.log(
    "deno task profile [--size 1b|7b|tiny] [--config baseline|hydra_naive] [--contexts 256,4096] " +
      "[--n-heads 5] [--heads-depth 3] [--samples 20] [--json FILE] [--check] [--webgpu deno|dawn] " +
      "[--fuse default|all|none|attention|attention-stats|post-norm]",
  );
  Deno.exit(0);
}

function positiveInts(flag: string, text: string): number[] {
  const v = text.split(",").map((s) => Number(s.trim()));
  if (v.length === 0 || v.some((x) => !Number.isInteger(x) || x < 1)) {
    throw new UserError(`--${flag} takes positive integers separated by commas, got "${text}".`);
  }
  return v;
}

Deno.exit(
  await runEntryPoint(async () => {
    if (!["baseline", "hydra_naive"].includes(args.config)) {
      throw new UserError(`--config is baseline or hydra_naive, got "${args.config}".`);
    }
    const fusions: Record<string, HydraShape["fuse"]> = {
      default: {},
      all: { attention: true, postNorm: true },
      none: false,
      attention: { attention: true, postNorm: false, qkStats: false },
      // the fused attention with its QK-norm statistics from the QKV matvec's partial sums (FuseOptions.qkStats)
      "attention-stats": { attention: true, postNorm: false, qkStats: true },
      "post-norm": { attention: false, postNorm: true },
    };
    if (!(args.fuse in fusions)) {
      throw new UserError(`--fuse is one of ${Object.keys(fusions).join(", ")}, got "${args.fuse}".`);
    }
    const config = presetConfig(args.size, "--size");
    const contexts = positiveInts("contexts", args.contexts);
    const [nHeads] = args.config === "baseline" ? [1] : positiveInts("n-heads", args["n-heads"]);
    const [headsDepth] = args.config === "baseline" ? [0] : positiveInts("heads-depth", args["heads-depth"]);
    const [samples] = positiveInts("samples", args.samples);
    const gpu = await Gpu.create(runtimeFromFlag(args.webgpu));
    const maxPos = Math.min(config.maxContext, Math.max(...contexts) + 2);
    if (Math.max(...contexts) >= config.maxContext) {
      throw new UserError(`--contexts: each must be below the model's context of ${config.maxContext}.`);
    }
    const copy = await measureCopyBandwidth(gpu);
    console.log(
      `${gpu.description.description}: copy ${copy.kernel_copy_gbps.toFixed(0)} GB/s; ${args.size} ${args.config}, ` +
        `fuse ${args.fuse}` +
        (nHeads > 1 ? ` (${nHeads} heads x ${headsDepth} blocks)` : ""),
    );
    const model = await buildHydraModel(gpu, config, {
      nHeads,
      headsDepth,
      maxPos,
      maxRows: 1,
      weights: { kind: "random", seed: 1234 },
      fuse: fusions[args.fuse],
    });
    const decoder = new Decoder(model);
    const step = decoder.step(args.config === "baseline" ? "single" : "naive");
    const at = gpu.buffer("profile ctl", model.ctl.size);
    const out: Record<string, StepProfile> = {};
    let failed = false;
    for (const context of contexts) {
      const ctl = new Uint32Array(model.ctl.size / 4);
      ctl[CTL.POS] = ctl[CTL.LEN] = context;
      ctl[CTL.ACTIVE] = 1;
      ctl[CTL.MAX_OUT] = 1 << 30;
      gpu.write(at, ctl);
      const p = await profileStep(
        gpu,
        step,
        (encoder) => encoder.copyBufferToBuffer(at, 0, model.ctl, 0, at.size),
        {
          dModel: config.dModel,
          ffnHidden: config.ffnHidden,
          paddedVocab: config.paddedVocab,
          keys: context + 1,
          kvBytes: model.kvBytes,
        },
        copy.kernel_copy_gbps,
        samples,
      );
      out[String(context)] = p;
      console.log(`\ncontext ${context}: step ${(p.step_us / 1000).toFixed(3)} ms, ${p.dispatches} dispatches\n`);
      console.log(profileTable(p));
      if (Math.abs(p.reconcile) > 0.05) failed = true;
    }
    if (args.json) {
      await Deno.writeTextFile(
        args.json,
        JSON.stringify(
          { device: gpu.description, size: args.size, config: args.config, fuse: args.fuse, copy, profiles: out },
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
  }),
);
