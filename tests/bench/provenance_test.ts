import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import { DEFAULT_CONFIG } from "../../bench/config.ts";
import { thisProcess } from "../../bench/process.ts";
import {
  adapterDriver,
  cpuModel,
  dirtyTree,
  ENGINE_ENV,
  engineOverrides,
  ownCommit,
  parseVulkanSummary,
  PROJECT_ROOT,
  wgpuBackend,
} from "../../bench/provenance.ts";
import type { Provenance } from "../../bench/results_types.ts";
import { validateResults } from "../../bench/schema.ts";
import { syntheticResults } from "./synthetic.ts";

/** Runs git in `cwd` (outside any test's repository: HOME and the global config are not read). */
async function git(cwd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command("git", {
    args: ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`git ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout).trim();
}

Deno.test("the commit is the project's own checkout's, never an enclosing repository's; dirty = tracked edits", async () => {
  const outer = await Deno.makeTempDir({ prefix: "bench_git_" });
  const saved = Deno.env.get("HYDRA_BENCH_COMMIT");
  Deno.env.delete("HYDRA_BENCH_COMMIT");
  try {
    await git(outer, "init", "-q");
    await Deno.writeTextFile(join(outer, "a.txt"), "a");
    await git(outer, "add", "a.txt");
    await git(outer, "commit", "-q", "-m", "outer");
    const head = await git(outer, "rev-parse", "HEAD");
    // A project folder copied into someone else's repository has no .git of its own: no commit (it read outer's).
    const project = join(outer, "hydra-bench");
    await Deno.mkdir(project);
    assertEquals(await ownCommit(project), null);
    assertEquals(await dirtyTree(project), null);
    // Its own checkout: HEAD, clean; an untracked file (a new run folder) keeps it clean; an edit makes it dirty.
    assertEquals(await ownCommit(outer + "/"), head);
    assertEquals(await dirtyTree(outer), false);
    await Deno.writeTextFile(join(outer, "new.txt"), "untracked");
    assertEquals(await dirtyTree(outer), false);
    await Deno.writeTextFile(join(outer, "a.txt"), "edited");
    assertEquals(await dirtyTree(outer), true);
    // A copy without .git (the GPU machine) names its commit through the environment.
    Deno.env.set("HYDRA_BENCH_COMMIT", "feedface");
    assertEquals(await ownCommit(project), "feedface");
  } finally {
    if (saved === undefined) Deno.env.delete("HYDRA_BENCH_COMMIT");
    else Deno.env.set("HYDRA_BENCH_COMMIT", saved);
    await Deno.remove(outer, { recursive: true });
  }
});

const LAVAPIPE = { vendor: "65541", description: "llvmpipe (LLVM 15.0.6, 256 bits)" };
const H100 = { vendor: "4318", description: "NVIDIA H100 80GB HBM3" };
const SUMMARY = `==========
VULKANINFO
==========

Devices:
========
GPU0:
\tapiVersion         = 1.3.289
\tdriverVersion      = 580.65.6
\tvendorID           = 0x10de
\tdeviceName         = NVIDIA H100 80GB HBM3
\tdriverName         = NVIDIA
\tdriverInfo         = 580.65.06
GPU1:
\tdeviceName         = llvmpipe (LLVM 15.0.6, 256 bits)
\tdriverName         = llvmpipe
\tdriverInfo         = Mesa 22.3.6 (LLVM 15.0.6)
`;

Deno.test("the backend is what wgpu uses, not 'default'; the driver comes from vulkaninfo when it is installed", async () => {
  const vk = parseVulkanSummary(SUMMARY);
  assertEquals(vk.map((d) => d.driverName), ["NVIDIA", "llvmpipe"]);
  assertEquals(wgpuBackend(LAVAPIPE, undefined, "linux", null), "vulkan"); // Mesa's Khronos vendor id
  assertEquals(wgpuBackend(H100, "Vulkan", "linux", null), "vulkan"); // DENO_WEBGPU_BACKEND decides
  assertEquals(wgpuBackend(H100, undefined, "linux", vk), "vulkan");
  assertEquals(wgpuBackend(H100, undefined, "linux", null), "unknown");
  assertEquals(wgpuBackend({ vendor: "0", description: "Apple M2" }, undefined, "darwin", null), "metal");
  assertEquals(await adapterDriver(H100, vk), "NVIDIA 580.65.06");
  assertEquals(await adapterDriver(LAVAPIPE, vk), "llvmpipe Mesa 22.3.6 (LLVM 15.0.6)");
  assertEquals(await adapterDriver(LAVAPIPE, null), LAVAPIPE.description);
  if (Deno.build.os === "linux") assert((await cpuModel())?.length, "no CPU model from /proc/cpuinfo");
});

/** A valid provenance block. */
function provenance(): Provenance {
  return {
    command_line: ["deno", "bench/main.ts", "--size", "7b"],
    config_file: "config.json",
    knob_sources: Object.fromEntries(Object.keys(DEFAULT_CONFIG).map((k) => [k, "config file"])) as never,
    dirty: false,
    allow_concurrent: false,
    process: thisProcess(),
  };
}

Deno.test("engine overrides name the A/B variables that are set, and only those", () => {
  const env: Record<string, string> = {
    HYDRA_PREFETCH_MB: "8",
    HYDRA_SPLIT_K: "",
    HYDRA_BENCH_COMMIT: "abc",
    PATH: "/",
  };
  assertEquals(engineOverrides((n) => env[n]), { HYDRA_PREFETCH_MB: "8" });
  assertEquals(engineOverrides(() => undefined), {});
  for (const name of ENGINE_ENV) assert(name.startsWith("HYDRA_"), name);
  assert(ENGINE_ENV.includes("HYDRA_OVERLAP_HEADS") && ENGINE_ENV.includes("HYDRA_ATTENTION_TUNING"));
});

Deno.test("every engine A/B variable the kernels, model and PoE export is one that results.json names", async () => {
  // `export const X_ENV = "HYDRA_..."` in the engine's sources; HYDRA_WEBGPU picks the runtime, which results.json
  // records as the runtime itself
  const declared: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const path = join(dir, e.name);
      if (e.isDirectory) await walk(path);
      else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) {
        const text = await Deno.readTextFile(path);
        for (const m of text.matchAll(/export const \w+_ENV = "(HYDRA_\w+)"/g)) declared.push(m[1]);
      }
    }
  };
  for (const dir of ["kernels", "model", "poe"]) await walk(join(PROJECT_ROOT, dir));
  assert(declared.includes("HYDRA_SPLIT_K"), `the scan found ${declared}`);
  for (const name of declared.filter((n) => n !== "HYDRA_WEBGPU")) {
    assert(ENGINE_ENV.includes(name), `${name} changes the kernels a model records but is not in ENGINE_ENV`);
  }
});

Deno.test("the schema checks provenance, driver, cpu and the interrupted status; older runs without them pass", async () => {
  // deno-lint-ignore no-explicit-any
  const doc: any = { ...syntheticResults(), provenance: provenance() };
  doc.environment.adapter.driver = "NVIDIA 580.65.06";
  doc.environment.cpu = { model: "AMD EPYC 9654", logical_cores: 192 };
  assertEquals(validateResults(doc), []);
  const problems = (edit: (d: typeof doc) => void) => {
    const d = structuredClone(doc);
    edit(d);
    return validateResults(d).join("\n");
  };
  assert(problems((d) => d.provenance.knob_sources.size = "guess").includes("provenance.knob_sources.size"));
  assert(problems((d) => delete d.provenance.knob_sources.seed).includes("knob_sources.seed"));
  assert(problems((d) => d.provenance.process = { pid: "x" }).includes("provenance.process"));
  assert(problems((d) => d.provenance.dirty = "no").includes("provenance.dirty"));
  assertEquals(problems((d) => d.provenance.engine_overrides = { HYDRA_PREFETCH_MB: "0" }), "");
  assert(problems((d) => d.provenance.engine_overrides = { HYDRA_PREFETCH_MB: 0 }).includes("engine_overrides"));
  assert(problems((d) => d.provenance.command_line = "deno").includes("command_line"));
  assert(problems((d) => d.environment.cpu.logical_cores = 0).includes("environment.cpu.logical_cores"));
  assert(problems((d) => d.environment.adapter.driver = 3).includes("environment.adapter.driver"));
  assert(problems((d) => d.status = "interrupted").includes("failure"));
  assertEquals(
    problems((d) => {
      d.status = "interrupted";
      d.failure = { configuration: "hydra_poe", message: "interrupted by SIGINT" };
    }),
    "",
  );
  // Every committed run under results/ stays valid, those that predate provenance (2026-11-28) included.
  const results = new URL("../../results/", import.meta.url).pathname;
  let withoutProvenance = 0;
  for (const e of Deno.readDirSync(results)) {
    if (!e.isDirectory) continue;
    const run = JSON.parse(await Deno.readTextFile(join(results, e.name, "results.json")));
    if (!("provenance" in run)) withoutProvenance++;
    assertEquals(validateResults(run), [], e.name);
  }
  assert(withoutProvenance > 0, "no run from before provenance is left to check");
});
