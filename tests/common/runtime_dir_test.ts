/**
 * common/runtime_dir.ts: the deno tasks that open a WebGPU adapter preload it, so Mesa's "XDG_RUNTIME_DIR is invalid
 * or not set" lines are gone from a fresh shell where XDG_RUNTIME_DIR is unset, and the folder is removed afterwards.
 */

import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { fromFileUrl } from "@std/path";

const ROOT = fromFileUrl(new URL("../../", import.meta.url));
const PROBE = "data:application/typescript," + encodeURIComponent(
  'const a = await navigator.gpu.requestAdapter(); console.log(JSON.stringify({ adapter: a !== null, dir: Deno.env.get("XDG_RUNTIME_DIR") ?? null }));',
);

async function probe(preload: boolean): Promise<{ stdout: string; stderr: string }> {
  const env = { ...Deno.env.toObject() };
  delete env.XDG_RUNTIME_DIR;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...(preload ? ["--preload", "common/runtime_dir.ts"] : []), PROBE],
    cwd: ROOT,
    env,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("the GPU tasks preload common/runtime_dir.ts", async () => {
  const tasks = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)).tasks as Record<string, string>;
  for (const t of ["bench", "test", "generate"]) assertStringIncludes(tasks[t], "--preload common/runtime_dir.ts");
});

Deno.test({
  name: "with XDG_RUNTIME_DIR unset, the preload silences Mesa and removes its folder at exit",
  sanitizeResources: false,
  fn: async () => {
    const without = await probe(false);
    const mesaSpeaks = without.stderr.includes("XDG_RUNTIME_DIR is invalid");
    const withIt = await probe(true);
    const r = JSON.parse(withIt.stdout);
    assertEquals(withIt.stderr.includes("XDG_RUNTIME_DIR"), false, withIt.stderr);
    assert(typeof r.dir === "string" && r.dir.includes("hydra-bench-xdg-"), withIt.stdout);
    let exists = true;
    try {
      Deno.statSync(r.dir);
    } catch {
      exists = false;
    }
    assertEquals(exists, false, `${r.dir} is left behind`);
    // On Mesa the probe without the preload shows the noise the preload removes (on other drivers there is none).
    if (r.adapter && !mesaSpeaks) console.log("this adapter prints no XDG_RUNTIME_DIR warning; nothing to silence");
  },
});
