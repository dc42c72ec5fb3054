/**
 * Preloaded by the deno tasks (`--preload common/runtime_dir.ts`): when XDG_RUNTIME_DIR is unset, points it at a
 * fresh private temporary folder, removed when the process ends. Without it, every process that opens a WebGPU
 * adapter through Mesa's Vulkan drivers prints "error: XDG_RUNTIME_DIR is invalid or not set in the environment."
 * (twice, from the Wayland client library Mesa's window-system code loads): noise, not an error, on a headless
 * machine or in CI. A value the user set is kept as it is.
 * @module
 */

if (!Deno.env.get("XDG_RUNTIME_DIR")) {
  try {
    const dir = Deno.makeTempDirSync({ prefix: "hydra-bench-xdg-" });
    Deno.chmodSync(dir, 0o700);
    Deno.env.set("XDG_RUNTIME_DIR", dir);
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // already gone; nothing to clean up
      }
    });
  } catch {
    // no writable temp folder or no --allow-env: Mesa's message is then printed, nothing else changes
  }
}
