/**
 * `deno task bench` end to end on whatever adapter the machine has (the CPU adapter in CI): a tiny run of all three
 * configurations with short budgets, in a fresh results folder; checks the results.json schema, the figures a reader
 * relies on, and that graph.png is a PNG. Also: bad flags exit with 2 and one sentence, and a second run never
 * overwrites the first.
 */

import { assertValidResults } from "../../bench/schema.ts";
import { fromFileUrl } from "@std/path";

const ROOT = fromFileUrl(new URL("../../", import.meta.url));
const FLAGS = [
  "--size",
  "tiny",
  "--prompt-length",
  "9",
  "--gen-length",
  "8",
  "--step-interval",
  "4",
  "--n-heads",
  "3",
  "--heads-depth",
  "2",
  "--poe-gamma",
  "2",
  "--poe-gamma-sweep",
  "1",
  "--poe-max-new-tokens",
  "8",
  "--rep-ms",
  "20",
  "--warmup-ms",
  "5",
];

async function bench(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "bench/main.ts", ...args],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test({
  name: "deno task bench writes a complete, valid run folder with results.json and graph.png (tiny, all three configs)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "bench_e2e" });
    try {
      const r = await bench([...FLAGS, "--results-dir", dir]);
      if (r.code !== 0) throw new Error(`bench exited ${r.code}: ${r.stderr.slice(-2000)}`);
      const runs = [...Deno.readDirSync(dir)].map((e) => e.name);
      if (runs.length !== 1 || !/^\d{4}-\d{2}-\d{2}_run01$/.test(runs[0])) throw new Error(`run folders: ${runs}`);
      const doc = JSON.parse(await Deno.readTextFile(`${dir}/${runs[0]}/results.json`));
      assertValidResults(doc);
      if (doc.status !== "complete") throw new Error(`status ${doc.status}`);
      for (const name of ["baseline", "hydra_naive", "hydra_poe"] as const) {
        const c = doc.configurations[name];
        if (!c) throw new Error(`${name} missing`);
        if (!(c.ttft.median_ms > 0 && c.weight_bytes_per_step > 0 && c.roofline_tps > 0)) {
          throw new Error(`${name}: ttft ${c.ttft.median_ms}, bytes ${c.weight_bytes_per_step}`);
        }
      }
      const base = doc.configurations.baseline!, naive = doc.configurations.hydra_naive!;
      const positions = base.decode!.positions.map((p) => p.position).join();
      if (positions !== "0,4") throw new Error(`decode positions ${positions}`);
      // The naive Hydra streams its trunk and all 3 heads: more bytes per step than the plain model.
      if (!(naive.weight_bytes_per_step > base.weight_bytes_per_step)) {
        throw new Error("naive reads no more than baseline");
      }
      const poe = doc.configurations.hydra_poe!;
      if (poe.weights !== "synthetic") throw new Error(`PoE weights labelled ${JSON.stringify(poe.weights)}`);
      if (poe.poe!.map((g) => g.gamma).join() !== "1,2") throw new Error("gammas are not 1,2");
      for (const g of poe.poe!) {
        if (g.avg_output_tokens_per_call !== 8) {
          throw new Error(`gamma ${g.gamma}: ${g.avg_output_tokens_per_call} tokens`);
        }
        if (g.sync_points_per_call > 2) throw new Error(`gamma ${g.gamma}: ${g.sync_points_per_call} syncs per call`);
      }
      const png = await Deno.readFile(`${dir}/${runs[0]}/graph.png`);
      if (png.length < 1000 || png[1] !== 0x50 || png[2] !== 0x4e || png[3] !== 0x47) {
        throw new Error("graph.png is not a PNG");
      }
      // A second run gets the next folder; the first is untouched.
      const before = await Deno.readTextFile(`${dir}/${runs[0]}/results.json`);
      const again = await bench([...FLAGS, "--configs", "baseline", "--results-dir", dir]);
      if (again.code !== 0) throw new Error(`second run exited ${again.code}`);
      const after = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
      if (after.length !== 2 || !after[1].endsWith("_run02")) {
        throw new Error(`run folders after a second run: ${after}`);
      }
      if ((await Deno.readTextFile(`${dir}/${runs[0]}/results.json`)) !== before) throw new Error("run01 was modified");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("deno task bench: an unknown flag or a bad value exits with 2 and one sentence", async () => {
  for (const args of [["--bogus", "1"], ["--poe-beta", "1.5"], ["--size", "13b"], ["--rep-ms", "-3"]]) {
    const r = await bench(args);
    const msg = r.stderr.trim();
    if (r.code !== 2 || !msg.startsWith("error: ") || msg.split("\n").length !== 1 || msg.includes("    at ")) {
      throw new Error(`${args.join(" ")}: exit ${r.code}, stderr ${JSON.stringify(r.stderr.slice(0, 400))}`);
    }
  }
});

Deno.test("deno task bench without any WebGPU adapter says what to install and exits with 2", async () => {
  // Linux has no DirectX 12: forcing that backend leaves wgpu with no adapter, as on a machine without any driver.
  if (Deno.build.os !== "linux") return;
  const r = await bench(["--size", "tiny"], { DENO_WEBGPU_BACKEND: "dx12" });
  if (r.code !== 2 || !/No WebGPU adapter was found: install .*mesa-vulkan-drivers/.test(r.stderr)) {
    throw new Error(`exit ${r.code}, stderr ${JSON.stringify(r.stderr.slice(0, 400))}`);
  }
});
