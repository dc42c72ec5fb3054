/**
 * tools/stage_ab.sh: another commit's code staged for an A/B inside one device call. It stages the commit's code (not
 * its docs, results or tests) into `.ab/<commit>/`, which git then ignores (so it travels only when carried); `--link`
 * points each staged tree's node_modules at the checkout's. Run in a throwaway clone of this repository; ignored, with
 * the reason in its name, where this checkout is not a git repository (a source archive).
 */

import { assert, assertEquals } from "@std/assert";
import { fromFileUrl } from "@std/path";

const ROOT = fromFileUrl(new URL("../../", import.meta.url));
const isRepo = (await new Deno.Command("git", { args: ["-C", ROOT, "rev-parse", "--git-dir"], stderr: "null" })
  .output().catch(() => ({ success: false }))).success;

async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: exit ${out.code}\n${text}`);
  return text;
}

Deno.test({
  name: `tools/stage_ab.sh stages a commit's code, git-ignored, and links it to node_modules${
    isRepo ? "" : " (ignored: this checkout is not a git repository)"
  }`,
  ignore: !isRepo,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      await run("git", ["clone", "-q", "--no-local", ROOT, dir], dir);
      const commit = (await run("git", ["rev-parse", "--short", "HEAD"], dir)).trim();
      await run("bash", ["tools/stage_ab.sh", "HEAD"], dir);
      const staged = `${dir}/.ab/${commit}`;
      for (const path of ["deno.json", "kernels/matmul/linear.ts", "model/hydra.ts", "tools/profile.ts"]) {
        assert((await Deno.stat(`${staged}/${path}`)).isFile, `${path} not staged`);
      }
      for (const path of ["docs", "results", "tests"]) {
        await Deno.stat(`${staged}/${path}`).then(
          () => {
            throw new Error(`${path} staged`);
          },
          () => {},
        );
      }
      assertEquals((await run("git", ["status", "--porcelain"], dir)).trim(), "", "the staged tree is not ignored");
      await Deno.mkdir(`${dir}/node_modules`);
      await run("bash", ["tools/stage_ab.sh", "--link"], dir);
      assertEquals(await Deno.realPath(`${staged}/node_modules`), await Deno.realPath(`${dir}/node_modules`));
      // no commit: one line of usage, exit 2
      const bare = await new Deno.Command("bash", { args: ["tools/stage_ab.sh"], cwd: dir, stderr: "piped" }).output();
      assertEquals(bare.code, 2);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
