/**
 * Tests of the runtime (`runtime.ts`) beyond what every kernel test exercises through it: `HYDRA_WGSL_DUMP=DIR`
 * writes the WGSL of every pipeline a process builds, each file a kernel that builds as it is, and an unwritable DIR
 * is one sentence and exit 2.
 * @module
 */

import { assert, assertEquals, assertThrows } from "@std/assert";
import { enableDirectives } from "./prelude.ts";
import { fromFileUrl, join } from "@std/path";
import { GEMM_KERNEL_NAME } from "./matmul/gemm.ts";
import { GEMM_TENSOR_KERNEL_NAME, tensorGemmUnsupported } from "./matmul/gemm_tensor.ts";
import { MATVEC_KERNEL_NAME, MATVEC_MAX_ROWS } from "./matmul/matvec.ts";
import { gpuTest } from "./testing/harness.ts";
import { DAWN_TOGGLES, dawnToggles } from "./runtime.ts";
import { UserError } from "../common/errors.ts";

const ROOT = fromFileUrl(new URL("../", import.meta.url));

/**
 * Runs `deno task generate` on a tiny synthetic Hydra in PoE mode (random fill, LoRA merges, prefill, decode, jury and
 * acceptance kernels) in a subprocess, since the variable is read when a process creates its GPU. The prompt is longer
 * than MATVEC_MAX_ROWS so the prefill runs the GEMM.
 */
function generate(dumpDir: string): Promise<Deno.CommandOutput> {
  const ids = Array.from({ length: MATVEC_MAX_ROWS + 4 }, (_, i) => i + 1).join(",");
  const args = ["--size", "tiny", "--synthetic", "--mode", "poe", "--ids", ids, "--max-new-tokens", "4", "--json"];
  // Packages already installed (by this test run, or staged for an offline GPU machine): use them as they are, so the
  // subprocess never tries to download what the GPU path does not import.
  let installed: string[] = [];
  try {
    if (Deno.statSync(join(ROOT, "node_modules", ".deno")).isDirectory) installed = ["--node-modules-dir=manual"];
  } catch { /* none yet: let Deno install what the tool imports */ }
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...installed, "tools/generate.ts", ...args],
    cwd: ROOT,
    env: { HYDRA_WGSL_DUMP: dumpDir, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
}

gpuTest("HYDRA_WGSL_DUMP=DIR writes every WGSL variant a model build makes, each a kernel that builds", async (gpu) => {
  const tmp = await Deno.makeTempDir({ prefix: "hydra_wgsl_" });
  try {
    const dir = join(tmp, "wgsl"); // created by the runtime
    const run = await generate(dir);
    if (!run.success) throw new Error(`generate failed: ${new TextDecoder().decode(run.stderr)}`);
    const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    // The tiny PoE generation builds 47 pipelines on the CPU adapter (tile and row choices may differ on a GPU).
    if (files.length < 20) throw new Error(`only ${files.length} WGSL files: ${files.join(", ")}`);
    const variants = new Map<string, number>();
    for (const file of files) {
      const match = /^([A-Za-z0-9_.-]+)-[0-9a-f]{8}\.wgsl$/.exec(file);
      if (!match) throw new Error(`${file} is not named <kernel>-<variant>.wgsl`);
      variants.set(match[1], (variants.get(match[1]) ?? 0) + 1);
      const code = await Deno.readTextFile(join(dir, file));
      const [kernelLine, constantsLine] = code.split("\n");
      if (kernelLine !== `// kernel: ${match[1]}`) throw new Error(`${file} opens with "${kernelLine}"`);
      const prefix = "// override constants: ";
      if (!constantsLine.startsWith(prefix)) throw new Error(`${file}: no override constants line`);
      const constants: Record<string, number> = {};
      for (const [k, v] of Object.entries(JSON.parse(constantsLine.slice(prefix.length)))) {
        constants[k] = typeof v === "boolean" ? Number(v) : v as number;
      }
      // The file as written, with the constants of its header, must build a pipeline without any WebGPU error.
      gpu.device.pushErrorScope("validation");
      const module = gpu.device.createShaderModule({ label: file, code });
      const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === "error");
      gpu.device.createComputePipeline({
        label: file,
        layout: "auto",
        compute: { module, entryPoint: "main", constants },
      });
      const invalid = await gpu.device.popErrorScope();
      if (errors.length > 0 || invalid) {
        throw new Error(`${file} does not build: ${errors.map((m) => m.message).join(" | ") || invalid?.message}`);
      }
    }
    // The prefill GEMM is the tensor-core one where it runs (Dawn), else the FMA one (linear.ts).
    const prefillGemm = tensorGemmUnsupported(gpu) === null ? GEMM_TENSOR_KERNEL_NAME : GEMM_KERNEL_NAME;
    for (const generated of [prefillGemm, MATVEC_KERNEL_NAME]) {
      if (!files.some((f) => f.startsWith(generated))) throw new Error(`no ${generated} kernel among ${files}`);
    }
    // One file per set of override constants, not per kernel: rmsnorm runs over the prompt's rows and over one row.
    const norms = [...variants].filter(([k]) => k.startsWith("rmsnorm")).reduce((a, [, n]) => a + n, 0);
    if (!(norms >= 2)) throw new Error(`rmsnorm has ${norms} variants`);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

gpuTest("HYDRA_WGSL_DUMP naming a folder that cannot be made is one sentence and exit 2", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "hydra_wgsl_" });
  try {
    const file = join(tmp, "a_file");
    await Deno.writeTextFile(file, "");
    const run = await generate(join(file, "wgsl"));
    const stderr = new TextDecoder().decode(run.stderr).trim();
    if (run.code !== 2) throw new Error(`exit code ${run.code}: ${stderr}`);
    // The last line (Deno may report npm downloads before it) names the variable; no stack trace.
    if (!stderr.split("\n").at(-1)!.includes("HYDRA_WGSL_DUMP=") || /^\s+at /m.test(stderr)) {
      throw new Error(`not one sentence naming the variable: ${stderr}`);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("enable directives: Deno gets `enable f16;` only for kernels naming f16 on a shader-f16 device; Dawn gets its extensions", () => {
  const f16Kernel = "var<workgroup> xs: array<vec4<f16>, 8>;";
  assertEquals(enableDirectives("deno", ["shader-f16", "subgroups"], f16Kernel), "enable f16;\n");
  // Every other kernel's WGSL stays what it was before f16 kernels existed.
  assertEquals(enableDirectives("deno", ["shader-f16", "subgroups"], "var<workgroup> xs: array<f32, 8>;"), "");
  assertEquals(enableDirectives("deno", ["subgroups"], f16Kernel), "");
  const dawn = enableDirectives("dawn", ["shader-f16", "subgroups"], "");
  for (const d of ["enable f16;", "enable subgroups;", "enable chromium_disable_uniformity_analysis;"]) {
    assert(dawn.includes(d), `${d} missing from Dawn's directives: ${dawn}`);
  }
  assert(!dawn.includes("subgroup_matrix"), "subgroup matrices enabled without the feature");
});

Deno.test("HYDRA_DAWN_ENABLE adds Dawn toggles, takes DAWN_TOGGLES' own away with a leading -, and rejects a bad name", () => {
  const enabled = (value?: string) =>
    dawnToggles(value).find((t) => t.startsWith("enable-dawn-features="))!.split("=")[1].split(",");
  assertEquals(dawnToggles(""), [...DAWN_TOGGLES]);
  assert(enabled("").includes("disable_robustness"));
  assertEquals(enabled("skip_validation").at(-1), "skip_validation");
  assertEquals(enabled("-disable_robustness").includes("disable_robustness"), false);
  assertEquals(enabled("-disable_robustness").length, enabled("").length - 1);
  assertEquals(dawnToggles("-disable_robustness").filter((t) => !t.startsWith("enable-")), [
    ...DAWN_TOGGLES.filter((t) => !t.startsWith("enable-")),
  ]);
  assertThrows(() => dawnToggles("Robust ness"), UserError, "HYDRA_DAWN_ENABLE");
});
