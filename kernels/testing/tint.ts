/**
 * WGSL compile checks without a GPU: Dawn's null backend parses, resolves and validates kernels with Tint (the
 * compiler the Dawn runtime uses), so tests of kernels that need subgroup matrices (which no CPU adapter offers) can
 * fail on a WGSL error in CI too.
 *
 * The compile runs in child processes (this module as their main): inside a `deno test` process dawn.node 0.6.2 now and
 * then never settled a `popErrorScope` promise, or aborted on a mutex assertion, while the same calls in a plain
 * `deno run` settled every time (session V, on the CPU machine). A child given ~55 kernels at once then failed the same
 * ways (SIGABRT on a std::system_error, SIGSEGV, or a hang; session AA, on the H200 and here) where the same kernels
 * in smaller sets passed, so the kernels go BATCH at a time, a child each.
 * @module
 */

import type { Kernel } from "../runtime.ts";
import { fromFileUrl } from "@std/path";
import { preludeFor } from "../prelude.ts";

/** The features the null device is asked for (those of the tensor-core kernels). */
const FEATURES = ["shader-f16", "subgroups", "chromium-experimental-subgroup-matrix"] as GPUFeatureName[];

/** Kernels a child compiles: ~55 made dawn.node crash or hang (module comment); batches of 24 passed in every run. */
const BATCH = 24;

/** What the child reads: kernels with their prelude, and the override constants of their pipelines. */
interface Job {
  kernels: { name: string; code: string }[];
  constants: Record<string, number>;
}

/** The child's answer: one line per failing kernel, or why Dawn's null backend is unavailable. */
type Answer = { failures: string[] } | { unavailable: string };

/**
 * Tint's diagnostics for `kernels` (with override `constants`) on Dawn's null backend: WGSL is parsed, resolved and
 * its pipeline validated, nothing runs. One line per kernel that fails. A pipeline refused only for its workgroup
 * memory (the null adapter offers 16 KB), its subgroup size (the null adapter's is 128) or its workgroup size beyond the
 * null adapter's limits counts as compiled. Null when Dawn's addon or its null backend is unavailable here.
 */
export async function tintErrors(
  kernels: readonly Kernel[],
  constants: Record<string, number>,
): Promise<string[] | null> {
  const failures: string[] = [];
  for (let i = 0; i < kernels.length; i += BATCH) {
    const batch = await childErrors(kernels.slice(i, i + BATCH), constants);
    if (batch === null) return null;
    failures.push(...batch);
  }
  return failures;
}

/** `tintErrors` of a batch of kernels, compiled in one child process. */
async function childErrors(kernels: readonly Kernel[], constants: Record<string, number>): Promise<string[] | null> {
  const job: Job = {
    kernels: kernels.map((k) => ({ name: k.name, code: preludeFor("dawn", FEATURES, k.source) + k.source })),
    constants,
  };
  const file = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(file, JSON.stringify(job));
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        // DENO_FLAGS: e.g. --node-modules-dir=manual where node_modules was staged by hand (no network: docs/DEVICE.md)
        ...(Deno.env.get("DENO_FLAGS") ?? "").split(/\s+/).filter(Boolean),
        "--config",
        fromFileUrl(new URL("../../deno.json", import.meta.url)),
        import.meta.filename!,
        file,
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(120_000),
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
    if (!out.success || !text.startsWith("{")) {
      throw new Error(
        `the Tint check's child process failed (code ${out.code}, signal ${out.signal}, stdout ${
          text.slice(0, 200)
        }): ${new TextDecoder().decode(out.stderr).slice(-2000)}`,
      );
    }
    const answer = JSON.parse(text) as Answer;
    return "failures" in answer ? answer.failures : null;
  } finally {
    await Deno.remove(file);
  }
}

/**
 * The test of a kernel family's WGSL (`t`: the Deno test's context): every kernel of `kernels` compiles under Tint
 * (`tintErrors` with `constants`) and `broken` (a mutant that `what` describes) does not, so the check can fail. Where
 * Dawn's null backend is unavailable the test reports an ignored step saying so.
 */
export async function assertTintCompiles(
  t: Deno.TestContext,
  kernels: readonly Kernel[],
  constants: Record<string, number>,
  broken: Kernel,
  what: string,
): Promise<void> {
  const errors = await tintErrors([...kernels, broken], constants);
  if (errors === null) {
    await t.step({ name: "skipped: Dawn's addon or its null backend is unavailable here", ignore: true, fn: () => {} });
    return;
  }
  const unexpected = errors.filter((e) => !e.startsWith(`${broken.name}:`));
  if (unexpected.length) throw new Error(`Tint rejected:\n${unexpected.join("\n")}`);
  if (errors.length !== 1) throw new Error(`${what} compiled`);
}

/** The child: compiles the job's kernels on Dawn's null backend. */
async function compile(job: Job): Promise<Answer> {
  let dawn: { create(toggles: string[]): GPU };
  try {
    dawn = await import("webgpu");
  } catch (e) {
    return { unavailable: `Dawn's addon: ${e instanceof Error ? e.message : e}` };
  }
  const adapter = await dawn.create(["backend=null", "enable-dawn-features=allow_unsafe_apis"]).requestAdapter();
  if (!adapter || !FEATURES.every((f) => adapter.features.has(f))) return { unavailable: "no null adapter" };
  // the null adapter's largest workgroups (the tensor GEMM with producer subgroups has up to 512 invocations)
  const requiredLimits = {
    maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: adapter.limits.maxComputeWorkgroupSizeX,
  };
  const device = await adapter.requestDevice({ requiredFeatures: FEATURES, requiredLimits });
  const failures: string[] = [];
  for (const k of job.kernels) {
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ code: k.code });
    device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main", constants: job.constants } });
    // The first error of the scope: the module's (Tint's diagnostics) or, if it compiled, the pipeline's.
    const error = await device.popErrorScope();
    if (error && !/workgroup storage|maxSubgroupSize|workgroup_size\(.*exceeds the maximum/.test(error.message)) {
      failures.push(`${k.name}: ${error.message.split("\n").slice(0, 3).join(" ")}`);
    }
  }
  device.destroy();
  return { failures };
}

if (import.meta.main) {
  console.log(JSON.stringify(await compile(JSON.parse(await Deno.readTextFile(Deno.args[0])))));
  Deno.exit(0);
}
